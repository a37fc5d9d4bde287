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
    allowed_hosts: str = field(
        default="",
        metadata={
            "help": "Comma-separated host names browsers may reach kiln by, besides localhost, IP addresses and "
            "--host (KILN_ALLOWED_HOSTS); other Host headers get 400 (DNS rebinding); '*' = any name"
        },
    )
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
    feed_workers: int | None = field(
        default=None,
        metadata={
            "help": "Processes that read and decode a large or PNG/JPEG-encoded split while a model trains "
            "(KILN_FEED_WORKERS); 0 = a thread of the training process; default min(CPUs - 1, 8), shared by "
            "the processes of a multi-GPU job"
        },
    )
    max_upload_mb: int = field(default=512, metadata={"help": "Largest accepted upload in MB (KILN_MAX_UPLOAD_MB)"})
    heavy_threads: int = field(
        default=2,
        metadata={
            "help": "Heavy requests (classify, LR preview, model sweeps, dataset checks) run on this many "
            "worker threads at most, off the event loop (KILN_HEAVY_THREADS)"
        },
    )
    heavy_queue: int = field(
        default=16,
        metadata={"help": "Heavy requests that may wait for a thread; more are answered 503, retry (KILN_HEAVY_QUEUE)"},
    )
    max_classify_images: int = field(
        default=100_000,
        metadata={"help": "Most images one classify_many list may name (KILN_MAX_CLASSIFY_IMAGES)"},
    )
    auth: str = field(
        default="",
        metadata={
            "help": "How people log in (KILN_AUTH): 'loopback' (DIGITS' username-only login, one person at this "
            "machine) or 'accounts' (passwords, admins, API tokens: `kiln users add NAME --admin`); empty = "
            "loopback while listening on 127.0.0.1/::1/localhost, accounts anywhere else"
        },
    )
    max_image_mb: int = field(
        default=64,
        metadata={
            "help": "Largest file kiln reads from a user-given path (an image, a list), in MB (KILN_MAX_IMAGE_MB)"
        },
    )
    model_store_url: str = field(
        default="",
        metadata={
            "help": "Comma-separated model stores, folders or http(s) addresses in DIGITS' layout "
            "(KILN_MODEL_STORE_URL); empty: no store"
        },
    )
    allow_python_networks: bool = field(
        default=False,
        metadata={
            "help": "Accept networks written in Python (KILN_ALLOW_PYTHON_NETWORKS=1): they run arbitrary code "
            "with the server's rights, so allow them only where every user may run code on this machine"
        },
    )
    fake_gpus: int = field(
        default=0,
        metadata={
            "help": "Pretend this machine has N GPUs (KILN_FAKE_GPUS=4): the scheduler hands them out as it "
            "would real ones while the jobs train on the CPU; for tests and demos. 0 = the GPUs NVML finds"
        },
    )
    inference_gpu: bool = field(
        default=True,
        metadata={
            "help": "Classify on a GPU no job holds, in the server process, else on the CPU "
            "(KILN_INFERENCE_GPU=0: always the CPU, and the server never opens a CUDA context)"
        },
    )

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
        s.feed_workers = None if s.feed_workers in (None, "") else max(0, int(s.feed_workers))
        s.heavy_threads = max(1, int(s.heavy_threads))
        s.heavy_queue = max(0, int(s.heavy_queue))
        s.max_classify_images = max(1, int(s.max_classify_images))
        s.max_image_mb = int(s.max_image_mb)
        s.fake_gpus = max(0, int(s.fake_gpus))
        s.inference_gpu = str(s.inference_gpu).strip().lower() in ("1", "true", "yes", "on")
        s.allow_python_networks = str(s.allow_python_networks).strip().lower() in ("1", "true", "yes", "on")
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

    @property
    def max_file_bytes(self) -> int:
        """Bytes kiln reads at most from one user-given file (kiln.paths.read_bounded)."""
        return self.max_image_mb << 20

    def worker_env(self) -> dict[str, str]:
        """The settings a worker process must share with the server that starts it, as KILN_* variables
        (the worker builds its Settings from the environment)."""
        return {
            "KILN_DATA_ROOTS": self.data_roots or "",
            "KILN_MAX_IMAGE_MB": str(self.max_image_mb),
            "KILN_ALLOW_PYTHON_NETWORKS": "1" if self.allow_python_networks else "0",
            "KILN_FAKE_GPUS": str(self.fake_gpus),
            **({"KILN_FEED_WORKERS": str(self.feed_workers)} if self.feed_workers is not None else {}),
        }

    @property
    def auth_mode(self) -> str:
        """'loopback' or 'accounts' (kiln.accounts): KILN_AUTH, else decided by the address kiln listens on."""
        if self.auth.strip():
            return self.auth.strip().lower()
        return "loopback" if self.host in LOOPBACK else "accounts"

    def check(self) -> list[str]:
        """Problems that must stop the server from starting."""
        if self.host not in LOOPBACK and self.allowed_roots is None:
            return [
                "KILN_DATA_ROOTS (--data-roots) is required when listening on the network "
                f"({self.host}): it limits which server folders users can read."
            ]
        return []
