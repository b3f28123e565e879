"""Kinds of items: math, code and free-form chat. Each kind owns the choices that differ
between them, and strategies ask the kind rather than branching on its name:

- how an answer is read from a reply (`read`), and so what a vote counts (`vote_keys`);
- where an attempt ends (`attempt_stop`) and how long it may be (`max_tokens`);
- which verifier best-of-n uses by default, and whether its checks need the sandbox.

A chat item has no answer extractor: its answer is the whole reply, and its feedback comes
from critics, the model's own judgment, or checks a user supplies.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from typing import Protocol

from selfcorrect.sandbox import RunResult
from selfcorrect.tasks.items import ItemView
from selfcorrect.trajectory import Attempt
from selfcorrect.verify.answers import NO_ANSWER, TRUNCATED, Reading, read_answer, vote_key
from selfcorrect.verify.code import assemble, extract_code

CODE_STOP = ("\n```\n",)  # the end of a fenced code block (the opening fence names a language)


class VoteContext(Protocol):
    """What a kind needs to say what attempts vote for: the item's view, and a way to run a
    program on it (a strategy's session: strategies/session.py)."""

    view: ItemView

    async def run(self, program: str, tests: Sequence[str] = (), setup: str = "") -> RunResult: ...


class Kind:
    name: str
    max_tokens: int
    attempt_stop: tuple[str, ...] = ()
    needs_sandbox = False  # its gold check or its votes run code
    votes_on_behaviour = False  # its vote key is what a program does, kept as feedback

    def read(self, view: ItemView, reply: str, finish_reason: str = "stop") -> Reading:
        raise NotImplementedError

    async def vote_keys(self, session: VoteContext, attempts: list[Attempt]) -> list[str | None]:
        """What each attempt votes for (None: it does not vote)."""
        return [vote_key(a.answer) for a in attempts]

    def default_verifier(self, view: ItemView) -> str:
        """best-of-n's verifier when none is named: "tests" (a user's checker) or "self"."""
        return "tests" if view.checker else "self"


class MathKind(Kind):
    name, max_tokens = "math", 192

    def read(self, view: ItemView, reply: str, finish_reason: str = "stop") -> Reading:
        return read_answer(reply, numeric=view.numeric, finish_reason=finish_reason)


class CodeKind(Kind):
    name, max_tokens = "code", 384
    attempt_stop = CODE_STOP
    needs_sandbox = True
    votes_on_behaviour = True

    def read(self, view: ItemView, reply: str, finish_reason: str = "stop") -> Reading:
        code = extract_code(reply, view.entry_point)
        if code is None:
            return Reading(None, TRUNCATED if finish_reason == "length" else NO_ANSWER)
        return Reading(assemble(code, view.prompt_code, view.entry_point), "code")

    async def vote_keys(self, session: VoteContext, attempts: list[Attempt]) -> list[str | None]:
        """What each program returns on the inputs of the visible tests (the expected values
        are never looked at); with no visible tests, its normalised code."""
        calls = [left_side(t) for t in session.view.visible_tests]
        probes = [f"__observe__({c})" for c in calls if c]
        keys: list[str | None] = []
        for attempt in attempts:
            if attempt.answer is None:
                keys.append(None)
            elif not probes:
                keys.append(" ".join(attempt.answer.split()))
            else:
                result = await session.run(attempt.answer, probes, session.view.setup)
                keys.append("|".join(t.observed[0] if t.observed else f"<{t.error_type}>" for t in result.tests)
                            if result.loaded else None)
        return keys

    def default_verifier(self, view: ItemView) -> str:
        return "tests" if view.visible_tests else "self"


class ChatKind(Kind):
    name, max_tokens = "chat", 512

    def read(self, view: ItemView, reply: str, finish_reason: str = "stop") -> Reading:
        text = reply.strip()
        if not text:
            return Reading(None, TRUNCATED if finish_reason == "length" else NO_ANSWER)
        return Reading(text, "reply")

    async def vote_keys(self, session: VoteContext, attempts: list[Attempt]) -> list[str | None]:
        return [" ".join(a.answer.lower().split()) if a.answer else None for a in attempts]


KINDS: dict[str, Kind] = {kind.name: kind for kind in (MathKind(), CodeKind(), ChatKind())}


def kind_of(view: ItemView) -> Kind:
    return KINDS[view.kind]


def read(view: ItemView, reply: str, finish_reason: str = "stop") -> Reading:
    """The answer a reply gives (a number or expression, the program to test, a chat reply),
    the same for strategies, votes and the gold check; on a parse failure, why there is none."""
    return kind_of(view).read(view, reply, finish_reason)


def left_side(test: str) -> str | None:
    """`assert f(x) == y` -> `f(x)`: the call a visible test makes, without its expectation."""
    try:
        node = ast.parse(test).body[0]
    except (SyntaxError, IndexError):
        return None
    if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare):
        return ast.get_source_segment(test, node.test.left)
    return None
