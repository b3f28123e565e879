"""Requests and replies in OpenAI's chat-completion shapes, and OpenAI's error format.

A request may carry selfcorrect's own fields beside OpenAI's (an OpenAI client sends them
with `extra_body`): `strategy`, `kind` (chat, math or code), `tests` (visible tests for a
code request), `checker` (Python defining `check(answer) -> bool`, for a math or chat request), `numeric`, `budget` ({"max_tokens", "max_calls"}), `memory` (on or off for
this request), `return_trajectory`. Fields an OpenAI client sends that a strategy has no use
for (user, logprobs, ...) are accepted and ignored.
"""

from __future__ import annotations

import time
from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: only text is read
            return "".join(part.get("text", "") for part in self.content if part.get("type") == "text")
        return self.content or ""


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_tokens: int | None = Field(None, ge=1, description="prompt and completion tokens of every internal call")
    max_calls: int | None = Field(None, ge=1, description="internal model calls")


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    stream: bool = False
    stream_options: dict | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=16384)
    max_completion_tokens: int | None = Field(None, ge=1, le=16384)
    seed: int | None = Field(None, ge=0, lt=2**31)
    n: int = Field(1, ge=1, le=1, description="one answer per request: the strategy's")
    # selfcorrect's fields
    strategy: str | None = Field(None, max_length=200)
    kind: Literal["chat", "math", "code"] = "chat"
    tests: list[str] = Field(default_factory=list, max_length=50)
    checker: str | None = Field(None, max_length=20_000)
    numeric: bool = True
    budget: Budget | None = None
    memory: bool | None = None
    return_trajectory: bool = False


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    completion_id: str = Field(min_length=1, max_length=100)
    correct: bool
    answer: str | None = Field(None, max_length=20_000, description="the correct answer, when known")
    comment: str | None = Field(None, max_length=20_000)


def error(status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
          code: str | None = None, headers: dict | None = None) -> JSONResponse:
    """An error as OpenAI sends one (its clients raise it as the matching exception)."""
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}},
                        status_code=status, headers=headers)


def completion(completion_id: str, model: str, content: str, finish_reason: str, usage: dict, extension: dict) -> dict:
    return {"id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "finish_reason": finish_reason, "logprobs": None}],
            "usage": usage, "selfcorrect": extension}


def chunk(completion_id: str, model: str, created: int, delta: dict, finish_reason: str | None = None,
          **extra) -> dict:
    return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}], **extra}
