"""A new recipe, swapped into a running server (`serve --recipe DIR`): the folder is watched,
a changed recipe.json is checked and its checkpoint loaded beside the incumbent, and new
requests go to it; requests in flight finish on the model they started with, which is closed
once the last of them is done. A recipe that does not load leaves the incumbent serving.
With a canary share (serve/canary.py) the new checkpoint is a candidate instead, swapped in
only once the evidence promotes it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path

from selfcorrect.models.base import Model
from selfcorrect.models.recipe import RECIPE_FILE, read_recipe, write_recipe

log = logging.getLogger(__name__)


class RecipeSwaps:
    """A server's models over time: the one requests take now, those still finishing requests
    after a swap, and the swaps made."""

    def __init__(self, server):
        self.server = server
        self.in_flight: dict[int, int] = {}  # requests holding each model (by id)
        self.retiring: dict[int, Model] = {}
        self.swaps: list[dict] = []
        self.error: str | None = None
        self.incumbent: dict | None = None
        self._stamp: tuple[int, int] | None = None
        self._watcher: asyncio.Task | None = None
        self.canary = None
        self.load = None  # how a recipe's checkpoint is opened (models/load.py; a test gives its own)

    def start(self) -> None:
        from selfcorrect.serve.canary import Canary

        config = self.server.config
        self._stamp = _stamp(config.recipe)
        described_by = config.recipe
        if config.improve is not None:
            self._stamp = None  # a cycle's recipe offered before a restart is offered again
            described_by = Path(config.improve.folder) / "incumbent"  # the last promoted, if any
        self.incumbent = (self._described(read_recipe(described_by), self.server.model_name)
                          if _stamp(described_by) else {"identity": self.server.model_name, "round": None})
        if config.canary > 0:
            self.canary = Canary(self.server, config.canary, config.canary_margin, config.canary_flip_cap)
        self._watcher = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        if self.canary is not None:
            self.canary.close()
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(BaseException):
                await self._watcher

    @contextlib.asynccontextmanager
    async def holding(self, model: Model | None = None):
        """The model a request runs on (the serving one, or a candidate's shadow), for as long as it runs."""
        model = model or self.server.resources.model
        self.in_flight[id(model)] = self.in_flight.get(id(model), 0) + 1
        try:
            yield model
        finally:
            self.in_flight[id(model)] -= 1
            await self._close_if_done(model)

    def health(self) -> dict:
        return {"incumbent": self.incumbent, "candidate": self.canary.health() if self.canary else None,
                "swaps": len(self.swaps), "last_swap": self.swaps[-1] if self.swaps else None,
                "swap_error": self.error, "retiring": len(self.retiring)}

    @staticmethod
    def _described(recipe, identity: str) -> dict:
        return {"identity": identity, "round": recipe.round, "strategy": recipe.strategy,
                "heldout": recipe.heldout.accuracy, "weights": recipe.weights}

    async def _watch(self) -> None:
        config = self.server.config
        while True:
            await asyncio.sleep(config.watch_seconds)
            stamp = _stamp(config.recipe)
            if stamp is None or stamp == self._stamp:
                continue
            self._stamp = stamp
            try:
                await self.swap()
            except Exception as e:  # the incumbent keeps serving whatever the new recipe did wrong
                self.error = f"{type(e).__name__}: {e}"
                log.warning("the new recipe in %s was not swapped in: %s", config.recipe, e)

    async def swap(self) -> dict:
        """The recipe now in the folder: checked, its checkpoint loaded in a thread (the
        incumbent serves meanwhile), then every new request goes to it; with a canary, it
        goes on trial instead."""
        from selfcorrect.models.load import load_model
        from selfcorrect.models.recipe import check_identity, is_measured_against

        server, config = self.server, self.server.config
        recipe = read_recipe(config.recipe)
        check_identity(recipe, config.recipe)
        settings = server.settings.model_copy(update={"model": f"recipe:{config.recipe}"})
        engine = await asyncio.to_thread(self.load or load_model, settings)
        described = self._described(recipe, engine.identity)
        if self.canary is not None:
            if recipe.evidence:  # whether it was measured against the model serving reads its GGUF: off the loop (cached)
                await asyncio.to_thread(is_measured_against, recipe.evidence["against"], server.resources.model)
            self.canary.offer(engine, recipe, described)
            return described
        return await self.promote(engine, recipe, described)

    async def promote(self, engine, recipe, described: dict, evidence: dict | None = None) -> dict:
        """`engine` serves every new request from now on."""
        server, config = self.server, self.server.config
        old = await server.resources.swap_model(engine)
        before = self.incumbent
        server.model_name = server.resources.model.identity
        if config.recipe_strategy:
            config.strategy = recipe.strategy
            config.temperature = recipe.sampling.get("temperature", config.temperature)
        self.incumbent, self.error = described, None
        if config.improve is not None:  # what a restart serves
            (Path(config.improve.folder) / "incumbent").mkdir(parents=True, exist_ok=True)
            write_recipe(recipe, Path(config.improve.folder) / "incumbent")
        self.swaps.append({"at": time.time(), "from": before, "to": self.incumbent, "evidence": evidence})
        self.retiring[id(old)] = old
        await self._close_if_done(old)
        log.info("swapped in round %s of %s (%s)", recipe.round, config.recipe, server.model_name)
        return self.incumbent

    async def drop(self, model: Model) -> None:
        """A candidate rolled back or replaced: closed once no shadow run holds it."""
        self.retiring[id(model)] = model
        await self._close_if_done(model)

    async def _close_if_done(self, model: Model) -> None:
        key = id(model)
        if key in self.retiring and not self.in_flight.get(key):
            self.in_flight.pop(key, None)
            await self.server.resources.retire(self.retiring.pop(key))


def _stamp(folder: str) -> tuple[int, int] | None:
    """What tells a rewritten recipe.json: its time and size (None while it is missing)."""
    try:
        stat = (Path(folder) / RECIPE_FILE).stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size
