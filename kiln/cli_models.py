"""CLI commands for models: `kiln train` (same options as the web form) and `kiln classify`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from kiln.cli_nodes import Launch, add_node_options, join, launch_of, run_node0
from kiln.jobs import actions
from kiln.store import Job, Store

# Form fields with a flag of their own (besides the --<field-name> flag every declared field gets).
TRAIN_OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    ("--name", "model_name", {"required": True, "help": "model name"}),
    ("--group", "group_name", {"help": "group name"}),
    ("--network", "standard_networks", {"default": "lenet"}),
]
SHORT_FLAGS = {
    "train_epochs": "--epochs",
    "learning_rate": "--lr",
    "solver_type": "--solver",
    "random_seed": "--seed",
    "use_mean": "--mean",
}


def _add_field_options(train: argparse.ArgumentParser) -> None:
    """One option per declared TrainConfig field; help, choices and range from the declaration."""
    from kiln.jobs.gpus import FIELDS as GPU_FIELDS
    from kiln.networks.registry import list_networks
    from kiln.training.options import FIELDS, SWEEP_FIELDS

    for flag, field, kwargs in TRAIN_OPTIONS:
        train.add_argument(flag, dest=field, **kwargs)
    train._option_string_actions["--network"].help = "one of: " + ", ".join(n.name for n in list_networks())
    for name, f in {**FIELDS, **GPU_FIELDS}.items():
        flags = [SHORT_FLAGS[name]] if name in SHORT_FLAGS else []
        flags.append("--" + name.replace("_", "-"))
        help_text = f.describe() + ("; a comma list sweeps" if name in SWEEP_FIELDS else "")
        if f.type is bool:
            train.add_argument(*flags, dest=name, nargs="?", const="1", metavar="0|1", help=help_text)
        elif name == "recipe":  # plain --recipe asks for kiln's
            train.add_argument(*flags, dest=name, nargs="?", const="kiln", metavar="none|kiln", help=help_text)
        else:
            train.add_argument(*flags, dest=name, metavar=name.upper(), help=help_text)


def add_model_commands(sub: argparse._SubParsersAction, field_options: bool = True) -> None:
    train = sub.add_parser("train", help="train a model (a job the web UI shows live)")
    train.add_argument("--dataset", required=True, help="dataset job id or name")
    if field_options:
        _add_field_options(train)
    train.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other model form field, e.g. --set aug_flip=fliplr --set momentum=0.9",
    )
    train.add_argument(
        "--network-file",
        type=Path,
        metavar="FILE",
        help="a custom network: a Caffe .prototxt (DIGITS' all-in-one or train_val form), or a .py file "
        "defining network(num_classes, input_shape) when the server allows Python networks",
    )
    train.add_argument(
        "--from",
        dest="start_from",
        metavar="MODEL[:EPOCH]",
        help="fine-tune: start from a model's weights (its latest snapshot, or EPOCH); its network too, "
        "unless --network-file gives another. Layers whose shapes differ start fresh",
    )
    train.add_argument("--username", default="cli")
    train.add_argument("--queue", action="store_true", help="only queue it for a running server")
    add_node_options(train)  # --nnodes --node-rank --rdzv-endpoint (kiln.cli_nodes)
    train.set_defaults(func=cmd_train)

    classify = sub.add_parser("classify", help="top-5 predictions of a trained model for images")
    classify.add_argument("model", help="model job id or name")
    classify.add_argument("images", nargs="+", type=Path)
    classify.add_argument(
        "--epoch", type=_epoch_arg, help="snapshot epoch, or 'best' for the kept best snapshot (default: the latest)"
    )
    classify.add_argument(
        "--visualize",
        type=Path,
        metavar="OUT_DIR",
        help="also write each image's look inside the network to OUT_DIR/<n>-<image>/: the input as the "
        "network saw it, every layer's activations and weights (PNG), Grad-CAM, and stats.json",
    )
    classify.set_defaults(func=cmd_classify)


def _epoch_arg(text: str) -> float | str:
    """--epoch: a number or 'best' (argparse reports anything else as a usage error naming --epoch)."""
    if text.strip().lower() == "best":
        return "best"
    try:
        epoch = float(text)
    except ValueError:
        epoch = float("nan")
    if epoch != epoch or epoch in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not an epoch: give one such as 2, or best")
    return epoch


def _find(store: Store, type_: str, key: str) -> Job | None:
    job = store.get_job(key)
    if job and job.type == type_:
        return job
    named = [j for j in store.list_jobs(type_) if j.name == key]
    return named[0] if named else None


def form_from_args(args: argparse.Namespace, dataset_id: str) -> dict[str, Any]:
    form: dict[str, Any] = {"dataset": dataset_id, "method": "standard"}
    from kiln.jobs.gpus import FIELDS as GPU_FIELDS
    from kiln.training.options import FIELDS

    for field in [f for _, f, _ in TRAIN_OPTIONS] + list(FIELDS) + list(GPU_FIELDS):
        value = getattr(args, field, None)
        if value is not None:
            form[field] = str(value)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"error: --set {item!r}: use FIELD=VALUE")
        form[key.strip()] = value.strip()
    form.update(_network_fields(args))
    return form


def _network_fields(args: argparse.Namespace) -> dict[str, str]:
    """--network-file and --from as the model form's method/custom_network/previous_networks fields."""
    file, start = getattr(args, "network_file", None), getattr(args, "start_from", None)
    job_id, _, epoch = (start or "").partition(":")
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SystemExit(f"error: --network-file {file}: {exc}") from None
        language = "python" if Path(file).suffix == ".py" else "prototxt"
        fields = {"method": "custom", "custom_network": text, "network_language": language}
        if start:
            fields["custom_network_snapshot"] = f"{job_id}:{epoch}" if epoch else job_id
        return fields
    if start:
        return {"method": "previous", "previous_networks": job_id, f"{job_id}-snapshot": epoch}
    return {}


