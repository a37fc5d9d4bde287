"""Each DIGITS solver type becomes the right optimizer, with Caffe's settings, and learns."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kiln.training.config import TrainConfig
from kiln.training.solvers import SOLVERS, make_optimizer

EXPECTED = {
    "SGD": (torch.optim.SGD, {"momentum": 0.9, "nesterov": False}),
    "NESTEROV": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    "ADAGRAD": (torch.optim.Adagrad, {"eps": 1e-8}),
    "RMSPROP": (torch.optim.RMSprop, {"alpha": 0.95, "momentum": 0.0, "eps": 1e-8}),
    "ADADELTA": (torch.optim.Adadelta, {"rho": 0.9, "eps": 1e-6}),
    "ADAM": (torch.optim.Adam, {"betas": (0.9, 0.999), "eps": 1e-8}),
    "ADAMW": (torch.optim.AdamW, {"betas": (0.9, 0.999), "eps": 1e-8}),
}
# learning rates at which a few dozen steps visibly reduce the toy loss (AdaDelta wants ~1, as in Caffe)
LEARNING_RATES = {
    "SGD": 0.05,
    "NESTEROV": 0.05,
    "ADAGRAD": 0.1,
    "RMSPROP": 0.01,
    "ADADELTA": 1.0,
    "ADAM": 0.01,
    "ADAMW": 0.01,
}


pytestmark = pytest.mark.usefixtures("one_thread")


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))


def test_every_solver_is_covered() -> None:
    assert set(SOLVERS) == set(EXPECTED)


@pytest.mark.parametrize("solver", SOLVERS)
def test_solver_type_and_caffe_settings(solver: str) -> None:
    config = TrainConfig(solver_type=solver, learning_rate=0.02, rms_decay=0.95)
    optimizer = make_optimizer(small_model(), config)
    cls, settings = EXPECTED[solver]
    assert type(optimizer) is cls
    for key, value in settings.items():
        assert optimizer.defaults[key] == value, key
    assert all(group["lr"] == 0.02 for group in optimizer.param_groups)
    # fused kernels are the faster ones on CPU where they exist; foreach elsewhere
    fused = solver in ("SGD", "NESTEROV", "ADAGRAD", "ADAM", "ADAMW")
    assert (bool(optimizer.defaults.get("fused")), bool(optimizer.defaults.get("foreach"))) == (fused, not fused)


@pytest.mark.parametrize("solver", SOLVERS)
def test_weight_decay_skips_biases_and_norms(solver: str) -> None:
    model = small_model()
    optimizer = make_optimizer(model, TrainConfig(solver_type=solver, learning_rate=0.02))
    decay = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert len(decay) == len(list(model.parameters()))
    assert decay[id(model[0].weight)] == decay[id(model[3].weight)] == pytest.approx(0.0002)  # DIGITS: lr / 100
    assert decay[id(model[0].bias)] == decay[id(model[1].weight)] == decay[id(model[1].bias)] == 0.0
    explicit = make_optimizer(model, TrainConfig(solver_type=solver, weight_decay=0.005))
    assert explicit.param_groups[0]["weight_decay"] == 0.005


@pytest.mark.parametrize("solver", SOLVERS)
def test_a_few_steps_reduce_a_regression_loss(solver: str) -> None:
    model = small_model()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 4, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1
    optimizer = make_optimizer(model, TrainConfig(solver_type=solver, learning_rate=LEARNING_RATES[solver]))

    def loss() -> torch.Tensor:
        return nn.functional.mse_loss(model(x), y)

    first = loss().item()
    for _ in range(40):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert loss().item() < 0.5 * first


def test_unknown_solver_names_the_field() -> None:
    with pytest.raises(ValueError, match="solver_type"):
        make_optimizer(small_model(), TrainConfig(solver_type="LBFGS"))


@pytest.mark.parametrize("field, value", [("momentum", 1.5), ("rms_decay", -0.1), ("learning_rate", -0.01)])
def test_bad_hyper_parameters_name_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        make_optimizer(small_model(), TrainConfig(solver_type="RMSPROP", **{field: value}))


def test_frozen_parameters_are_left_out() -> None:
    model = small_model()
    model[0].requires_grad_(False)
    optimizer = make_optimizer(model, TrainConfig())
    kept = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(model[0].weight) not in kept and id(model[3].weight) in kept
