"""The reference pool: plain samples (self-consistency) drawn until voting over them reaches
every strategy's mean tokens per item, or the cap, so that every strategy is held against
sampling at equal tokens."""

from __future__ import annotations

import math

from selfcorrect.measure.compute import vote_curve
from selfcorrect.strategies.sampling import SelfConsistency
from selfcorrect.trajectory import UnitResult

POOL_START = 8  # the reference pool's first size; it grows to the largest budget in the run


def next_pool_size(results: dict[str, list[UnitResult]], ours: set[str], pools: list[SelfConsistency],
                   cap: int) -> int | None:
    """The pool's next size, or None when it is large enough: `ours` are the strategies the
    run compares (their largest mean tokens is the budget), `pools` the run's self-consistency
    strategies, the reference pool among them."""
    budget = max((_mean_tokens(rows) for spec, rows in results.items() if spec in ours and rows), default=0.0)
    largest = max((s for s in pools if results.get(s.spec)), key=lambda s: s.n, default=None)
    if largest is None:
        size = POOL_START
    else:
        curve = vote_curve(results[largest.spec])
        if budget <= curve[-1]["tokens"] or largest.n >= cap:
            return None
        first, last = curve[0], curve[-1]
        per_sample = (last["tokens"] - first["tokens"]) / max(last["n"] - 1, 1) or first["tokens"]
        size = (math.ceil((budget - (first["tokens"] - per_sample)) / per_sample) if per_sample > 0
                else cap)  # samples that cost nothing: only the cap bounds them
        size = max(size, largest.n + 1)
    size = min(max(size, 2), cap)
    return None if largest is not None and size <= largest.n else size


def _mean_tokens(rows: list[UnitResult]) -> float:
    return sum(r.tokens for r in rows) / len(rows)
