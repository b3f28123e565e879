"""Resources: what an evaluation, a server or a training loop opens once and closes after:
the model behind the sample cache, a critic model, and the sandbox.

    async with Resources(settings, store, needs={"sandbox"}) as res:
        completions = await res.model.generate(...)

Needs are declared by strategies (`Strategy.needs`: "sandbox", "critic", "oracle") and by
tasks (a code task needs the sandbox), and checked before anything runs, so that a run that
needs a critic is refused at once when none is named rather than at its first item.
"""

from __future__ import annotations

from selfcorrect.config import Settings
from selfcorrect.errors import ConfigError
from selfcorrect.models.base import Model
from selfcorrect.cache import CachedModel
from selfcorrect.models.load import load_model
from selfcorrect.sandbox import Sandbox
from selfcorrect.store import Store

NEEDS = ("sandbox", "critic", "oracle")


def check_needs(needs: set[str], critic: str | None, who: str = "this run") -> None:
    unknown = needs - set(NEEDS)
    if unknown:
        raise ConfigError(f"{who} needs {', '.join(sorted(unknown))}, which selfcorrect does not provide",
                          f"needs are some of: {', '.join(NEEDS)}")
    if "critic" in needs and not critic:
        raise ConfigError(f"{who} needs a second model to critique",
                          "pass --critic MODEL (it may be the same as --model, or \"same\")")


class Resources:
    """`engine` and `critic_engine` replace what the settings name (tests, library use);
    engines given here stay open for their owner. A critic that is the model itself
    ("same", or the same spec) shares its cache and draws."""

    def __init__(self, settings: Settings, store: Store, *, needs: set[str] = frozenset(),
                 critic: str | None = None, engine: Model | None = None, critic_engine: Model | None = None):
        check_needs(set(needs), critic)
        self.settings, self.store, self.needs, self.critic_spec = settings, store, set(needs), critic
        self._given = (engine, critic_engine)
        self.model: Model | None = None
        self.critic: Model | None = None
        self.sandbox: Sandbox | None = None
        self._opened: list[Model] = []

    async def __aenter__(self) -> Resources:
        engine, critic_engine = self._given
        try:
            if engine is None:
                engine = load_model(self.settings)
                self._opened.append(engine)
            self.model = self._cached(engine)
            if self.critic_spec in (self.settings.model, "same"):
                self.critic = self.model  # one model: one cache, shared draws
            elif self.critic_spec:
                if critic_engine is None:
                    critic_engine = load_model(self.settings.model_copy(update={"model": self.critic_spec}))
                    self._opened.append(critic_engine)
                self.critic = self._cached(critic_engine)
            if "sandbox" in self.needs:
                self.sandbox = Sandbox(workers=self.settings.sandbox_workers, isolation=self.settings.sandbox)
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(self, *exc) -> None:
        if self.sandbox is not None:
            self.sandbox.close()
            self.sandbox = None
        while self._opened:
            await self._opened.pop().aclose()

    async def swap_model(self, engine: Model) -> Model | None:
        """Serve `engine` from now on (a new checkpoint loaded beside the incumbent); the
        incumbent stays open for the requests that hold it, until `retire`. A critic that was
        the model itself follows it."""
        old = self.model
        self.adopt(engine)
        self.model = self._cached(engine)
        if self.critic is old:
            self.critic = self.model
        return old

    def adopt(self, engine: Model) -> None:
        """An engine opened beside the model (a candidate on trial), closed with the rest."""
        if engine not in self._opened:
            self._opened.append(engine)

    async def retire(self, model: Model) -> None:
        """Close a model `swap_model` replaced (no request holds it any more)."""
        engine = getattr(model, "inner", model)
        if engine in self._opened:
            self._opened.remove(engine)
            await engine.aclose()

    def _cached(self, engine: Model) -> Model:
        return CachedModel(engine, self.store) if self.settings.cache else engine
