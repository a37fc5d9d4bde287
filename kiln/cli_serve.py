"""`kiln serve`, and the commands that get its data in place: `kiln data`, `kiln demo`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from kiln.cli_common import bar, settings_of
from kiln.config import Settings
from kiln.store import Store


def add_serve_commands(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run the web server (the default command)")
    serve.add_argument("--host", help="default 127.0.0.1 (never 0.0.0.0 unless asked)")
    serve.add_argument("--port", type=int, help="default 5000")
    serve.add_argument("--data-roots", help="folders dataset paths must lie in (required off loopback)")
    serve.add_argument("--allowed-hosts", help="comma-separated host names browsers reach kiln by (KILN_ALLOWED_HOSTS)")
    serve.add_argument(
        "--auth", choices=["loopback", "accounts"], help="how people log in (KILN_AUTH; default: by --host)"
    )
    serve.set_defaults(func=cmd_serve)

    data = sub.add_parser("data", help="write a standard dataset as DIGITS' folder layout")
    data.add_argument("name", choices=["mnist", "fashion-mnist"])
    data.add_argument("dest", type=Path)
    data.set_defaults(func=cmd_data)

    demo = sub.add_parser("demo", help="put the MNIST demo data in place and queue the 'mnist' dataset if missing")
    demo.set_defaults(func=cmd_demo)


def serve_problems(settings: Settings) -> list[str]:
    """Why the server must not start: the settings' own check, then who may log in (kiln.accounts)."""
    from kiln.accounts import startup_problems

    return settings.check() + startup_problems(settings)


OMP_SET_BY_SERVE = "KILN_OMP_SET_BY_SERVE"  # the scheduler gives workers the user's own setting back


def quiet_openmp(torch_loaded: bool | None = None) -> None:
    """Idle OpenMP threads sleep in the server instead of spinning: classify one went from 50 to 17 ms
    (p50) on a busy 2-core machine (docs/benchmarks.md). Must run before torch loads OpenMP."""
    loaded = "torch" in sys.modules if torch_loaded is None else torch_loaded
    if "OMP_WAIT_POLICY" not in os.environ and not loaded:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.environ[OMP_SET_BY_SERVE] = "1"


def cmd_serve(args: argparse.Namespace) -> int:
    quiet_openmp()
    import uvicorn

    from kiln.web.app import create_app

    settings = settings_of(
        args,
        host=args.host,
        port=args.port,
        data_roots=args.data_roots,
        auth=args.auth,
        allowed_hosts=args.allowed_hosts,
    )
    problems = serve_problems(settings)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    app = create_app(settings)
    print(f"kiln is serving {settings.data_dir} at http://{settings.host}:{settings.port}/", flush=True)
    # live event streams never end by themselves: give them 3 s at shutdown, then close them
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=3)
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from kiln.datasets import stdsets

    writer = stdsets.write_mnist if args.name == "mnist" else stdsets.write_fashion_mnist
    progress: dict[str, Any] = {}

    def report(done: int, total: int) -> None:
        if "bar" not in progress:
            progress["bar"] = bar(total, f"writing {args.name}")
        progress["bar"](done)

    try:
        info = writer(args.dest, progress=report)
    except stdsets.SourceMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name} written to {args.dest}: {json.dumps(info)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """What `make run` does before serving: MNIST folders, then an 'mnist' dataset job if missing."""
    from kiln.datasets import stdsets
    from kiln.datasets.spec import DatasetSpec

    settings = settings_of(args)
    dest = settings.data_dir / "demo" / "mnist"
    if not (dest / "train").is_dir() or not (dest / "test").is_dir():
        print(f"Writing the MNIST demo images to {dest} ...", flush=True)
        try:
            stdsets.write_mnist(dest)
        except stdsets.SourceMissing as exc:
            print(f"warning: {exc}", file=sys.stderr)
            return 0
    store = Store(settings.db_path)
    try:
        if any(j.name == "mnist" for j in store.list_jobs("dataset")):
            return 0
        spec = DatasetSpec(
            dataset_name="mnist",
            resize_channels=1,
            resize_width=28,
            resize_height=28,
            folder_train=str(dest / "train"),
            has_test_folder=True,
            folder_test=str(dest / "test"),
            folder_pct_val=25,
        )
        job_id = store.create_job("dataset", "mnist", {"spec": spec.to_dict()}, None)  # no owner: anyone may manage it
        print(f"Queued the 'mnist' dataset ({job_id}); the server builds it now.", flush=True)
    finally:
        store.close()
    return 0
