"""CLI commands for models: train, classify (filled in by the training issue)."""
from __future__ import annotations

import argparse


def add_model_commands(sub: argparse._SubParsersAction) -> None:
    return None
