"""What the Visualize button and the model page show of a network: its layers and a drawing."""

from __future__ import annotations

import functools
from typing import Any

from kiln.config import Settings
from kiln.jobs.network_choice import ChoiceError, NetworkChoice, dataset_shape, network_choice
from kiln.networks.definition import CUSTOM, NetworkDef
from kiln.networks.python_network import layer_table
from kiln.preprocess import effective_crop
from kiln.store import Job, Store
from kiln.web import highlight
from kiln.web.network_svg import network_svg

ASSUMED_SHAPE = (3, 256, 256)  # DIGITS' default image size, when no dataset is chosen yet
ASSUMED_CLASSES = 10


@functools.lru_cache(maxsize=32)  # the model page asks again at every visit; GoogLeNet takes 0.2 s
def describe(network: NetworkDef, num_classes: int, shape: tuple[int, int, int], allow_python: bool) -> dict[str, Any]:
    """Layers (name, type, line, output shapes, parameters), their total, and an SVG drawing.

    Raises PrototxtError / PythonNetworkError (ValueErrors with the line) for a network that
    cannot be built for ``shape`` images.
    """
    summary = network.summary(num_classes, shape)
    if summary is not None:
        return {
            "name": summary.name or network.name,
            "num_classes": num_classes,
            "input_shape": list(shape),
            "layers": [row.as_dict() for row in summary.layers],
            "total_params": summary.total_params,
            "warnings": list(summary.warnings),
            "dropped": [list(d) for d in summary.dropped],
            "svg": network_svg(summary),
        }
    module = network.build(num_classes, shape, allow_python=allow_python)
    rows = layer_table(module, shape)
    return {
        "name": network.name,
        "num_classes": num_classes,
        "input_shape": list(shape),
        "layers": rows,
        "total_params": sum(p.numel() for p in module.parameters()),
        "warnings": [],
        "dropped": [],
        "svg": "",
    }


def visualize(form: dict[str, Any], store: Store, settings: Settings) -> dict[str, Any]:
    """DIGITS' visualize-network: ``custom_network`` (or ``standard_networks`` / ``previous_networks``
    with ``method``) for ``dataset_id``'s images, cropped by ``crop_size`` or the text's own crop.

    Raises ChoiceError for a form problem, ValueError (with a line) for a network that cannot work.
    """
    form = dict(form)
    if "method" not in form:
        form["method"] = "custom" if str(form.get("custom_network") or "").strip() else "standard"
    errors: dict[str, list[str]] = {}
    chosen: NetworkChoice | None = network_choice(form, store, settings, errors, weights=False)
    if chosen is None:
        field, messages = next(iter(errors.items()))
        raise ChoiceError(field, messages[0])
    dataset_id = str(form.get("dataset_id") or form.get("dataset") or "").strip()
    assumed = ""
    if dataset_id:
        dataset = store.get_job(dataset_id)
        if dataset is None or dataset.type != "dataset":
            raise ChoiceError("dataset_id", f"No dataset {dataset_id!r}.")
        num_classes, (channels, height, width) = dataset_shape(dataset, settings)
    else:
        num_classes, (channels, height, width) = ASSUMED_CLASSES, _assumed_shape(chosen.network)
        kind = "grey" if channels == 1 else "colour"
        assumed = f"No dataset chosen: shown for {width}x{height} {kind} images and {num_classes} classes."
    crop_text = str(form.get("crop_size") or "").strip()
    network_crop = chosen.network.default_crop()  # a broken text fails here, with its line
    try:
        crop_size = int(crop_text) if crop_text else None
        crop = effective_crop(crop_size, network_crop, (height, width, channels))
    except ValueError as exc:
        raise ChoiceError("crop_size", str(exc)) from None
    shape = (channels, crop or height, crop or width)
    out = dict(describe(chosen.network, num_classes, shape, settings.allow_python_networks))
    out["assumed"] = assumed
    return out


def _assumed_shape(network: NetworkDef) -> tuple[int, int, int]:
    """A standard network's intended size (LeNet 28x28 grey), else DIGITS' default 256x256 colour."""
    from kiln.networks.registry import get_network_info

    if network.name != CUSTOM:
        intended = get_network_info(network.name).intended_size
        if intended:
            height, width, channels = intended
            return channels, height, width
    return ASSUMED_SHAPE


def model_view(job: Job, store: Store, settings: Settings) -> dict[str, Any]:
    """The model page's network: its layers for the shape it trains on (the latest snapshot's, or the
    dataset's), its text highlighted, or ``{"error": ...}`` when it cannot be shown."""
    from kiln.training import checkpoint

    config = job.params.get("config", {})
    network = NetworkDef.of_dict(config)
    try:
        meta = checkpoint.read_meta(settings.jobs_dir / job.id)
        network = NetworkDef.of_meta(meta)
        num_classes, shape = int(meta["num_classes"]), (meta["in_channels"], meta["height"], meta["width"])
    except (FileNotFoundError, KeyError, ValueError):
        num_classes, (channels, height, width) = dataset_shape(store.get_job(job.dataset_id or ""), settings)
        try:
            crop = effective_crop(config.get("crop_size"), network.default_crop(), (height, width, channels))
        except ValueError as exc:
            return {"error": str(exc)}
        shape = (channels, crop or height, crop or width)
    try:
        view = dict(describe(network, num_classes, shape, settings.allow_python_networks))
    except ValueError as exc:
        return {"error": str(exc)}
    source = network.source
    view["text_file"] = network.text_file
    view["highlighted"] = highlight.highlighted(source, network.language) if source else ""
    return view
