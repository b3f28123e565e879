"""The runner on the scripted model: resume, reports, the sampling pool, paired statistics."""

import asyncio
import json

import pytest

from selfcorrect.config import load_settings
from selfcorrect.report import write_reports
from selfcorrect.runner import EvalSpec, Evaluation, results_by_strategy
from selfcorrect.store import Store
from selfcorrect.models.scripted import ScriptedModel
from tests.scripts import ListTask, Script, asked, evaluate

PROBLEMS = [(f"What is {i} + {i}?", str(2 * i)) for i in range(1, 7)]
INITIAL = "Solve it step by step"


def right_on_even(last, messages, k):
    """Item i: right when i is even (and on sample 1 always), else off by one."""
    i = int(messages[0]["content"].split("What is ")[1].split(" ")[0])
    return f"The answer is {2 * i if i % 2 == 0 or k == 1 else 2 * i + 1}."


class Boom(Exception):
    pass


class DiesAfter(ScriptedModel):
    """Answers `calls` model calls, then fails as a lost server would."""

    def __init__(self, reply, calls: int):
        super().__init__(reply)
        self.left = calls

    async def generate(self, messages, params, first_index=0):
        if self.left == 0:
            raise Boom("the machine went away")
        self.left -= 1
        return await super().generate(messages, params, first_index)


def test_an_interrupted_run_resumes_with_no_repeated_model_call(tmp_path):
    settings = load_settings(store=tmp_path / "store.sqlite")
    spec = EvalSpec(strategies=["single", "self-consistency:n=3"], reference=False)
    dying = DiesAfter(Script([(asked(INITIAL), right_on_even)]).reply, calls=5)
    first = Evaluation(settings, spec, task=ListTask(PROBLEMS), engine=dying)
    with pytest.raises(Boom):
        asyncio.run(first.run())
    run_id = first.run_record.run_id
    store = Store(settings.store)
    assert store.run(run_id).status == "running"
    assert 0 < len(store.finished(run_id)) < 12

    fresh = ScriptedModel(Script([(asked(INITIAL), right_on_even)]).reply)
    second = Evaluation(settings, spec, resume=run_id, task=ListTask(PROBLEMS), engine=fresh)
    run = asyncio.run(second.run())
    assert run.status == "complete" and len(store.finished(run_id)) == 12
    stored = {(c.messages[-1]["content"], c.first_index + k)
              for c in dying.calls[:5] for k in range(c.params.n)}
    redrawn = {(c.messages[-1]["content"], c.first_index + k)
               for c in fresh.calls for k in range(c.params.n)}
    assert stored and not stored & redrawn  # nothing the first run drew was drawn again
    assert second.model.stats.hits >= 1


def test_results_and_paired_statistics(tmp_path):
    script = Script([(asked(INITIAL), right_on_even)])
    evaluation, run, results = evaluate(tmp_path, script, ["single", "self-consistency:n=3"], PROBLEMS)
    paths = write_reports(evaluation.store, run, "math", tmp_path / "report")
    report = json.loads(paths["json"].read_text())
    single, vote = report["strategies"]["single"], report["strategies"]["self-consistency:n=3"]
    assert (single["correct"], single["items"], single["accuracy"]) == (3, 6, 0.5)
    # the vote over 3 samples: odd items have 2 wrong of 3 -> still wrong; even items right
    assert vote["correct"] == 3 and vote["versus_baseline"]["p_value"] == 1.0
    assert report["curves"]["vote"]["points"][0]["accuracy"] == 0.5
    assert report["run"]["config"]["item_ids"] == [f"list/{i}" for i in range(6)]
    assert [r["item"] for r in results["single"]] == [f"list/{i}" for i in range(6)]


def test_the_sampling_pool_is_added_for_equal_compute(tmp_path):
    settings = load_settings(store=tmp_path / "store.sqlite")
    evaluation = Evaluation(settings, EvalSpec(strategies=["single"]), task=ListTask(PROBLEMS),
                            engine=Script([(asked(INITIAL), right_on_even)]).model)
    assert [s.spec for s in evaluation.strategies] == ["single", "self-consistency"]


def test_oracle_runs_are_marked_in_every_report(tmp_path):
    script = Script([(asked("Your answer is wrong"), right_on_even), (asked(INITIAL), right_on_even)])
    evaluation, run, _ = evaluate(tmp_path, script, ["single", "oracle-refine"], PROBLEMS)
    paths = write_reports(evaluation.store, run, "math", tmp_path / "report")
    assert json.loads(paths["json"].read_text())["run"]["oracle"] is True
    assert "**ORACLE**" in paths["md"].read_text() and "oracle-refine [ORACLE]" in paths["md"].read_text()
    assert "<b>ORACLE</b>" in paths["html"].read_text()


def test_progress_is_reported(tmp_path):
    seen = []
    settings = load_settings(store=tmp_path / "store.sqlite")
    evaluation = Evaluation(settings, EvalSpec(strategies=["single"], reference=False), task=ListTask(PROBLEMS),
                            engine=Script([(asked(INITIAL), right_on_even)]).model,
                            on_progress=lambda p: seen.append((p.units_done, p.units_total, p.items_done)))
    asyncio.run(evaluation.run())
    assert seen[0] == (0, 6, 0) and seen[-1] == (6, 6, 6)
    assert [items for _, _, items in seen] == sorted(items for _, _, items in seen)


def test_results_by_strategy_follow_the_run_order(tmp_path):
    script = Script([(asked(INITIAL), right_on_even)])
    evaluation, run, _ = evaluate(tmp_path, script, ["self-consistency:n=2", "single"], PROBLEMS)
    assert list(results_by_strategy(evaluation.store, run)) == ["self-consistency:n=2", "single"]
