"""Process labels from rollouts (Math-Shepherd), with a binary search for the first wrong
step (OmegaPRM): the data a process reward model learns from, made by the model itself.

A sampled solution is split into steps as search grows them (verify/steps.py, as search grows them in strategies/search.py). The
value of a prefix is estimated by `k` completions from it: the share that reach an answer
the task's check accepts (soft label), or whether any does (hard label). A right solution's
steps are all labelled good without rollouts (each prefix provably reaches a right answer:
the solution itself). For a wrong one, the first prefix from which no rollout recovers is
found by binary search over the prefixes (assuming a prefix that cannot recover stays so
when extended), so a solution of s steps costs about log2(s) prefixes of k rollouts instead
of s: steps before it are labelled good, it and every later step bad.

The gold answer decides only whether a rollout of a *train* item reached a right answer; the
labels of held-out items are measured the same way, only to score the PRM afterwards. No
step label ever reaches a strategy at test time.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from selfcorrect.models.base import Model, SamplingParams
from selfcorrect.tasks import Item, Task
from selfcorrect.verify.steps import split_steps


class Labelled(BaseModel):
    """One solution, its steps and a label per step, with how they were found."""

    item_id: str
    prompt: list[dict]
    steps: list[str]
    labels: list[bool]  # hard: some rollout from the step's prefix reached a right answer
    values: list[float | None]  # soft: the share that did, where rollouts were drawn
    correct: bool  # the whole solution
    rollouts: int = 0  # completions drawn for it
    provenance: dict = Field(default_factory=dict)


async def label_solution(model: Model, task: Task, item: Item, text: str, *, step: str = "sentence",
                         k: int = 4, params: SamplingParams, provenance: dict | None = None) -> Labelled | None:
    """Step labels of one sampled solution (None when it has no steps)."""
    steps = split_steps(text, step)
    if not steps:
        return None
    correct = (await task.check(item, text, None, "stop")).correct
    record = Labelled(item_id=item.id, prompt=list(item.view.messages), steps=steps, labels=[correct] * len(steps),
                      values=[None] * len(steps), correct=correct, provenance=provenance or {})
    if correct:
        return record

    async def value(prefix: int) -> float:
        """The share of k completions from steps[:prefix + 1] that reach a right answer."""
        started = "".join(steps[: prefix + 1])
        completions = await model.generate([*record.prompt, {"role": "assistant", "content": started}], params.replace(n=k))
        record.rollouts += len(completions)
        verdicts = await asyncio.gather(*(task.check(item, started + c.text, None, c.finish_reason)
                                          for c in completions))
        record.values[prefix] = sum(v.correct for v in verdicts) / len(verdicts)
        return record.values[prefix]

    # the last step of a wrong solution is wrong (it states the wrong answer): search before it
    low, high = 0, len(steps) - 1  # the first unrecoverable prefix lies in [low, high]
    record.values[high] = 0.0
    while low < high:
        middle = (low + high) // 2
        if await value(middle) > 0:
            low = middle + 1
        else:
            high = middle
    record.labels = [i < low for i in range(len(steps))]
    return record


async def label_solutions(model: Model, task: Task, solutions: Sequence[tuple[Item, str, dict]], *,
                          step: str = "sentence", k: int = 4, params: SamplingParams,
                          on_done=None) -> list[Labelled]:
    """`solutions`: (item, sampled text, provenance). Labelled concurrently, as many at once
    as the model serves well."""
    limit = asyncio.Semaphore(max(1, model.capabilities.max_parallel))

    async def one(item: Item, text: str, provenance: dict) -> Labelled | None:
        async with limit:
            labelled = await label_solution(model, task, item, text, step=step, k=k, params=params,
                                            provenance=provenance)
        if on_done is not None:
            on_done()
        return labelled

    done = await asyncio.gather(*(one(*s) for s in solutions))
    return [d for d in done if d is not None]


def write(records: Sequence[Labelled], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(r.model_dump_json() + "\n" for r in records))


def read(path: Path) -> list[Labelled]:
    return [Labelled(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
