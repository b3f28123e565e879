"""Running units: every (strategy, item) that has no result yet, in parallel up to the
model's capacity, with progress. What one unit does is the evaluation's `unit`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from selfcorrect.models.base import Model
from selfcorrect.store import Store
from selfcorrect.strategies import Strategy
from selfcorrect.strategies.session import ModelHandle
from selfcorrect.tasks import Item


@dataclass
class Progress:
    """How far a run is: items are done when every strategy has finished them."""

    units_total: int
    items_total: int
    units_done: int = 0
    items_done: int = 0
    fresh_tokens: int = 0  # completion tokens generated so far (not served from the cache)


Unit = Callable[[Strategy, Item, tuple], Awaitable[object]]


async def run_units(store: Store, run_id: str, all_items: list[Item], strategies: list[Strategy],
                    items: list[Item] | None, unit: Unit, model: Model, critic: Model | None,
                    report: Callable[[Progress], None]) -> None:
    """Run the units of these strategies that have no result yet, on `items` (all by
    default); `report(progress)` after each one. A failure or a cancel stops every unit."""
    done = store.finished(run_id)
    pending = [(s, i) for i in all_items for s in strategies if (s.spec, i.id) not in done]
    todo = [(s, i) for s, i in pending if items is None or i in items]
    remaining = {i.id: 0 for i in all_items}  # units left per item: an item is done at 0
    for _, item in pending:
        remaining[item.id] += 1
    progress = Progress(units_total=len(all_items) * len(strategies), items_total=len(all_items),
                        units_done=len(all_items) * len(strategies) - len(pending),
                        items_done=sum(left == 0 for left in remaining.values()))
    report(progress)
    limit = asyncio.Semaphore(max(2, 2 * model.capabilities.max_parallel))
    handles = (ModelHandle(model), ModelHandle(critic) if critic is not None else None)

    async def one(strategy: Strategy, item: Item) -> None:
        async with limit:
            await unit(strategy, item, handles)
        progress.units_done += 1
        remaining[item.id] -= 1
        progress.items_done += remaining[item.id] == 0
        report(progress)

    tasks = [asyncio.ensure_future(one(s, i)) for s, i in todo]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
        raise
