"""Composition: any strategy run as k independent chains, then one answer selected among
the chains' answers (`self-debug:chains=4,select=vote`): self-debug on each of 4 samples,
then a vote. Chain c draws its own samples (c*n + k), so chains differ.

select:
  vote   majority over the chains' answers (for code, over behaviour on the visible
         tests' inputs); a tie goes to the earliest chain
  tests  the chain whose answer passes most visible tests (code)

adaptive=k (with vote): the first k chains run; the rest only where those k did not all give
one answer (`program-aided:chains=4,adaptive=2`). Chain c is chain c either way (its own
draws), so an item that needs all the chains has the draws it would have had without.
"""

from __future__ import annotations

import asyncio

from selfcorrect.errors import ConfigError
from selfcorrect.strategies.selection import best_by, feedback_score, majority
from selfcorrect.strategies.session import Outcome, Session
from selfcorrect.strategies.strategy import Strategy

SELECTIONS = ("vote", "tests")


class Chains(Strategy):
    def __init__(self, inner: Strategy, chains: int, select: str = "vote", adaptive: int = 0):
        if chains < 2:
            raise ConfigError(f"chains={chains}: composition needs at least 2", "use chains=2 or more")
        if select not in SELECTIONS:
            raise ConfigError(f"unknown selection {select!r}", f"use one of: {', '.join(SELECTIONS)}")
        if adaptive and not (2 <= adaptive < chains and select == "vote"):
            raise ConfigError(f"adaptive={adaptive} with chains={chains},select={select}",
                              "adaptive=k runs k chains first (2 <= k < chains) and goes on where their votes differ: "
                              "it goes with select=vote")
        self.inner, self.chains, self.select, self.adaptive = inner, chains, select, adaptive
        self.name, self.kinds, self.prompts = inner.name, inner.kinds, inner.prompts
        self.oracle, self.settings, self.memory = inner.oracle, {}, inner.memory

    @property
    def needs(self) -> set[str]:
        return self.inner.needs | ({"sandbox"} if self.select == "tests" else set())

    def with_prompts(self, overrides: dict[str, str], source: str = "") -> Strategy:
        self.inner.with_prompts(overrides, source)
        self.prompts = self.inner.prompts
        return self

    @property
    def custom_prompts(self) -> list[str]:
        return self.inner.custom_prompts

    @property
    def spec(self) -> str:
        separator = "," if ":" in self.inner.spec else ":"
        return (f"{self.inner.spec}{separator}chains={self.chains},select={self.select}"
                + (f",adaptive={self.adaptive}" if self.adaptive else ""))

    async def run(self, session: Session) -> Outcome:
        first = self.adaptive or self.chains
        outcomes = await asyncio.gather(*(self.inner.run(session.chain(c)) for c in range(first)))
        if first < self.chains and not await self._agreed(session, outcomes):
            outcomes += await asyncio.gather(*(self.inner.run(session.chain(c)) for c in range(first, self.chains)))
        finals = [o.final for o in outcomes if o.final is not None]
        if not finals:
            return session.done(None, "no chain answered", signal=False, no_signal="no chain answered")
        if self.select == "tests":
            for final in finals:
                if feedback_score(final, "visible tests") is None:
                    await session.visible_tests(final)
            chosen = best_by(finals, lambda a: feedback_score(a, "visible tests"))
            signal = len({feedback_score(f, "visible tests") for f in finals}) > 1
        else:
            keys = await session.kind.vote_keys(session, finals)
            chosen = majority(finals, keys)
            signal = chosen is not None and keys.count(keys[finals.index(chosen)]) > 1
        return session.done(chosen or finals[0], f"{self.select} over {len(outcomes)} chains", signal=signal,
                            no_signal="the chains' answers gave nothing to choose between")

    async def _agreed(self, session: Session, outcomes: list[Outcome]) -> bool:
        """Whether every chain run so far answered, and with one answer."""
        finals = [o.final for o in outcomes]
        if any(f is None for f in finals):
            return False
        keys = await session.kind.vote_keys(session, finals)
        return None not in keys and len(set(keys)) == 1
