"""Train from the command line, in one process or one per GPU under torchrun:

    python -m kiln.training --dataset DIR --out DIR [--config JSON|FILE] [--resume]
    torchrun --nproc-per-node N -m kiln.training --dataset DIR --out DIR ...

Progress lines go to stdout; rank 0 prints the summary as the last line, as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from kiln.reporting import RecordingReporter
from kiln.training.config import TrainConfig
from kiln.training.loop import train


class PrintReporter(RecordingReporter):
    """Progress lines on stdout (and collected, as RecordingReporter does)."""

    def log(self, line: str) -> None:
        super().log(line)
        print(line, flush=True)

    def metrics(self, epoch: float, values: dict[str, float], phase: str = "train") -> None:
        super().metrics(epoch, values, phase)
        text = ", ".join(f"{k} {v:.4g}" for k, v in values.items())
        print(f"[{phase}] epoch {epoch:g}: {text}", flush=True)


def main(argv: list[str] | None = None) -> int:
    from kiln.datasets.reader import PackedDataset

    parser = argparse.ArgumentParser(
        prog="python -m kiln.training", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", required=True, help="a packed dataset's folder (with manifest.json)")
    parser.add_argument("--out", required=True, help="folder for snapshots")
    parser.add_argument("--config", default="{}", help="TrainConfig as JSON text or a .json file")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/resume.pt")
    args = parser.parse_args(argv)
    text = Path(args.config).read_text() if args.config.endswith(".json") else args.config
    config = TrainConfig.from_dict(json.loads(text))
    summary = train(config, PackedDataset(args.dataset), Path(args.out), PrintReporter(), resume=args.resume)
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
