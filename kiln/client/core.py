"""kiln.client.Client: kiln's JSON API from Python (notebooks, scripts), over HTTP with httpx.

It talks to kiln as any API client does: ``Accept: application/json``, no Origin or Referer (so the
server's cross-site and CSRF checks, which are for browsers, do not apply), a session cookie from
``login`` or an API token. Every refusal raises a KilnError subclass with the server's message.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import httpx

from kiln.client import images as img
from kiln.client.errors import Busy, JobFailed, KilnError, Unreachable, WaitTimeout, error_for
from kiln.client.progress import make_bar
from kiln.client.tables import csv_rows, metric_rows, table

DEFAULT_URL = "http://127.0.0.1:5000"
FINISHED = ("Done", "Error", "Aborted", "Interrupted")
FAILED = ("Error", "Aborted", "Interrupted")
LIST_UPLOADS = ("textfile_train_images", "textfile_val_images", "textfile_test_images", "textfile_labels_file")
ARCHIVES = ("tar.gz", "tgz", "tar", "tar.bz2", "zip")
EXPORTS = {"onnx": "onnx", "torchscript": "pt", "pt": "pt"}
FORMS = {
    "model": "/models/images/classification.json",
    "dataset": "/datasets/images/classification.json",
    "evaluate": "/models/images/classification/evaluate.json",
}
Table = Any  # a pandas.DataFrame when pandas is installed, else a list of dicts


@dataclass(frozen=True)
class Job:
    """A job kiln created (dataset, model or evaluation); ``status`` is as it was when created.
    Any method taking a job takes this or its id."""

    id: str
    name: str = ""
    status: str = ""
    type: str = ""
    data: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __str__(self) -> str:
        return self.id


JobRef = str | Job


class Prediction(NamedTuple):
    """One guess: the label and the network's confidence in percent; prints as ``8 : 99.69 %``."""

    label: str
    confidence: float

    def __str__(self) -> str:
        return f"{self.label} : {self.confidence:.2f} %"


class Predictions(list[Prediction]):
    """The top-5 for one image, most confident first; ``epoch`` is the snapshot that answered."""

    def __init__(self, predictions: Iterable[Prediction], epoch: float | None = None) -> None:
        super().__init__(predictions)
        self.epoch = epoch

    @property
    def label(self) -> str:
        """The most confident label."""
        return self[0].label

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self)


def _id(job: JobRef) -> str:
    return job.id if isinstance(job, Job) else str(job)


