"""Items: an `Item` holds everything about a problem, the gold answer and hidden tests
included. A strategy receives an `ItemView`, which has no gold: the prompt, the question, the
visible tests it may run for feedback."""

from __future__ import annotations

from dataclasses import dataclass, field

from selfcorrect.models.base import Message


@dataclass(frozen=True)
class ItemView:
    """What a strategy may see of an item: no gold answer, no hidden tests."""

    id: str
    task: str
    kind: str  # "math", "code" or "chat" (tasks/kinds.py)
    question: str  # the problem as a person reads it
    messages: tuple[Message, ...]  # the task's prompt for it
    visible_tests: tuple[str, ...] = ()
    entry_point: str | None = None
    setup: str = ""  # what the tests import
    prompt_code: str = ""  # code the answer continues (HumanEval's signature and docstring)
    stop: tuple[str, ...] = ()  # where an answer to the task's own prompt ends
    # Math: whether the expected answer is a number (then only a stated number is read).
    # The form of the answer, not the answer: a task says as much in its instructions.
    numeric: bool = True
    # A checker the user supplies for math and chat items: Python source defining
    # `check(answer) -> bool`, run in the sandbox on each answer (external feedback; strategies
    # that run visible tests run it).
    checker: str = ""


@dataclass(frozen=True)
class Item:
    """An item with its gold. It holds its view rather than extending it, so that handing
    a strategy an Item by mistake cannot pass as handing it a view."""

    view: ItemView
    answer: str | None = None  # the gold answer (math)
    tests: tuple[str, ...] = ()  # the hidden tests that decide correctness (code)
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def id(self) -> str:
        return self.view.id

    @property
    def kind(self) -> str:
        return self.view.kind
