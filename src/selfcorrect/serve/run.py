"""One request as one strategy run: the request becomes an item view (no gold: there is
none), the strategy runs through a model that counts the request's budget, and the answer is
the strategy's selection, or, when the budget or the time runs out, the best attempt so far.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from selfcorrect.memory.learn import verdict
from selfcorrect.models.base import Completion, Message, Model, SamplingParams
from selfcorrect.serve.protocol import ChatRequest
from selfcorrect.strategies import Context, Session, Strategy
from selfcorrect.strategies.selection import best_by
from selfcorrect.strategies.session import ModelHandle
from selfcorrect.tasks.items import ItemView
from selfcorrect.trajectory import Attempt, Trajectory


class BudgetExceeded(Exception):
    pass


class BudgetedModel:
    """A model that refuses a call once the request's budget is spent (tokens of every
    internal call, or calls)."""

    def __init__(self, model: Model, max_tokens: int | None, max_calls: int | None):
        self._model, self.max_tokens, self.max_calls = model, max_tokens, max_calls
        self.tokens = self.calls = 0

    @property
    def identity(self) -> str:
        return self._model.identity

    @property
    def capabilities(self):
        return self._model.capabilities

    async def generate(self, messages: list[Message], params: SamplingParams, first_index: int = 0) -> list[Completion]:
        if (self.max_calls is not None and self.calls >= self.max_calls) or (
                self.max_tokens is not None and self.tokens >= self.max_tokens):
            raise BudgetExceeded
        self.calls += 1
        completions = await self._model.generate(messages, params, first_index)
        self.tokens += sum(c.prompt_tokens + c.completion_tokens for c in completions)
        return completions


def view_of(request: ChatRequest, completion_id: str) -> ItemView:
    messages = tuple({"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                     for m in request.messages)
    users = [m["content"] for m in messages if m["role"] == "user"]
    return ItemView(id=completion_id, task="serve", kind=request.kind, question=users[-1] if users else messages[-1]["content"],
                    messages=messages, visible_tests=tuple(request.tests), numeric=request.numeric,
                    checker=request.checker or "")


@dataclass
class Answer:
    trajectory: Trajectory
    final: Attempt | None
    finish_reason: str  # "stop", "length" (the answer hit the token cap), "budget", "timeout"


async def answer(strategy: Strategy, view: ItemView, model: Model, params: SamplingParams, *, budget: tuple,
                 timeout: float, sandbox=None, critic: Model | None = None,
                 recall: Callable | None = None, record: Callable[[dict], None] | None = None,
                 precision: str = "auto") -> Answer:
    budgeted = BudgetedModel(model, *budget)
    ctx = Context(model=ModelHandle(budgeted), params=params, sandbox=sandbox,
                  critic=ModelHandle(critic) if critic is not None else None, record=record, memory=recall,
                  precision=precision)
    session = Session(view, ctx, strategy.spec)
    trajectory = session.trajectory
    try:
        outcome = await asyncio.wait_for(strategy.run(session), timeout)
    except BudgetExceeded:
        return _so_far(trajectory, "budget")
    except TimeoutError:
        return _so_far(trajectory, "timeout")
    trajectory.final = outcome.final.index if outcome.final is not None else None
    trajectory.stop, trajectory.signal, trajectory.no_signal = outcome.stop, outcome.signal, outcome.no_signal
    final = outcome.final
    return Answer(trajectory, final, "length" if final is not None and final.finish_reason == "length" else "stop")


def _so_far(trajectory: Trajectory, why: str) -> Answer:
    """The best attempt before the strategy was stopped: the one verified feedback scored
    highest, else the first that has an answer, else the first."""
    attempts = trajectory.attempts
    scored = best_by(attempts, lambda a: _verified_score(verdict(a, False)))
    final = scored or next((a for a in attempts if a.answer is not None), attempts[0] if attempts else None)
    trajectory.final = final.index if final is not None else None
    trajectory.stop = why
    return Answer(trajectory, final, why)


def _verified_score(feedback) -> float | None:
    if feedback is None:
        return None
    return feedback.score if feedback.score is not None else float(feedback.passed)
