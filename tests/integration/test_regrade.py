"""`regrade` on a program-aided run: the programs run again in the real sandbox, with no
model call, and their output is read by the current reader."""

import asyncio

import pytest

from selfcorrect.regrade import regrade
from tests.scripts import ListTask, Script, asked, evaluate

pytestmark = pytest.mark.integration

PROBLEMS = [("What is 2 + 2?", "4"), ("What is 3 + 3?", "6")]


def test_regrade_runs_programs_again_and_reads_them_with_the_current_reader(tmp_path):
    script = Script([(asked("Write a short Python program"), lambda last, m, k: (
        "```python\nprint('The answer is', 2 + 2)\n```" if "2 + 2" in last else "```python\nprint(3 + 3)\n```"))])
    evaluation, run, _ = evaluate(tmp_path, script, ["program-aided:rounds=0"], PROBLEMS)
    store = evaluation.store
    results = {r["item"]: r for r in store.results(run.run_id)}
    assert results["list/0"]["final"]["correct"] and results["list/1"]["final"]["correct"]
    for result in results.values():  # as a reader that took the first number printed left them
        result["trajectory"]["attempts"][0]["answer"] = "2"
        result["grades"][0]["correct"] = result["final"]["correct"] = False
        store.put_result(run.run_id, result["strategy"], result["item"], result)
    calls = len(script.model.calls)
    _, changed = asyncio.run(regrade(evaluation.settings, run.run_id, task=ListTask(PROBLEMS)))
    assert len(script.model.calls) == calls
    assert changed["finals"] == 2
    assert all(r["final"]["correct"] for r in store.results(run.run_id))
