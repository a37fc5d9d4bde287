"""Models out of kiln: ONNX and TorchScript files, and download archives with a standalone predict.py.

    from kiln.export import export_onnx, export_torchscript, write_archive
    model, meta = load_for_export(job_dir, epoch=2)
    export_onnx(model, meta, "model.onnx")                      # dynamic batch axis, checked in ONNX Runtime
    write_archive(job_dir, "m.tar.gz", epoch="best", fmt="tar.gz", job_info={...})

Engine code: no HTTP, no SQLite. Weights are read from safetensors only (kiln.training.checkpoint).
"""

from kiln.export.archive import (
    ARCHIVE_FORMATS,
    ARCHIVE_VERSION,
    SINGLE_FORMATS,
    archive_name,
    job_keys,
    write_archive,
    write_model_file,
)
from kiln.export.convert import ExportError, export_onnx, export_torchscript, load_for_export

__all__ = [
    "ARCHIVE_FORMATS",
    "ARCHIVE_VERSION",
    "SINGLE_FORMATS",
    "ExportError",
    "archive_name",
    "export_onnx",
    "export_torchscript",
    "job_keys",
    "load_for_export",
    "write_archive",
    "write_model_file",
]
