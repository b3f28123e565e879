"""Online evaluation with the error memory, on the scripted model, the real sandbox and the
real SQLite store: lessons come only from verified feedback, only after the item that wrote
them, never about the item itself, never from held-out items; the twin without memory runs
beside; counters and guidelines move; the report says what happened."""

import asyncio
import json

import pytest

from selfcorrect.config import load_settings
from selfcorrect.memory import GuidelineBook, LessonBank
from selfcorrect.memory.recall import HEADER
from selfcorrect.report import write_reports
from selfcorrect.runner import EvalSpec, Evaluation, results_by_strategy
from tests.scripts import ListTask, Script, asked

pytestmark = pytest.mark.integration

PROBLEMS = [(f"Tom has {a} apples and buys {b} apples. How many apples does he have?", str(a + b))
            for a, b in ((3, 4), (5, 6), (7, 8), (9, 10), (2, 2), (4, 4))]
BUGGY = "```python\nprint(apples + bought)\n```"


def remembered(messages) -> bool:
    return HEADER in messages[0]["content"]


def good(messages) -> str:
    asked_now = messages[-1]["content"].split("Write a short Python program")[-1]  # not the lessons above it
    a, b = (int(w) for w in asked_now.split() if w.isdigit())
    return f"```python\nprint({a} + {b})\n```"


def online(tmp_path, **spec):
    """program-aided without fixes: without memory, every program fails (NameError); shown a
    lesson, the model writes a program that runs."""
    script = Script([(lambda last, messages, k: "Write a short Python program" in last and remembered(messages),
                      lambda last, messages, k: good(messages)),
                     (asked("Write a short Python program"), BUGGY)])
    settings = load_settings(store=tmp_path / "store.sqlite", sandbox_workers=2)
    evaluation = Evaluation(settings, EvalSpec(strategies=["program-aided:rounds=0,memory=on"], reference=False,
                                               online=True, distil_every=2, **spec),
                            task=ListTask(PROBLEMS), engine=script.model)
    run = asyncio.run(evaluation.run())
    return evaluation, run, results_by_strategy(evaluation.store, run), script


def test_online_memory_learns_from_each_item_before_the_next_and_never_forward(tmp_path):
    evaluation, run, results, script = online(tmp_path, holdout=1 / 3)
    memory, twin = results["program-aided:rounds=0,memory=true"], results["program-aided:rounds=0"]
    assert [r.final.correct for r in twin] == [False] * 6  # the twin never sees a lesson
    assert all(r.trajectory.memory is None for r in twin)
    # the first item had nothing to learn from; every later one was shown the lessons before it
    assert memory[0].trajectory.memory["lessons"] == [] and not memory[0].final.correct
    assert [r.final.correct for r in memory[1:]] == [True] * 5
    assert all(r.trajectory.cost["retrieve"].seconds > 0 for r in memory)

    bank = LessonBank(tmp_path / "store.sqlite")
    lessons = bank.lessons("list")
    # written only from failed verified feedback (the sandbox's NameError), from trained items only
    assert [lesson.provenance["item"] for lesson in lessons] == ["list/0"]
    assert lessons[0].feedback_kind == "external" and "NameError" in lessons[0].feedback
    assert lessons[0].written_by == "template" and lessons[0].corrected is None
    # shown to items 1-3 (trained); the twin failed where memory passed: helped, counted once each
    assert (lessons[0].uses, lessons[0].helped, lessons[0].hurt) == (3, 3, 0)
    # held-out items were shown it, yet wrote nothing and moved no counter
    assert all(r.trajectory.memory["lessons"] == [lessons[0].id] for r in memory[4:])
    # never a lesson about the item itself: item 0 is not shown its own lesson on a resumed view
    shown_inputs = {call.messages[0]["content"].split("\n\nWrite a short")[0] for call in script.model.calls
                    if remembered(call.messages)}
    assert all(PROBLEMS[0][0] in text for text in shown_inputs)
    guidelines = GuidelineBook(bank).history("list")
    assert guidelines == []  # one lesson is below a rule's support of two
    bank.close()

    report = json.loads(write_reports(evaluation.store, run, "math", tmp_path / "report")["json"].read_text())
    [pair] = report["online"]["pairs"]
    assert pair["train"]["items"] == 4 and pair["heldout"]["items"] == 2
    assert (pair["all"]["only_memory"], pair["all"]["only_twin"]) == (5, 0)
    assert pair["heldout"]["memory"] == 1.0 and pair["heldout"]["twin"] == 0.0
    assert pair["curve"]["cumulative"]["memory"][:2] == [0.0, 0.5]
    assert report["baseline"] == "program-aided:rounds=0"  # the twin without memory
    assert report["strategies"]["program-aided:rounds=0,memory=true"]["versus_baseline"]["difference"] == 5 / 6
    assert "Online: with memory" in (tmp_path / "report" / "report.md").read_text()
    assert "Online: accuracy over the items" in (tmp_path / "report" / "report.html").read_text()


def test_guidelines_are_distilled_from_lessons_and_versioned(tmp_path):
    # items whose lessons would each differ: a failing program on two items gives two lessons
    # with one failure (NameError), enough support for a rule
    script_problems = PROBLEMS[:3]
    settings = load_settings(store=tmp_path / "store.sqlite", sandbox_workers=2)
    script = Script([(asked("Write a short Python program"), BUGGY)])
    evaluation = Evaluation(settings, EvalSpec(strategies=["program-aided:rounds=0,memory=on"], reference=False,
                                               online=True, distil_every=1),
                            task=ListTask(script_problems), engine=script.model)
    asyncio.run(evaluation.run())
    bank = LessonBank(tmp_path / "store.sqlite")
    history = GuidelineBook(bank).history("list")
    assert [g.version for g in history] == [1, 2]  # a rule at two lessons, edited at three
    assert history[0].changes == {"added": ["NameError"]} and history[1].changes == {"edited": ["NameError"]}
    [rule] = history[-1].rules
    assert len(rule.lessons) == 3 and "define or import everything" in rule.text
    results = results_by_strategy(evaluation.store, evaluation.store.run(evaluation.run_record.run_id))
    last = results["program-aided:rounds=0,memory=true"][-1]
    assert last.trajectory.memory["rules"] == [rule.id] and last.trajectory.memory["guidelines_version"] == 1
    assert rule.uses == 1 and rule.ended_wrong == 1  # shown to the third item, which failed
    bank.close()
