"""`kiln dataset create` and `kiln jobs ...`: the web UI's jobs and job actions, from a terminal."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kiln.cli_common import bar, print_form_errors, refused, report_end, run_here, settings_of
from kiln.config import Settings
from kiln.datasets.spec import ENCODINGS, RESIZE_MODES, DatasetSpec
from kiln.jobs import actions
from kiln.jobs.errors import UserFacingError
from kiln.store import Job, Store

DATASET_OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    # (flag, DatasetSpec field, argparse kwargs)
    ("--name", "dataset_name", {"required": True, "help": "dataset name"}),
    ("--group", "group_name", {"help": "group name"}),
    ("--folder", "folder_train", {"help": "folder of class sub-folders (training images)"}),
    ("--val-folder", "folder_val", {"help": "separate validation folder"}),
    ("--test-folder", "folder_test", {"help": "separate test folder"}),
    ("--pct-val", "folder_pct_val", {"type": int, "help": "%% for validation (default 25)"}),
    ("--pct-test", "folder_pct_test", {"type": int, "help": "%% for testing (default 0)"}),
    ("--min-per-class", "folder_train_min_per_class", {"type": int, "help": "drop classes with fewer (default 2)"}),
    ("--max-per-class", "folder_train_max_per_class", {"type": int, "help": "ignore images beyond this per class"}),
    ("--train-list", "textfile_train_images", {"help": "text list 'path label' (instead of --folder)"}),
    ("--val-list", "textfile_val_images", {"help": "validation text list"}),
    ("--test-list", "textfile_test_images", {"help": "test text list"}),
    ("--labels-file", "textfile_labels_file", {"help": "labels file for text lists"}),
    ("--prefix", "textfile_train_folder", {"help": "prefix for relative paths in the lists"}),
    ("--channels", "resize_channels", {"type": int, "choices": [1, 3], "help": "1 grey, 3 colour (default 3)"}),
    ("--width", "resize_width", {"type": int, "help": "default 256"}),
    ("--height", "resize_height", {"type": int, "help": "default 256"}),
    ("--resize-mode", "resize_mode", {"choices": list(RESIZE_MODES), "help": "default squash"}),
    ("--encoding", "encoding", {"choices": list(ENCODINGS), "help": "default none"}),
    ("--seed", "seed", {"type": int, "help": "split shuffling seed"}),
]


PATH_FIELDS = (
    "folder_train",
    "folder_val",
    "folder_test",
    "textfile_train_images",
    "textfile_val_images",
    "textfile_test_images",
    "textfile_labels_file",
    "textfile_train_folder",
)


def add_job_commands(sub: argparse._SubParsersAction) -> None:
    ds = sub.add_parser("dataset", help="dataset jobs").add_subparsers(dest="action", required=True)
    create = ds.add_parser("create", help="create an image classification dataset (a job the web UI shows)")
    for flag, field, kwargs in DATASET_OPTIONS:
        create.add_argument(flag, dest=field, **kwargs)
    create.add_argument("--add-inverted", action="store_true", help="also store 255-x of every training image")
    create.add_argument("--no-shuffle", action="store_true", help="keep text-list order")
    create.add_argument("--username", default="cli", help="owner of the job (default cli)")
    create.add_argument("--queue", action="store_true", help="only queue it for a running server; don't build here")
    create.set_defaults(func=cmd_dataset_create)

    jobs = sub.add_parser(
        "jobs",
        help="list, show, abort, resume or delete jobs",
        description="abort and delete stop a running job and wait for its worker to exit; "
        "resume runs the job here, as `kiln train` does, unless --queue",
    )
    jobs.add_argument("action", choices=["list", "show", "abort", "resume", "delete"])
    jobs.add_argument("job_id", nargs="?")
    jobs.add_argument(
        "--queue", action="store_true", help="resume: only queue it for a running `kiln serve`; don't run it here"
    )
    jobs.set_defaults(func=cmd_jobs)


def spec_from_args(args: argparse.Namespace) -> DatasetSpec:
    values = {field: getattr(args, field) for _, field, _ in DATASET_OPTIONS if getattr(args, field) is not None}
    for field in PATH_FIELDS:  # the server and worker may not share this shell's working directory
        if values.get(field):
            values[field] = str(Path(values[field]).expanduser().resolve())
    if args.textfile_train_images:
        values["method"] = "textfile"
        values["textfile_use_val"] = bool(args.textfile_val_images)
        values["textfile_use_test"] = bool(args.textfile_test_images)
        values["textfile_shuffle"] = not args.no_shuffle
        for split in ("val", "test"):
            values.setdefault(f"textfile_{split}_folder", values.get("textfile_train_folder", ""))
    values["has_val_folder"] = bool(args.folder_val)
    values["has_test_folder"] = bool(args.folder_test)
    values["add_inverted"] = args.add_inverted
    return DatasetSpec.from_dict(values)


def cmd_dataset_create(args: argparse.Namespace) -> int:
    from kiln.forms import FormErrors
    from kiln.jobs.dataset_form import create_dataset_job

    settings = settings_of(args)
    spec = spec_from_args(args)
    store = Store(settings.db_path)
    try:
        try:
            job_id = create_dataset_job(store, settings, spec, args.username)
        except FormErrors as exc:
            return print_form_errors(exc.errors)
        print(f"dataset job {job_id} ({spec.dataset_name})", flush=True)
        if args.queue:
            return 0
        progress = bar(desc=spec.dataset_name)
        return report_end(store, job_id, run_here(settings, store, job_id, progress))
    finally:
        store.close()


def cmd_jobs(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    store = Store(settings.db_path)
    try:
        if args.action == "list":
            for j in store.list_jobs():
                print(f"{j.id}  {j.type:7}  {j.status:11}  {j.progress * 100:5.1f}%  {j.name}")
            return 0
        job = actions.get_job(store, args.job_id or "")
        if args.action == "show":
            print(json.dumps({**job.to_dict(), "history": store.history(job.id)}, indent=1, default=str))
            return 0
        if args.action == "abort":
            actions.abort(store, job.id, wait=True)  # this process ends next: see the worker out now
            print("Job aborted.")
            return 0
        if args.action == "resume":
            return _resume(settings, store, job, args.queue)
        _delete(settings, store, job)
        return 0
    except UserFacingError as exc:
        return refused(exc)
    finally:
        store.close()


def _resume(settings: Settings, store: Store, job: Job, queue: bool) -> int:
    """Like `kiln train`: run it here (a model from its last snapshot), or only queue it."""
    actions.resume(store, job.id)
    if queue:
        print(f"Job {job.id} queued again: a running `kiln serve` starts it.")
        return 0
    print(f"Job {job.id} resumed ({job.name})", flush=True)
    return report_end(store, job.id, run_here(settings, store, job.id, bar(desc=job.name)))


def _delete(settings: Settings, store: Store, job: Job) -> None:
    if job.active:
        print(f"Job {job.id} is {job.status}: aborting it and waiting for its worker ...", file=sys.stderr, flush=True)
    actions.delete(store, settings.jobs_dir, job.id)
    print("Job deleted.")
