"""Solvers: DIGITS' solver types as PyTorch optimizers, with Caffe's hyper-parameters.

As DIGITS wrote them into Caffe's solver file:
- momentum (0.9) is SGD's and NESTEROV's momentum, ADAM's beta1 and ADADELTA's decay (rho);
  ADAGRAD and RMSPROP have none;
- weight decay is base_lr / 100 unless set. Caffe decayed biases too (decay_mult 0 in the
  standard networks' prototxt switched it off); here it never touches biases or norm parameters;
- epsilon is Caffe's ``delta`` default, 1e-8, except for ADADELTA: at 1e-8 its first steps are
  so small that it barely moves in a short run, so it takes the paper's (and PyTorch's) 1e-6;
- ADAMW (kiln's addition) applies the same weight decay decoupled, as AdamW does.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kiln.fields import Field, FieldError

from .config import TrainConfig

# The solvers kiln implements (make_optimizer below), with the labels forms show.
SOLVERS = {
    "SGD": "Stochastic gradient descent (SGD)",
    "NESTEROV": "Nesterov's accelerated gradient",
    "ADAGRAD": "Adaptive gradient (AdaGrad)",
    "RMSPROP": "RMSprop",
    "ADADELTA": "AdaDelta",
    "ADAM": "Adam",
    "ADAMW": "AdamW (decoupled weight decay)",
}
FIELDS = {
    f.name: f
    for f in (
        Field("solver_type", "Solver type", str, "optimizer", choices=SOLVERS),
        Field("learning_rate", "Base learning rate", float, "base learning rate", low=0),
        Field(
            "momentum",
            "Momentum",
            float,
            "SGD/Nesterov momentum, Adam's beta1, AdaDelta's rho",
            low=0,
            high=1,
            high_open=True,
        ),
        Field(
            "weight_decay",
            "Weight decay",
            float,
            "L2 weight decay (blank: learning rate / 100, as DIGITS)",
            low=0,
            optional=True,
        ),
        Field(
            "rms_decay",
            "RMS decay",
            float,
            "RMSprop's decay of the squared-gradient average",
            low=0,
            high=1,
            high_open=True,
        ),
    )
}
EPS = 1e-8


def param_groups(model: nn.Module, weight_decay: float, lr: float) -> list[dict[str, Any]]:
    """A network text's ``param { lr_mult decay_mult }`` as Caffe applies them (lr x lr_mult, decay x
    decay_mult); for Python networks, weights (2-D and more) decay and biases and norms (1-D) do not."""
    by_multipliers = getattr(model, "multiplier_groups", None)
    if by_multipliers is not None:
        return [
            {
                "name": f"lr_mult {g['lr_mult']:g}, decay_mult {g['decay_mult']:g}",
                "params": g["params"],
                "lr": lr * g["lr_mult"],
                "weight_decay": weight_decay * g["decay_mult"],
            }
            for g in by_multipliers()
        ]
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"name": "decay", "params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"name": "no_decay", "params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def check_solver(config: TrainConfig) -> None:
    """Raise FieldError for solver settings make_optimizer cannot use."""
    for name, f in FIELDS.items():
        f.check(getattr(config, name))
    if config.solver_type == "NESTEROV" and config.momentum == 0:
        raise FieldError("momentum", "Must be above 0 for the NESTEROV solver.")


# optimizers whose fused kernel is known to be faster than foreach, per device type (CPU measured)
_FUSED = {
    "cpu": (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW, torch.optim.Adagrad),
    "cuda": (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW),
}


def _build(cls: type[torch.optim.Optimizer], groups: list[dict[str, Any]], **kwargs: Any) -> torch.optim.Optimizer:
    """Use the fused kernel where this optimizer has one for the parameters' device, else foreach."""
    params = [p for group in groups for p in group["params"]]
    devices = {p.device.type for p in params}
    fused = len(devices) == 1 and cls in _FUSED.get(devices.pop(), ()) and all(p.is_floating_point() for p in params)
    speed: dict[str, Any] = {"fused": True} if fused else {"foreach": True}
    return cls(groups, **speed, **kwargs)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer named by ``config.solver_type``; build it after moving the model to its device."""
    check_solver(config)
    groups = param_groups(model, config.effective_weight_decay, config.learning_rate)
    lr, momentum, kind = config.learning_rate, config.momentum, config.solver_type
    if kind in ("SGD", "NESTEROV"):
        return _build(torch.optim.SGD, groups, lr=lr, momentum=momentum, nesterov=kind == "NESTEROV")
    if kind == "ADAGRAD":
        return _build(torch.optim.Adagrad, groups, lr=lr, eps=EPS)
    if kind == "RMSPROP":
        return _build(torch.optim.RMSprop, groups, lr=lr, alpha=config.rms_decay, eps=EPS, momentum=0.0)
    if kind == "ADADELTA":
        return _build(torch.optim.Adadelta, groups, lr=lr, rho=momentum, eps=1e-6)
    adam = torch.optim.Adam if kind == "ADAM" else torch.optim.AdamW
    return _build(adam, groups, lr=lr, betas=(momentum, 0.999), eps=EPS)
