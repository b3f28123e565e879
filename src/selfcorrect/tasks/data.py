"""Finding dataset files: a path may name the file itself, its folder, or a data root
that holds one folder per dataset (as in ../shared/data: gsm8k/test.jsonl, mbpp/...)."""

from __future__ import annotations

from pathlib import Path

from selfcorrect.errors import ConfigError


def find_file(path: str | Path | None, dataset: str, filename: str, hub_hint: str) -> Path | None:
    """The file, or None when no path was given (the caller may try the hub)."""
    if path is None:
        return None
    path = Path(path).expanduser()
    for candidate in (path, path / filename, path / dataset / filename):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"no {dataset} data at {path} (looked for {filename} there and in {dataset}/)",
        f"pass the file, its folder, or a data folder holding {dataset}/{filename}; {hub_hint}")


def hub_dataset(name: str, config: str | None, split: str, dataset: str):
    """A split from the Hugging Face hub through `datasets`, when it is installed and reachable."""
    try:
        import datasets
    except ImportError:
        raise ConfigError(
            f"{dataset} needs its data: no path was given and the `datasets` package is not installed",
            f"pass --data with a folder holding {dataset}/, or `pip install datasets` to fetch it "
            "from the Hugging Face hub") from None
    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as e:  # datasets raises many kinds: connection, missing config, ...
        raise ConfigError(f"could not load {name} from the Hugging Face hub: {e}",
                          f"pass --data with a folder holding {dataset}/") from e
