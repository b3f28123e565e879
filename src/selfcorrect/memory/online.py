"""What the memory learns from one finished item of an online evaluation, through the gate:

- evidence: the served arm's answer (when it is not none) and the shadow arm's, each paired
  with the twin without memory on the same item, scored by the gold check of the item just
  answered (the task gives it, as a client's feedback would): the gate admits or retires;
- worked examples: from informative items only (some attempt right and some wrong, by that
  check), the twin's right attempt first (its conversation has no memory in it);
- lessons: as before (memory/learn.py), from the feedback the strategy verified itself, and
  only from informative items too.
"""

from __future__ import annotations

from selfcorrect.memory.examples import ExampleBank, WorkedExample
from selfcorrect.memory.gate import Gate
from selfcorrect.models.base import first_turn
from selfcorrect.trajectory import UnitResult


def informative(results: list[UnitResult]) -> bool:
    """Some attempt right and some wrong among an item's results, by the gold check."""
    verdicts = {g.correct for r in results for g in r.grades}
    return verdicts == {True, False}


def record_evidence(gate: Gate, namespace: str, twin: UnitResult, served: tuple[str, UnitResult] | None,
                    shadow: tuple[str, UnitResult] | None) -> None:
    for arm, result in (pair for pair in (served, shadow) if pair is not None):
        gate.record(namespace, arm, result.final.correct, twin.final.correct)


def example_from(results: list[UnitResult], namespace: str, question: str, messages_of, provenance: dict
                 ) -> WorkedExample | None:
    """The worked example of an informative item: a right attempt, from the result without
    memory first; `messages_of(hash)` gives the conversation an attempt answered."""
    for result in results:
        if result.trajectory.memory:
            continue  # its conversation carries what memory showed: not a clean example
        for attempt, grade in zip(result.trajectory.attempts, result.grades):
            if not grade.correct or attempt.finish_reason == "length":
                continue
            # a revision that passed is taught as the answer to the first question
            messages = first_turn(messages_of(attempt.messages_hash) or [])
            return WorkedExample(namespace=namespace, input=question, reply=attempt.text.strip(),
                                 messages=messages, check="gold",
                                 provenance={**provenance, "strategy": result.strategy, "attempt": attempt.index})
    return None


def learn_examples(bank: ExampleBank, results: list[UnitResult], namespace: str, question: str, messages_of,
                   provenance: dict) -> str | None:
    if not informative(results):
        return None
    example = example_from(results, namespace, question, messages_of, provenance)
    return bank.add(example) if example is not None else None
