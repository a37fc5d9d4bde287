"""Which network a model form asks for, in DIGITS' fields (reference 2.1 and 2.4).

``method`` is standard (``standard_networks``), custom (``custom_network``, the text, and
``network_language``), previous (``previous_networks`` = a model's id, its network, and
``<id>-snapshot`` = the epoch whose weights it starts from) or pretrained (``pretrained_networks`` =
a pretrained model's id: its network and weights).
Shared by the model form, the JSON API, ``kiln train --from`` and the Customize button.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kiln.config import Settings
from kiln.datasets import packed_format
from kiln.networks.definition import CUSTOM, LANGUAGES, MAX_TEXT_CHARS, NetworkDef
from kiln.store import PRETRAINED, Job, Store

METHODS = {
    "standard": "Standard networks",
    "previous": "Previous networks",
    "pretrained": "Pretrained networks",
    "custom": "Custom network",
}


class ChoiceError(ValueError):
    """A network choice that cannot be used, for one form field."""

    def __init__(self, field: str, message: str) -> None:
        self.field, self.message = field, message
        super().__init__(message)


@dataclass(frozen=True)
class NetworkChoice:
    network: NetworkDef
    field: str  # the form field that problems with this network belong to
    weights: str = ""  # a snapshot's .safetensors to start from; "" = fresh weights
    weights_from: str = ""  # "<job id> epoch <N>", for the log and the model page

    def config_values(self) -> dict[str, Any]:
        return {
            "network": self.network.name,
            "network_text": self.network.text,
            "network_language": self.network.language,
            "pretrained_weights": self.weights,
            "pretrained_from": self.weights_from,
        }


def network_choice(
    form: dict[str, Any], store: Store, settings: Settings, errors: dict[str, list[str]], weights: bool = True
) -> NetworkChoice | None:
    """The form's network, or None with the problem added to ``errors``; ``weights=False``: the
    network only (Visualize), without looking for the snapshot it would start from."""
    method = str(form.get("method") or "standard").strip()
    try:
        if method == "standard":
            return _standard(str(form.get("standard_networks") or form.get("network") or ""))
        if method == "custom":
            chosen = _custom(str(form.get("custom_network") or ""), str(form.get("network_language") or "prototxt"))
            start = str(form.get("custom_network_snapshot") or "").strip()
            if start and weights:
                job_id, _, epoch = start.partition(":")
                base = previous_network(store, settings, job_id.strip(), epoch, field="custom_network_snapshot")
                chosen = NetworkChoice(chosen.network, chosen.field, base.weights, base.weights_from)
            return chosen
        if method == "previous":
            job_id = str(form.get("previous_networks") or "").strip()
            snapshot = str(form.get(f"{job_id}-snapshot") or "") if weights else "0"
            return previous_network(store, settings, job_id, snapshot)
        if method == "pretrained":
            return pretrained_network(store, settings, str(form.get("pretrained_networks") or "").strip())
        raise ChoiceError("method", f"Pick one of: {', '.join(METHODS)}.")
    except ChoiceError as exc:
        errors.setdefault(exc.field, []).append(exc.message)
        return None


def _standard(name: str) -> NetworkChoice:
    from kiln.networks.registry import list_networks

    names = [n.name for n in list_networks()]
    if name not in names:
        raise ChoiceError("standard_networks", f"Pick one of: {', '.join(names)}.")
    return NetworkChoice(NetworkDef(name), "standard_networks")


def _custom(text: str, language: str) -> NetworkChoice:
    if language not in LANGUAGES:
        raise ChoiceError("network_language", f"Pick one of: {', '.join(LANGUAGES)}.")
    if not text.strip():
        raise ChoiceError("custom_network", "This field is required: paste or write a network.")
    if len(text) > MAX_TEXT_CHARS:
        raise ChoiceError("custom_network", f"At most {MAX_TEXT_CHARS:,} characters.")
    return NetworkChoice(NetworkDef(CUSTOM, text.replace("\r\n", "\n"), language), "custom_network")


def model_job(store: Store, job_id: str, field: str = "previous_networks", pretrained: bool = False) -> Job:
    """A model (or, with ``pretrained``, a pretrained model too) by id, or the field's error."""
    job = store.get_job(job_id) if job_id else None
    if job is None or job.type not in (("model", PRETRAINED) if pretrained else ("model",)):
        raise ChoiceError(field, f"No model {job_id!r}." if job_id else "Pick a previous model.")
    return job


