"""Strategies: inference-time algorithms that spend model calls to produce an answer.

Each takes an item view (no gold), the model and feedback sources (through a Session), and
a budget (its options), and returns a trajectory: every attempt, every piece of feedback,
cost per phase, and the attempt it selects by its own rule. Specs name them with options:
"self-refine:rounds=3", "self-debug:explain=true", "self-debug:chains=4,select=vote".
"""

from __future__ import annotations

from selfcorrect.errors import ConfigError
from selfcorrect.strategies.base import Context, Outcome, Session, Strategy
from selfcorrect.strategies.compose import Chains
from selfcorrect.strategies.debug import SelfDebug
from selfcorrect.strategies.program_aided import ProgramAided
from selfcorrect.strategies.refine import CriticRefine, GatedRefine, OracleRefine, SelfRefine
from selfcorrect.strategies.reflexion import Reflexion
from selfcorrect.strategies.sampling import BestOfN, SelfConsistency, Single, UniversalSelfConsistency
from selfcorrect.strategies.self_verify import SelfVerify

__all__ = ["Context", "Outcome", "Session", "Strategy", "STRATEGIES", "parse_strategy"]

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (
        Single, SelfConsistency, UniversalSelfConsistency, BestOfN, SelfRefine, SelfDebug,
        Reflexion, CriticRefine, GatedRefine, ProgramAided, SelfVerify, OracleRefine)
}


def parse_strategy(spec: str) -> Strategy:
    """A strategy from its spec: NAME or NAME:key=value,... (chains and select compose)."""
    name, _, rest = spec.strip().partition(":")
    cls = STRATEGIES.get(name)
    if cls is None:
        raise ConfigError(f"unknown strategy {name!r}", f"use one of: {', '.join(STRATEGIES)}")
    options: dict = {}
    for pair in filter(None, (p.strip() for p in rest.split(","))):
        key, equals, value = pair.partition("=")
        if not equals:
            raise ConfigError(f"option {pair!r} of strategy {name} has no value", "write key=value")
        options[key.strip()] = value.strip()
    chains = _typed(name, "chains", options.pop("chains", "1"), 1)
    if not 1 <= chains <= 32:
        raise ConfigError(f"{name}:chains={chains} is outside 1 to 32", "choose chains from 2 to 32")
    select = options.pop("select", "vote")
    typed = {key: _typed(name, key, value, cls.options.get(key)) for key, value in options.items()}
    strategy = cls(**typed)
    return Chains(strategy, chains, select) if chains > 1 else strategy


def _typed(strategy: str, key: str, value: str, default):
    """An option's value, of the type of its default."""
    try:
        if isinstance(default, bool):
            if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
                raise ValueError(value)
            return value.lower() in ("true", "yes", "1")
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise ConfigError(f"option {key}={value!r} of strategy {strategy} is not a {type(default).__name__}",
                          f"the default is {default!r}") from None
    return value
