"""CLI commands that create or manage jobs; they share the web UI's store and job code."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from kiln.datasets.spec import DatasetSpec
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
    ("--resize-mode", "resize_mode", {"choices": ["squash", "crop", "fill", "half_crop"], "help": "default squash"}),
    ("--encoding", "encoding", {"choices": ["none", "png", "jpg"], "help": "default none"}),
    ("--seed", "seed", {"type": int, "help": "split shuffling seed"}),
]


PATH_FIELDS = ("folder_train", "folder_val", "folder_test", "textfile_train_images", "textfile_val_images",
               "textfile_test_images", "textfile_labels_file", "textfile_train_folder")


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

    jobs = sub.add_parser("jobs", help="list, abort, resume or delete jobs")
    jobs.add_argument("action", choices=["list", "abort", "resume", "delete", "show"])
    jobs.add_argument("job_id", nargs="?")
    jobs.set_defaults(func=cmd_jobs)

    from kiln.cli_models import add_model_commands
    add_model_commands(sub)


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
    from kiln.cli import bar, print_form_errors, run_here, settings_of
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
        return _report_end(store, job_id, run_here(settings, store, job_id, progress))
    finally:
        store.close()


def _report_end(store: Store, job_id: str, status: str) -> int:
    job = store.get_job(job_id)
    print(f"{job_id}: {status}", flush=True)
    if job and job.error:
        print(f"error: {job.error}", file=sys.stderr)
    if job and job.summary:
        print(json.dumps(job.summary, indent=1))
    return 0 if status == "Done" else 1


def cmd_jobs(args: argparse.Namespace) -> int:
    from kiln.cli import settings_of
    from kiln.jobs.scheduler import Scheduler

    settings = settings_of(args)
    store = Store(settings.db_path)
    try:
        if args.action == "list":
            for j in store.list_jobs():
                print(f"{j.id}  {j.type:7}  {j.status:11}  {j.progress * 100:5.1f}%  {j.name}")
            return 0
        job = store.get_job(args.job_id or "")
        if job is None:
            print(f"error: job {args.job_id!r} not found", file=sys.stderr)
            return 1
        if args.action == "show":
            print(json.dumps({**job.to_dict(), "history": store.history(job.id)}, indent=1, default=str))
        elif args.action == "abort":
            ok = Scheduler(settings).abort(job.id)
            print("Job aborted." if ok else "Job not aborted: it is not running.")
            return 0 if ok else 1
        elif args.action == "resume":
            ok = store.set_status(job.id, "Initialized", expect=("Aborted", "Interrupted", "Error"), note="resumed")
            print("Job queued again; a running server (or `kiln jobs run`) picks it up." if ok
                  else f"Job not resumed: it is {job.status}.")
            return 0 if ok else 1
        elif args.action == "delete":
            import shutil
            if job.type == "dataset" and store.models_using(job.id):
                print("error: models depend on this dataset; delete them first", file=sys.stderr)
                return 1
            store.delete_job(job.id)
            shutil.rmtree(settings.jobs_dir / job.id, ignore_errors=True)
            print("Job deleted.")
        return 0
    finally:
        store.close()
