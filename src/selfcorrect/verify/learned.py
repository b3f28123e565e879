"""A trained verifier as a scorer in strategy specs: `prm:PATH` (a process reward model, one
score per step) or `orm:PATH` (an outcome verifier, one score per solution), trained by
`selfcorrect train-verifier` (train/verifier.py). Scoring runs off the event loop; its
forward pass is charged to the feedback phase as the tokens it read, since at equal compute
a verifier's reading counts like the policy's."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from selfcorrect.errors import ConfigError

LEARNED = ("prm", "orm")


def parse_learned(spec: str) -> tuple[str, Path] | None:
    """("prm" | "orm", path) for a learned verifier's spec, None for any other scorer name."""
    kind, colon, path = spec.partition(":")
    if kind not in LEARNED:
        return None
    if not colon or not path:
        raise ConfigError(f"{kind} names a trained verifier by its folder: {kind}:PATH",
                          "train one with `selfcorrect train-verifier`, then give its model folder")
    return kind, Path(path)


async def learned_scores(session, spec: str, steps: Sequence[str]) -> list[float]:
    """The verifier's scores of a (partial) solution given as steps: one per step for a PRM,
    one for the whole for an ORM."""
    from selfcorrect.train.verifier import Verifier

    kind, path = parse_learned(spec)
    verifier = await asyncio.to_thread(Verifier.load, path, kind)
    reading = await asyncio.to_thread(verifier.read, list(session.view.messages), list(steps))
    cost = session.trajectory.cost["feedback"]
    cost.calls += 1
    cost.prompt_tokens += reading.tokens
    cost.sent_requests += 1  # a forward pass: never served from a cache
    cost.sent_prompt_tokens += reading.tokens
    cost.seconds += reading.seconds
    return reading.scores
