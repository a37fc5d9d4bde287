"""LR policies against DIGITS' formulas: Caffe's per-iteration form and the visualize-lr percent form."""

from __future__ import annotations

import io
import math

import pytest
import torch

from kiln.training.config import TrainConfig
from kiln.training.lr_policy import POLICIES, lr_at, make_scheduler, preview

# DIGITS' API example: 704 iterations per epoch (45,002 images at batch 64); 30 epochs
MAX_ITER = 704 * 30  # 21,120; scale = 211.2


pytestmark = pytest.mark.usefixtures("one_thread")


def rates(config: TrainConfig, iterations: list[int], max_iter: int) -> list[float]:
    return [lr_at(config, it, max_iter) for it in iterations]


def test_fixed() -> None:
    assert rates(TrainConfig(lr_policy="fixed"), [0, 5000, 21119], MAX_ITER) == [0.01, 0.01, 0.01]


def test_step_rounds_the_step_size_up() -> None:
    config = TrainConfig(lr_policy="step", lr_step_size=33, lr_step_gamma=0.1)
    # stepsize = ceil(33 * 211.2) = ceil(6969.6) = 6970
    got = rates(config, [0, 6969, 6970, 13939, 13940, 20909, 20910], MAX_ITER)
    assert got == pytest.approx([0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5])
    # 22 epochs (snapshot_iter_15488): 33 * 154.88 = 5111.04 -> 5112, not 5111
    assert rates(config, [5111, 5112], 704 * 22) == pytest.approx([0.01, 1e-3])


def test_multistep_rounds_each_step_up() -> None:
    config = TrainConfig(lr_policy="multistep", lr_multistep_values="50,85", lr_multistep_gamma=0.5)
    # stepvalues: 50 * 211.2 = 10560, ceil(85 * 211.2 = 17952.0) = 17952; and 15488: 7744, ceil(13164.8) = 13165
    assert rates(config, [0, 10559, 10560, 17951, 17952], MAX_ITER) == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])
    assert rates(config, [13164, 13165], 15488) == pytest.approx([0.005, 0.0025])
    config.lr_multistep_values = "33"  # 33 * 154.88 = 5111.04 -> 5112, not 5111
    assert rates(config, [5111, 5112], 15488) == pytest.approx([0.01, 0.005])


def test_exp_spreads_gamma_over_one_percent_of_training() -> None:
    config = TrainConfig(lr_policy="exp", lr_exp_gamma=0.95)
    # max_iter 200: scale 2, so gamma per iteration is 0.95 ** 0.5
    got = rates(config, [0, 1, 100, 200], 200)
    assert got == pytest.approx(
        [0.01, 0.01 * 0.9746794344808963, 0.01 * 0.07694497527671311, 0.01 * 0.005920529220333997]
    )


def test_inv() -> None:
    config = TrainConfig(lr_policy="inv", lr_inv_gamma=0.1, lr_inv_power=0.5)
    # scale 10: gamma 0.01 per iteration; (1 + 0.01 * 500) ** -0.5 = 6 ** -0.5
    assert rates(config, [0, 500, 1000], 1000) == pytest.approx([0.01, 0.004082482904638631, 0.01 / 11**0.5])


def test_poly() -> None:
    config = TrainConfig(lr_policy="poly", lr_poly_power=3)
    assert rates(config, [0, 500, 750, 1000], 1000) == pytest.approx([0.01, 0.00125, 0.01 / 64, 0.0])


def test_sigmoid() -> None:
    config = TrainConfig(lr_policy="sigmoid", lr_sigmoid_step=50, lr_sigmoid_gamma=0.1)
    # Caffe: gamma = -0.1 / 10, stepsize = 500: lr / (1 + exp(0.01 * (it - 500)))
    got = rates(config, [0, 500, 1000], 1000)
    assert got == pytest.approx([0.009933071490757153, 0.005, 6.692850924284855e-05])
    assert lr_at(TrainConfig(lr_policy="sigmoid", lr_sigmoid_gamma=50.0), 10**6, 10**6) == 0.0  # no overflow


def test_cosine() -> None:
    got = rates(TrainConfig(lr_policy="cosine"), [0, 250, 500, 1000], 1000)
    assert got == pytest.approx([0.01, 0.01 * (1 + 0.5**0.5) / 2, 0.005, 0.0])


@pytest.mark.parametrize("policy", POLICIES)
def test_iterations_follow_the_preview_when_scale_is_whole(policy: str) -> None:
    # with max_iter 1000 (scale 10) the Caffe form at iteration 10 i equals the percent form at i
    column = preview({"lr_policy": policy, "learning_rate": "0.01"})[0][1:]
    config = TrainConfig(lr_policy=policy)
    assert [lr_at(config, 10 * i, 1000) for i in range(101)] == pytest.approx(column, rel=1e-9, abs=1e-15)