def job_network(job: Job) -> NetworkDef:
    return NetworkDef.of_dict(job.params.get("config", {}))


def previous_network(
    store: Store, settings: Settings, job_id: str, snapshot: str = "", field: str = ""
) -> NetworkChoice:
    """A model's network, starting from its snapshot: "" the latest, "0" none (network only),
    "-1" the weights that model itself started from, "best", or an epoch (DIGITS' ``<id>-snapshot``)."""
    from kiln.training import checkpoint

    field = field or f"{job_id}-snapshot"
    # a pretrained model's id works here too (kiln train --from, the Custom tab's start)
    job = model_job(store, job_id, field if field == "custom_network_snapshot" else "previous_networks", True)
    network = job_network(job)
    snapshot = snapshot.strip().lower()
    if snapshot == "0":
        return NetworkChoice(network, "previous_networks")
    if snapshot == "-1":
        config = job.params.get("config", {})
        if not config.get("pretrained_weights"):
            raise ChoiceError(field, f"Model {job_id} did not start from other weights; pick an epoch.")
        return NetworkChoice(
            network, "previous_networks", config["pretrained_weights"], config.get("pretrained_from", "")
        )
    job_dir = settings.jobs_dir / job.id
    try:
        key: float | str = "best" if snapshot == "best" else checkpoint.resolve_epoch(job_dir, snapshot or None)
    except (FileNotFoundError, ValueError) as exc:
        raise ChoiceError(
            field, f"{exc}." if isinstance(exc, FileNotFoundError) else f"Not an epoch: {snapshot!r}."
        ) from None
    weights, meta = checkpoint.snapshot_paths(job_dir, key)
    if not meta.exists():
        raise ChoiceError(field, f"Model {job_id} has no {key} snapshot.")
    label = f"{job.name} ({job.id}) epoch {checkpoint.format_epoch(key) if isinstance(key, float) else key}"
    return NetworkChoice(network, "previous_networks", str(weights), label)


def pretrained_network(store: Store, settings: Settings, job_id: str) -> NetworkChoice:
    """A pretrained model's network, starting from its weights."""
    from kiln.training import checkpoint

    job = store.get_job(job_id) if job_id else None
    if job is None or job.type != PRETRAINED:
        raise ChoiceError(
            "pretrained_networks", f"No pretrained model {job_id!r}." if job_id else "Pick a pretrained model."
        )
    try:
        meta = checkpoint.read_meta(settings.jobs_dir / job.id)
    except (FileNotFoundError, ValueError):
        raise ChoiceError("pretrained_networks", f"Pretrained model {job.name!r} has lost its files.") from None
    return NetworkChoice(
        NetworkDef.of_meta(meta), "pretrained_networks", meta["weights_path"], f"pretrained {job.name} ({job.id})"
    )


def dataset_shape(dataset: Job | None, settings: Settings) -> tuple[int, tuple[int, int, int]]:
    """(classes, (channels, height, width)) of a dataset's images, before it has finished too.

    The class count comes from labels.txt once the dataset has written it; until then 2, which
    only an InnerProduct without num_output depends on.
    """
    spec = dataset.params.get("spec", {}) if dataset else {}
    shape = (
        int(spec.get("resize_channels", 3)),
        int(spec.get("resize_height", 256)),
        int(spec.get("resize_width", 256)),
    )
    num_classes = 2
    if dataset is not None:
        labels = packed_format.PackedFiles(settings.jobs_dir / dataset.id).labels_txt
        if labels.is_file():
            num_classes = max(1, sum(1 for line in labels.read_text(encoding="utf-8").splitlines() if line.strip()))
    return num_classes, shape
