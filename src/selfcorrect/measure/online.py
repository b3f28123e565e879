"""An online evaluation's measures: each memory=on strategy against its twin without memory
on the same items in the same order, accuracy over time (cumulative and over a sliding
window), the paired test over all items, over the items the memory learned from, and over
the held-out items (after learning, memory frozen), and how often the memory had anything
to show."""

from __future__ import annotations

from collections.abc import Sequence

from selfcorrect.stats import paired, wilson
from selfcorrect.trajectory import UnitResult

WINDOW = 20


def online_summary(results: dict[str, list[UnitResult]], item_ids: Sequence[str], train_items: int,
                   twins: dict[str, str], window: int = WINDOW) -> dict:
    """`twins`: each memory=on strategy's spec to its twin's; results in the run's item order."""
    out = {"window": window, "train_items": train_items, "heldout_items": len(item_ids) - train_items, "pairs": []}
    for spec, twin in twins.items():
        mine = {r.item: r for r in results.get(spec, [])}
        theirs = {r.item: r for r in results.get(twin, [])}
        order = [i for i in item_ids if i in mine and i in theirs]
        with_memory = [mine[i].final.correct for i in order]
        without = [theirs[i].final.correct for i in order]
        shown = [bool((mine[i].trajectory.memory or {}).get("lessons") or (mine[i].trajectory.memory or {}).get("rules"))
                 for i in order]
        train = [k for k, i in enumerate(order) if item_ids.index(i) < train_items]
        heldout = [k for k, i in enumerate(order) if item_ids.index(i) >= train_items]
        out["pairs"].append({
            "strategy": spec, "twin": twin, "items": len(order),
            "curve": {"cumulative": {"memory": _cumulative(with_memory), "twin": _cumulative(without)},
                      "window": {"memory": _window(with_memory, window), "twin": _window(without, window)}},
            "all": _paired(with_memory, without, range(len(order))),
            "train": _paired(with_memory, without, train),
            "heldout": _paired(with_memory, without, heldout) if heldout else None,
            "memory_shown": sum(shown), "memory_shown_rate": sum(shown) / len(order) if order else None,
            "tokens_per_item": {"memory": _mean(mine[i].tokens for i in order),
                                "twin": _mean(theirs[i].tokens for i in order)},
        })
    return out


def _paired(a: list[bool], b: list[bool], positions) -> dict:
    """Memory (`a`) against its twin (`b`): wrong→right is right with memory only."""
    positions = list(positions)
    n = len(positions)
    right_a, right_b = sum(a[k] for k in positions), sum(b[k] for k in positions)
    return {"memory": right_a / n if n else None, "twin": right_b / n if n else None,
            "memory_interval": list(wilson(right_a, n)), "twin_interval": list(wilson(right_b, n)),
            **paired({k: b[k] for k in positions}, {k: a[k] for k in positions}).to_dict()}


def _cumulative(flags: list[bool]) -> list[float]:
    out, right = [], 0
    for k, flag in enumerate(flags, start=1):
        right += flag
        out.append(right / k)
    return out


def _window(flags: list[bool], window: int) -> list[float]:
    return [sum(flags[max(0, k + 1 - window): k + 1]) / (k + 1 - max(0, k + 1 - window)) for k in range(len(flags))]


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0
