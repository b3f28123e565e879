"""Steps of a solution: what step search grows one at a time (strategies/search.py), what a
process reward model gives a verdict on, and what process labels are made for."""

from __future__ import annotations

from typing import Literal

Step = Literal["blank-line", "line", "sentence"]
DELIMITERS: dict[Step, str] = {"blank-line": "\n\n", "line": "\n", "sentence": ". "}


def split_steps(text: str, step: Step = "sentence") -> list[str]:
    """A finished reply as the steps search would have grown it: each step keeps its
    delimiter, so the steps join back into the reply exactly."""
    delimiter = DELIMITERS[step]
    pieces = text.split(delimiter)
    steps = [p + delimiter for p in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])
    merged: list[str] = []
    for piece in steps:  # a delimiter alone (". . ") is no step of its own
        if merged and not piece.replace(delimiter, "").strip():
            merged[-1] += piece
        else:
            merged.append(piece)
    return merged
