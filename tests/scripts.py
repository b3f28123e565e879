"""A scripted model for strategy tests: routing rules on the prompt, first match wins."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from selfcorrect.config import load_settings
from selfcorrect.models.scripted import ScriptedModel
from selfcorrect.runner import EvalSpec, Evaluation, results_by_strategy
from selfcorrect.tasks.base import MathTask


class ListTask(MathTask):
    """A math task with the items we give it."""

    name = "list"

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems

    def items(self):
        return [self.make_item(f"list/{i}", q, a) for i, (q, a) in enumerate(self.problems)]


Rule = tuple[Callable[[str, list[dict], int], bool], Callable[[str, list[dict], int], str] | str]


class Script:
    """rules: (test(last user message, messages, sample index), reply or reply function)."""

    def __init__(self, rules: list[Rule], logprobs: Callable[[str, int], list[float]] | None = None):
        self.rules = rules
        self.model = ScriptedModel(self.reply, logprobs=logprobs)

    def reply(self, messages, params, index) -> str:
        last = messages[-1]["content"]
        for test, reply in self.rules:
            if test(last, messages, index):
                return reply(last, messages, index) if callable(reply) else reply
        raise AssertionError(f"no rule for: {last[:200]!r}")


def asked(phrase: str) -> Callable:
    return lambda last, messages, index: phrase in last


def sample(k: int, phrase: str) -> Callable:
    return lambda last, messages, index: phrase in last and index == k


def evaluate(tmp_path, script: Script, strategies: list[str], problems, critic_engine=None, **spec):
    settings = load_settings(store=tmp_path / "store.sqlite")
    evaluation = Evaluation(settings, EvalSpec(**{"strategies": strategies, "reference": False, **spec}),
                            task=ListTask(problems), engine=script.model, critic_engine=critic_engine)
    run = asyncio.run(evaluation.run())
    return evaluation, run, results_by_strategy(evaluation.store, run)
