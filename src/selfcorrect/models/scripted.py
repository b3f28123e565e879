"""A deterministic model for tests: replies come from a table or a function.

It honours the parts of the protocol that tests lean on: `max_tokens` (counted in
whitespace-separated words), stop strings, sample indices, and it records every call.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from selfcorrect.errors import ConfigError
from selfcorrect.models.base import (
    Capabilities,
    Completion,
    Message,
    SamplingParams,
    check_messages,
    count_sent,
)

Reply = str | Sequence[str]
ReplyFunction = Callable[[list[Message], SamplingParams, int], str]


@dataclass(frozen=True)
class ScriptedCall:
    messages: list[Message]
    params: SamplingParams
    first_index: int


class ScriptedModel:
    """replies: a function (messages, params, sample index) -> text, or a table from the last
    user message to a reply, or to a list of replies indexed by sample index (cycled).
    `default` answers a message the table lacks; without it such a message is an error.
    `logprobs(text, index)`: per-token log-probabilities to return with each reply (the
    model then reports that it gives them)."""

    def __init__(
        self,
        replies: Mapping[str, Reply] | ReplyFunction,
        *,
        default: str | None = None,
        identity: str = "scripted",
        latency: float = 0.0,
        context_length: int = 8192,
        logprobs: Callable[[str, int], Sequence[float]] | None = None,
    ):
        self.replies = replies
        self.logprobs = logprobs
        self.default = default
        self.latency = latency
        self.calls: list[ScriptedCall] = []
        self._identity = identity
        self._context_length = context_length

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            native_n=True, logprobs=self.logprobs is not None, context_length=self._context_length,
            max_parallel=64
        )

    async def describe(self) -> dict:
        return {"backend": "scripted", "identity": self._identity}

    async def generate(
        self, messages: Sequence[Message], params: SamplingParams, first_index: int = 0
    ) -> list[Completion]:
        messages = check_messages(messages)
        self.calls.append(ScriptedCall(messages, params, first_index))
        if self.latency:
            await asyncio.sleep(self.latency)
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        completions = [
            _complete(self._reply(messages, params, i), params, prompt_tokens, i, self.latency)
            for i in range(first_index, first_index + params.n)
        ]
        count_sent(completions)
        if self.logprobs is None:
            return completions
        return [dataclasses.replace(c, logprobs=tuple(self.logprobs(c.text, c.index))) for c in completions]

    def _reply(self, messages: list[Message], params: SamplingParams, index: int) -> str:
        if callable(self.replies):
            return self.replies(messages, params, index)
        last_user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        reply = self.replies.get(last_user, self.default)
        if reply is None:
            raise ConfigError(
                f"the scripted model has no reply for {last_user[:80]!r}",
                "add it to the table or give a default",
            )
        return reply if isinstance(reply, str) else reply[index % len(reply)]

    async def aclose(self) -> None:
        return None


def _complete(
    text: str, params: SamplingParams, prompt_tokens: int, index: int, seconds: float
) -> Completion:
    finish = "stop"
    cuts = [p for p in (text.find(s) for s in params.stop) if p >= 0]
    if cuts:
        text = text[: min(cuts)]
    words = text.split()
    if len(words) > params.max_tokens:
        text, finish = " ".join(words[: params.max_tokens]), "length"
        words = words[: params.max_tokens]
    return Completion(
        text=text,
        finish_reason=finish,
        model_ended=not cuts and finish == "stop",
        prompt_tokens=prompt_tokens,
        completion_tokens=len(words),
        seconds=seconds,
        index=index,
    )
