"""DIGITS' model form (reference 2.1) → TrainConfig(s), with per-field errors and sweeps.

Shared by the web form, the JSON API and `kiln train`.
"""
from __future__ import annotations

import itertools
from typing import Any

from kiln.config import Settings
from kiln.store import Store
from kiln.training.config import TrainConfig
from kiln.forms import FormErrors, coerce

LR_POLICIES = ("fixed", "step", "multistep", "exp", "inv", "poly", "sigmoid", "cosine")
MEANS = ("none", "image", "pixel")
FLIPS = ("none", "fliplr", "flipud", "fliplrud")
QUAD = ("none", "rot90", "rot180", "rotall")
STOPPING = ("none", "val_loss", "val_accuracy")
RANGES = {"aug_rot": (0, 180), "aug_scale": (0, 1), "aug_noise": (0, 1), "aug_contrast": (0, 5),
          "aug_hsv_h": (0, 0.5), "aug_hsv_s": (0, 0.5), "aug_hsv_v": (0, 0.5), "aug_invert": (0, 1)}


def _list(name: str, raw: Any, kind: type, errors: dict[str, list[str]]) -> list[Any]:
    """A comma list (DIGITS sweeps over learning_rate and batch_size)."""
    text = str(raw or "").strip()
    if not text:
        return [None]
    values = []
    for part in text.split(","):
        try:
            value = kind(float(part)) if kind is int else kind(part)
        except ValueError:
            errors.setdefault(name, []).append(f"Not a valid number: {part.strip()!r}.")
            continue
        if value <= 0:
            errors.setdefault(name, []).append(f"Must be greater than 0, got {part.strip()}.")
        values.append(value)
    return values or [None]


def configs_from_form(form: dict[str, Any], store: Store, settings: Settings) -> tuple[dict[str, Any], list[TrainConfig]]:
    """Validate the form; returns the common values (name, dataset...) and one config per sweep point."""
    from kiln.networks.registry import get_network_info, list_networks
    from kiln.training.solvers import SOLVERS

    errors: dict[str, list[str]] = {}
    common = _common(form, store, errors)
    base: dict[str, Any] = {}
    hints = TrainConfig.__annotations__  # strings ("int | None"): coerce reads them as text
    skip = {"learning_rate", "batch_size", "network", "extra"}
    for name in hints:
        if name in skip or name not in form or str(form[name]).strip() == "" and name not in ("random_seed", "crop_size", "weight_decay"):
            continue
        value = coerce(name, form[name], hints[name], errors)
        if value is not None or name in ("random_seed", "crop_size", "weight_decay"):
            base[name] = value
    method = str(form.get("method", "standard"))
    network = str(form.get("standard_networks") or form.get("network") or "")
    if method != "standard":
        errors.setdefault("method", []).append(f"Network type {method!r} is not available yet; use 'standard'.")
    names = [n.name for n in list_networks()]
    if network not in names:
        errors.setdefault("standard_networks", []).append(f"Pick one of: {', '.join(names)}.")
    else:
        base["network"] = network
    _check_choices(base, errors, SOLVERS)
    _check_numbers(base, errors, common.get("dataset_spec"))
    lrs = _list("learning_rate", form.get("learning_rate", "0.01"), float, errors)
    batches = _list("batch_size", form.get("batch_size", ""), int, errors)
    if network in names and base.get("crop_size") and common.get("dataset_spec"):
        spec = common["dataset_spec"]
        if base["crop_size"] > min(int(spec["resize_width"]), int(spec["resize_height"])):
            errors.setdefault("crop_size", []).append(
                f"Must not exceed the image size ({spec['resize_width']}x{spec['resize_height']}).")
    if errors:
        raise FormErrors(errors)
    configs = []
    for lr, bs in itertools.product(lrs, batches):
        values = dict(base)
        if lr is not None:
            values["learning_rate"] = lr
        values["batch_size"] = bs if bs is not None else get_network_info(network).default_batch
        configs.append(TrainConfig.from_dict(values))
    common["sweep"] = [(lr, bs) for lr, bs in itertools.product(lrs, batches)] if len(configs) > 1 else []
    return common, configs


