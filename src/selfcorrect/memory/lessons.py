"""Lessons: what went wrong on one input, what exposed it, what fixed it, in a few words.

A lesson is written only from a verified signal: external feedback (tests, execution, an
answer check the user supplies, a client's verdict through the server), a critic model, or
the gold check in an oracle run (and then it is marked oracle). The model judging itself is
never enough to write one: intrinsic feedback is refused.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Literal

from pydantic import BaseModel, Field

from selfcorrect.errors import ConfigError

WRITABLE_KINDS = ("external", "critic", "oracle")
SCHEMA = "selfcorrect.lesson/1"  # the export format's version


class Lesson(BaseModel):
    namespace: str = Field(min_length=1)  # a task, or a server's memory name: namespaces never mix
    input: str  # the question or request
    wrong: str  # the attempt that was wrong
    feedback: str  # what exposed it
    feedback_kind: Literal["external", "critic", "oracle"]
    corrected: str | None = None  # an attempt that was verified right, when there is one
    text: str  # the lesson in words
    written_by: Literal["model", "template"] = "template"
    provenance: dict = Field(default_factory=dict)  # run, unit, attempt ids; or a completion id
    oracle: bool = False
    uses: int = 0  # items that were shown it and then verified
    helped: int = 0  # of those: wrong before, right after
    hurt: int = 0  # of those: right before, wrong after
    ended_right: int = 0  # items shown it that ended verified right (passing tests, a client's verdict)
    ended_wrong: int = 0  # ... and verified wrong
    retired: bool = False
    created_at: float = Field(default_factory=time.time)

    @property
    def id(self) -> str:
        """Deduplication key: the same mistake on the same input, exposed the same way."""
        key = json.dumps([self.namespace, self.input, self.wrong, self.feedback], ensure_ascii=False)
        return hashlib.sha256(key.encode()).hexdigest()[:24]

    @property
    def score(self) -> float:
        """Its verified record: eviction drops the lowest first. Flips (wrong without it, right
        with it) weigh most; where no counterfactual is known (a server's request), the
        verdicts of the items that were shown it."""
        return (2 * (self.helped - self.hurt) + self.ended_right - self.ended_wrong) / (self.uses + 1)


def check_writable(lesson: Lesson, oracle_run: bool) -> None:
    """Refuse a lesson that rests on no verified signal, or on the gold outside an oracle run."""
    if lesson.feedback_kind not in WRITABLE_KINDS:
        raise ConfigError(f"a lesson needs verified feedback ({', '.join(WRITABLE_KINDS)}), not "
                          f"{lesson.feedback_kind}", "the model's own judgement never writes a lesson")
    if lesson.feedback_kind == "oracle" and not (oracle_run and lesson.oracle):
        raise ConfigError("a lesson from the gold check outside an oracle run",
                          "write oracle lessons only in oracle runs, marked oracle")


def template_lesson(feedback: str, corrected_answer: str | None) -> str:
    """A lesson written without the model, for models too weak to write one: what the
    feedback said and, when one was verified, what passed instead. The wrong attempt itself
    is not quoted (it stays in the lesson's record): shown a wrong program, the embedded model
    copied it (docs/FINDINGS.md, online memory)."""
    first = " ".join(feedback.split())[:200]
    text = f"An earlier answer was wrong: {first}"
    if corrected_answer:
        text += f" This passed instead: {_short(corrected_answer, 400)}"
    return text


def _short(text: str, limit: int = 120) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"
