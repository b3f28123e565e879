"""The one model protocol every engine implements.

Chat messages go in; completions come out with text, finish reason, token counts and
seconds. A conversation that ends with an assistant message is continued: the completion
extends that message (prefill: how step-level search grows a partial solution). A request asks for `params.n` samples numbered `first_index … first_index+n-1`:
the sample index is part of a draw's identity (see `cache.py`), so sample 3 of a
request is the same draw whoever asks for it.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from selfcorrect.errors import ConfigError

Message = dict[str, str]
"""An OpenAI-style chat message: {"role": "system" | "user" | "assistant", "content": str}."""

ROLES = ("system", "user", "assistant")
FinishReason = Literal["stop", "length"]


def check_messages(messages: Sequence[Message]) -> list[Message]:
    """Return the messages as plain dicts, or raise a ConfigError saying which one is wrong."""
    if not messages:
        raise ConfigError("no messages to send", "pass at least one user message")
    checked = []
    for i, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ConfigError(
                f"message {i} has role {role!r}", f"use one of {', '.join(ROLES)}"
            )
        if not isinstance(content, str):
            raise ConfigError(
                f"message {i} has content of type {type(content).__name__}",
                "message content must be a string",
            )
        checked.append({"role": role, "content": content})
    return checked


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How to sample. `n` is how many samples one request asks for; it is not part of a
    draw's identity (sample k is sample k whatever n was asked). `top_k` 0 means off; it is
    not part of OpenAI's own API (vLLM, SGLang, llama.cpp and Ollama accept it), so the HTTP
    backend sends it only when set. On the embedded engine a small top_k makes sampling
    cheap (a softmax over 40 tokens instead of the whole vocabulary)."""

    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int = 0
    n: int = 1
    logprobs: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, (list, str)):
            stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
            object.__setattr__(self, "stop", stops)
        problems = []
        if not 0.0 <= self.temperature <= 5.0:
            problems.append(f"temperature {self.temperature} is outside [0, 5]")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p {self.top_p} is outside (0, 1]")
        if self.top_k < 0:
            problems.append(f"top_k {self.top_k} must be 0 (off) or positive")
        if self.max_tokens < 1:
            problems.append(f"max_tokens {self.max_tokens} must be at least 1")
        if self.n < 1:
            problems.append(f"n {self.n} must be at least 1")
        if self.seed < 0:
            problems.append(f"seed {self.seed} must be non-negative")
        if any(not s for s in self.stop):
            problems.append("stop strings must not be empty")
        if problems:
            raise ConfigError("invalid sampling parameters: " + "; ".join(problems))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def replace(self, **changes) -> SamplingParams:
        return dataclasses.replace(self, **changes)

    def draw_fields(self) -> dict:
        """The fields that decide what a draw is (everything but `n`)."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "max_tokens": self.max_tokens,
            "stop": list(self.stop),
            "seed": self.seed,
            "logprobs": self.logprobs,
        }


def continues(messages: Sequence[Message]) -> bool:
    """Whether the last message is the assistant's own, to be continued rather than answered."""
    return bool(messages) and messages[-1]["role"] == "assistant"


def messages_hash(messages: Sequence[Message]) -> str:
    """A conversation's content hash: the key under which the store keeps it once."""
    canonical = json.dumps([[m["role"], m["content"]] for m in messages], ensure_ascii=False,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def sample_seed(seed: int, index: int) -> int:
    """The seed for sample `index` of a request seeded `seed`: distinct per index, stable
    across runs and machines, below 2**31 (llama.cpp reserves 0xFFFFFFFF for 'random')."""
    digest = hashlib.blake2b(f"{seed}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF


@dataclass(frozen=True, slots=True)
class Completion:
    """One sample. `seconds` is this sample's share of the model time that produced it;
    `cached` says it came from the sample cache rather than a model call just now."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    index: int = 0
    logprobs: tuple[float, ...] | None = None
    cached: bool = False
    token_ids: tuple[int, ...] | None = None  # where the backend gives them
    # True: the model ended its reply itself (end of sequence); False: a stop string or the
    # token cap ended it; None: the backend does not say. Search tells "the step is over" from
    # "the solution is over" by it.
    model_ended: bool | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Sent:
    """What reached a backend: requests answered and the tokens they carried, as the
    engine or server reported them. Draws served from the sample cache, or shared with
    another caller's request, send nothing."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


_sending: contextvars.ContextVar[Sent | None] = contextvars.ContextVar("sending", default=None)


def count_sent(completions: Sequence[Completion]) -> None:
    """A backend calls this once per request it sends (an HTTP request, an engine request
    of n samples), with the completions it answered: their prompt once, their completion
    tokens all. The tally goes to whoever is counting in this context (`sending`): a draw
    made in a task the cache started for a caller counts for that caller."""
    tally = _sending.get()
    if tally is not None and completions:
        tally.requests += 1
        tally.prompt_tokens += completions[0].prompt_tokens
        tally.completion_tokens += sum(c.completion_tokens for c in completions)


@contextlib.contextmanager
def sending() -> Iterator[Sent]:
    """`with sending() as sent:` counts what the backend calls made inside send."""
    sent = Sent()
    token = _sending.set(sent)
    try:
        yield sent
    finally:
        _sending.reset(token)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend can do, so that strategies and the runner can plan.

    native_n: one request yields n samples without re-processing the prompt n times.
    logprobs: per-token log-probabilities are available.
    context_length: tokens of context (prompt plus completion) one sequence may use.
    max_parallel: how many requests are worth having in flight at once.
    default_top_k: the top_k the runner samples with when none is asked for (the built-in
        engines say 40, so that a draw means the same on each).
    """

    native_n: bool
    logprobs: bool
    context_length: int
    max_parallel: int
    default_top_k: int = 0


@runtime_checkable
class Model(Protocol):
    """A chat model. Every engine (embedded llama.cpp, OpenAI-compatible HTTP, scripted)
    implements this; wrappers such as the sample cache implement it too."""

    @property
    def identity(self) -> str:
        """Names the weights and engine, so that cached draws of one model never serve another."""
        ...

    @property
    def capabilities(self) -> Capabilities: ...

    async def describe(self) -> dict:
        """What this engine is, as plain data for people and reports ({"backend": ...,
        and its file, servers, context ...}); for a server, also whether it answers."""
        ...

    async def generate(
        self, messages: Sequence[Message], params: SamplingParams, first_index: int = 0
    ) -> list[Completion]:
        """`params.n` completions, with indices first_index … first_index+n-1, in that order.
        Call `count_sent` once per request sent to the engine or server."""
        ...

    async def aclose(self) -> None: ...


def first_turn(messages: Sequence[dict]) -> list[dict]:
    """A conversation up to its first user message: the prompt a strategy starts from (a
    revision that passed is taught, or shown, as the answer to it)."""
    messages = list(messages)
    for k, message in enumerate(messages):
        if message["role"] == "user":
            return messages[: k + 1]
    return messages
