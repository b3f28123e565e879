"""Composition: any strategy run as k independent chains, then one answer selected among
the chains' answers (`self-debug:chains=4,select=vote`): self-debug on each of 4 samples,
then a vote. Chain c draws its own samples (c*n + k), so chains differ.

select:
  vote   majority over the chains' answers (for code, over behaviour on the visible
         tests' inputs); a tie goes to the earliest chain
  tests  the chain whose answer passes most visible tests (code)
"""

from __future__ import annotations

import asyncio

from selfcorrect.errors import ConfigError
from selfcorrect.strategies.selection import best_by, feedback_score, majority
from selfcorrect.strategies.session import Outcome, Session
from selfcorrect.strategies.strategy import Strategy

SELECTIONS = ("vote", "tests")


class Chains(Strategy):
    def __init__(self, inner: Strategy, chains: int, select: str = "vote"):
        if chains < 2:
            raise ConfigError(f"chains={chains}: composition needs at least 2", "use chains=2 or more")
        if select not in SELECTIONS:
            raise ConfigError(f"unknown selection {select!r}", f"use one of: {', '.join(SELECTIONS)}")
        self.inner, self.chains, self.select = inner, chains, select
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
        return f"{self.inner.spec}{separator}chains={self.chains},select={self.select}"

    async def run(self, session: Session) -> Outcome:
        outcomes = await asyncio.gather(*(self.inner.run(session.chain(c)) for c in range(self.chains)))
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
        return session.done(chosen or finals[0], f"{self.select} over {self.chains} chains", signal=signal,
                            no_signal="the chains' answers gave nothing to choose between")
