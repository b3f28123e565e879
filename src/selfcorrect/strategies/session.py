"""The session a strategy works through, and the context a run gives it.

The session records everything as it happens (attempts, feedback, calls, sandbox runs,
revisions), keeps the cost of each phase, and is the only way a strategy reaches the model
and feedback sources. It never reaches the gold: the item view has none, and the oracle check
exists only in sessions of oracle strategies.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from selfcorrect.cache import request_key
from selfcorrect.errors import ConfigError
from selfcorrect.memory.recall import Recalled, with_memory
from selfcorrect.models.base import Completion, Message, Model, SamplingParams, messages_hash, sending
from selfcorrect.precision import Precision
from selfcorrect.sandbox import RunResult, Sandbox, TestCase
from selfcorrect.tasks.items import ItemView
from selfcorrect.tasks.kinds import Kind, kind_of, read
from selfcorrect.trajectory import Attempt, Feedback, Revision, Trajectory

OracleCheck = Callable[[str], Awaitable[bool]]


class ModelHandle:
    """What a strategy holds of a model: `generate`, `identity` and `capabilities`, and no
    attribute that leads to what stands behind it (the sample cache's store holds the
    grades of finished units; a strategy must not find a way to the gold there)."""

    __slots__ = ("_generate", "_describe")

    def __init__(self, model: Model):
        async def generate(messages, params, first_index=0):
            return await model.generate(messages, params, first_index)

        self._generate = generate
        self._describe = lambda: (model.identity, model.capabilities)

    @property
    def identity(self) -> str:
        return self._describe()[0]

    @property
    def capabilities(self):
        return self._describe()[1]  # live: a server's native n is learned at its first reply

    async def generate(self, messages: Sequence[Message], params: SamplingParams,
                       first_index: int = 0) -> list[Completion]:
        return await self._generate(messages, params, first_index)


@dataclass
class Context:
    """What a run gives every strategy. `oracle` is set only for oracle strategies. Models
    are handed to strategies as ModelHandles."""

    model: Model
    params: SamplingParams
    sandbox: Sandbox | None = None
    critic: Model | None = None
    oracle: OracleCheck | None = None
    record: Callable[[dict], None] | None = None  # writes each event before the next begins
    # The error memory, for strategies run with memory=on: an input's lessons and guidelines
    # (memory/recall.py). It reads only.
    memory: Callable[[str], Recalled] | None = None
    precision: Precision = "auto"  # a trained verifier's, where a strategy scores with one (precision.py)


@dataclass
class Outcome:
    final: Attempt | None
    stop: str
    signal: bool | None = None  # whether the selector or stop rule had anything to act on
    no_signal: str = ""  # what it lacked


class Session:
    """One strategy on one item."""

    def __init__(self, view: ItemView, ctx: Context, strategy: str, oracle: bool = False,
                 chain: int = 0, trajectory: Trajectory | None = None, recalled: list | None = None):
        self.view = view
        self.ctx = ctx
        self.chain_index = chain
        self.trajectory = trajectory or Trajectory(strategy=strategy, item_id=view.id, oracle=oracle)
        self._recalled = recalled if recalled is not None else []  # shared by chains: recalled once

    @property
    def kind(self) -> Kind:
        """The item's kind: how its answers are read and voted on, where attempts end."""
        return kind_of(self.view)

    def chain(self, index: int) -> Session:
        """An independent chain writing into the same trajectory, with its own draws."""
        return Session(self.view, self.ctx, self.trajectory.strategy, self.trajectory.oracle,
                       chain=index, trajectory=self.trajectory, recalled=self._recalled)

    def remembered(self) -> str:
        """What the error memory puts before this item's attempts (recalled once per item,
        in the retrieve phase); empty without memory."""
        if self.ctx.memory is None:
            return ""
        if not self._recalled:
            recalled = self.ctx.memory(self.view.question)
            self._recalled.append(recalled.text)
            self.trajectory.memory = recalled.record()
            self.trajectory.cost["retrieve"].seconds += recalled.seconds
            self._record({"type": "memory", **self.trajectory.memory})
        return self._recalled[0]

    # -- model calls ---------------------------------------------------------------------

    async def attempt(self, messages: Sequence[Message], *, phase: str = "generate", round: int = 0,
                      parent: Attempt | None = None, n: int = 1, answers: bool = True, first: int | None = None,
                      **params) -> list[Attempt]:
        """Draw n answers; each becomes an attempt, recorded at once. With answers=False the
        strategy sets `answer` itself (a program-aided attempt's answer is what it prints).
        A code attempt ends with its code block: what a model writes after it is not read.
        `first`: the first sample index, for a strategy that draws a pool in batches (the
        default is the chain's own range)."""
        if self.kind.attempt_stop:
            params.setdefault("stop", self.kind.attempt_stop)
        messages = with_memory(messages, self.remembered())
        completions = await self.ask(messages, phase=phase, n=n, purpose="attempt", first=first, **params)
        sent = self.ctx.params.replace(n=n, **params)
        provenance = {"messages_hash": messages_hash(messages), "params": sent.draw_fields(),
                      "request": request_key(self.ctx.model.identity, messages, sent)}
        self._record({"type": "messages", "messages": list(messages)})
        attempts = []
        for completion, billed in zip(completions, billed_prompts(completions, self.ctx.model)):
            reading = read(self.view, completion.text, completion.finish_reason) if answers else None
            attempt = Attempt(
                index=len(self.trajectory.attempts), round=round,
                phase="revise" if phase == "revise" else "generate", chain=self.chain_index,
                sample=completion.index, text=completion.text,
                answer=reading.answer if reading else None, read=reading.how if reading else "",
                finish_reason=completion.finish_reason,
                parent=parent.index if parent is not None else None, **provenance,
                prompt_tokens=completion.prompt_tokens, prompt_billed=billed,
                completion_tokens=completion.completion_tokens,
                seconds=completion.seconds, cached=completion.cached,
                confidence=token_confidence(completion.logprobs))
            self.trajectory.attempts.append(attempt)
            self._record({"type": "attempt", **attempt.model_dump()})
            attempts.append(attempt)
        if parent is not None:
            for attempt in attempts:
                self.revised(parent, attempt)
        return attempts

    def assemble(self, text: str, *, completion_tokens: int, seconds: float, finish_reason: str = "stop",
                 sample: int = 0) -> Attempt:
        """An attempt put together from several model calls (a path of steps that search
        grew), recorded like a drawn one. Its calls' cost is already in their phases."""
        reading = read(self.view, text, finish_reason)
        messages = with_memory(self.view.messages, self.remembered())
        attempt = Attempt(index=len(self.trajectory.attempts), round=0, phase="generate", chain=self.chain_index,
                          sample=sample, text=text, answer=reading.answer, read=reading.how,
                          finish_reason=finish_reason, messages_hash=messages_hash(messages),
                          completion_tokens=completion_tokens, seconds=seconds)
        self._record({"type": "messages", "messages": list(messages)})
        self.trajectory.attempts.append(attempt)
        self._record({"type": "attempt", **attempt.model_dump()})
        return attempt

    async def ask(self, messages: Sequence[Message], *, phase: str, n: int = 1, purpose: str,
                  model: Model | None = None, first: int | None = None, **params) -> list[Completion]:
        """A model call. Sample k of chain c is draw c*n + k, so chains draw apart and the
        first chain shares its draws with every strategy that asks the same thing."""
        params = self.ctx.params.replace(n=n, **params)
        model = model or self.ctx.model
        with sending() as sent:
            completions = await model.generate(list(messages), params,
                                               first_index=self.chain_index * n if first is None else first)
        cost = self.trajectory.cost[phase]
        cost.sent_requests += sent.requests
        cost.sent_prompt_tokens += sent.prompt_tokens
        cost.sent_completion_tokens += sent.completion_tokens
        cost.calls += 1
        cost.prompt_tokens += sum(billed_prompts(completions, model))
        cost.completion_tokens += sum(c.completion_tokens for c in completions)
        cost.seconds += sum(c.seconds for c in completions)
        cost.cached_calls += all(c.cached for c in completions)
        if purpose != "attempt":
            self._record({"type": "call", "phase": phase, "purpose": purpose,
                          "texts": [c.text for c in completions]})
        return completions


    # -- feedback ------------------------------------------------------------------------

    def give(self, attempt: Attempt, feedback: Feedback) -> Feedback:
        attempt.feedback.append(feedback)
        self._record({"type": "feedback", "attempt": attempt.index, **feedback.model_dump()})
        return feedback

    async def run(self, program: str, tests: Sequence[str] = (), setup: str = "") -> RunResult:
        """Run a program in the sandbox (external feedback), counted in the feedback phase."""
        if self.ctx.sandbox is None:
            raise ConfigError(f"{self.trajectory.strategy} needs a sandbox", "the runner gives one")
        result = await self.ctx.sandbox.arun(
            program, visible_cases(tests), setup=setup)
        cost = self.trajectory.cost["feedback"]
        cost.sandbox_runs += 1
        cost.sandbox_seconds += result.seconds
        return result

    async def visible_tests(self, attempt: Attempt) -> Feedback | None:
        """Run the item's visible tests on a code attempt, or the user's checker on a math or
        chat answer (None when it has neither)."""
        if self.view.checker and self.kind.name != "code":
            return await self._check(attempt)
        if not self.view.visible_tests:
            return None
        if attempt.answer is None:
            return self.give(attempt, Feedback(kind="external", source="visible tests", passed=False,
                                               score=0.0, text=NO_CODE))
        result = await self.run(attempt.answer, self.view.visible_tests, self.view.setup)
        return self.give(attempt, Feedback(
            kind="external", source="visible tests", passed=result.passed,
            score=result.n_passed / len(self.view.visible_tests), text=describe_run(result)))

    async def _check(self, attempt: Attempt) -> Feedback:
        if attempt.answer is None:
            return self.give(attempt, Feedback(kind="external", source="visible tests", passed=False, score=0.0,
                                               text="Your reply gave no answer to check."))
        result = await self.run(self.view.checker, [f"assert check({attempt.answer!r})"])
        text = ("The checker accepted your answer." if result.passed else
                "The checker rejected your answer." if result.loaded and not result.error else
                f"The checker could not run: {describe_run(result)}")
        return self.give(attempt, Feedback(kind="external", source="visible tests", passed=result.passed,
                                           score=float(result.passed), text=text))

    async def oracle(self, attempt: Attempt) -> Feedback:
        """The gold check's verdict: only in oracle runs, and only right or wrong."""
        if not self.trajectory.oracle or self.ctx.oracle is None:
            raise ConfigError(f"{self.trajectory.strategy} asked for the gold answer in a run that "
                              "is not an oracle run", "only oracle strategies may")
        correct = await self.ctx.oracle(attempt.text)
        return self.give(attempt, Feedback(kind="oracle", source="gold check", passed=correct,
                                           score=float(correct),
                                           text="Correct." if correct else "Your answer is wrong."))

    def revised(self, before: Attempt, after: Attempt) -> None:
        revision = Revision(round=after.round, before=before.index, after=after.index)
        self.trajectory.revisions.append(revision)
        self._record({"type": "revision", **revision.model_dump()})

    def done(self, final: Attempt | None, stop: str, *, signal: bool | None = None,
             no_signal: str = "") -> Outcome:
        """The outcome. `signal`: whether the selector or stop rule had anything to act on
        (None: the strategy has neither); `no_signal` says what it lacked."""
        return Outcome(final, stop, signal, no_signal if signal is False else "")

    def _record(self, event: dict) -> None:
        if self.ctx.record is not None:
            self.ctx.record(event)


