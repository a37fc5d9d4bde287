"""OpenAPI request bodies of the form routes, built from the declarations the forms are checked with.

The routes read ``request.form()`` themselves (DIGITS' field names, sweeps, uploads), so FastAPI
cannot infer their bodies; these functions describe them for /docs and schema-driven tests.
"""

from __future__ import annotations

import dataclasses
from typing import Any, get_type_hints

FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
_JSON_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}


def body(properties: dict[str, Any], required: list[str] | None = None, files: bool = False) -> dict[str, Any]:
    """``openapi_extra`` for a form route; ``files``: multipart only (it carries uploads)."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    kinds = FORM_TYPES[:1] if files else FORM_TYPES
    return {"requestBody": {"required": True, "content": {k: {"schema": schema} for k in kinds}}}


def model_form() -> dict[str, Any]:
    """The model form: every declared TrainConfig field plus DIGITS' job fields."""
    from kiln.jobs.gpus import FIELDS as GPU_FIELDS
    from kiln.jobs.network_choice import METHODS
    from kiln.networks.definition import LANGUAGES
    from kiln.networks.registry import list_networks
    from kiln.training.options import form_schema

    schema = form_schema(
        {
            "dataset": {"type": "string", "description": "dataset job id"},
            "model_name": {"type": "string"},
            "group_name": {"type": "string"},
            "method": {"type": "string", "enum": list(METHODS)},
            "standard_networks": {"type": "string", "enum": [n.name for n in list_networks()]},
            "custom_network": {"type": "string", "description": "a network text (method=custom)"},
            "network_language": {"type": "string", "enum": list(LANGUAGES)},
            "custom_network_snapshot": {"type": "string", "description": "<model id>[:<epoch>]: weights to start from"},
            "previous_networks": {"type": "string", "description": "a model id (method=previous)"},
            **{name: f.json_schema() for name, f in GPU_FIELDS.items()},
        }
    )
    return body(schema["properties"], ["dataset", "model_name"])


def dataset_form() -> dict[str, Any]:
    """The dataset form: DatasetSpec's fields (DIGITS' names), its choices, uploads for the lists."""
    from kiln.datasets.spec import ENCODINGS, METHODS, RESIZE_MODES, DatasetSpec
    from kiln.jobs.dataset_form import UPLOAD_FIELDS

    hints = get_type_hints(DatasetSpec)
    props: dict[str, Any] = {}
    for f in dataclasses.fields(DatasetSpec):
        kind = next((v for t, v in _JSON_TYPES.items() if hints[f.name] in (t, t | None)), "string")
        props[f.name] = {"type": kind}
    props["resize_mode"]["enum"] = list(RESIZE_MODES)
    props["encoding"]["enum"] = list(ENCODINGS)
    props["method"]["enum"] = list(METHODS)
    props["resize_channels"]["enum"] = [1, 3]
    for name in UPLOAD_FIELDS:  # a server path, or an uploaded file
        props[name] = {"oneOf": [{"type": "string"}, {"type": "string", "format": "binary"}]}
    return body(props, ["dataset_name"], files=True)


def classify_one() -> dict[str, Any]:
    props = {
        "job_id": {"type": "string"},
        "image_file": {"type": "string", "format": "binary"},
        "image_path": {"type": "string", "description": "a server path inside the data roots"},
        "snapshot_epoch": {"type": "string", "description": "an epoch, 'best', or blank for the latest"},
        "show_visualizations": {"type": "string", "description": "1: every layer's weights and activations, Grad-CAM"},
    }
    return body(props, ["job_id"], files=True)


def evaluate() -> dict[str, Any]:
    """An evaluation job: one source of images."""
    from kiln.jobs.evaluation_form import SPLITS

    props = {
        "job_id": {"type": "string", "description": "the model"},
        "split": {"type": "string", "enum": list(SPLITS), "description": "a split of the model's dataset"},
        "image_list": {"type": "string", "format": "binary", "description": "lines of `path [label index or name]`"},
        "image_archive": {"type": "string", "format": "binary", "description": "a zip of class folders"},
        "image_folder": {"type": "string", "description": "a server folder of class folders, or the list's prefix"},
        "num_test_images": {"type": "integer", "minimum": 1},
        "snapshot_epoch": {"type": "string", "description": "an epoch, 'best', or blank for the latest"},
    }
    return body(props, ["job_id"], files=True)


def classify_many() -> dict[str, Any]:
    props = {
        "job_id": {"type": "string"},
        "image_list": {"type": "string", "format": "binary", "description": "lines of `path [label]`"},
        "image_folder": {"type": "string", "description": "folder the list's relative paths start from"},
        "num_test_images": {"type": "integer", "minimum": 1},
        "snapshot_epoch": {"type": "string", "description": "an epoch, 'best', or blank for the latest"},
    }
    return body(props, ["job_id", "image_list"], files=True)


def lr_preview() -> dict[str, Any]:
    """DIGITS' visualize-lr: the LR policy fields and the learning rate(s)."""
    from kiln.training import lr_policy

    props = {name: f.json_schema() for name, f in lr_policy.FIELDS.items()}
    props["learning_rate"] = {"type": "string", "description": "one rate or a comma list"}
    return body(props)
