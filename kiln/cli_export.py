"""`kiln export`: a model at an epoch as a download archive (tar.gz, zip ...), ONNX or TorchScript,
the same files as the web UI's Download links (kiln.export)."""

from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("tar.gz", "tgz", "tar", "tar.bz2", "zip", "onnx", "torchscript")


def add_export_command(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="download a model: archive with predict.py, ONNX or TorchScript")
    ex.add_argument("model", help="model job id or name")
    ex.add_argument("--epoch", default="", help="snapshot epoch, or 'best' (default: the latest)")
    ex.add_argument("--format", default="tar.gz", choices=FORMATS, help="default tar.gz")
    ex.add_argument("-o", "--output", type=Path, help="file to write (default: <job_id>_epoch_<epoch>.<ext> here)")
    ex.set_defaults(func=cmd_export)


def _epoch(text: str) -> float | str | None:
    text = text.strip()
    if text.lower() == "best":
        return "best"
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise SystemExit(f"error: --epoch: {text!r} is not an epoch: give one such as 2, or best") from None


def cmd_export(args: argparse.Namespace) -> int:
    from kiln.cli_common import settings_of
    from kiln.cli_models import _find
    from kiln.export import ExportError, archive_name, job_keys, load_for_export, write_archive, write_model_file
    from kiln.store import Store

    epoch = _epoch(args.epoch)
    settings = settings_of(args)
    job = _find(Store(settings.db_path), "model", args.model)
    if job is None:
        raise SystemExit(f"error: model: no model job {args.model!r}")
    job_dir = settings.jobs_dir / job.id
    ext = {"onnx": "onnx", "torchscript": "pt"}.get(args.format, args.format)
    try:
        meta = load_for_export(job_dir, epoch)[1]
        out = args.output or Path(archive_name(job.id, meta, ext))
        if args.format in ("onnx", "torchscript"):
            write_model_file(job_dir, out, epoch=epoch, fmt=args.format)
        else:
            write_archive(job_dir, out, epoch=epoch, fmt=args.format, job_info=job_keys(job))
    except FileNotFoundError as exc:
        raise SystemExit(f"error: --epoch: {exc}") from None
    except ExportError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(out)
    return 0
