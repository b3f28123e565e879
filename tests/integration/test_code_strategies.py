"""Strategies that use the real sandbox, on the scripted model: self-debug, best-of-n with
visible tests, self-consistency's vote on behaviour, program-aided answers."""

import asyncio
import json

import pytest

from selfcorrect.config import load_settings
from selfcorrect.measure.compute import vote_curve
from selfcorrect.measure.flips import flip_matrices
from selfcorrect.runner import EvalSpec, Evaluation, results_by_strategy
from selfcorrect.tasks import load_task
from tests.scripts import ListTask, Script, asked

pytestmark = pytest.mark.integration

WRONG = "```python\ndef add(a, b):\n    return a - b\n```"
RIGHT = "```python\ndef add(a, b):\n    return a + b\n```"
ALSO_RIGHT = "```python\ndef add(a, b):\n    return sum([a, b])\n```"


def code_task(folder):
    path = folder / "add.jsonl"
    path.write_text(json.dumps({"prompt": "Write a function add(a, b) that returns their sum.",
                                "tests": ["assert add(1, 2) == 3", "assert add(2, 2) == 4",
                                          "assert add(-1, 1) == 0"]}) + "\n")
    return load_task(str(path))


def run(tmp_path, script, strategies, task):
    settings = load_settings(store=tmp_path / "store.sqlite", sandbox_workers=2)
    evaluation = Evaluation(settings, EvalSpec(strategies=strategies, reference=False), task=task, engine=script.model)
    run_record = asyncio.run(evaluation.run())
    return results_by_strategy(evaluation.store, run_record)


def test_self_debug_shows_the_failure_and_fixes_the_code(tmp_path):
    script = Script([(asked("returned -1, expected 3"), RIGHT), (asked("add(a, b) that returns"), WRONG)])
    [result] = run(tmp_path, script, ["self-debug"], code_task(tmp_path))["self-debug"]
    trajectory = result.trajectory
    assert trajectory.stop == "verified" and result.final.correct
    assert [f.kind for a in trajectory.attempts for f in a.feedback] == ["external", "external"]
    [matrix] = flip_matrices([result])
    assert matrix.counts["wrong_right"]["changed"] == 1


def test_self_correct_with_test_feedback_shows_the_visible_tests_results(tmp_path):
    script = Script([(asked("returned -1, expected 3"), RIGHT), (asked("There might be an error in the code"), WRONG),
                     (asked("add(a, b) that returns"), WRONG)])
    results = run(tmp_path, script, ["self-correct:feedback=tests,keep=last", "self-correct:keep=last"],
                  code_task(tmp_path))
    [shown] = results["self-correct:keep=last,feedback=tests"]
    [blind] = results["self-correct:keep=last"]
    assert shown.final.correct and not blind.final.correct  # only the tests' results tell it what is wrong
    assert [f.kind for a in shown.trajectory.attempts for f in a.feedback] == ["external"]
    assert not any(a.feedback for a in blind.trajectory.attempts)
    review = [c.messages[-1]["content"] for c in script.model.calls if "There might be an error" in c.messages[-1]["content"]]
    assert any(r.startswith("Your code was run on the tests:") for r in review)  # the same text training shows


def test_self_debug_can_explain_its_code_first(tmp_path):
    script = Script([(asked("Explain what it does"), "It subtracts b from a."),
                     (asked("You explained your code"), RIGHT), (asked("add(a, b) that returns"), WRONG)])
    [result] = run(tmp_path, script, ["self-debug:explain=true"], code_task(tmp_path))["self-debug:explain=true"]
    assert result.final.correct
    fix = [c for c in script.model.calls if "You explained your code" in c.messages[-1]["content"]][0]
    assert "It subtracts b from a." in fix.messages[-1]["content"]


def test_best_of_n_keeps_the_sample_that_passes_the_visible_test(tmp_path):
    script = Script([(asked("add(a, b) that returns"), lambda last, m, k: [WRONG, RIGHT, WRONG][k])])
    [result] = run(tmp_path, script, ["best-of-n:n=3"], code_task(tmp_path))["best-of-n:n=3"]
    assert result.final.correct and result.trajectory.final == 1


def test_self_consistency_votes_on_behaviour_not_text(tmp_path):
    samples = [WRONG, RIGHT, ALSO_RIGHT, WRONG.replace("a - b", "(a - b)"), RIGHT.replace("a + b", "b + a")]
    script = Script([(asked("add(a, b) that returns"), lambda last, m, k: samples[k])])
    results = run(tmp_path, script, ["self-consistency:n=5"], code_task(tmp_path))["self-consistency:n=5"]
    [result] = results
    assert result.final.correct and result.trajectory.final == 1  # 3 programs return 3
    assert vote_curve(results)[-1]["accuracy"] == 1.0  # the curve replays the same vote


def test_program_aided_runs_the_program_and_fixes_errors(tmp_path):
    script = Script([(asked("NameError"), "```python\nprint(6 + 6)\n```"),
                     (asked("Write a short Python program"), "```python\nprint(six + six)\n```")])
    results = run(tmp_path, script, ["program-aided"], ListTask([("What is 6 + 6?", "12")]))
    [result] = results["program-aided"]
    first, second = result.trajectory.attempts
    assert first.answer is None and second.answer == "12" and result.final.correct
    assert result.trajectory.cost["feedback"].sandbox_runs == 2


def test_two_attempt_training_on_code_runs_the_visible_tests_between_the_attempts(tmp_path):
    pytest.importorskip("trl")
    from selfcorrect.train.score import SCoReSettings, train_score
    from tests.tinymodel import make_tiny_model

    path = tmp_path / "add.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Write add{k}(a, b).", "tests": [f"assert add{k}(1, 2) == 3"],
                                        "visible_tests": [f"assert add{k}(1, 2) == 3"]}) + "\n" for k in range(2)))
    task = load_task(str(path))
    settings = SCoReSettings(stage1_steps=1, stage2_steps=1, generations=2, prompts_per_step=2, max_completion_length=6,
                             learning_rate=1e-3, save_steps=100, feedback="tests")
    metrics = train_score(make_tiny_model(tmp_path / "tiny"), task, task.items(), tmp_path / "score", settings,
                          progress=False)
    assert metrics["steps"] == 2 and metrics["review"].startswith("external")
    assert all(s["attempt_1_accuracy"] == 0 for s in metrics["signals"])  # a random model writes no working code
