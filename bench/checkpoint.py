"""What the torch benches share: the checkpoint they run on (`selfcorrect models export`)."""

from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT = ".selfcorrect/models/base"


def add_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT, help="a checkpoint (`selfcorrect models export`)")


def checked(path: str | Path) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise SystemExit(f"no checkpoint at {path}: run `selfcorrect models export` first")
    return path
