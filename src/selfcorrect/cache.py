"""The sample-indexed cache: a model wrapper that makes every draw a shared, stored fact.

A draw is keyed by (model identity, messages, sampling parameters except n) and its sample
index. Sample k of a request is the same draw for every caller: strategies that ask for
the same samples share them (paired comparisons), a re-run makes no model call, and an
interrupted run resumes without repeating one. Greedy requests (temperature 0) have one
draw whatever the index. Two callers asking at once for a draw not yet stored share one
model call.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, replace

from selfcorrect.models.base import Capabilities, Completion, Message, Model, SamplingParams
from selfcorrect.store import Store


def request_key(model_identity: str, messages: Sequence[Message], params: SamplingParams) -> str:
    """The cache key of a request: every sample index of it shares this key."""
    canonical = json.dumps(
        [model_identity, [[m["role"], m["content"]] for m in messages], params.draw_fields()],
        ensure_ascii=False,
        separators=(",", ":"),
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class CacheStats:
    hits: int = 0  # samples served from the store
    misses: int = 0  # samples drawn from the model
    shared: int = 0  # samples another caller was already drawing
    model_calls: int = 0
    fresh_tokens: int = 0  # completion tokens the model generated just now


class CachedModel:
    """Serves draws from the store and stores every new draw before returning it."""

    def __init__(self, inner: Model, store: Store):
        self.inner = inner
        self.store = store
        self.stats = CacheStats()
        # (request key, index) -> the task drawing it; tasks live here until they finish
        self._in_flight: dict[tuple[str, int], asyncio.Task] = {}

    @property
    def identity(self) -> str:
        return self.inner.identity

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    async def describe(self) -> dict:
        return await self.inner.describe()

    async def generate(
        self, messages: Sequence[Message], params: SamplingParams, first_index: int = 0
    ) -> list[Completion]:
        key = request_key(self.inner.identity, messages, params)
        wanted = range(first_index, first_index + params.n)
        draws = [0] * params.n if params.greedy else list(wanted)
        distinct = sorted(set(draws))
        found = self.store.get_samples(key, distinct)
        self.stats.hits += len(found)

        pending = [i for i in distinct if i not in found]
        self.stats.shared += sum((key, i) in self._in_flight for i in pending)
        missing = [i for i in pending if (key, i) not in self._in_flight]
        for run in _contiguous(missing):
            task = asyncio.create_task(self._draw(key, messages, params, run))
            # a draw whose callers all gave up (Ctrl-C) still ends; its error is seen here
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._in_flight.update({(key, i): task for i in run})
        tasks = {i: self._in_flight[(key, i)] for i in pending}  # a finished task leaves the map
        # shield: a caller that gives up must not cancel a draw that others share; every
        # draw's outcome is collected before a failure is raised, so none goes unretrieved
        drawn = await asyncio.gather(*(asyncio.shield(t) for t in tasks.values()), return_exceptions=True)
        for i, outcome in zip(tasks, drawn):
            if isinstance(outcome, BaseException):
                raise outcome
            found[i] = outcome[i]

        return [
            found[draw] if draw == index else replace(found[draw], index=index)
            for draw, index in zip(draws, wanted)
        ]

    async def _draw(
        self, key: str, messages: Sequence[Message], params: SamplingParams, run: list[int]
    ) -> dict[int, Completion]:
        """One model call for a contiguous run of indices, stored before anyone sees it."""
        self.stats.misses += len(run)
        self.stats.model_calls += 1
        try:
            completions = await self.inner.generate(
                messages, params.replace(n=len(run)), first_index=run[0]
            )
            self.store.put_samples(key, self.inner.identity, completions)
            self.stats.fresh_tokens += sum(c.completion_tokens for c in completions)
            # The first draw stored is the draw: another cache on the same store (another
            # process, another model object) may have stored one of these indices first.
            stored = self.store.get_samples(key, run)
            return {c.index: replace(stored[c.index], cached=False) if c.index in stored else c
                    for c in completions}
        finally:
            for i in run:
                self._in_flight.pop((key, i), None)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _contiguous(indices: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs
