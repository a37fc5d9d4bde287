"""Learning-rate policies with DIGITS' semantics: step positions are percentages of training.

DIGITS converted the percentages to Caffe's per-iteration formulas with ``scale = max_iter / 100``
(reference section 2.2); :func:`lr_at` applies those formulas, :func:`preview` the percent formulas
of the "Visualize LR" chart (section 2.4). ``cosine`` is kiln's addition.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch

from .config import TrainConfig

POLICIES = ("fixed", "step", "multistep", "exp", "inv", "poly", "sigmoid", "cosine")


def parse_multistep(values: str | list[float] | tuple[float, ...]) -> list[float]:
    """Parse ``lr_multistep_values`` ("50,85") into sorted percentages."""
    items = values.split(",") if isinstance(values, str) else list(values)
    try:
        steps = sorted(float(v) for v in items if str(v).strip())
    except ValueError:
        raise ValueError(f"lr_multistep_values must be comma-separated numbers, got {values!r}") from None
    if not steps:
        raise ValueError("lr_multistep_values must list at least one step (percent of training)")
    if any(not math.isfinite(s) or s < 0 for s in steps):
        raise ValueError(f"lr_multistep_values must be non-negative percentages, got {values!r}")
    return steps


def check_config(config: TrainConfig) -> None:
    """Raise ValueError naming the field for values the policy cannot use."""
    c = config
    if c.lr_policy not in POLICIES:
        raise ValueError(f"lr_policy must be one of {', '.join(POLICIES)}; got {c.lr_policy!r}")
    if c.lr_policy == "step" and not c.lr_step_size > 0:
        raise ValueError(f"lr_step_size must be a positive percentage, got {c.lr_step_size!r}")
    if c.lr_policy == "multistep":
        parse_multistep(c.lr_multistep_values)
    if c.lr_policy == "exp" and not c.lr_exp_gamma >= 0:
        raise ValueError(f"lr_exp_gamma must not be negative, got {c.lr_exp_gamma!r}")
    if c.lr_policy == "inv" and not c.lr_inv_gamma >= 0:
        raise ValueError(f"lr_inv_gamma must not be negative, got {c.lr_inv_gamma!r}")


def _sigmoid_decay(lr: float, z: float) -> float:
    """lr / (1 + e^z), without overflowing for large z."""
    return 0.0 if z > 700 else lr / (1 + math.exp(z))


def _percent_rate(c: TrainConfig, lr: float, i: float) -> float:
    """The policy at ``i`` percent of training, in DIGITS' percent formulas."""
    policy = c.lr_policy
    if policy == "fixed":
        return lr
    if policy == "step":
        return lr * c.lr_step_gamma ** math.floor(i / c.lr_step_size)
    if policy == "multistep":
        return lr * c.lr_multistep_gamma ** sum(i >= s for s in parse_multistep(c.lr_multistep_values))
    if policy == "exp":
        return lr * c.lr_exp_gamma ** i
    if policy == "inv":
        return lr * (1 + c.lr_inv_gamma * i) ** -c.lr_inv_power
    if policy == "poly":
        return lr * max(0.0, 1 - i / 100) ** c.lr_poly_power
    if policy == "sigmoid":
        return _sigmoid_decay(lr, c.lr_sigmoid_gamma * (i - c.lr_sigmoid_step))
    return lr * 0.5 * (1 + math.cos(math.pi * min(i, 100.0) / 100))  # cosine


