"""Memory as a strategy reads it: what one arm shows (memory/gate.py): the lessons most
similar to a new input, the current guidelines within a word budget, or worked examples of
similar solved inputs; put before the strategy's attempts, at the head of the first user
message. `all` (lessons and guidelines together) is what memory showed before the gate.

A session holds a `Recall`, never the bank: it reads, it cannot write, and in an evaluation
it never finds a lesson about the very item it works on (`exclude_same_input`), which
would hand it a verified answer to that item.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from selfcorrect.errors import ConfigError
from selfcorrect.memory.arms import SHOWS
from selfcorrect.memory.bank import LessonBank
from selfcorrect.memory.examples import ExampleBank, WorkedExample, shown
from selfcorrect.memory.guidelines import GuidelineBook
from selfcorrect.memory.lessons import Lesson, template_lesson
from selfcorrect.models.base import Message

HEADER = "Lessons from earlier mistakes on similar problems:"
RULES = "Guidelines learned from earlier mistakes:"
RULE_WORDS = 60  # the rules arm's budget: a small model reads a few lines, not a page


@dataclass
class Recalled:
    lessons: list[tuple[Lesson, float]] = field(default_factory=list)
    rules: list[tuple[str, str]] = field(default_factory=list)  # (id, text)
    examples: list[WorkedExample] = field(default_factory=list)
    version: int = 0  # the guidelines' version
    seconds: float = 0.0
    fixes: bool = True  # show what passed instead, or only what went wrong
    arm: str = "all"

    @property
    def text(self) -> str:
        parts = []
        if self.lessons:
            parts.append(HEADER + "".join(
                f"\n{i}. Problem: {_clip(lesson.input, 200)}\n   {self._words(lesson)}"
                for i, (lesson, _) in enumerate(self.lessons, start=1)))
        if self.rules:
            parts.append(RULES + "".join(f"\n- {text}" for _, text in self.rules))
        if self.examples:
            parts.append(shown(self.examples))
        return "\n\n".join(parts)

    def _words(self, lesson: Lesson) -> str:
        if self.fixes or lesson.written_by != "template":
            return lesson.text
        return template_lesson(lesson.feedback, None)

    def record(self) -> dict:
        """What the trajectory keeps of it: which lessons and rules were shown."""
        return {"arm": self.arm, "lessons": [lesson.id for lesson, _ in self.lessons],
                "scores": [round(score, 4) for _, score in self.lessons],
                "rules": [rule_id for rule_id, _ in self.rules], "guidelines_version": self.version,
                "examples": [e.id for e in self.examples]}


class Recall:
    """`fixes`: whether a lesson shows the attempt that passed instead (on another problem, a
    small model may copy it, numbers and all), or only what went wrong. `show`: the arm."""

    def __init__(self, bank: LessonBank, namespace: str, *, k: int = 3, guidelines: GuidelineBook | None = None,
                 exclude_same_input: bool = True, fixes: bool = True, show: str = "all",
                 examples: ExampleBank | None = None):
        if show not in SHOWS:
            raise ConfigError(f"unknown memory arm {show!r}", f"use one of: {', '.join(SHOWS)}")
        if show == "examples" and examples is None:
            raise ConfigError("the examples arm needs the worked examples' bank", "pass examples=ExampleBank(...)")
        self._search = bank.search
        self._current = guidelines.current if guidelines is not None and show in ("all", "rules") else None
        self._examples = examples
        self.namespace, self.k, self.exclude_same_input, self.fixes = namespace, k, exclude_same_input, fixes
        self.show = show

    def __call__(self, question: str) -> Recalled:
        started = time.perf_counter()
        recalled = Recalled(fixes=self.fixes, arm=self.show)
        if self.show in ("all", "lessons"):
            found = self._search(self.namespace, question, 3 * self.k)  # room for excluded ones
            if self.exclude_same_input:
                found = [(lesson, score) for lesson, score in found if lesson.input.strip() != question.strip()]
            recalled.lessons = found[: self.k]
        if self.show == "examples":
            recalled.examples = self._examples.search(self.namespace, question, self.k,
                                                      question if self.exclude_same_input else None)
        if self._current is not None:
            current = self._current(self.namespace)
            rules, words = [], 0
            for rule in current.rules:
                words += len(rule.text.split())
                if self.show == "rules" and words > RULE_WORDS and rules:
                    break
                rules.append((rule.id, rule.text))
            recalled.rules, recalled.version = rules, current.version
        recalled.seconds = time.perf_counter() - started
        return recalled


def with_memory(messages: list[Message] | tuple[Message, ...], text: str) -> list[Message]:
    """The conversation with memory put first in its first user message. Not as a system
    message: that replaces a model's default system prompt (SmolLM2's template adds one only
    when there is none), and the embedded model then stopped following the task's format
    (docs/FINDINGS.md, online memory)."""
    messages = list(messages)
    if not text:
        return messages
    for i, message in enumerate(messages):
        if message["role"] == "user":
            return [*messages[:i], {"role": "user", "content": f"{text}\n\n{message['content']}"}, *messages[i + 1:]]
    return [*messages, {"role": "user", "content": text}]


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"