CONFIDENCE_WINDOW = 16  # tokens: the lowest-confidence stretch of a reply, as in confidence-filtered voting


def token_confidence(logprobs: Sequence[float] | None) -> dict[str, float] | None:
    """What the model's own token probabilities say of a reply: the mean log-probability, and
    the lowest mean over any window of CONFIDENCE_WINDOW tokens (a reply that was unsure
    somewhere shows it there). None when the backend gave no log-probabilities."""
    if not logprobs:
        return None
    window = min(CONFIDENCE_WINDOW, len(logprobs))
    sums = [sum(logprobs[:window])]
    for k in range(window, len(logprobs)):
        sums.append(sums[-1] + logprobs[k] - logprobs[k - window])
    return {"mean": sum(logprobs) / len(logprobs), "lowest_window": min(sums) / window}


NO_CODE = "Your reply contained no code."


def visible_cases(tests: Sequence[str]) -> list[TestCase]:
    """An item's visible tests as the sandbox runs them, named as feedback shows them."""
    return [TestCase(f"visible {i + 1}", t) for i, t in enumerate(tests)]


def billed_prompts(completions: Sequence[Completion], model) -> list[int]:
    """Prompt tokens as sent, per completion: where the backend evaluates a prompt once for
    the n samples of a request, the first carries it; where it takes a request per sample
    (a server that ignores `n`), each carries its own, as the server reported it."""
    shared = model.capabilities.native_n
    return [c.prompt_tokens if not shared or k == 0 else 0 for k, c in enumerate(completions)]


def describe_run(result: RunResult) -> str:
    """Execution feedback as a model reads it: what failed, with what came out."""
    if result.error:
        return reproducible(f"Running your code failed: {result.error}")
    if not result.loaded:
        return reproducible(f"Your code did not load: {result.load_error}")
    lines = []
    for outcome in result.tests:
        if outcome.passed:
            lines.append(f"Passed: {outcome.name}")
        elif outcome.timed_out:
            lines.append(f"Timed out: {outcome.name}")
        else:
            lines.append(f"Failed: {outcome.message or outcome.error_type}")
    return reproducible("\n".join(lines))


def reproducible(output: str) -> str:
    """Program output as feedback, with memory addresses masked (`<function f at 0x7f3c…>`
    differs from run to run): feedback goes into the next prompt, and a prompt that differs
    for no reason is a new draw, so a replayed run would not come from the cache."""
    return re.sub(r"\b0x[0-9a-fA-F]{6,}\b", "0x…", output)