def lr_at(config: TrainConfig, iteration: int, max_iter: int) -> float:
    """Learning rate at ``iteration`` (0-based) of ``max_iter``, as Caffe ran DIGITS' solver file.

    An iteration is one optimizer step (Caffe's ``iter``, which counts ``iter_size`` batches once).
    """
    c, lr, it = config, config.learning_rate, iteration
    check_config(c)
    scale = max(max_iter, 1) / 100
    if c.lr_policy == "step":
        stepsize = max(1, math.ceil(c.lr_step_size * scale))
        return lr * c.lr_step_gamma ** (it // stepsize)
    if c.lr_policy == "multistep":
        stepvalues = [math.ceil(v * scale) for v in parse_multistep(c.lr_multistep_values)]
        return lr * c.lr_multistep_gamma ** sum(it >= s for s in stepvalues)
    if c.lr_policy == "exp":
        return lr * (c.lr_exp_gamma ** (1 / scale)) ** it
    if c.lr_policy == "inv":
        return lr * (1 + c.lr_inv_gamma / scale * it) ** -c.lr_inv_power
    if c.lr_policy == "poly":
        return lr * max(0.0, 1 - it / max(max_iter, 1)) ** c.lr_poly_power
    if c.lr_policy == "sigmoid":
        gamma, stepsize = -c.lr_sigmoid_gamma / scale, math.ceil(c.lr_sigmoid_step * scale)
        return _sigmoid_decay(lr, -gamma * (it - stepsize))
    # fixed and cosine are the same in both forms
    return _percent_rate(c, lr, 100 * it / max(max_iter, 1))


_FLOAT_FIELDS = ("lr_step_size", "lr_step_gamma", "lr_multistep_gamma", "lr_exp_gamma", "lr_inv_gamma",
                 "lr_inv_power", "lr_poly_power", "lr_sigmoid_step", "lr_sigmoid_gamma")


def _float(params: Mapping[str, Any], name: str, default: float) -> float:
    raw = params.get(name)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {raw!r}")
    return value


def _learning_rates(raw: Any) -> list[float]:
    items = raw.split(",") if isinstance(raw, str) else raw if isinstance(raw, (list, tuple)) else [raw]
    try:
        rates = [float(v) for v in items if str(v).strip()]
    except (TypeError, ValueError):
        raise ValueError(f"learning_rate must be comma-separated numbers, got {raw!r}") from None
    if not rates or any(not math.isfinite(r) or r < 0 for r in rates):
        raise ValueError(f"learning_rate must be one or more non-negative numbers, got {raw!r}")
    return rates


def preview(params: Mapping[str, Any], points: int = 101) -> list[list]:
    """DIGITS' visualize-lr columns: ``[["Learning Rate 0", v0, ..., v100], ...]``, one per learning rate.

    ``params`` holds form values (strings or numbers) for ``lr_policy``, ``learning_rate`` (a comma
    list) and the ``lr_*`` fields; missing ones take TrainConfig's defaults.
    """
    defaults = TrainConfig()
    config = TrainConfig(lr_policy=str(params.get("lr_policy") or defaults.lr_policy))
    for name in _FLOAT_FIELDS:
        setattr(config, name, _float(params, name, getattr(defaults, name)))
    steps = params.get("lr_multistep_values") or defaults.lr_multistep_values
    config.lr_multistep_values = steps if isinstance(steps, str) else ",".join(map(str, steps))
    check_config(config)
    rates = _learning_rates(params.get("learning_rate", defaults.learning_rate))
    xs = [100 * k / (points - 1) for k in range(points)] if points > 1 else [0.0]
    return [[f"Learning Rate {n}"] + [_percent_rate(config, lr, i) for i in xs] for n, lr in enumerate(rates)]


class IterationLR(torch.optim.lr_scheduler.LambdaLR):
    """LambdaLR that also puts the resumed iteration's rate back into the optimizer on loading.

    (Building a LambdaLR resets the optimizer's rates to iteration 0's; plain ``load_state_dict``
    would leave them there until the next ``step()``.)
    """

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        for group, base, factor in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            group["lr"] = base * factor(self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                   max_iter: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration scheduler: call ``step()`` after every optimizer step.

    The factor is ``lr_at / learning_rate``, so groups keep their own base rates. The lambda is a
    closure, so ``state_dict()`` holds only numbers (safe for ``torch.load(weights_only=True)``).
    To resume, load the optimizer's state, build the scheduler, then ``load_state_dict``.
    """
    check_config(config)
    base = config.learning_rate

    def factor(iteration: int) -> float:
        return lr_at(config, iteration, max_iter) / base if base > 0 else 1.0

    return IterationLR(optimizer, factor)
