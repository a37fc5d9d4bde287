"""One settings object, from flags and environment (KILN_*), each setting with its help text."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Settings:
    data_dir: Path = field(
        default=Path("kiln-data"), metadata={"help": "Folder holding kiln.db and jobs/<job-id>/ (KILN_DATA_DIR)"}
    )
    host: str = field(default="127.0.0.1", metadata={"help": "Address to listen on (KILN_HOST)"})
    port: int = field(default=5000, metadata={"help": "Port to listen on, DIGITS' 5000 (KILN_PORT)"})
    data_roots: str = field(
        default="",
        metadata={
            "help": "os.pathsep-separated folders that dataset paths must lie in (KILN_DATA_ROOTS); "
            "empty = unrestricted, allowed only while listening on loopback"
        },
    )
    max_running_jobs: int = field(
        default=2,
        metadata={"help": "Jobs that may run at once, each in its own worker process (KILN_MAX_RUNNING_JOBS)"},
    )
    max_upload_mb: int = field(default=512, metadata={"help": "Largest accepted upload in MB (KILN_MAX_UPLOAD_MB)"})

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        values: dict[str, object] = {}
        for f in fields(cls):
            env = os.environ.get(f"KILN_{f.name.upper()}")
            if env is not None:
                values[f.name] = env
        values.update({k: v for k, v in overrides.items() if v is not None})
        s = cls(**values)  # type: ignore[arg-type]
        s.data_dir = Path(s.data_dir).resolve()
        s.port = int(s.port)
        s.max_running_jobs = int(s.max_running_jobs)
        s.max_upload_mb = int(s.max_upload_mb)
        return s

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def db_path(self) -> Path:
        return self.data_dir / "kiln.db"

    @property
    def allowed_roots(self) -> list[Path] | None:
        """Folders dataset paths must lie in; None means unrestricted."""
        roots = [Path(p).resolve() for p in self.data_roots.split(os.pathsep) if p.strip()]
        return roots or None

    def check(self) -> list[str]:
        """Problems that must stop the server from starting."""
        if self.host not in LOOPBACK and self.allowed_roots is None:
            return [
                "KILN_DATA_ROOTS (--data-roots) is required when listening on the network "
                f"({self.host}): it limits which server folders users can read."
            ]
        return []
