"""What a strategy is: a self-correction method with options, bounds and its own prompts.

A strategy is small: `run(session)` spends model calls and feedback through the session
(strategies/session.py) and returns its outcome, the attempt it selects and why it stopped.
"""

from __future__ import annotations

import hashlib
import json
import string

from selfcorrect.errors import ConfigError
from selfcorrect.registry import check_bounds
from selfcorrect.strategies.session import Outcome, Session
from selfcorrect.trajectory import Attempt


class Strategy:
    """A self-correction method. Subclasses set `name`, `kinds` (the tasks they suit), and
    `prompts`, the one place their prompts live; options are keyword arguments."""

    name: str
    kinds: frozenset[str] = frozenset({"math", "code", "chat"})
    prompts: dict[str, str] = {}
    oracle = False
    # memory=true: the error memory's lessons and guidelines go before every attempt
    options: dict = {"memory": False}
    # Bounds and choices of options, checked before anything is stored: a budget beyond
    # them is a typo, and would grow memory and outlast a Ctrl-C.
    bounds: dict[str, tuple[float, float]] = {}
    choices: dict[str, tuple[str, ...]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "options" in cls.__dict__ and "memory" not in cls.options:
            cls.options = {**cls.options, "memory": False}  # every strategy can use the memory

    def __init__(self, **options):
        unknown = set(options) - set(self.options)
        if unknown:
            raise ConfigError(f"strategy {self.name} has no option {', '.join(sorted(unknown))}",
                              f"its options are: {', '.join(self.options) or 'none'}")
        check_bounds(self.name, options, self.bounds, self.choices)
        self.settings = {**self.options, **options}
        for name, value in self.settings.items():  # self.rounds, self.n, ...
            setattr(self, name, value)

    @property
    def needs(self) -> set[str]:
        """What it needs opened beside the model: "sandbox", "critic", "oracle" (checked
        before a run starts; a subclass whose needs depend on its options overrides this)."""
        return {"oracle"} if self.oracle else set()

    @property
    def spec(self) -> str:
        changed = {k: v for k, v in self.settings.items() if v != self.options[k]}
        text = ",".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in changed.items())
        return self.name + (f":{text}" if text else "")

    def prompt_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.prompts, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def custom_prompts(self) -> list[str]:
        """The prompts replaced for this instance (empty: the strategy's own)."""
        return sorted(k for k, v in self.prompts.items() if type(self).prompts.get(k) != v)

    def with_prompts(self, overrides: dict[str, str], source: str = "") -> Strategy:
        """Replace some of this instance's prompts. Each must be a prompt the strategy has,
        and use no placeholder its own prompt lacks (model text fills only those)."""
        for key, template in overrides.items():
            if key not in self.prompts:
                raise ConfigError(f"{source or self.name}: strategy {self.name} has no prompt {key!r}",
                                  f"its prompts are: {', '.join(self.prompts) or 'none'}")
            fields = {f for _, f, _, _ in string.Formatter().parse(self.prompts[key]) if f}
            try:
                used = {f for _, f, _, _ in string.Formatter().parse(template) if f}
            except ValueError as e:
                raise ConfigError(f"{source or self.name}: prompt {key!r} is not a valid template: {e}",
                                  "write placeholders as {name}, and literal braces as {{ }}") from None
            if used - fields:
                raise ConfigError(f"{source or self.name}: prompt {key!r} uses {', '.join(sorted(used - fields))}, "
                                  "which it is not given", f"its placeholders are: {', '.join(sorted(fields)) or 'none'}")
        self.prompts = {**self.prompts, **overrides}
        return self

    async def run(self, session: Session) -> Outcome:
        raise NotImplementedError


async def solve(session: Session, *, round: int = 0, n: int = 1, **params) -> list[Attempt]:
    """First attempts: the task's own prompt, as plain sampling would send it."""
    if session.view.stop:
        params.setdefault("stop", session.view.stop)
    return await session.attempt(session.view.messages, round=round, n=n, **params)
