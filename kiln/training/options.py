"""Every TrainConfig field a user sets, declared once, and the one check of a whole config.

Solvers, LR policies, augmentations, class balancing, kiln's recipe and mean modes are declared
beside the code that implements them (solvers.py, lr_policy.py, augment.py, balance.py, recipe.py,
kiln/preprocess.py); the train loop's own settings
(epochs, intervals, stopping, device) are declared here. The model form, its template, `kiln
train`, the OpenAPI description and docs/api.md read FIELDS; :func:`check_config` runs at job
creation and again when training starts, so a job is never created with a value the engine refuses.
"""

from __future__ import annotations

import re
from typing import Any

from kiln import preprocess
from kiln.fields import Field, FieldError
from kiln.training import augment, balance, lr_policy, recipe, solvers
from kiln.training.config import TrainConfig

EARLY_STOPPING = {"none": "Off", "val_loss": "On validation loss", "val_accuracy": "On validation accuracy"}
DEVICES = {"auto": "Automatic (GPU if there is one)", "cpu": "CPU", "cuda": "GPU"}
PRECISIONS = {"auto": "Automatic (mixed precision on GPU)", "fp32": "fp32", "bf16": "bf16", "fp16": "fp16"}
MAX_EPOCHS = 100_000
MAX_BATCH = 65_536


def _device_problem(value: str) -> str | None:
    ok = value in DEVICES or re.fullmatch(r"cuda(:\d+(,\d+)*)?", value)
    return None if ok else "Use auto, cpu, cuda or cuda:0,1."


_LOOP_FIELDS = (
    Field(
        "train_epochs",
        "Training epochs",
        float,
        "training epochs (fractions allowed)",
        low=0,
        low_open=True,
        high=MAX_EPOCHS,
    ),
    Field(
        "snapshot_interval",
        "Snapshot interval (epochs)",
        float,
        "epochs between snapshots; 0: only the last",
        low=0,
        high=MAX_EPOCHS,
    ),
    Field(
        "val_interval",
        "Validation interval (epochs)",
        float,
        "epochs between validations; 0: none",
        low=0,
        high=MAX_EPOCHS,
    ),
    Field("random_seed", "Random seed", int, "random seed (blank: random)", low=0, high=2**32 - 1, optional=True),
    Field(
        "batch_size",
        "Batch size",
        int,
        "images per batch (blank: the network's default)",
        low=1,
        high=MAX_BATCH,
        optional=True,
    ),
    Field("batch_accumulation", "Batch accumulation", int, "batches per optimizer step", low=1, high=1024),
    Field("shuffle", "Shuffle train data", bool, "shuffle the training images every epoch"),
    Field(
        "early_stopping",
        "Early stopping",
        str,
        "stop when the validation metric stops improving",
        choices=EARLY_STOPPING,
    ),
    Field(
        "early_stopping_patience", "Patience (validations)", int, "validations without improvement", low=1, high=100_000
    ),
    Field("keep_best", "Keep the best snapshot", bool, "also keep the snapshot with the best val accuracy"),
    Field("device", "Device", str, "auto, cpu, cuda or cuda:0,1", choices=None, extra_check=_device_problem),
    Field("precision", "Precision", str, "autocast precision on GPU", choices=PRECISIONS),
    Field(
        "channels_last",
        "channels_last memory",
        bool,
        "network and input in channels_last memory (GPU tensor cores, CPU oneDNN); off: plain NCHW",
    ),
)

FIELDS: dict[str, Field] = {
    **recipe.FIELDS,
    **{f.name: f for f in _LOOP_FIELDS[:6]},
    **solvers.FIELDS,
    **lr_policy.FIELDS,
    **{f.name: f for f in _LOOP_FIELDS[6:7]},
    **balance.FIELDS,
    **{f.name: f for f in _LOOP_FIELDS[7:10]},
    **preprocess.FIELDS,
    **augment.FIELDS,
    **{f.name: f for f in _LOOP_FIELDS[10:]},
}
# TrainConfig fields the form's network choice sets (kiln.jobs.network_choice: method,
# standard_networks, custom_network, previous_networks...), not form fields of their own.
NETWORK_FIELDS = ("network", "network_text", "network_language", "pretrained_weights", "pretrained_from")
# Fields that take a comma list on the form: one job per value (DIGITS' sweeps).
SWEEP_FIELDS = ("learning_rate", "batch_size")


def check_config(config: TrainConfig) -> None:
    """Raise FieldError for the first value the engine would refuse."""
    for name, f in FIELDS.items():
        f.check(getattr(config, name))
    solvers.check_solver(config)
    lr_policy.check_policy(config)
    augment.check_augmentations(config)


def field_errors(config: TrainConfig) -> dict[str, list[str]]:
    """Every refused field of a config, for a form (one message per field)."""
    errors: dict[str, list[str]] = {}
    for name, f in FIELDS.items():
        try:
            f.check(getattr(config, name))
        except FieldError as exc:
            errors.setdefault(exc.field, []).append(exc.message)
    if not errors:
        try:
            check_config(config)
        except FieldError as exc:
            errors.setdefault(exc.field, []).append(exc.message)
    return errors


def form_schema(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The model form as a JSON Schema object, for the OpenAPI description."""
    props = {name: f.json_schema() for name, f in FIELDS.items()}
    for name in SWEEP_FIELDS:  # a comma list sweeps, so the form field is text
        props[name] = {
            **props[name],
            "type": "string",
            "description": props[name]["description"] + "; a comma list creates one job per value",
        }
    props.update(extra or {})
    return {"type": "object", "properties": props}
