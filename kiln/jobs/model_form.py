"""DIGITS' model form (reference 2.1) → TrainConfig(s), with per-field errors and sweeps.

Shared by the web form, the JSON API and `kiln train`.
"""

from __future__ import annotations

import itertools
from typing import Any

from kiln.config import Settings
from kiln.fields import FieldError
from kiln.forms import FormErrors, coerce
from kiln.jobs import gpus
from kiln.jobs.network_choice import NetworkChoice, dataset_shape, network_choice
from kiln.preprocess import effective_crop
from kiln.store import Store
from kiln.training import recipe
from kiln.training.config import TrainConfig
from kiln.training.options import FIELDS, SWEEP_FIELDS, field_errors

MAX_SWEEP_JOBS = 64  # one form creates at most this many jobs (learning rates x batch sizes)


def _list(name: str, raw: Any, kind: type, errors: dict[str, list[str]]) -> list[Any]:
    """A comma list (DIGITS sweeps over learning_rate and batch_size); each value checked later."""
    text = str(raw or "").strip()
    if not text:
        return [None]
    values = []
    for part in text.split(","):
        try:
            number = float(part)
            if kind is int and not number.is_integer():
                raise ValueError(part)
            values.append(kind(number))
        except (ValueError, OverflowError):
            errors.setdefault(name, []).append(f"Not a valid number: {part.strip()!r}.")
    if len(values) > MAX_SWEEP_JOBS:
        errors.setdefault(name, []).append(f"At most {MAX_SWEEP_JOBS} values in a sweep.")
        return [None]
    return values or [None]


def _parse_fields(form: dict[str, Any], errors: dict[str, list[str]]) -> dict[str, Any]:
    """Typed values of the declared fields present in the form (blank: the default)."""
    base: dict[str, Any] = {}
    for name, f in FIELDS.items():
        if name in SWEEP_FIELDS or name not in form:
            continue
        if str(form[name]).strip() == "" and not f.optional:
            continue
        value = coerce(name, form[name], f.type.__name__ + (" | None" if f.optional else ""), errors)
        if value is not None or f.optional:
            base[name] = value
    return base


def configs_from_form(
    form: dict[str, Any], store: Store, settings: Settings
) -> tuple[dict[str, Any], list[TrainConfig]]:
    """Validate the form; returns the common values (name, dataset...) and one config per sweep point.

    Every config passes the engine's own check (kiln.training.options.check_config), so a job is
    never created with a value training would refuse.
    """
    errors: dict[str, list[str]] = {}
    try:  # kiln's recipe fills in the fields the form leaves out (kiln.training.recipe)
        form = recipe.apply_to_form(form)
    except FieldError as exc:
        errors.setdefault(exc.field, []).append(exc.message)
    common = _common(form, store, errors)
    base = _parse_fields(form, errors)
    # the GPUs (or CPU processes) it asks for: kiln.jobs.gpus, checked against this machine's
    inventory = gpus.Inventory.detect(settings)
    common["resources"] = gpus.request_from_form(form, str(base.get("device") or "auto"), inventory, errors)
    chosen = network_choice(form, store, settings, errors)
    if chosen is not None:
        try:
            chosen.network.hints()  # parses the text: a syntax error is its field's, with its line
        except ValueError as exc:
            errors.setdefault(chosen.field, []).append(str(exc))
            chosen = None
    if chosen is not None:
        base.update(chosen.config_values())
        if common.get("dataset_spec"):
            _check_network(chosen, base, common, settings, store, errors)
    lrs = _list("learning_rate", form.get("learning_rate", "0.01"), float, errors)
    batches = _list("batch_size", form.get("batch_size", ""), int, errors)
    if len(lrs) * len(batches) > MAX_SWEEP_JOBS:
        errors.setdefault("learning_rate", []).append(
            f"A sweep creates at most {MAX_SWEEP_JOBS} jobs; this one asks for {len(lrs) * len(batches)}."
        )
        lrs, batches = lrs[:1], batches[:1]
    configs = []
    for lr, bs in itertools.product(lrs, batches):
        values = dict(base)
        if lr is not None:
            values["learning_rate"] = lr
        if chosen is not None:
            values["batch_size"] = bs if bs is not None else chosen.network.default_batch()
        config = TrainConfig.from_dict(values)
        for field, messages in field_errors(config).items():
            if field not in errors:
                errors[field] = messages
        configs.append(config)
    if errors:
        raise FormErrors(errors)
    common["sweep"] = [(lr, bs) for lr, bs in itertools.product(lrs, batches)] if len(configs) > 1 else []
    return common, configs


def _check_network(
    chosen: NetworkChoice,
    base: dict[str, Any],
    common: dict[str, Any],
    settings: Settings,
    store: Store,
    errors: dict[str, list[str]],
) -> None:
    """The network must build for the dataset's images (cropped as training will): line-exact errors."""
    num_classes, (channels, height, width) = dataset_shape(store.get_job(common["dataset_id"]), settings)
    config = TrainConfig.from_dict(base)
    network_crop = chosen.network.default_crop()
    try:
        crop = effective_crop(config.crop_size, network_crop, (height, width, channels))
    except ValueError as exc:
        errors.setdefault("crop_size", []).append(str(exc)[0].upper() + str(exc)[1:] + ".")
        return
    shape = (channels, crop or height, crop or width)
    try:
        chosen.network.check(num_classes, shape, allow_python=settings.allow_python_networks)
    except ValueError as exc:  # PrototxtError / PythonNetworkError: "line 42, column 3: ..."
        errors.setdefault(chosen.field, []).append(str(exc))


def _common(form: dict[str, Any], store: Store, errors: dict[str, list[str]]) -> dict[str, Any]:
    name = str(form.get("model_name", "")).strip()
    if not name:
        errors.setdefault("model_name", []).append("This field is required.")
    dataset_id = str(form.get("dataset", "")).strip()
    dataset = store.get_job(dataset_id) if dataset_id else None
    spec = None
    if dataset is None or dataset.type != "dataset":
        errors.setdefault("dataset", []).append(
            "Pick an existing dataset." if dataset_id else "This field is required."
        )
    elif dataset.status in ("Error", "Aborted", "Interrupted"):
        errors.setdefault("dataset", []).append(f"That dataset is {dataset.status}; restart it or pick another.")
    else:
        spec = dataset.params.get("spec", {})
    return {
        "model_name": name,
        "group_name": str(form.get("group_name", "")).strip(),
        "dataset_id": dataset_id,
        "dataset_spec": spec,
    }


def create_model_jobs(form: dict[str, Any], store: Store, settings: Settings, username: str) -> list[str]:
    """Validate and queue one model job per sweep point; raises FormErrors."""
    common, configs = configs_from_form(form, store, settings)
    ids = []
    for config, point in zip(configs, common["sweep"] or [None] * len(configs)):
        name = common["model_name"]
        if point:
            name += f" learning_rate:{config.learning_rate} batch_size:{config.batch_size}"
        params = {
            "config": config.to_dict(),
            "form": {k: v for k, v in form.items() if isinstance(v, str)},
            "dataset_spec": common["dataset_spec"],
            "resources": common["resources"].to_dict(),
        }
        ids.append(
            store.create_job(
                "model", name, params, username, group_name=common["group_name"], dataset_id=common["dataset_id"]
            )
        )
    return ids


# What "Use kiln's recipe" fills in on the New Model page, per standard network (kiln.training.recipe).
RECIPES: dict[str, dict[str, str]] = {net: recipe.form_values("kiln", net) for net in recipe.KILN_RECIPES}
