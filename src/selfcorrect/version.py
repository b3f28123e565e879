"""Which code made a run: the package version, plus the git commit when run from a checkout."""

from __future__ import annotations

import subprocess
from pathlib import Path

from selfcorrect import __version__


def code_version() -> str:
    """The package version, plus the git commit (and '-dirty') when run from a checkout."""
    source = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(source), *args], capture_output=True, text=True, timeout=5
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "."))
    except (OSError, subprocess.TimeoutExpired):
        commit, dirty = "", False
    if not commit:
        return __version__
    return f"{__version__}+g{commit}{'-dirty' if dirty else ''}"
