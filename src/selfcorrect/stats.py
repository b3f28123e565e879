"""Statistics for small samples, exact where it is cheap to be."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass


def wilson(successes: int, total: int, z: float = 1.959964) -> tuple[float, float]:
    """The Wilson score interval for a proportion (95% by default); (0, 1) with no data."""
    if total == 0:
        return 0.0, 1.0
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar(only_first: int, only_second: int) -> float:
    """Exact McNemar test on paired outcomes: the two-sided p-value that two methods are
    equally accurate, from the items only the first got right and only the second did."""
    discordant = only_first + only_second
    if discordant == 0:
        return 1.0
    smaller = min(only_first, only_second)
    tail = sum(math.comb(discordant, k) for k in range(smaller + 1)) / 2**discordant
    return min(1.0, 2 * tail)


@dataclass(frozen=True)
class Paired:
    """Two runs compared item by item on the items both have: how many went wrong→right and
    right→wrong from `before` to `after`, the exact McNemar p-value of those discordant pairs,
    and the difference in accuracy on the shared items (after minus before)."""

    items: int
    wrong_to_right: int
    right_to_wrong: int
    p_value: float
    difference: float

    @classmethod
    def of_counts(cls, items: int, wrong_to_right: int, right_to_wrong: int) -> Paired:
        return cls(items=items, wrong_to_right=wrong_to_right, right_to_wrong=right_to_wrong,
                   p_value=mcnemar(wrong_to_right, right_to_wrong),
                   difference=(wrong_to_right - right_to_wrong) / items if items else 0.0)

    def to_dict(self) -> dict:
        return asdict(self)


def paired(before: Mapping[str, bool], after: Mapping[str, bool]) -> Paired:
    """The one paired comparison: verdicts keyed by item, compared on the items both hold."""
    shared = [item for item in after if item in before]
    return Paired.of_counts(len(shared), sum(not before[i] and after[i] for i in shared),
                            sum(before[i] and not after[i] for i in shared))


# the bets mixed in `evidence_not_worse`: a share of the most a bet may stake (it must never
# lose everything on one pair), from timid (slow, safe when pairs are noisy) to bold
_BETS = (0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 0.9)


def evidence_not_worse(helped: int, hurt: int, pairs: int, margin: float) -> float:
    """An e-value that a candidate's accuracy is above the incumbent's minus `margin`, from
    paired trials: `helped` right with the candidate only, `hurt` right with the incumbent
    only, of `pairs`. Valid however often it is looked at.

    Each pair is a bet on X + margin, X = +1, -1 or 0 (the candidate's side won, lost, tied):
    the wealth (1 + l (X + margin)) grows with a gain. Under "the candidate is worse by at least
    the margin" (E[X] <= -margin) every bet's wealth is a nonnegative supermartingale, and so is
    their average over the stakes l in `_BETS` (scaled so that a loss never takes it all): by
    Ville's inequality it reaches 1/alpha with chance at most alpha, over any number of looks.
    It depends only on the counts, so the order of the pairs does not matter. At margin 0 it is
    a test of gain, like `evidence_of_gain`, with ties counted (they stake margin * l = 0)."""
    if not 0 <= margin < 1:
        raise ValueError(f"a non-inferiority margin of {margin} is not in [0, 1)")
    ties = pairs - helped - hurt
    if ties < 0:
        raise ValueError(f"{helped} + {hurt} discordant pairs of {pairs}")
    total = 0.0
    for share in _BETS:
        stake = share / (1 - margin)  # the loss (1 - margin) * stake stays below 1
        log = (helped * math.log1p(stake * (1 + margin)) + hurt * math.log1p(-stake * (1 - margin))
               + ties * math.log1p(stake * margin))
        total += math.exp(min(log, 700.0))
    return total / len(_BETS)


def evidence_of_gain(gains: int, losses: int) -> float:
    """An e-value that the chance of a gain among discordant pairs exceeds one half, valid
    however often it is looked at (a test of power one: Ville's inequality).

    It is the likelihood ratio of the pairs against p = 1/2, averaged over a uniform prior on
    p in [1/2, 1]: a nonnegative supermartingale under every p <= 1/2, so the chance that it
    ever reaches 1/alpha, over a stream of any length, is at most alpha. In closed form, with
    n = gains + losses: sum_{j <= gains} C(n+1, j) / ((n+1) C(n, gains)), exact in integers.
    Seven straight gains reach 31.9 (past 1/0.05 = 20); a fixed-sample test re-run after
    every pair admitted a no-effect arm 9-16% of the time instead of 5%."""
    n = gains + losses
    numerator, term = 0, 1  # term: C(n+1, j), each from the last (one comb per j was quadratic in n)
    for j in range(gains + 1):
        numerator += term
        term = term * (n + 1 - j) // (j + 1)
    try:
        return numerator / ((n + 1) * math.comb(n, gains))
    except OverflowError:
        return math.inf
