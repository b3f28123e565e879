"""Scores and confidences a model was asked to give: read from a dedicated final line only.

A critique ends with `Score: N` (0 to 10), a confidence reply with `Confidence: N` (0 to
100). Only the reply's last non-empty line is read, and only when it is exactly that line
(bold, a trailing period, `/10`, `out of 10` or `%` allowed). A number anywhere else (a
fraction in the reasoning, a percentage from the question, the prompt's own placeholder
`N` echoed back) is not a score: the reply then has none, and reports count how often a
strategy's selector had no signal. Cases are kept in `tests/data/scores.jsonl`.
"""

from __future__ import annotations

import re

SCORE_LINE = "Score: N"  # what prompts ask for; N is never a number, so an echo cannot parse
CONFIDENCE_LINE = "Confidence: N"


def read_score(text: str, label: str = "Score", scale: int = 10) -> float | None:
    """The value of the reply's final `LABEL: N` line as a fraction of `scale`, else None."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return None
    last = lines[-1].replace("**", "").replace("__", "").strip().rstrip(".").strip()
    match = re.fullmatch(
        rf"{re.escape(label)}\s*[:=]\s*(\d+(?:\.\d+)?)\s*(?:(%)|/\s*(\d+)|out of\s+(\d+))?",
        last, re.IGNORECASE)
    if match is None:
        return None
    value = float(match.group(1))
    percent, over = match.group(2), match.group(3) or match.group(4)
    if percent and scale != 100:
        return None
    if over is not None and int(over) != scale:
        return None
    return value / scale if 0 <= value <= scale else None
