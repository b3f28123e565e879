"""Online evaluation with the error memory, on the scripted model, the real sandbox and the
real SQLite store: lessons come only from verified feedback, only after the item that wrote
them, never about the item itself, never from held-out items; the twin without memory runs
beside; counters and guidelines move; the report says what happened."""

import asyncio
import json
import re

import pytest

from selfcorrect.config import load_settings
from selfcorrect.memory import GuidelineBook, LessonBank
from selfcorrect.memory.examples import HEADER as EXAMPLES
from selfcorrect.memory.examples import ExampleBank
from selfcorrect.memory.recall import HEADER, RULES
from selfcorrect.models.scripted import ScriptedModel
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
                                               online=True, distil_every=2, memory_show="all", **spec),
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
    assert (pair["all"]["wrong_to_right"], pair["all"]["right_to_wrong"]) == (5, 0)  # right with memory only: 5
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
                                               online=True, distil_every=1, memory_show="all"),
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


# -- the gate (memory/gate.py): memory is shown only once paired evidence admits it ----------

GATED = [(f"Tom has {a} apples and buys {b} apples. How many apples does he have?", str(a + b))
         for a, b in zip(range(3, 51), range(60, 108))]


def program(messages) -> str:
    asked_now = messages[0]["content"].split("Write a short Python program")[-1]
    a, b = (int(w) for w in re.findall(r"\d+", asked_now)[:2])
    return a, b, f"```python\nprint({a} + {b})\n```"


def gated(tmp_path, reply) -> tuple:
    settings = load_settings(store=tmp_path / "store.sqlite", sandbox_workers=2)
    evaluation = Evaluation(settings, EvalSpec(strategies=["program-aided:rounds=1,memory=on"], reference=False,
                                               online=True, memory_explore=1.0, distil_every=5),
                            task=ListTask(GATED), engine=ScriptedModel(reply))
    run = asyncio.run(evaluation.run())
    results = results_by_strategy(evaluation.store, run)
    write_reports(evaluation.store, run, "math", tmp_path / "report")
    return run, results["program-aided:rounds=1,memory=true"], results["program-aided:rounds=1"]


def test_memory_that_hurts_is_retired_and_the_answers_stay_those_without_memory(tmp_path):
    def reply(messages, params, k):
        a, _, right = program(messages)
        content = messages[0]["content"]
        if HEADER in content or RULES in content or EXAMPLES in content:
            return "```python\nprint(0)\n```"  # whatever memory shows, it makes things worse
        if "Fix the program" in messages[-1]["content"] or a % 2 == 0:
            return right
        return BUGGY  # odd items fail once, then the fix passes: informative items

    run, memory, twin = gated(tmp_path, reply)
    gate = run.config["online"]["gate"]
    assert gate["served"] == "none"
    assert gate["arms"]["lessons"]["status"] == "retired" and gate["arms"]["examples"]["status"] == "retired"
    assert all(gate["arms"][arm]["helped"] == 0 for arm in ("lessons", "examples", "rules"))
    assert sum(run.config["online"]["explored"].values()) > 0  # trials cost tokens, in the shadow
    # served none throughout: every answer is the one without memory
    assert [r.final.correct for r in memory] == [r.final.correct for r in twin] == [True] * len(GATED)
    assert all(r.trajectory.memory is None for r in memory)


def test_memory_that_helps_is_admitted_and_served(tmp_path):
    def reply(messages, params, k):
        a, _, right = program(messages)
        content = messages[0]["content"]
        if EXAMPLES in content:
            return right  # a solved example of a similar problem shows it how
        if HEADER in content or RULES in content:
            return "```python\nprint(0)\n```"  # lessons and rules hurt
        if "Fix the program" in messages[-1]["content"]:
            return right
        return BUGGY if a % 3 == 0 else "```python\nprint(0)\n```"

    run, memory, twin = gated(tmp_path, reply)
    gate = run.config["online"]["gate"]
    assert gate["served"] == "examples" and gate["arms"]["examples"]["status"] == "admitted"
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "served **examples**" in markdown and "| examples | admitted |" in markdown
    assert gate["arms"]["examples"]["hurt"] == 0 and gate["arms"]["examples"]["bounds"][0] > 0.5
    lessons = gate["arms"]["lessons"]
    assert lessons["status"] != "admitted" and lessons["helped"] == 0 and lessons["hurt"] > 0
    with_memory, without = sum(r.final.correct for r in memory), sum(r.final.correct for r in twin)
    assert with_memory >= without + 10
    shown = [r.trajectory.memory for r in memory if r.trajectory.memory]
    assert shown and {m["arm"] for m in shown} == {"examples"} and all(m["examples"] for m in shown)
    # never an example of the item itself
    examples = ExampleBank(tmp_path / "store.sqlite")
    for r in memory:
        if r.trajectory.memory:
            assert r.question not in {e.input for e in examples.examples("list") if e.id in r.trajectory.memory["examples"]}
    assert all(e.check == "gold" and e.messages and "Lessons" not in e.messages[0]["content"]
               for e in examples.examples("list"))
    examples.close()