def _form_value(value: Any) -> str:
    """A Python value as kiln's form text: booleans true/false, lists comma-joined, None blank."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_form_value(v) for v in value)
    return str(value)


def _form(fields: Mapping[str, Any]) -> dict[str, str]:
    """Form fields to send (None leaves a field out: the server's default)."""
    return {k: _form_value(v) for k, v in fields.items() if v is not None}


class Client:
    """A connection to one kiln server.

    ``url`` defaults to ``$KILN_URL``, else http://127.0.0.1:5000. ``token`` (default
    ``$KILN_TOKEN``) is an API token sent on every request; or pass ``username`` (and ``password``
    with accounts) to log in at once, or call :meth:`login`. ``progress`` turns the progress bars of
    waits on or off by default; ``retries`` is how often a 503 (server busy) is retried.

    >>> kiln = Client()
    >>> kiln.login("fred")
    >>> ds = kiln.create_dataset("digits", "/data/mnist/train", resize_channels=1, resize_width=28,
    ...                          resize_height=28, wait=True)
    >>> model = kiln.create_model("lenet", ds, "lenet", train_epochs=10, wait=True)
    >>> print(kiln.classify(model, "seven.png"))
    7 : 99.98 %
    ...
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 300.0,
        progress: bool = True,
        retries: int = 5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("KILN_URL") or DEFAULT_URL).rstrip("/")
        token = token if token is not None else os.environ.get("KILN_TOKEN") or None
        headers = {"Accept": "application/json", "User-Agent": "kiln.client"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.progress = progress
        self.retries = retries
        self._openapi: dict[str, Any] | None = None
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            follow_redirects=False,
            transport=transport,
        )
        if username:
            self.login(username, password)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Closes the connection pool (the session stays valid on the server until logout)."""
        self._http.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- HTTP -------------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        data: Mapping[str, Any] | None = None,
        files: Mapping[str, tuple[str, bytes]] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> httpx.Response:
        """One request to ``path`` (``/index.json``...), retried while the server answers 503 (busy);
        any other 4xx/5xx raises its KilnError. The low-level door to routes without a method here."""
        body = _form(data or {})
        for attempt in range(self.retries + 1):
            try:
                response = self._http.request(
                    method,
                    path,
                    data=body or None,
                    files=dict(files) if files else None,
                    params={k: _form_value(v) for k, v in (params or {}).items() if v is not None} or None,
                )
            except httpx.TransportError as exc:
                raise Unreachable(f"No answer from kiln at {self.url}{path}: {exc}. Is `kiln serve` running?") from exc
            if response.status_code != 503 or attempt == self.retries:
                break
            time.sleep(min(_retry_after(response), 5.0))
        if response.status_code >= 400:
            error = error_for(response.status_code, response.content, response.headers.get("content-type", ""))
            if isinstance(error, Busy):
                message = f"{error.message} (retried {self.retries} times)"
                error = Busy(message, error.status, error.errors, error.kind, error.detail)
            raise error
        if response.is_redirect:
            raise KilnError(f"{method} {path} answered a redirect to {response.headers.get('location')}", 302)
        return response

    def get_json(self, path: str, **params: Any) -> Any:
        """GET ``path`` and return its JSON."""
        return self.request("GET", path, params=params).json()

    def post_json(self, path: str, data: Mapping[str, Any] | None = None, **kw: Any) -> Any:
        """POST form fields to ``path`` and return the JSON answer."""
        return self.request("POST", path, data=data, **kw).json()

    # -- logging in -------------------------------------------------------------------------------
    def login(self, username: str, password: str | None = None) -> dict[str, Any]:
        """Log in (a username alone on a loopback kiln, as DIGITS; with accounts, the password too):
        the session cookie is kept for every later request. Returns ``{"username", "is_admin"}``."""
        return self.post_json("/login", {"username": username, "password": password})

    def logout(self) -> None:
        """End the session on the server."""
        self.request("POST", "/logout")
        self._http.cookies.clear()

    def account(self) -> dict[str, Any]:
        """Who this client is, and its API tokens: ``{"user", "tokens"}``."""
        return self.get_json("/account")

    def create_token(self, label: str = "") -> dict[str, Any]:
        """A new API token for the logged-in account: ``{"id", "token", "label"}``; the token is
        shown only this once (``Client(url, token=...)`` or ``$KILN_TOKEN`` uses it)."""
        return self.post_json("/account/tokens", {"label": label})

    def revoke_token(self, token_id: int) -> None:
        """Revoke one of your API tokens by its id."""
        self.request("DELETE", f"/account/tokens/{int(token_id)}")

    # -- what is there ----------------------------------------------------------------------------
    def index(self) -> dict[str, Any]:
        """DIGITS' /index.json: ``{version, jobs_dir, datasets, models}``."""
        return self.get_json("/index.json")

    def jobs(self, type: str | None = None, *, as_frame: bool | None = None) -> Table:
        """Every job (``type``: dataset, model or evaluation) as home-page rows: id, name, status,
        progress (%), elapsed, and for models their last/min/max metrics. Running jobs first."""
        data = self.get_json("/completed_jobs.json")
        rows = [*data["running"], *data["datasets"], *data["models"], *data.get("evaluations", [])]
        if type:
            rows = [r for r in rows if r.get("type") == type]
        return table(rows, as_frame=as_frame)

    def form_fields(self, form: str = "model") -> dict[str, dict[str, Any]]:
        """The fields a form of this server takes (``model``, ``dataset`` or ``evaluate``), from its
        OpenAPI description: name -> JSON schema (type, choices as ``enum``, description). Tells
        what a server offers before using it: ``"recipe" in kiln.form_fields("model")``."""
        if form not in FORMS:
            raise ValueError(f"form: one of {', '.join(FORMS)}, not {form!r}")
        if self._openapi is None:
            self._openapi = self.get_json("/openapi.json")
        content = self._openapi["paths"][FORMS[form]]["post"]["requestBody"]["content"]
        return dict(content["multipart/form-data"]["schema"]["properties"])

    # -- datasets ---------------------------------------------------------------------------------
    def create_dataset(
        self,
        name: str,
        folder: str | None = None,
        *,
        val_folder: str | None = None,
        test_folder: str | None = None,
        group: str | None = None,
        wait: bool = False,
        progress: bool | None = None,
        **fields: Any,
    ) -> Job:
        """A new image classification dataset from a server folder of class folders (``folder``,
        optional ``val_folder`` / ``test_folder``) or text lists.

        Every field of DIGITS' dataset form passes through as a keyword: ``resize_channels=1,
        resize_width=28, resize_height=28, folder_pct_val=25, folder_train_max_per_class=100,
        encoding="png", add_inverted=True, resize_mode="crop"`` ... (docs/api.md). The text-list
        fields (``textfile_train_images``...) take a server path (str), or bytes or a local
        ``pathlib.Path`` to upload. ``wait=True`` waits for the job to finish (JobFailed if it does not)."""
        values: dict[str, Any] = {"dataset_name": name, "group_name": group, **fields}
        if folder is not None:
            values["folder_train"] = folder
        if val_folder is not None:
            values.update(has_val_folder=True, folder_val=val_folder)
        if test_folder is not None:
            values.update(has_test_folder=True, folder_test=test_folder)
        files = {}
        for key in LIST_UPLOADS:
            value = values.get(key)
            if isinstance(value, (bytes, bytearray, Path)):
                files[key] = (f"{key}.txt", bytes(value) if not isinstance(value, Path) else value.read_bytes())
                del values[key]
        if "method" not in values and any(k.startswith("textfile_") for k in [*values, *files]):
            values["method"] = "textfile"
        answer = self.post_json("/datasets/images/classification.json", values, files=files or None)
        job = Job(answer["id"], answer.get("name", name), answer.get("status", ""), "dataset", answer)
        if wait:
            self.wait(job, progress=progress)
        return job

    def dataset(self, dataset: JobRef) -> dict[str, Any]:
        """A dataset's status, labels, counts per split (``ParseFolderTasks``) and image details."""
        return self.get_json(f"/datasets/{quote(_id(dataset))}.json")

    def dataset_image(self, dataset: JobRef, split: str, index: int) -> bytes:
        """One stored image of a finished dataset as PNG bytes (``split``: train, val or test)."""
        return self.request("GET", f"/datasets/{quote(_id(dataset))}/images/{quote(split)}/{int(index)}.png").content

    # -- models -----------------------------------------------------------------------------------
    def create_model(
        self,
        name: str,
        dataset: JobRef,
        network: str | None = "lenet",
        *,
        custom_network: str | None = None,
        network_language: str | None = None,
        start_from: str | None = None,
        previous: JobRef | None = None,
        previous_epoch: float | str | None = None,
        group: str | None = None,
        wait: bool = False,
        progress: bool | None = None,
        **fields: Any,
    ) -> Job:
        """A new model: ``network`` a standard network (lenet, alexnet, googlenet, resnet18...), or
        ``custom_network`` a network text (``network_language`` prototxt or python; ``start_from``
        ``"<model id>[:<epoch>]"`` for its weights), or ``previous`` a model whose network and weights
        (``previous_epoch``: an epoch, blank the latest, 0 none, ``best``) to start from.

        Every model form field passes through (docs/api.md, "Model form fields"): ``train_epochs=10,
        learning_rate=0.01, solver_type="ADAM", lr_policy="cosine", batch_size=64, random_seed=1,
        aug_invert=0.5, method="custom"``... A comma list (a sweep) makes several jobs: use
        :meth:`create_models` for that. ``wait=True`` waits for training (and its test evaluation)."""
        for sweep in ("learning_rate", "batch_size"):
            value = fields.get(sweep)
            several = len(value) > 1 if isinstance(value, (list, tuple)) else "," in str(value or "")
            if several:
                raise ValueError(f"{sweep}: several values make several models; use create_models for a sweep")
        return self.create_models(
            name,
            dataset,
            network,
            custom_network=custom_network,
            network_language=network_language,
            start_from=start_from,
            previous=previous,
            previous_epoch=previous_epoch,
            group=group,
            wait=wait,
            progress=progress,
            **fields,
        )[0]

    def create_models(
        self,
        name: str,
        dataset: JobRef,
        network: str | None = "lenet",
        *,
        custom_network: str | None = None,
        network_language: str | None = None,
        start_from: str | None = None,
        previous: JobRef | None = None,
        previous_epoch: float | str | None = None,
        group: str | None = None,
        wait: bool = False,
        progress: bool | None = None,
        **fields: Any,
    ) -> list[Job]:
        """As :meth:`create_model`, for sweeps: ``learning_rate=[0.01, 0.001]`` or
        ``batch_size="32,64"`` make one job per combination; returns them all."""
        values: dict[str, Any] = {"model_name": name, "dataset": _id(dataset), "group_name": group}
        if custom_network is not None:
            values.update(method="custom", custom_network=custom_network, network_language=network_language)
            values["custom_network_snapshot"] = start_from
        elif previous is not None:
            values.update(method="previous", previous_networks=_id(previous))
            values[f"{_id(previous)}-snapshot"] = "" if previous_epoch is None else previous_epoch
        else:
            values.update(method="standard", standard_networks=network)
        values.update(fields)
        answer = self.post_json("/models/images/classification.json", values)
        dicts = answer.get("jobs", [answer])
        jobs = [Job(d["id"], d.get("name", name), d.get("status", ""), "model", d) for d in dicts]
        if wait:
            for job in jobs:
                self.wait(job, progress=progress)
        return jobs

    def model(self, model: JobRef) -> dict[str, Any]:
        """A model's details (DIGITS' keys), its snapshots, and its test accuracy when evaluated."""
        return self.get_json(f"/models/{quote(_id(model))}.json")

    def metrics(self, model: JobRef, *, as_frame: bool | None = None) -> Table:
        """A model's measurements as a table, one row per epoch at which anything was measured:
        ``epoch``, ``loss (train)``, ``loss (val)``, ``accuracy (val)`` (in %), ``lr``...; blank
        (None/NaN) where a series was not measured at that epoch."""
        data = self.get_json(f"/models/{quote(_id(model))}/metrics.json")
        rows = metric_rows(data.get("series", {}))
        return table(rows, ["epoch", *data.get("series", {})], as_frame=as_frame)

    def best_epoch(self, model: JobRef) -> dict[str, Any] | None:
        """``{"epoch", "accuracy"}`` of the best validation accuracy so far, or None."""
        return self.get_json(f"/models/{quote(_id(model))}/metrics.json").get("best")

    def customize(self, network: JobRef, snapshot_epoch: float | str | None = None) -> str:
        """The network text of a standard network (``"lenet"``) or of a model, to edit and pass to
        :meth:`create_model` as ``custom_network``."""
        answer = self.post_json("/models/customize.json", {"network": _id(network), "snapshot_epoch": snapshot_epoch})
        return str(answer["network"])

    def visualize_network(
        self,
        dataset: JobRef,
        custom_network: str | None = None,
        *,
        network: str | None = None,
        network_language: str = "prototxt",
        crop_size: int | None = None,
    ) -> dict[str, Any]:
        """Every layer of a network text (or a standard ``network``) for a dataset's images: output
        shapes, parameters, warnings. A text that cannot work raises BadRequest naming its line."""
        values = {
            "dataset_id": _id(dataset),
            "custom_network": custom_network,
            "standard_networks": network,
            "network_language": network_language,
            "crop_size": crop_size,
        }
        return self.post_json("/models/visualize-network.json", values)

    def compare(self, models: Sequence[JobRef]) -> dict[str, Any]:
        """Models side by side (``/models/compare.json``): ``{"models": [...]}`` with each one's
        curves, configuration, final and best metrics and test accuracy."""
        return self.get_json("/models/compare.json", ids=",".join(_id(m) for m in models))

    # -- classifying ------------------------------------------------------------------------------
    def classify_one(
        self,
        model: JobRef,
        image: img.ImageLike | None = None,
        *,
        image_path: str | None = None,
        snapshot_epoch: float | str | None = None,
        visualizations: bool = False,
    ) -> dict[str, Any]:
        """DIGITS' classify_one.json as it answers: ``{"predictions": [[label, pct]...],
        "snapshot_epoch"}``, with ``visualizations=True`` also every layer's activations and weights
        and a Grad-CAM. ``image``: a local file, bytes, a PIL image or a uint8 array; or
        ``image_path``, a file on the server."""
        values = {
            "job_id": _id(model),
            "snapshot_epoch": snapshot_epoch,
            "image_path": image_path,
            "show_visualizations": "1" if visualizations else None,
        }
        files = {"image_file": img.image_bytes(image)} if image is not None else None
        return self.post_json("/models/images/classification/classify_one.json", values, files=files)

    def classify(
        self, model: JobRef, image: img.ImageLike, *, snapshot_epoch: float | str | None = None
    ) -> Predictions:
        """The top-5 for one image (a local file, bytes, a PIL image or a uint8 array)."""
        answer = self.classify_one(model, image, snapshot_epoch=snapshot_epoch)
        return _predictions(answer)

    def classify_all(
        self, model: JobRef, images: Iterable[img.ImageLike], *, snapshot_epoch: float | str | None = None
    ) -> list[Predictions]:
        """The top-5 of each image, one request each (for thousands, see :meth:`evaluate`)."""
        return [self.classify(model, image, snapshot_epoch=snapshot_epoch) for image in images]

    def classify_many(
        self,
        model: JobRef,
        image_list: Iterable[str | tuple[str, Any]] | bytes,
        *,
        image_folder: str | None = None,
        num_test_images: int | None = None,
        snapshot_epoch: float | str | None = None,
    ) -> dict[str, Any]:
        """DIGITS' classify_many.json over images on the server: ``image_list`` holds their paths
        (relative to ``image_folder`` when given), each optionally with its label (index or name) as
        ``(path, label)``; or the list file's bytes. Answers ``{"classifications": {path: top5}}``
        and, with labels, ``top1_accuracy``, ``top5_accuracy``, ``confusion_matrix``, ``per_class``."""
        if isinstance(image_list, (bytes, bytearray)):
            text = bytes(image_list)
        else:
            lines = [item if isinstance(item, str) else f"{item[0]} {item[1]}" for item in image_list]
            text = "".join(f"{line}\n" for line in lines).encode()
        values = {
            "job_id": _id(model),
            "image_folder": image_folder,
            "num_test_images": num_test_images,
            "snapshot_epoch": snapshot_epoch,
        }
        files = {"image_list": ("images.txt", text)}
        return self.post_json("/models/images/classification/classify_many.json", values, files=files)

    # -- evaluating -------------------------------------------------------------------------------
    def evaluate(
        self,
        model: JobRef,
        *,
        split: str | None = None,
        images: Iterable[img.LabelledImage] | Mapping[str, Sequence[img.ImageLike]] | None = None,
        image_list: bytes | str | None = None,
        image_folder: str | None = None,
        archive: bytes | Path | None = None,
        snapshot_epoch: float | str | None = None,
        num_test_images: int | None = None,
        wait: bool = True,
        progress: bool | None = None,
    ) -> dict[str, Any]:
        """An evaluation job of a model on one source: a ``split`` of its dataset (val, test, train);
        labelled local ``images`` (``[(image, label[, name]), ...]`` or ``{label: [image, ...]}``,
        sent as a zip of class folders); an ``image_list`` (``path [label]`` lines, relative to
        ``image_folder`` on the server); a server ``image_folder`` of class folders alone; or a zip
        ``archive`` of class folders. With ``wait`` (the default) returns the finished evaluation:
        ``top1_accuracy``, ``top5_accuracy``, ``confusion_matrix``, ``per_class``, ``worst``...;
        else ``{"id", "status"}`` at once."""
        values = {
            "job_id": _id(model),
            "split": split,
            "image_folder": image_folder,
            "snapshot_epoch": snapshot_epoch,
            "num_test_images": num_test_images,
        }
        files: dict[str, tuple[str, bytes]] = {}
        if images is not None:
            files["image_archive"] = ("images.zip", img.labelled_zip(images))
        if archive is not None:
            files["image_archive"] = ("images.zip", archive.read_bytes() if isinstance(archive, Path) else archive)
        if image_list is not None:
            files["image_list"] = ("images.txt", image_list.encode() if isinstance(image_list, str) else image_list)
        answer = self.post_json("/models/images/classification/evaluate.json", values, files=files or None)
        if not wait:
            return answer
        self.wait(answer["id"], progress=progress)
        return self.evaluation(answer["id"])

    def evaluation(self, evaluation: JobRef) -> dict[str, Any]:
        """An evaluation's status and, once Done, its results."""
        return self.get_json(f"/evaluations/{quote(_id(evaluation))}.json")

    def evaluation_table(self, evaluation: JobRef, *, as_frame: bool | None = None) -> Table:
        """Every evaluated image's row: ``image`` (``label/name`` for uploaded images), ``truth``,
        ``top1``..``top5`` and ``top1_percent``..``top5_percent``."""
        text = self.request("GET", f"/evaluations/{quote(_id(evaluation))}/classifications.csv").text
        return table(csv_rows(text), as_frame=as_frame)

    def evaluations(self, model: JobRef) -> list[dict[str, Any]]:
        """A model's evaluations, newest first, with their accuracy."""
        return list(self.get_json(f"/models/{quote(_id(model))}/evaluations.json")["evaluations"])

    # -- models out -------------------------------------------------------------------------------
    def download(
        self, model: JobRef, path: str | Path | None = None, *, format: str = "tar.gz", epoch: float | str | None = None
    ) -> Path:
        """The model at ``epoch`` (a number, ``"best"``, None for the latest) as an archive
        (tar.gz, tgz, tar, tar.bz2, zip: info.json, labels, network, weights, ONNX, TorchScript,
        predict.py). ``path``: a file, or a folder to save under the server's name (default: here)."""
        if format not in ARCHIVES:
            raise ValueError(f"format: one of {', '.join(ARCHIVES)}, not {format!r}")
        return self._save(f"/models/{quote(_id(model))}/download.{format}", path, epoch)

    def export(
        self, model: JobRef, path: str | Path | None = None, *, format: str = "onnx", epoch: float | str | None = None
    ) -> Path:
        """The network at ``epoch`` as ONNX (``format="onnx"``) or TorchScript (``"torchscript"``),
        checked by the server against the model before sending. ``path`` as for :meth:`download`."""
        if format not in EXPORTS:
            raise ValueError(f"format: onnx or torchscript, not {format!r}")
        return self._save(f"/models/{quote(_id(model))}/export.{EXPORTS[format]}", path, epoch)

    def _save(self, route: str, path: str | Path | None, epoch: float | str | None) -> Path:
        response = self.request("GET", route, params={"epoch": epoch})
        target = Path(path) if path is not None else Path.cwd()
        if target.is_dir():
            target = target / _attachment_name(response, Path(route).name)
        partial = target.with_name(f".{target.name}.part")
        partial.write_bytes(response.content)
        partial.replace(target)  # never a half-written file under the real name
        return target

    # -- jobs -------------------------------------------------------------------------------------
    def status(self, job: JobRef) -> dict[str, Any]:
        """``{status, type, name, error, progress}`` (progress from 0 to 1)."""
        return self.get_json(f"/jobs/{quote(_id(job))}/status")

    def state(self, job: JobRef) -> dict[str, Any]:
        """Status history, progress, message, elapsed time and ETA."""
        return self.get_json(f"/jobs/{quote(_id(job))}/state.json")

    def log(self, job: JobRef, limit: int = 200) -> list[Any]:
        """The last lines of a job's log."""
        return list(self.get_json(f"/jobs/{quote(_id(job))}/log.json", limit=limit)["lines"])

    def wait(
        self,
        job: JobRef,
        *,
        timeout: float | None = None,
        progress: bool | None = None,
        poll: float = 0.5,
        check: bool = True,
    ) -> dict[str, Any]:
        """Wait until a job ends, with a progress bar (``progress``, default the client's); returns
        its last status. ``check``: raise JobFailed when it ends in Error, Aborted or Interrupted
        (with the job's own error message); WaitTimeout after ``timeout`` seconds."""
        job_id = _id(job)
        deadline = None if timeout is None else time.monotonic() + timeout
        status = self.status(job_id)
        bar = make_bar(f"{status.get('name') or job_id}", self.progress if progress is None else progress)
        try:
            while True:
                bar.update(float(status.get("progress") or 0.0), str(status.get("status", "")))
                if status.get("status") in FINISHED:
                    break
                if deadline is not None and time.monotonic() > deadline:
                    raise WaitTimeout(f"Job {job_id} is still {status.get('status')} after {timeout:g} s.")
                time.sleep(poll)
                status = self.status(job_id)
        finally:
            bar.close()
        if check and status.get("status") in FAILED:
            why = f": {status['error']}" if status.get("error") else ""
            raise JobFailed(f"Job {job_id} ({status.get('name')}) ended {status['status']}{why}", status)
        return status

    def abort(self, job: JobRef) -> None:
        """Stop a running job (its worker gets SIGTERM, then SIGKILL)."""
        self.request("POST", f"/jobs/{quote(_id(job))}/abort")

    def resume(self, job: JobRef) -> None:
        """Start an Aborted, Interrupted or failed job again (a model from its last snapshot)."""
        self.request("POST", f"/jobs/{quote(_id(job))}/resume")

    def delete(self, job: JobRef) -> None:
        """Delete a job and its folder (a running one is aborted first; a dataset models use is not)."""
        self.request("DELETE", f"/jobs/{quote(_id(job))}")

    def edit(self, job: JobRef, *, name: str | None = None, notes: str | None = None, group: str | None = None) -> None:
        """Rename a job, set its notes or its group (fields left None stay as they are)."""
        self.request(
            "PUT", f"/jobs/{quote(_id(job))}", data={"job_name": name, "job_notes": notes, "group_name": group}
        )


def _predictions(answer: dict[str, Any]) -> Predictions:
    return Predictions(
        (Prediction(str(label), float(pct)) for label, pct in answer["predictions"]), answer.get("snapshot_epoch")
    )


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.1, float(response.headers.get("retry-after", "1")))
    except ValueError:
        return 1.0


def _attachment_name(response: httpx.Response, default: str) -> str:
    """The file name of a Content-Disposition answer, reduced to a plain name."""
    disposition = response.headers.get("content-disposition", "")
    match = re.search(r"filename\*=utf-8''([^;]+)|filename=\"?([^\";]+)\"?", disposition, re.IGNORECASE)
    name = (match.group(1) or match.group(2)) if match else default
    name = Path(name.replace("\\", "/")).name
    return name if name not in ("", ".", "..") else default