def _common(form: dict[str, Any], store: Store, errors: dict[str, list[str]]) -> dict[str, Any]:
    name = str(form.get("model_name", "")).strip()
    if not name:
        errors.setdefault("model_name", []).append("This field is required.")
    dataset_id = str(form.get("dataset", "")).strip()
    dataset = store.get_job(dataset_id) if dataset_id else None
    spec = None
    if dataset is None or dataset.type != "dataset":
        errors.setdefault("dataset", []).append("Pick an existing dataset." if dataset_id else "This field is required.")
    elif dataset.status in ("Error", "Aborted", "Interrupted"):
        errors.setdefault("dataset", []).append(f"That dataset is {dataset.status}; restart it or pick another.")
    else:
        spec = dataset.params.get("spec", {})
    return {"model_name": name, "group_name": str(form.get("group_name", "")).strip(),
            "dataset_id": dataset_id, "dataset_spec": spec}


def _check_choices(base: dict[str, Any], errors: dict[str, list[str]], solvers: tuple[str, ...]) -> None:
    choices = {"solver_type": solvers, "lr_policy": LR_POLICIES, "use_mean": MEANS, "aug_flip": FLIPS,
               "aug_quad_rot": QUAD, "early_stopping": STOPPING}
    for field, allowed in choices.items():
        if field in base and base[field] not in allowed:
            errors.setdefault(field, []).append(f"Pick one of: {', '.join(allowed)}.")
    device = str(base.get("device", "auto"))
    if not (device in ("auto", "cpu") or device.startswith("cuda")):
        errors.setdefault("device", []).append("Use auto, cpu, cuda or cuda:0,1.")
    multistep = str(base.get("lr_multistep_values", "50,85"))
    try:
        steps = [float(v) for v in multistep.split(",") if v.strip()]
        if not steps or any(not 0 < v <= 100 for v in steps):
            raise ValueError
    except ValueError:
        errors.setdefault("lr_multistep_values", []).append("A comma list of percentages in (0, 100], e.g. 50,85.")


def _check_numbers(base: dict[str, Any], errors: dict[str, list[str]], spec: dict[str, Any] | None) -> None:
    def need(field: str, ok: bool, message: str) -> None:
        if field in base and base[field] is not None and not ok:
            errors.setdefault(field, []).append(message)

    need("train_epochs", (base.get("train_epochs") or 0) > 0, "Must be greater than 0.")
    need("snapshot_interval", (base.get("snapshot_interval") or 0) >= 0, "Must be 0 or more.")
    need("val_interval", (base.get("val_interval") or 0) >= 0, "Must be 0 or more.")
    need("batch_accumulation", (base.get("batch_accumulation") or 0) >= 1, "Must be 1 or more.")
    need("random_seed", (base.get("random_seed") or 0) >= 0, "Must be 0 or more.")
    need("crop_size", (base.get("crop_size") or 1) >= 1, "Must be 1 or more.")
    need("momentum", 0 <= (base.get("momentum") or 0) < 1, "Must be in [0, 1).")
    need("weight_decay", (base.get("weight_decay") or 0) >= 0, "Must be 0 or more.")
    need("early_stopping_patience", (base.get("early_stopping_patience") or 0) >= 1, "Must be 1 or more.")
    for field, (lo, hi) in RANGES.items():
        value = base.get(field)
        need(field, value is None or lo <= value <= hi, f"Must be between {lo} and {hi}.")


def create_model_jobs(form: dict[str, Any], store: Store, settings: Settings, username: str) -> list[str]:
    """Validate and queue one model job per sweep point; raises FormErrors."""
    common, configs = configs_from_form(form, store, settings)
    ids = []
    for config, point in zip(configs, common["sweep"] or [None] * len(configs)):
        name = common["model_name"]
        if point:
            name += f" learning_rate:{config.learning_rate} batch_size:{config.batch_size}"
        params = {"config": config.to_dict(), "form": {k: v for k, v in form.items() if isinstance(v, str)},
                  "dataset_spec": common["dataset_spec"]}
        ids.append(store.create_job("model", name, params, username, group_name=common["group_name"],
                                    dataset_id=common["dataset_id"]))
    return ids


# Recipes kiln offers on the New Model page ("Use kiln's recipe"): measured in docs/benchmarks.md
# (LeNet on full MNIST: ≥ 99.2 % test accuracy in about a minute on 2 CPU cores).
RECIPES: dict[str, dict[str, str]] = {
    "lenet": {"train_epochs": "3", "batch_size": "128", "solver_type": "ADAM", "learning_rate": "0.002",
              "lr_policy": "cosine", "use_mean": "image"},
}
