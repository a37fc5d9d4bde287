"""`kiln evaluate`: a model on a dataset split, a list, a folder of class folders or a zip, as a job
the web UI shows too (the same form as `POST /models/images/classification/evaluate.json`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from kiln.store import Store


def add_evaluate_command(sub: argparse._SubParsersAction) -> None:
    ev = sub.add_parser("evaluate", help="accuracy, confusion matrix, mistakes and label issues on many images")
    ev.add_argument("model", help="model job id or name")
    source = ev.add_mutually_exclusive_group(required=True)
    source.add_argument("--split", choices=("val", "test", "train"), help="a split of the model's dataset")
    source.add_argument("--list", type=Path, metavar="FILE", help="`path [label index or name]` lines")
    source.add_argument("--archive", type=Path, metavar="ZIP", help="a zip of class folders")
    source.add_argument("--folder-of-classes", type=Path, metavar="DIR", help="a folder of class folders")
    ev.add_argument("--folder", help="where the list's relative paths start")
    ev.add_argument("--epoch", default="", help="snapshot epoch, or 'best' (default: the latest)")
    ev.add_argument("--num", default="", metavar="N", help="evaluate only the first N images")
    ev.add_argument("--username", default="cli")
    ev.add_argument("--queue", action="store_true", help="only queue it for a running server")
    ev.set_defaults(func=cmd_evaluate)


def _uploads(args: argparse.Namespace) -> dict[str, bytes]:
    out = {}
    for field, path in (("image_list", args.list), ("image_archive", args.archive)):
        if path is not None:
            try:
                out[field] = Path(path).read_bytes()
            except OSError as exc:
                raise SystemExit(f"error: {path}: {exc.strerror or exc}") from None
    return out


def cmd_evaluate(args: argparse.Namespace) -> int:
    from kiln.cli_common import bar, print_form_errors, report_end, run_here, settings_of
    from kiln.cli_models import _find
    from kiln.forms import FormErrors
    from kiln.jobs.evaluation_form import create_evaluation

    settings = settings_of(args)
    store = Store(settings.db_path)
    try:
        model = _find(store, "model", args.model)
        form = {
            "job_id": model.id if model else args.model,
            "split": args.split or "",
            "image_folder": str(args.folder_of_classes or args.folder or ""),
            "snapshot_epoch": args.epoch,
            "num_test_images": args.num,
        }
        try:
            job_id = create_evaluation(form, _uploads(args), store, settings, args.username)
        except FormErrors as exc:
            return print_form_errors(exc.errors)
        print(f"evaluation job {job_id}", flush=True)
        if args.queue:
            return 0
        status = run_here(settings, store, job_id, bar(desc="evaluating"))
        print(f"results: {settings.jobs_dir / job_id / 'evaluation.json'}", flush=True)
        return report_end(store, job_id, status)
    finally:
        store.close()
