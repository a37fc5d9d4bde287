"""Learning-rate policies with DIGITS' semantics: step positions are percentages of training.

DIGITS converted the percentages to Caffe's per-iteration formulas with ``scale = max_iter / 100``
(reference section 2.2); :func:`lr_at` applies those formulas, :func:`preview` the percent formulas
of the "Visualize LR" chart (section 2.4). ``cosine`` is kiln's addition.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from kiln.fields import Field, FieldError

from .config import TrainConfig

# The policies this module implements (_percent_rate, lr_at), with the labels forms show.
POLICIES = {
    "fixed": "Fixed",
    "step": "Step down",
    "multistep": "Step down (arbitrary steps)",
    "exp": "Exponential decay",
    "inv": "Inverse decay",
    "poly": "Polynomial decay",
    "sigmoid": "Sigmoid decay",
    "cosine": "Cosine (kiln)",
}


def _multistep_problem(value: str) -> str | None:
    try:
        steps = parse_multistep(value)
    except ValueError as exc:
        return str(exc)
    return None if all(0 < v <= 100 for v in steps) else "A comma list of percentages in (0, 100], e.g. 50,85."


# Each policy's parameters; positions and sizes are percentages of training, as in DIGITS.
FIELDS = {
    f.name: f
    for f in (
        Field("lr_policy", "Policy", str, "learning rate policy", choices=POLICIES),
        Field(
            "lr_step_size",
            "Step size (% of training)",
            float,
            "step: percent of training between drops",
            low=0,
            low_open=True,
        ),
        Field("lr_step_gamma", "Gamma (step)", float, "step: factor at each drop", low=0),
        Field(
            "lr_multistep_values",
            "Step values (% list)",
            str,
            "multistep: comma list of percentages",
            extra_check=_multistep_problem,
        ),
        Field("lr_multistep_gamma", "Gamma (multistep)", float, "multistep: factor at each step", low=0),
        Field("lr_exp_gamma", "Gamma (exp)", float, "exp: factor per percent of training", low=0),
        Field("lr_inv_gamma", "Gamma (inv)", float, "inv: gamma", low=0),
        Field("lr_inv_power", "Power (inv)", float, "inv: power", low=0),
        Field("lr_poly_power", "Power (poly)", float, "poly: power", low=0),
        Field("lr_sigmoid_step", "Step (sigmoid, %)", float, "sigmoid: midpoint, percent of training", low=0, high=100),
        Field("lr_sigmoid_gamma", "Gamma (sigmoid)", float, "sigmoid: steepness", low=-1000, high=1000),
    )
}


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


def check_policy(config: TrainConfig) -> None:
    """Raise FieldError naming the field for values the policies cannot use."""
    for name, f in FIELDS.items():
        f.check(getattr(config, name))


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
        return lr * c.lr_exp_gamma**i
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
    check_policy(c)
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


_FLOAT_FIELDS = tuple(name for name, f in FIELDS.items() if f.type is float)


def _float(params: Mapping[str, Any], name: str, default: float) -> float:
    raw = params.get(name)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise FieldError(name, f"Must be a number, got {raw!r}.") from None
    if not math.isfinite(value):
        raise FieldError(name, f"Must be a finite number, got {raw!r}.")
    return value


def _learning_rates(raw: Any) -> list[float]:
    items = raw.split(",") if isinstance(raw, str) else raw if isinstance(raw, (list, tuple)) else [raw]
    try:
        rates = [float(v) for v in items if str(v).strip()]
    except (TypeError, ValueError):
        raise FieldError("learning_rate", f"Must be comma-separated numbers, got {raw!r}.") from None
    if not rates or any(not math.isfinite(r) or r < 0 for r in rates):
        raise FieldError("learning_rate", f"Must be one or more non-negative numbers, got {raw!r}.")
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
    check_policy(config)
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


def make_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, max_iter: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration scheduler: call ``step()`` after every optimizer step.

    The factor is ``lr_at / learning_rate``, so groups keep their own base rates. The lambda is a
    closure, so ``state_dict()`` holds only numbers (safe for ``torch.load(weights_only=True)``).
    To resume, load the optimizer's state, build the scheduler, then ``load_state_dict``.
    """
    check_policy(config)
    base = config.learning_rate

    def factor(iteration: int) -> float:
        return lr_at(config, iteration, max_iter) / base if base > 0 else 1.0

    return IterationLR(optimizer, factor)
