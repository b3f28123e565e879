"""Finding dataset files: a path may name the file itself, its folder, or a data root
that holds one folder per dataset (gsm8k/test.jsonl, mbpp/...). With no path, the copy that
ships inside the package (tasks/datasets/, with its licences) is read."""

from __future__ import annotations

from pathlib import Path

from selfcorrect.errors import ConfigError

SHIPPED = Path(__file__).parent / "datasets"


def find_file(path: str | Path | None, dataset: str, filename: str) -> Path:
    """The dataset's file under `path`, or the shipped copy when no path was given."""
    root = SHIPPED if path is None else Path(path).expanduser()
    for candidate in (root, root / filename, root / dataset / filename):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no {dataset} data at {root} (looked for {filename} there and in {dataset}/)",
        f"pass the file, its folder, or a data folder holding {dataset}/{filename}; "
        f"or omit --data to use the copy selfcorrect ships")
