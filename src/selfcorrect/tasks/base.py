"""Tasks: sets of items (tasks/items.py), and the gold check that only the task may use.

The gold check (`Task.check`) belongs to the task; a strategy never calls it, unless a run
is explicitly an oracle run. Here too: picking items (`select`), the train/held-out split, and
a task seen through some of its items (`Subset`).
"""

from __future__ import annotations

import hashlib
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from selfcorrect.errors import ConfigError
from selfcorrect.models.base import Message
from selfcorrect.sandbox import RunResult, Sandbox, TestCase
from selfcorrect.tasks.items import Item, ItemView
from selfcorrect.tasks.kinds import read
from selfcorrect.verify.answers import NO_ANSWER, answers_match, is_numeric


@dataclass(frozen=True)
class Check:
    """The gold check of one reply. A parse failure (no answer or no code found) is
    reported apart from a wrong answer."""

    correct: bool
    parse_failure: bool
    answer: str | None  # the extracted answer, or the program that was run
    expected: str | None  # the gold answer, or a summary of the hidden tests
    detail: str
    run: RunResult | None = None
    failure: str | None = None  # why there was no answer: "truncated", "expression", ...


class Task(ABC):
    """A set of items and their gold check."""

    name: str
    kind: str
    # The instruction the task adds to every question; its hash goes into the run record.
    template: str

    @abstractmethod
    def items(self) -> list[Item]:
        """Every item, in a fixed order (positions are what --ids selects)."""

    @abstractmethod
    async def grade(self, item: Item, answer: str | None, sandbox: Sandbox | None = None,
                    failure: str | None = None) -> Check:
        """The gold check of an answer already extracted (a number, or a program); None
        means the reply had none, and `failure` says why."""

    async def check(self, item: Item, reply: str, sandbox: Sandbox | None = None,
                    finish_reason: str = "stop") -> Check:
        """The gold check of a whole reply."""
        reading = read(item.view, reply, finish_reason)
        return await self.grade(item, reading.answer, sandbox, None if reading.answer else reading.how)

    @property
    def template_hash(self) -> str:
        return hashlib.sha256(self.template.encode()).hexdigest()[:16]


class MathTask(Task):
    kind = "math"
    template = "{question}\nSolve it step by step, and end with: The answer is <number>."
    stop: tuple[str, ...] = ()
    # Relative tolerance on numeric answers: off, since integers and finite decimals are
    # exact; a task whose answers are measured floats may set one (jsonl: tolerance=1e-6).
    tolerance: float = 0.0

    def messages(self, question: str) -> tuple[Message, ...]:
        return ({"role": "user", "content": self.template.format(question=question)},)

    def make_item(self, id: str, question: str, answer: str, **meta) -> Item:
        view = ItemView(id=id, task=self.name, kind="math", question=question,
                        messages=self.messages(question), stop=self.stop, numeric=is_numeric(answer))
        return Item(view, answer=answer, meta=meta)

    def worked_reply(self, question: str, answer: str) -> str:
        """A reply in this task's answer format that gives `answer`: what `improve` teaches a
        one-sample student where none of its own samples reached an answer the checks verified."""
        return f"The answer is {answer}."

    async def grade(self, item: Item, answer: str | None, sandbox: Sandbox | None = None,
                    failure: str | None = None) -> Check:
        if answer is None:
            failure = failure or NO_ANSWER
            return Check(False, True, None, item.answer, f"no answer in the reply ({failure})",
                         failure=failure)
        correct = answers_match(answer, item.answer, self.tolerance)
        return Check(correct, False, answer, item.answer, f"answer {answer}; expected {item.answer}")


class CodeTask(Task):
    kind = "code"

    async def grade(self, item: Item, answer: str | None, sandbox: Sandbox | None = None,
                    failure: str | None = None) -> Check:
        expected = f"{len(item.tests)} hidden tests"
        if answer is None:
            failure = failure or NO_ANSWER
            return Check(False, True, None, expected, f"no code found in the reply ({failure})",
                         failure=failure)
        if sandbox is None:
            raise ConfigError(f"checking {self.name} needs a sandbox", "pass one to Task.check")
        run = await sandbox.arun(answer, [TestCase(f"hidden {i + 1}", t) for i, t in enumerate(item.tests)],
                                 setup=item.view.setup)
        detail = f"{run.n_passed} of {len(item.tests)} hidden tests passed"
        if run.load_error:
            detail += f"; the program failed to load: {run.load_error}"
        return Check(run.passed, False, answer, expected, detail, run)


def select(items: Sequence[Item], ids: str | None = None, sample: int | None = None,
           seed: int = 0) -> list[Item]:
    """A subset: `ids` are positions ("0-99", "3,7,10-19"); `sample` draws that many
    positions at random with `seed` (after `ids`, if both are given). Order is kept."""
    chosen = list(range(len(items)))
    if ids:
        chosen = sorted(set(_positions(ids, len(items))))
    if sample is not None:
        if sample > len(chosen):
            raise ConfigError(f"cannot sample {sample} of {len(chosen)} items",
                              "ask for fewer, or widen --ids")
        chosen = sorted(random.Random(seed).sample(chosen, sample))
    return [items[i] for i in chosen]


def _positions(spec: str, count: int) -> list[int]:
    positions = []
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise ConfigError(f"bad item range {part!r} in {spec!r}", "write ranges like 0-99 or 3,7,10-19")
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) else low
        if high < low:
            raise ConfigError(f"item range {part.strip()} is reversed", f"write it low to high: {high}-{low}")
        if high >= count:
            raise ConfigError(f"item range {part.strip()} is outside 0-{count - 1}",
                              f"the task has {count} items")
        positions.extend(range(low, high + 1))
    return positions


def split(items: Sequence[Item], held_out: float, seed: int = 0) -> tuple[list[Item], list[Item]]:
    """Train and held-out parts that never overlap. Each item's side is decided by a hash of
    its id and the seed, so it stays put when items are added or reordered."""
    if not 0 < held_out < 1:
        raise ConfigError(f"held-out fraction {held_out} is not between 0 and 1", "use e.g. 0.2")
    train, test = [], []
    for item in items:
        digest = hashlib.sha256(f"{seed}:{item.id}".encode()).digest()
        (test if int.from_bytes(digest[:8], "big") / 2**64 < held_out else train).append(item)
    return train, test


class Subset:
    """A task seen through some of its items (a train or held-out side, one item for a benchmark)."""

    def __init__(self, task: Task, ids: set[str]):
        self._task, self._ids = task, ids

    def items(self):
        return [item for item in self._task.items() if item.id in self._ids]

    def __getattr__(self, name):
        return getattr(self._task, name)
