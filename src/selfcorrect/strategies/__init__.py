"""Strategies: inference-time algorithms that spend model calls to produce an answer.

Each takes an item view (no gold), the model and feedback sources (through a Session), and
a budget (its options), and returns a trajectory: every attempt, every piece of feedback,
cost per phase, and the attempt it selects by its own rule. Specs name them with options:
"self-refine:rounds=3", "self-debug:explain=true", "self-debug:chains=4,select=vote".
"""

from __future__ import annotations

from selfcorrect.errors import ConfigError
from selfcorrect.registry import Registry, coerce, parse_spec, typed_value
from selfcorrect.strategies.session import Context, Outcome, Session
from selfcorrect.strategies.strategy import Strategy
from selfcorrect.strategies.compose import Chains
from selfcorrect.strategies.debug import SelfDebug
from selfcorrect.strategies.program_aided import ProgramAided
from selfcorrect.strategies.refine import CriticRefine, GatedRefine, OracleRefine, SelfCorrect, SelfRefine
from selfcorrect.strategies.reflexion import Reflexion
from selfcorrect.strategies.sampling import (
    AdaptiveConsistency,
    BestOfN,
    ConfidenceVote,
    SelfConsistency,
    Single,
    UniversalSelfConsistency,
)
from selfcorrect.strategies.search import BeamSearch, DiverseVerifierTreeSearch, MonteCarloTreeSearch
from selfcorrect.strategies.self_verify import SelfVerify

__all__ = ["Context", "Outcome", "Session", "Strategy", "STRATEGIES", "parse_strategy"]

STRATEGIES = Registry("strategy", "selfcorrect.strategies")
for _builtin in (Single, SelfConsistency, UniversalSelfConsistency, BestOfN, SelfRefine, SelfDebug,
                 Reflexion, CriticRefine, GatedRefine, ProgramAided, SelfVerify, OracleRefine, SelfCorrect,
                 AdaptiveConsistency, ConfidenceVote, BeamSearch, DiverseVerifierTreeSearch, MonteCarloTreeSearch):
    STRATEGIES.register()(_builtin)


def parse_strategy(spec: str, prompts: dict[str, dict[str, str]] | None = None) -> Strategy:
    """A strategy from its spec: NAME or NAME:key=value,... (chains and select compose;
    `prompts=FILE.toml` replaces some of its prompts). `prompts` maps strategy names to
    prompt overrides (the settings file's [prompts.NAME] tables)."""
    name, raw = parse_spec(spec, "strategy")
    entry = STRATEGIES.get(name)
    chains = typed_value(name, "strategy", "chains", raw.get("chains", "1"), 1)
    if not 1 <= chains <= 32:
        raise ConfigError(f"{name}:chains={chains} is outside 1 to 32", "choose chains from 2 to 32")
    select = raw.get("select", "vote")
    adaptive = typed_value(name, "strategy", "adaptive", raw.get("adaptive", "0"), 0)
    strategy = entry.factory(**coerce(entry, "strategy", raw, extra=("chains", "select", "adaptive", "prompts")))
    if (prompts or {}).get(name):
        strategy.with_prompts(prompts[name], f"[prompts.{name}]")
    if "prompts" in raw:
        strategy.with_prompts(_prompt_file(raw["prompts"]), raw["prompts"])
    if adaptive and chains < 2:
        raise ConfigError(f"{spec}: adaptive goes with chains", "write e.g. program-aided:chains=4,adaptive=2")
    return Chains(strategy, chains, select, adaptive) if chains > 1 else strategy


def _prompt_file(path: str) -> dict[str, str]:
    """A TOML file of prompt templates, one key = template each (multi-line strings welcome)."""
    import tomllib
    from pathlib import Path

    try:
        data = tomllib.loads(Path(path).expanduser().read_text())
    except FileNotFoundError:
        raise ConfigError(f"prompt file not found: {path}", "check the path given as prompts=FILE") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}", "fix the syntax at that place") from None
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad:
        raise ConfigError(f"{path}: {', '.join(bad)} must be text", 'write key = """template"""')
    return data