def cmd_train(args: argparse.Namespace) -> int:
    from kiln.cli_common import follow, print_form_errors, settings_of
    from kiln.forms import FormErrors
    from kiln.jobs.model_form import create_model_jobs

    settings = settings_of(args)
    store = Store(settings.db_path)
    try:
        dataset = _find(store, "dataset", args.dataset)
        if getattr(args, "start_from", None):  # a model's name does as well as its id
            key, sep, epoch = args.start_from.rpartition(":") if ":" in args.start_from else (args.start_from, "", "")
            found = _find(store, "model", key)
            args.start_from = (found.id if found else key) + sep + epoch
        launch = launch_of(args)  # None on one machine
        if launch and launch.node_rank > 0:  # another node joins node 0's job
            return join(form_from_args(args, dataset.id if dataset else args.dataset), dataset, store, settings, launch)
        try:
            ids = create_model_jobs(
                form_from_args(args, dataset.id if dataset else args.dataset), store, settings, args.username
            )
        except FormErrors as exc:
            return print_form_errors(exc.errors)
        worst = 0
        for job_id in ids:
            job = actions.get_job(store, job_id)
            print(f"model job {job_id} ({job.name})", flush=True)
            if args.queue:
                continue
            if dataset and dataset.status != "Done":
                print(f"waiting for dataset {dataset.id} ({dataset.status}) ...", flush=True)
                follow(store, dataset.id, lambda *_: None)
            worst = max(worst, _train_one(settings, store, job_id, launch))
        return worst
    finally:
        store.close()


def _train_one(settings: Any, store: Store, job_id: str, launch: Launch | None = None) -> int:
    from tqdm import tqdm

    from kiln.cli_common import report_end as _report_end
    from kiln.cli_common import run_here

    epochs = float(actions.get_job(store, job_id).params["config"]["train_epochs"])
    t = tqdm(
        total=epochs, unit="epoch", bar_format="{l_bar}{bar}| {n:.2f}/{total:g} epochs [{elapsed}<{remaining}{postfix}]"
    )
    shown: dict[str, float] = {}

    def progress(fraction: float, message: str = "") -> None:
        t.n = round(fraction * epochs, 3)
        t.refresh()

    def metrics(epoch: float, values: dict[str, float], phase: str) -> None:
        for k, v in values.items():
            if k != "lr":
                shown[f"{phase} {k}"] = v
        t.set_postfix({k: f"{v:.4g}" for k, v in shown.items()})

    if launch is None:
        status = run_here(settings, store, job_id, progress, metrics)
    else:
        status = run_node0(settings, store, job_id, launch, progress, metrics)
    t.close()
    return _report_end(store, job_id, status)


def cmd_classify(args: argparse.Namespace) -> int:
    from kiln.cli_common import settings_of
    from kiln.inference.predictor import Predictor

    settings = settings_of(args)
    store = Store(settings.db_path)
    try:
        job = _find(store, "model", args.model)
    finally:
        store.close()
    if job is None:
        print(f"error: no model job {args.model!r}", file=sys.stderr)
        return 1
    job_dir = settings.jobs_dir / job.id
    if args.epoch == "best" and not (job_dir / "best.json").exists():
        print(
            f"error: --epoch best: model {job.id} keeps no best snapshot (it trained without keep_best)",
            file=sys.stderr,
        )
        return 1
    try:
        predictor = Predictor.from_job_dir(job_dir, epoch=args.epoch)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: --epoch: {exc}", file=sys.stderr)
        return 1
    status = 0
    for n, (path, result) in enumerate(zip(args.images, predictor.classify([str(p) for p in args.images]))):
        print(path)
        if result.error:
            print(f"  error: {result.error}")
            status = 1
            continue
        for label, pct in result:
            print(f"  {pct:6.2f}%  {label}")
        if args.visualize:
            print(f"  visualizations: {_write_visualizations(predictor, path, args.visualize / f'{n}-{path.stem}')}")
    return status


def _write_visualizations(predictor: Any, image: Path, folder: Path) -> Path:
    """input.png, gradcam.png, <nn>-<layer>-activations.png / -weights.png and stats.json in folder;
    stats.json is classify_one.json's visualization part with file names where the pictures were."""
    import json
    import re

    from kiln.inference.visualize import visualize

    batch, _, _ = predictor.load([str(image)])
    vis = visualize(predictor, batch)
    folder.mkdir(parents=True, exist_ok=True)
    stats = vis.to_dict()

    def picture(name: str, png: bytes | None, panel: dict[str, Any] | None = None) -> str | None:
        if png:
            (folder / name).write_bytes(png)
        if panel is not None:
            panel["image"] = name if png else None
        return name if png else None

    picture("input.png", vis.input.png, stats["input"])
    stats["gradcam"] = picture("gradcam.png", vis.gradcam)
    for i, (layer, row) in enumerate(zip(vis.layers, stats["visualizations"])):
        stem = f"{i:02d}-" + re.sub(r"[^\w.-]+", "_", layer.name)
        picture(f"{stem}-activations.png", layer.activations.png, row["activations"])
        if layer.weights:
            picture(f"{stem}-weights.png", layer.weights.png, row["weights"])
    (folder / "stats.json").write_text(json.dumps({"snapshot_epoch": predictor.epoch, **stats}, indent=1))
    return folder
