"""A third-party plugin, as another package would ship one: a strategy, a task and a backend,
registered through entry points (tests/unit/test_plugins.py installs it)."""

from __future__ import annotations

from selfcorrect.models.base import Capabilities, Completion, SamplingParams
from selfcorrect.strategies.strategy import Strategy, solve
from selfcorrect.tasks.base import MathTask


class FirstOfTwo(Strategy):
    """Draw two samples and return the one with the shorter reply."""

    name = "shorter-of-two"
    kinds = frozenset({"math"})
    options = {"n": 2}
    bounds = {"n": (2, 8)}

    async def run(self, session):
        attempts = await solve(session, n=self.n)
        return session.done(min(attempts, key=lambda a: (len(a.text), a.index)), "shortest")


class Doubling(MathTask):
    """Math: what is twice a number?"""

    name = "doubling"

    def __init__(self, n: int = 3):
        self.n = n

    def items(self):
        return [self.make_item(f"doubling/{i}", f"What is 2 * {i}?", str(2 * i)) for i in range(self.n)]


class Echo:
    """A model that answers every question with the number in its backend argument."""

    def __init__(self, answer: str):
        self.answer = answer

    @property
    def identity(self) -> str:
        return f"echo:{self.answer}"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(native_n=True, logprobs=False, context_length=4096, max_parallel=4)

    async def describe(self) -> dict:
        return {"backend": "echo", "answer": self.answer}

    async def generate(self, messages, params: SamplingParams, first_index: int = 0):
        return [Completion(text=f"The answer is {self.answer}.", finish_reason="stop", prompt_tokens=5,
                           completion_tokens=4, seconds=0.0, index=i)
                for i in range(first_index, first_index + params.n)]

    async def aclose(self) -> None:
        return None


def echo_backend(settings, arg: str) -> Echo:
    return Echo(arg or "0")
