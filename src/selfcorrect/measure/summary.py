"""Per task and strategy: accuracy with its interval, parse failures, flips per revision
round, cost per phase, paired tests against the baseline, and the compute-matched
comparison with plain sampling."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from selfcorrect.measure.compute import accuracy_at, best_of_curve, budget_for, vote_curve
from selfcorrect.measure.flips import flip_matrices
from selfcorrect.stats import paired, wilson
from selfcorrect.trajectory import PHASES, SENT_FIELDS, UnitResult

COST_FIELDS = ("calls", "prompt_tokens", "completion_tokens", *SENT_FIELDS, "seconds", "sandbox_runs",
               "sandbox_seconds")


def summarize(results: dict[str, list[UnitResult]], oracle: set[str], kind: str, baseline: str | None = None) -> dict:
    """`results`: stored results by strategy spec, in the order the run listed them. The
    baseline of the paired tests: `baseline`, else single, else the first strategy."""
    strategies = {spec: _one(spec, rows, spec in oracle) for spec, rows in results.items()}
    if baseline not in results:
        baseline = "single" if "single" in results else next(iter(results), None)
    if baseline is not None:
        for spec, rows in results.items():
            strategies[spec]["versus_baseline"] = None if spec == baseline else _paired(results[baseline], rows)
    pool = _pool(results, kind)
    for spec, summary in strategies.items():
        summary["compute_matched"] = _matched(summary, pool["vote"], pool["best_of"])
    return {"baseline": baseline, "strategies": strategies, "curves": pool}


def _one(spec: str, rows: Sequence[UnitResult], oracle: bool) -> dict:
    n = len(rows)
    right = sum(r.final.correct for r in rows)
    failures = sum(r.final.parse_failure for r in rows)
    truncated = sum(r.final.failure == "truncated" for r in rows)
    judged = [r.trajectory.signal for r in rows if r.trajectory.signal is not None]
    low, high = wilson(right, n)
    cost = {phase: {f: _mean_known(getattr(r.trajectory.cost[phase], f) for r in rows) for f in COST_FIELDS}
            for phase in PHASES}
    tokens = _mean(r.tokens for r in rows)
    # what reached the backend, beside the notional cost above (None: recorded before it was counted)
    sent = {"requests": _mean_known(r.sent_requests for r in rows), "tokens": _mean_known(r.sent_tokens for r in rows),
            "calls": _mean(sum(c.calls for c in r.trajectory.cost.values()) for r in rows)}
    return {
        "strategy": spec, "oracle": oracle, "items": n, "correct": right,
        "accuracy": right / n if n else None, "interval": [low, high],
        "parse_failures": failures, "parse_failure_rate": failures / n if n else None,
        "truncated": truncated, "truncation_rate": truncated / n if n else None,
        # Items where the selector or stop rule had nothing to act on, of those where it applies
        "no_signal": judged.count(False), "no_signal_rate": judged.count(False) / len(judged) if judged else None,
        "no_signal_reasons": dict(Counter(r.trajectory.no_signal for r in rows if r.trajectory.signal is False)),
        "tokens_per_item": tokens, "sent_per_item": sent, "cost_per_item": cost,
        "flips": [m.to_dict() for m in flip_matrices(rows)],
        "stops": dict(Counter(r.trajectory.stop for r in rows)),
        "attempts_per_item": _mean(len(r.trajectory.attempts) for r in rows),
    }


def _paired(baseline: Sequence[UnitResult], rows: Sequence[UnitResult]) -> dict:
    """McNemar's exact test on the items both ran (wrong→right: right here, wrong in the baseline)."""
    return paired({r.item: r.final.correct for r in baseline}, {r.item: r.final.correct for r in rows}).to_dict()


def _pool(results: dict[str, list[UnitResult]], kind: str) -> dict:
    """Sampling curves from the largest self-consistency and best-of-n pools in the run."""
    def largest(name):
        specs = [s for s in results if s.split(":")[0] == name and results[s]]
        return max(specs, key=lambda s: len(results[s][0].trajectory.attempts), default=None)

    vote_spec, best_spec = largest("self-consistency"), largest("best-of-n")
    best_source = None
    if best_spec:
        feedback = [f.source for a in results[best_spec][0].trajectory.attempts for f in a.feedback]
        best_source = feedback[0] if feedback else None
    return {
        "vote": {"strategy": vote_spec, "points": vote_curve(results[vote_spec]) if vote_spec else []},
        "best_of": {"strategy": best_spec, "verifier": best_source,
                    "points": best_of_curve(results[best_spec], best_source) if best_spec and best_source else []},
    }


def _matched(summary: dict, vote: dict, best_of: dict) -> dict:
    """Against voting at the strategy's mean tokens, and the other way round: what voting
    spends to reach the strategy's accuracy (samples saved, for adaptive voting); against
    the run's best-of-n with its verifier (a search's scorer) where the run has one."""
    accuracy = summary["accuracy"]
    pool_accuracy, where = accuracy_at(vote["points"], summary["tokens_per_item"])
    gain = accuracy - pool_accuracy if pool_accuracy is not None and accuracy is not None else None
    needs, reached = budget_for(vote["points"], accuracy) if accuracy is not None else (None, "no pool")
    matched = {"sampling_accuracy": pool_accuracy, "gain": gain, "budget": where,
               "sampling_for_equal_accuracy": needs, "equal_accuracy_budget": reached}
    if best_of["points"] and accuracy is not None:
        best_accuracy, best_where = accuracy_at(best_of["points"], summary["tokens_per_item"])
        matched["best_of"] = {"strategy": best_of["strategy"], "verifier": best_of["verifier"],
                              "accuracy": best_accuracy, "gain": accuracy - best_accuracy, "budget": best_where}
    return matched


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _mean_known(values) -> float | None:
    """The mean, or None where any value is unknown (recorded before it was counted)."""
    values = list(values)
    return None if any(v is None for v in values) else _mean(values)
