"""What a strategy did on one item, as plain data: every attempt, every piece of feedback,
the revisions that link them, the selected answer and why it stopped, and what it cost in
each phase (retrieve, generate, feedback, revise), and what the error memory showed it.

Feedback always carries its kind, because the research is clear that the kind decides
whether correction helps:
  external   execution, visible tests, a compiler, a checker the user gives
  intrinsic  the model judging itself (critique, self-verification, confidence, a vote)
  critic     a second model
  oracle     the gold answer (only in runs marked oracle)
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator, model_validator

FeedbackKind = Literal["external", "intrinsic", "critic", "oracle"]
Phase = Literal["retrieve", "generate", "feedback", "revise", "rollout"]
# "retrieve": looking up the error memory (seconds only), for strategies run with memory=on;
# "rollout": completions drawn only to value a partial solution (step-level search)
PHASES: tuple[Phase, ...] = ("retrieve", "generate", "feedback", "revise", "rollout")


class Feedback(BaseModel):
    kind: FeedbackKind
    source: str  # what gave it: "visible tests", "self-critique", "sandbox", "gold", ...
    passed: bool | None = None  # its verdict, when it gives one
    score: float | None = None  # in [0, 1], when it gives one
    text: str = ""  # what a model (or a person) reads


class Attempt(BaseModel):
    """One answer the model gave. `answer` is what was extracted from `text` (a number, an
    expression or a program); None means the reply had none (a parse failure)."""

    index: int
    round: int  # 0 for first attempts, r after r revisions
    phase: Literal["generate", "revise"]
    chain: int = 0  # independent chains of one composed strategy
    sample: int = 0  # the sample index its draw used
    text: str
    answer: str | None
    # How the answer was read ("answer is", "final equation", "code", "printed"), or why
    # there is none ("truncated", "expression", "ambiguous", "no answer").
    read: str = ""
    finish_reason: str = "stop"  # "length": the reply hit the token cap
    parent: int | None = None  # the attempt it revises
    # What produced it: the conversation sent (kept once in the store, under this hash), the
    # sampling parameters, and the sample cache's key of the request (its token ids and
    # log-probabilities are kept there, under this key and `sample`).
    messages_hash: str = ""
    params: dict = Field(default_factory=dict)
    request: str = ""
    prompt_tokens: int = 0
    # The prompt tokens this attempt's request was charged: a backend that evaluates a
    # prompt once for n samples charges it to the first; one that takes a request per
    # sample charges each (what was actually sent).
    prompt_billed: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cached: bool = False
    # the model's own token confidence in it (strategies/session.py `token_confidence`), where
    # the backend gave log-probabilities: intrinsic, and no sign of being right by itself
    confidence: dict[str, float] | None = None
    feedback: list[Feedback] = Field(default_factory=list)


class Revision(BaseModel):
    """One revision step: the attempt handed to the model, and what it made of it."""

    round: int
    before: int
    after: int


class Cost(BaseModel):
    """Two accounts of one phase's model use. Notional (calls, prompt_tokens,
    completion_tokens): what the strategy asked for, as if no draw were served from the
    sample cache; the equal-compute basis every comparison uses. Sent (sent_*): what reached
    the backend, as it reported it: requests (a server that ignores `n` takes one per
    sample) and their tokens; draws from the cache, or shared with another strategy's
    request, send nothing. None: recorded before sent cost was counted."""

    calls: int = 0  # the strategy's model calls (one may be many requests)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0  # model time, also for draws served from the sample cache
    cached_calls: int = 0
    sent_requests: int | None = 0
    sent_prompt_tokens: int | None = 0
    sent_completion_tokens: int | None = 0
    sandbox_runs: int = 0
    sandbox_seconds: float = 0.0

    @model_validator(mode="before")
    @classmethod
    def _unknown_before_counted(cls, data):
        if isinstance(data, dict) and data and "sent_requests" not in data:
            data = {**data, **dict.fromkeys(SENT_FIELDS)}
        return data


SENT_FIELDS = ("sent_requests", "sent_prompt_tokens", "sent_completion_tokens")


class Trajectory(BaseModel):
    strategy: str
    item_id: str
    oracle: bool = False
    attempts: list[Attempt] = Field(default_factory=list)
    revisions: list[Revision] = Field(default_factory=list)
    final: int | None = None  # the attempt the strategy selected (None: it has nothing)
    stop: str = ""  # why it stopped: "verified", "unchanged", "budget", "confident", ...
    # Whether the strategy's selector or stop rule had a signal to act on: False when no
    # critique had a readable score, a vote was all ties, ...; None for strategies with
    # neither (single). `no_signal` says what was missing.
    signal: bool | None = None
    no_signal: str = ""
    # With memory=on: the lessons and guideline rules put before its attempts (memory/recall.py)
    memory: dict | None = None
    cost: dict[str, Cost] = Field(default_factory=lambda: {p: Cost() for p in PHASES})

    @field_validator("cost")
    @classmethod
    def _every_phase(cls, cost: dict[str, Cost]) -> dict[str, Cost]:
        """Results stored before a phase existed read with it empty."""
        return {p: cost.get(p, Cost()) for p in PHASES} | cost


class Grade(BaseModel):
    """The gold check's verdict on one attempt (measurement: made after the strategy ran)."""

    correct: bool
    parse_failure: bool
    failure: str | None = None  # why there was no answer: "truncated", "expression", ...
    detail: str = ""


class FinalGrade(Grade):
    answer: str | None = None  # the answer of the attempt the strategy returned


class UnitResult(BaseModel):
    """One strategy on one item, as stored and as every report reads it: the trajectory,
    one grade per attempt (in attempt order), and the grade of the returned attempt."""

    item: str
    strategy: str
    question: str
    expected: str
    trajectory: Trajectory
    grades: list[Grade]
    final: FinalGrade
    seconds: float = 0.0

    @property
    def tokens(self) -> int:
        """Prompt and completion tokens of every phase (notional: as if none were cached)."""
        return sum(c.prompt_tokens + c.completion_tokens for c in self.trajectory.cost.values())

    @property
    def sent_tokens(self) -> int | None:
        """Prompt and completion tokens that reached the backend (None: not counted then)."""
        return self._sent(lambda c: c.sent_prompt_tokens + c.sent_completion_tokens)

    @property
    def sent_requests(self) -> int | None:
        return self._sent(lambda c: c.sent_requests)

    def _sent(self, count) -> int | None:
        costs = self.trajectory.cost.values()
        return None if any(c.sent_requests is None for c in costs) else sum(count(c) for c in costs)
