"""The `kiln` command: builds the parser and dispatches to the command modules.

serve, data, demo: kiln.cli_serve; dataset, jobs: kiln.cli_jobs; train, classify: kiln.cli_models;
evaluate: kiln.cli_evaluate; users: kiln.cli_users;
what they share (global options, settings, running and following jobs): kiln.cli_common.
"""

from __future__ import annotations

import argparse
import sys

from kiln.cli_common import KilnParser
from kiln.cli_evaluate import add_evaluate_command
from kiln.cli_export import add_export_command
from kiln.cli_jobs import add_job_commands
from kiln.cli_models import add_model_commands
from kiln.cli_serve import add_serve_commands
from kiln.cli_users import add_user_commands


def main(argv: list[str] | None = None) -> int:
    argv = argv if argv is not None else sys.argv[1:] or ["serve"]
    args = build_parser(argv).parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser; given ``argv``, `train`'s many field options only when it is the command
    (they come from the engine's declarations, which import torch: seconds other commands skip)."""
    parser = KilnParser(prog="kiln", description="Train image classifiers in the browser.")
    parser.set_defaults(data_dir=None)  # sub-commands leave it alone unless given after them
    sub = parser.add_subparsers(dest="command", required=True)
    add_serve_commands(sub)
    add_job_commands(sub)
    add_model_commands(sub, field_options=argv is None or "train" in argv)
    add_evaluate_command(sub)
    add_export_command(sub)
    add_user_commands(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
