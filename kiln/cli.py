"""The `kiln` command: serve (the default), data, demo, dataset, train, classify, jobs."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from kiln.config import Settings
from kiln.store import ACTIVE, Store


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv if argv is not None else sys.argv[1:] or ["serve"])
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kiln", description="Train image classifiers in the browser.")
    parser.add_argument("--data-dir", help="kiln.db and jobs/ live here (KILN_DATA_DIR, default ./kiln-data)")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the web server (the default command)")
    serve.add_argument("--host", help="default 127.0.0.1 (never 0.0.0.0 unless asked)")
    serve.add_argument("--port", type=int, help="default 5000")
    serve.add_argument("--data-roots", help="folders dataset paths must lie in (required off loopback)")
    serve.set_defaults(func=cmd_serve)

    data = sub.add_parser("data", help="write a standard dataset as DIGITS' folder layout")
    data.add_argument("name", choices=["mnist", "fashion-mnist"])
    data.add_argument("dest", type=Path)
    data.set_defaults(func=cmd_data)

    demo = sub.add_parser("demo", help="put the MNIST demo data in place and queue the 'mnist' dataset if missing")
    demo.set_defaults(func=cmd_demo)

    from kiln.cli_jobs import add_job_commands
    add_job_commands(sub)
    return parser


def settings_of(args: argparse.Namespace, **extra: Any) -> Settings:
    return Settings.from_env(data_dir=args.data_dir, **extra)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from kiln.web.app import create_app

    settings = settings_of(args, host=args.host, port=args.port, data_roots=args.data_roots)
    problems = settings.check()
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    app = create_app(settings)
    print(f"kiln is serving {settings.data_dir} at http://{settings.host}:{settings.port}/", flush=True)
    # live event streams never end by themselves: give them 3 s at shutdown, then close them
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="warning", timeout_graceful_shutdown=3)
    return 0


def bar(total: int | None = None, desc: str = "") -> Callable[[float, str], None]:
    """A tqdm bar driven by fractions (engine progress) or counts."""
    from tqdm import tqdm

    t = tqdm(total=total or 100, desc=desc, unit="%" if total is None else "img", leave=True)

    def update(done: float, message: str = "") -> None:
        value = done * 100 if total is None else done
        t.n = min(t.total, round(value, 1))
        if message:
            t.set_postfix_str(message[:60], refresh=False)
        t.refresh()
        if t.n >= t.total:
            t.close()
    return update


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
        spec = DatasetSpec(dataset_name="mnist", resize_channels=1, resize_width=28, resize_height=28,
                           folder_train=str(dest / "train"), has_test_folder=True, folder_test=str(dest / "test"),
                           folder_pct_val=25)
        job_id = store.create_job("dataset", "mnist", {"spec": spec.to_dict()}, None)  # no owner: anyone may manage it
        print(f"Queued the 'mnist' dataset ({job_id}); the server builds it now.", flush=True)
    finally:
        store.close()
    return 0


def run_here(settings: Settings, store: Store, job_id: str, progress: Callable[[float, str], None],
             on_metrics: Callable[..., None] | None = None) -> str:
    """Run the job in this process; if a server's worker claimed it first, follow that one."""
    from kiln.jobs.worker import run_job

    status = run_job(settings, job_id, echo=progress, on_metrics=on_metrics)
    return follow(store, job_id, progress) if status in ACTIVE else status


def print_form_errors(errors: dict[str, list[str]]) -> int:
    """Per-field messages, one line each, as the web form shows them; exit status 2."""
    for field, messages in errors.items():
        print(f"error: {field}: {' '.join(messages)}", file=sys.stderr)
    return 2


def follow(store: Store, job_id: str, progress: Callable[[float, str], None]) -> str:
    """Wait for a job run by someone else (the server's worker), mirroring its progress."""
    while True:
        job = store.get_job(job_id)
        if job is None:
            return "missing"
        progress(job.progress, job.message)
        if job.status not in ACTIVE:
            return job.status
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
