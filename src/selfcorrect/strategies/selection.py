"""Selection rules: which of several attempts a strategy keeps (a vote, the best score).
Ties go to the earliest attempt, so a selection is reproducible."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from selfcorrect.trajectory import Attempt
from selfcorrect.verify.answers import vote_key


def majority(attempts: Sequence[Attempt], keys: Sequence[str | None] | None = None) -> Attempt | None:
    """The attempt whose answer most attempts share; a tie goes to the answer that appeared
    first. Attempts without an answer do not vote."""
    keys = list(keys) if keys is not None else [vote_key(a.answer) for a in attempts]
    counts: dict[str, int] = {}
    first: dict[str, Attempt] = {}
    for attempt, key in zip(attempts, keys):
        if key is None:
            continue
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, attempt)
    if not counts:
        return None
    best = max(counts, key=lambda k: (counts[k], -first[k].index))
    return first[best]


def best_by(attempts: Sequence[Attempt], score: Callable[[Attempt], float | None]) -> Attempt | None:
    """The highest-scoring attempt; a tie goes to the earliest; unscored attempts lose."""
    scored = [(s, a) for a in attempts if (s := score(a)) is not None]
    if not scored:
        return None
    top = max(s for s, _ in scored)
    return min((a for s, a in scored if s == top), key=lambda a: a.index)


def feedback_score(attempt: Attempt, source: str) -> float | None:
    scores = [f.score for f in attempt.feedback if f.source == source and f.score is not None]
    return scores[-1] if scores else None


def same_answer(a: Attempt, b: Attempt) -> bool:
    return vote_key(a.answer) == vote_key(b.answer)
