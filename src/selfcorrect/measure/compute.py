"""Compute-matched comparison: every strategy against plain sampling at equal tokens.

From one pool of N samples per item (self-consistency's, or best-of-n's), the accuracy of
voting over n = 1, 2, 4 ... N samples is read off the first n samples, which are exactly
the draws self-consistency with n would have made (draws are sample-indexed): a whole
curve, with no extra generation. A strategy's gain is its accuracy minus the sampling
curve's at the same mean tokens per item (interpolated between pool sizes).
"""

from __future__ import annotations

from collections.abc import Sequence

from selfcorrect.strategies.selection import majority
from selfcorrect.verify.answers import vote_key
from selfcorrect.trajectory import Attempt, UnitResult


def pool_sizes(n: int) -> list[int]:
    sizes, size = [], 1
    while size < n:
        sizes.append(size)
        size *= 2
    return sizes + [n]


def vote_curve(results: Sequence[UnitResult]) -> list[dict]:
    """Majority-vote accuracy and mean tokens per item at each pool size, from
    self-consistency results: over answers, or for code over the behaviour each program
    showed (kept in its feedback), exactly as self-consistency voted."""

    def pick(attempts: list[Attempt]) -> int | None:
        chosen = majority(attempts, [_vote(a) for a in attempts])
        return chosen.index if chosen is not None else None

    return _curve(results, pick)


def best_of_curve(results: Sequence[UnitResult], source: str) -> list[dict]:
    """Best-of-n accuracy and mean tokens at each pool size: the verifier's favourite among
    the first n samples (its calls counted in the tokens, shared out per sample)."""

    def pick(attempts: list[Attempt]) -> int:
        return max(attempts, key=lambda a: (s if (s := _score(a, source)) is not None else -1.0, -a.index)).index

    def verifier_tokens(result: UnitResult, size: int) -> float:
        feedback = result.trajectory.cost["feedback"]
        return (feedback.prompt_tokens + feedback.completion_tokens) * size / _first_attempts(result)

    return _curve(results, pick, verifier_tokens)


def _curve(results: Sequence[UnitResult], pick, extra_tokens=lambda result, size: 0.0) -> list[dict]:
    """Accuracy and mean tokens per item when `pick` chooses among the first n samples."""
    if not results:
        return []
    curve = []
    for size in pool_sizes(min(_first_attempts(r) for r in results)):
        right, tokens = 0, 0.0
        for result in results:
            attempts = result.trajectory.attempts[:size]
            chosen = pick(attempts)
            right += chosen is not None and result.grades[chosen].correct
            tokens += (_prompt_tokens(attempts) + sum(a.completion_tokens for a in attempts)
                       + extra_tokens(result, size))
        curve.append({"n": size, "accuracy": right / len(results), "tokens": tokens / len(results)})
    return curve


def accuracy_at(curve: Sequence[dict], tokens: float) -> tuple[float | None, str]:
    """The curve's accuracy at a token budget (linear between points), and whether the
    budget lies within it, below its first point, or beyond its last."""
    if not curve:
        return None, "no pool"
    if tokens <= curve[0]["tokens"]:
        return curve[0]["accuracy"], "below" if tokens < curve[0]["tokens"] else "within"
    for low, high in zip(curve, curve[1:]):
        if tokens <= high["tokens"]:
            share = (tokens - low["tokens"]) / (high["tokens"] - low["tokens"]) if high["tokens"] > low["tokens"] else 1
            return low["accuracy"] + share * (high["accuracy"] - low["accuracy"]), "within"
    return curve[-1]["accuracy"], "beyond"


def budget_for(curve: Sequence[dict], accuracy: float) -> tuple[dict | None, str]:
    """What the curve spends to first reach `accuracy`: tokens and samples, linear between
    points; "within" when it does inside the pool, "beyond" (None) when it never does there."""
    if not curve:
        return None, "no pool"
    if accuracy <= curve[0]["accuracy"]:
        return {"tokens": curve[0]["tokens"], "samples": float(curve[0]["n"])}, "within"
    for low, high in zip(curve, curve[1:]):
        if accuracy <= high["accuracy"]:
            share = (accuracy - low["accuracy"]) / (high["accuracy"] - low["accuracy"])
            return {"tokens": low["tokens"] + share * (high["tokens"] - low["tokens"]),
                    "samples": low["n"] + share * (high["n"] - low["n"])}, "within"
    return None, "beyond"


def _prompt_tokens(attempts: list[Attempt]) -> int:
    """The prompt tokens the first n samples were charged: once where the backend shares a
    prompt among a request's samples, per sample where it does not (runs recorded before
    per-attempt billing, with nothing billed: once)."""
    return sum(a.prompt_billed for a in attempts) or attempts[0].prompt_tokens


def _vote(attempt: Attempt) -> str | None:
    behaviour = [f.text for f in attempt.feedback if f.source == "behaviour"]
    if behaviour:
        return behaviour[-1] or None
    return vote_key(attempt.answer)


def _first_attempts(result: UnitResult) -> int:
    return sum(1 for a in result.trajectory.attempts if a.round == 0 and a.chain == 0)


def _score(attempt: Attempt, source: str) -> float | None:
    scores = [f.score for f in attempt.feedback if f.source == source and f.score is not None]
    return scores[-1] if scores else None