def test_preview_has_digits_shape_one_column_per_rate() -> None:
    columns = preview(
        {"lr_policy": "step", "learning_rate": "0.01, 0.001", "lr_step_size": "33", "lr_step_gamma": "0.1"}
    )
    assert [c[0] for c in columns] == ["Learning Rate 0", "Learning Rate 1"]
    assert all(len(c) == 102 for c in columns)  # the name and 101 points
    first = columns[0][1:]
    assert (first[0], first[32], first[33], first[65], first[66], first[99], first[100]) == pytest.approx(
        (0.01, 0.01, 1e-3, 1e-3, 1e-4, 1e-5, 1e-5)
    )
    assert columns[1][1] == 0.001


def test_preview_percent_formulas() -> None:
    def column(**params: object) -> list[float]:
        return preview({"learning_rate": 0.1, **params})[0][1:]

    assert column(lr_policy="exp", lr_exp_gamma="0.9")[10] == pytest.approx(0.1 * 0.9**10)
    assert column(lr_policy="inv", lr_inv_gamma=0.1, lr_inv_power=2)[30] == pytest.approx(0.1 / 16)
    assert column(lr_policy="poly", lr_poly_power=2)[90] == pytest.approx(0.1 * 0.01)
    assert column(lr_policy="sigmoid", lr_sigmoid_step=40)[40] == pytest.approx(0.05)
    multistep = column(lr_policy="multistep", lr_multistep_values="85, 50", lr_multistep_gamma=0.5)
    assert (multistep[49], multistep[50], multistep[84], multistep[85]) == pytest.approx((0.1, 0.05, 0.05, 0.025))
    from_json = column(lr_policy="multistep", lr_multistep_values=[50, 85], lr_multistep_gamma=0.5)
    assert from_json == multistep
    assert column(lr_policy="fixed") == [0.1] * 101
    assert column(lr_policy="cosine")[50] == pytest.approx(0.05)


@pytest.mark.parametrize(
    "params, field",
    [
        ({"lr_policy": "multistep", "lr_multistep_values": "50,abc"}, "lr_multistep_values"),
        ({"lr_policy": "multistep", "lr_multistep_values": " , "}, "lr_multistep_values"),
        ({"lr_policy": "step", "learning_rate": "0.01,fast"}, "learning_rate"),
        ({"lr_policy": "step", "learning_rate": "-1"}, "learning_rate"),
        ({"lr_policy": "step", "lr_step_gamma": "x"}, "lr_step_gamma"),
        ({"lr_policy": "step", "lr_step_size": "0"}, "lr_step_size"),
        ({"lr_policy": "exp", "lr_exp_gamma": "-0.5"}, "lr_exp_gamma"),
        ({"lr_policy": "sometimes"}, "lr_policy"),
    ],
)
def test_preview_names_the_bad_field(params: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        preview({"learning_rate": "0.01", **params})


def _sgd(lr: float = 0.01) -> torch.optim.SGD:
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9)


def test_scheduler_steps_per_iteration() -> None:
    config = TrainConfig(lr_policy="step", lr_step_size=33, learning_rate=0.01)
    optimizer = _sgd()
    scheduler = make_scheduler(optimizer, config, max_iter=100)  # stepsize 33
    seen = []
    for _ in range(70):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([lr_at(config, it, 100) for it in range(70)])
    assert (seen[32], seen[33], seen[66]) == pytest.approx((0.01, 1e-3, 1e-4))


def test_scheduler_keeps_each_groups_own_base_rate() -> None:
    config = TrainConfig(lr_policy="poly", lr_poly_power=1, learning_rate=0.01)
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.02}], lr=0.01)
    scheduler = make_scheduler(optimizer, config, max_iter=10)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.005, 0.01])


def test_scheduler_resumes_from_state_dict() -> None:
    config = TrainConfig(lr_policy="exp", lr_exp_gamma=0.5, learning_rate=0.1)
    optimizer = _sgd(0.1)
    scheduler = make_scheduler(optimizer, config, max_iter=40)
    straight = []
    for it in range(30):
        if it == 12:  # a snapshot, written and read back as a checkpoint would be
            buffer = io.BytesIO()
            torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
        straight.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_optimizer = _sgd(0.1)
    resumed_optimizer.load_state_dict(saved["optimizer"])
    resumed = make_scheduler(resumed_optimizer, config, max_iter=40)
    resumed.load_state_dict(saved["scheduler"])
    again = []
    for _ in range(12, 30):
        again.append(resumed_optimizer.param_groups[0]["lr"])
        resumed_optimizer.step()
        resumed.step()
    assert again == pytest.approx(straight[12:])
    assert again[0] == pytest.approx(0.1 * 0.5 ** (12 / 0.4))
    assert not math.isclose(again[0], 0.1)
