"""Flip matrices: what each revision round did to answers that were right or wrong.

For every revision (an attempt handed back to the model, and what it made of it) the gold
check says right or wrong before and after; the answer either changed or did not. Per
round, across items:

  confidence  P(right after | right before)   how well right answers survive revision
  critique    P(right after | wrong before)   how often revision repairs a wrong answer
  net         wrong->right minus right->wrong  what the round gained
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from selfcorrect.trajectory import UnitResult
from selfcorrect.verify.answers import vote_key

CELLS = ("right_right", "right_wrong", "wrong_right", "wrong_wrong")


@dataclass
class FlipMatrix:
    round: int
    counts: dict[str, dict[str, int]] = field(
        default_factory=lambda: {c: {"changed": 0, "unchanged": 0} for c in CELLS})

    def add(self, before_right: bool, after_right: bool, changed: bool) -> None:
        cell = f"{'right' if before_right else 'wrong'}_{'right' if after_right else 'wrong'}"
        self.counts[cell]["changed" if changed else "unchanged"] += 1

    def total(self, cell: str) -> int:
        return sum(self.counts[cell].values())

    @property
    def n(self) -> int:
        return sum(self.total(c) for c in CELLS)

    @property
    def confidence(self) -> float | None:
        before_right = self.total("right_right") + self.total("right_wrong")
        return self.total("right_right") / before_right if before_right else None

    @property
    def critique(self) -> float | None:
        before_wrong = self.total("wrong_right") + self.total("wrong_wrong")
        return self.total("wrong_right") / before_wrong if before_wrong else None

    @property
    def net(self) -> int:
        return self.total("wrong_right") - self.total("right_wrong")

    def to_dict(self) -> dict:
        return {**asdict(self), "n": self.n, "confidence": self.confidence,
                "critique": self.critique, "net": self.net}


def flip_matrices(results: Iterable[UnitResult]) -> list[FlipMatrix]:
    """One matrix per revision round, from stored results (trajectory plus grades)."""
    rounds: dict[int, FlipMatrix] = {}
    for result in results:
        attempts, grades = result.trajectory.attempts, result.grades
        for revision in result.trajectory.revisions:
            before, after = revision.before, revision.after
            matrix = rounds.setdefault(revision.round, FlipMatrix(revision.round))
            changed = _key(attempts[before].answer) != _key(attempts[after].answer)
            matrix.add(grades[before].correct, grades[after].correct, changed)
    return [rounds[r] for r in sorted(rounds)]


def _key(answer: str | None) -> str | None:
    return vote_key(answer)
