"""Run the installed `selfcorrect` command the way a person would."""

import subprocess
import sys
from pathlib import Path

EXE = Path(sys.executable).parent / "selfcorrect"


def selfcorrect(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(EXE), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout
    )
