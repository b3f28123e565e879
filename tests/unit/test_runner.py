"""The runner on the scripted model: resume, reports, the sampling pool, paired statistics."""

import asyncio
import json

import pytest

from selfcorrect.config import load_settings
from selfcorrect.errors import SelfcorrectError
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
    assert [r.item for r in results["single"]] == [f"list/{i}" for i in range(6)]
    # sample 0 is drawn once for both: notional cost counts it twice, sent cost once
    sent = sum(s["sent_per_item"]["tokens"] for s in (single, vote))
    assert 0 < sent < single["tokens_per_item"] + vote["tokens_per_item"]
    assert single["sent_per_item"]["calls"] == 1
    line = next(ln for ln in paths["md"].read_text().splitlines() if ln.startswith("| single |"))
    assert f"{single['sent_per_item']['requests']:.1f} requests, {single['sent_per_item']['tokens']:.0f} tokens" in line
    assert "sent / item" in paths["html"].read_text() and "sent prompt tokens" in paths["md"].read_text()


def test_the_sampling_pool_grows_to_the_largest_budget_in_the_run(tmp_path):
    script = Script([(asked(INITIAL), right_on_even), (asked("Is the proposed answer correct"), "yes")])
    evaluation, run, results = evaluate(tmp_path, script, ["single", "best-of-n:n=2"], PROBLEMS,
                                        reference=True, pool_cap=40)
    pool = run.config["pool"]
    assert pool.startswith("self-consistency:n=") and pool in results and pool != "self-consistency:n=8"
    paths = write_reports(evaluation.store, run, "math", tmp_path / "r")
    report = json.loads(paths["json"].read_text())
    best = report["strategies"]["best-of-n:n=2"]
    assert best["compute_matched"]["budget"] == "within"  # the pool reaches its budget
    # read the other way too, and against the run's best-of-n, in every report
    needs = best["compute_matched"]["sampling_for_equal_accuracy"]
    assert best["compute_matched"]["equal_accuracy_budget"] == "within" and needs["samples"] >= 1
    assert best["compute_matched"]["best_of"]["gain"] == 0.0  # best-of-n against its own curve
    assert f"Voting first reaches {100 * best['accuracy']:.1f}% at {needs['tokens']:.0f} tokens" in paths["md"].read_text()
    page = paths["html"].read_text()
    assert "voting reaches this accuracy at" in page and "vs best-of-n by" in page
    assert report["curves"]["vote"]["points"][-1]["tokens"] >= best["tokens_per_item"]
    assert [s for s in results if s.startswith("self-consistency")] == [pool]  # outgrown pools dropped


def test_a_budget_beyond_a_capped_pool_is_said_in_every_report(tmp_path):
    script = Script([(asked(INITIAL), right_on_even), (asked("Is the proposed answer correct"), "yes")])
    evaluation, run, _ = evaluate(tmp_path, script, ["single", "best-of-n:n=6"], PROBLEMS,
                                  reference=True, pool_cap=2)
    assert run.config["pool"] == "self-consistency:n=2"
    paths = write_reports(evaluation.store, run, "math", tmp_path / "r")
    report = json.loads(paths["json"].read_text())
    assert report["strategies"]["best-of-n:n=6"]["compute_matched"]["budget"] == "beyond"
    assert "beyond the pool" in paths["md"].read_text()
    assert "beyond the pool" in paths["html"].read_text()


def test_a_resumed_run_takes_another_pool_cap_and_records_it(tmp_path):
    script = Script([(asked(INITIAL), right_on_even), (asked("Is the proposed answer correct"), "yes")])
    evaluation, run, _ = evaluate(tmp_path, script, ["single", "best-of-n:n=6"], PROBLEMS,
                                  reference=True, pool_cap=40)
    grown = run.config["pool"]
    assert int(grown.split("=")[1]) > 2
    capped = Evaluation(evaluation.settings, EvalSpec(), resume=run.run_id, task=ListTask(PROBLEMS),
                        engine=script.model, pool_cap=2)
    record = asyncio.run(capped.run())
    assert record.config["pool"] == "self-consistency:n=2" and record.config["spec"]["pool_cap"] == 2
    assert record.config["resumed_with"][-1]["pool_cap_before"] == 40
    results = results_by_strategy(capped.store, record)
    assert grown not in results and grown not in record.config["strategies"]  # the larger pool is gone
    assert len(results["self-consistency:n=2"]) == len(PROBLEMS)
    assert capped.model.stats.hits >= len(PROBLEMS)  # its samples came from the cache
    paths = write_reports(capped.store, record, "math", tmp_path / "r")
    report = json.loads(paths["json"].read_text())
    assert report["strategies"]["best-of-n:n=6"]["compute_matched"]["budget"] == "beyond"
    assert "reference pool capped at 2 samples (was 40)" in paths["md"].read_text()


def test_a_refused_resume_leaves_the_pool_and_its_cap_as_they_were(tmp_path):
    script = Script([(asked(INITIAL), right_on_even), (asked("Is the proposed answer correct"), "yes")])
    evaluation, run, results = evaluate(tmp_path, script, ["single", "best-of-n:n=6"], PROBLEMS,
                                        reference=True, pool_cap=40)
    other = ScriptedModel(script.reply, identity="another-model")
    again = Evaluation(evaluation.settings, EvalSpec(), resume=run.run_id, task=ListTask(PROBLEMS),
                       engine=other, pool_cap=2)
    with pytest.raises(SelfcorrectError, match="this model is another-model"):
        asyncio.run(again.run())
    kept = Store(evaluation.settings.store).run(run.run_id)
    assert kept.config["spec"]["pool_cap"] == 40 and kept.config["pool"] == run.config["pool"]
    assert len(results_by_strategy(again.store, kept)[run.config["pool"]]) == len(results[run.config["pool"]])


def test_resume_refuses_another_model(tmp_path):
    script = Script([(asked(INITIAL), right_on_even)])
    evaluation, run, _ = evaluate(tmp_path, script, ["single"], PROBLEMS)
    other = ScriptedModel(script.reply, identity="another-model")
    again = Evaluation(evaluation.settings, EvalSpec(), resume=run.run_id, task=ListTask(PROBLEMS), engine=other)
    with pytest.raises(SelfcorrectError, match="was drawn from model scripted; this model is another-model"):
        asyncio.run(again.run())


def test_resume_refuses_another_code_version_unless_forced(tmp_path, monkeypatch):
    script = Script([(asked(INITIAL), right_on_even)])
    evaluation, run, _ = evaluate(tmp_path, script, ["single"], PROBLEMS)
    monkeypatch.setattr("selfcorrect.runner.code_version", lambda: "9.9.9+gfeedface")
    again = Evaluation(evaluation.settings, EvalSpec(), resume=run.run_id, task=ListTask(PROBLEMS),
                       engine=script.model)
    with pytest.raises(SelfcorrectError, match="made with code version .* \\(now 9.9.9\\+gfeedface\\)"):
        asyncio.run(again.run())
    forced = Evaluation(evaluation.settings, EvalSpec(), resume=run.run_id, task=ListTask(PROBLEMS),
                        engine=script.model, force=True)
    record = asyncio.run(forced.run())
    assert record.config["resumed_with"][0]["code_version"] == "9.9.9+gfeedface"
    assert record.code_version != "9.9.9+gfeedface"  # the first version stays on record


def test_a_run_has_one_writer_at_a_time(tmp_path):
    import subprocess
    import sys

    script = Script([(asked(INITIAL), right_on_even)])
    evaluation, run, _ = evaluate(tmp_path, script, ["single"], PROBLEMS)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        store = Store(evaluation.settings.store)
        with store._lock:  # another process holds the run, as a second `eval --resume` would find it
            store._db.execute("INSERT INTO writers VALUES (?, ?, ?, ?)",
                              (run.run_id, __import__("socket").gethostname(), holder.pid, 0.0))
        again = Evaluation(evaluation.settings, EvalSpec(), resume=run.run_id, task=ListTask(PROBLEMS),
                           engine=script.model)
        with pytest.raises(SelfcorrectError, match=f"being written by process {holder.pid}"):
            asyncio.run(again.run())
    finally:
        holder.kill()
        holder.wait()
    asyncio.run(Evaluation(evaluation.settings, EvalSpec(), resume=run.run_id, task=ListTask(PROBLEMS),
                           engine=script.model).run())  # a dead holder's claim is taken over


def test_a_strategy_has_no_path_to_the_store(tmp_path):
    """The sample cache's store holds finished units' grades: no attribute of what a
    strategy is handed may lead there."""
    from selfcorrect.strategies.session import Context

    script = Script([(asked(INITIAL), right_on_even)])
    evaluation = Evaluation(load_settings(store=tmp_path / "store.sqlite"),
                            EvalSpec(strategies=["single"], reference=False), task=ListTask(PROBLEMS),
                            engine=script.model)
    seen = []
    original = evaluation.unit

    async def spy(strategy, item, handles):
        seen.append(handles[0])  # what the strategy is handed as its model
        return await original(strategy, item, handles)

    evaluation.unit = spy
    asyncio.run(evaluation.run())
    assert seen

    def reachable(root, depth=4):
        found, frontier = [], [root]
        for _ in range(depth):
            nxt = []
            for obj in frontier:
                names = list(getattr(obj, "__dict__", {})) + list(getattr(type(obj), "__slots__", ()))
                for name in names:
                    if not name.startswith("__"):
                        with __import__("contextlib").suppress(Exception):
                            nxt.append(getattr(obj, name))
            found += nxt
            frontier = nxt
        return found

    from selfcorrect.cache import CachedModel

    handle = seen[0]
    assert not any(isinstance(x, (Store, CachedModel)) for x in reachable(handle))
    assert not any(isinstance(x, Store) for x in reachable(Context(model=handle, params=None)))


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


def test_regrade_applies_the_current_readers_to_stored_attempts_without_a_model_call(tmp_path):
    """A run graded by an older reader (which evaluated "2 + 2" and scored it right) is
    graded again by the current one, from the store alone."""
    from selfcorrect.regrade import regrade

    script = Script([(asked(INITIAL), lambda last, m, k: "The answer is 2 + 2." if "2 + 2" in last
                      else "1 + 1 = 2")])
    evaluation, run, _ = evaluate(tmp_path, script, ["single"], PROBLEMS[:2])
    store = evaluation.store
    for result in store.results(run.run_id):  # as the old reader left them
        attempt = result["trajectory"]["attempts"][0]
        attempt.pop("finish_reason"), attempt.pop("read")
        attempt["answer"] = {"list/0": "1 + 1 = 2", "list/1": "4"}[result["item"]]
        result["grades"][0]["correct"] = result["final"]["correct"] = result["item"] == "list/1"
        store.put_result(run.run_id, "single", result["item"], result)
    calls = len(script.model.calls)
    regraded, changed = asyncio.run(regrade(evaluation.settings, run.run_id, task=ListTask(PROBLEMS[:2])))
    assert len(script.model.calls) == calls  # no model call
    results = {r["item"]: r for r in store.results(run.run_id)}
    assert results["list/0"]["final"]["correct"] and results["list/0"]["trajectory"]["attempts"][0]["answer"] == "2"
    assert not results["list/1"]["final"]["correct"] and results["list/1"]["final"]["failure"] == "expression"
    assert changed == {"units": 2, "attempts": 2, "answers": 2, "grades": 2, "finals": 2}
    assert regraded.config["regraded"][0]["finals"] == 2


def test_a_reply_cut_at_the_token_cap_is_truncated_not_answered(tmp_path):
    """"Step 10:" at the cap is not an answer of 10: the attempt records its finish reason,
    the grade says truncated, and the report counts truncation apart."""
    script = Script([(asked(INITIAL), lambda last, m, k: "Step 1: 2 + 2 = 4 " * 20 + "Step 10:")])
    evaluation, run, results = evaluate(tmp_path, script, ["single"], [("What is 5 + 5?", "10")], max_tokens=12)
    [result] = results["single"]
    attempt = result.trajectory.attempts[0]
    assert attempt.finish_reason == "length" and attempt.answer is None and attempt.read == "truncated"
    assert result.final.failure == "truncated" and not result.final.correct
    paths = write_reports(evaluation.store, run, "math", tmp_path / "r")
    single = json.loads(paths["json"].read_text())["strategies"]["single"]
    assert (single["truncated"], single["truncation_rate"]) == (1, 1.0)
    assert "| truncated |" in paths["md"].read_text()


def test_an_echoed_placeholder_is_no_score_and_the_report_says_the_selector_had_no_signal(tmp_path):
    script = Script([(asked(INITIAL), "The answer is 5."), (asked("Check this answer"), "Score: N"),
                     (asked("Using the feedback"), "The answer is 4.")])
    evaluation, run, results = evaluate(tmp_path, script, ["self-refine:rounds=1"], [("What is 2 + 2?", "4")])
    [result] = results["self-refine:rounds=1"]
    assert result.trajectory.stop != "verified"  # the placeholder never stops the loop
    assert result.trajectory.signal is False and "readable score" in result.trajectory.no_signal
    assert result.trajectory.final == 0  # no signal: the first attempt stands
    report = json.loads(write_reports(evaluation.store, run, "math", tmp_path / "r")["json"].read_text())
    assert report["strategies"]["self-refine:rounds=1"]["no_signal_rate"] == 1.0


def test_judge_and_selection_calls_carry_stop_strings(tmp_path):
    script = Script([(asked(INITIAL), "The answer is 4."), (asked("Is the proposed answer correct"), "yes"),
                     (asked("Which response agrees most"), "1")])
    evaluate(tmp_path, script, ["best-of-n:n=2", "universal-self-consistency:n=2"], [("What is 2 + 2?", "4")])
    judged = [c for c in script.model.calls if "Is the proposed answer" in c.messages[-1]["content"]]
    chose = [c for c in script.model.calls if "agrees most" in c.messages[-1]["content"]]
    assert judged and all(c.params.stop == ("\n",) for c in judged)
    assert chose and all(c.params.stop == ("\n",) for c in chose)


def test_a_code_run_whose_visible_tests_are_its_hidden_tests_is_refused(tmp_path):
    from selfcorrect.errors import ConfigError
    from selfcorrect.tasks.jsonl import load_jsonl

    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps({"prompt": "Write f.", "tests": ["assert f(1) == 2"],
                                "visible_tests": ["assert f(1)  ==  2"]}) + "\n")
    settings = load_settings(store=tmp_path / "store.sqlite")
    with pytest.raises(ConfigError, match="show all their hidden tests as visible tests"):
        Evaluation(settings, EvalSpec(strategies=["best-of-n:n=2"]), task=load_jsonl(path))
    assert not (tmp_path / "store.sqlite").exists()


def test_every_need_is_checked_before_the_first_item(tmp_path):
    """best-of-n judged by a critic needs a critic model: refused at once, with nothing stored."""
    from selfcorrect.errors import ConfigError

    settings = load_settings(store=tmp_path / "store.sqlite")
    with pytest.raises(ConfigError, match="best-of-n:verifier=critic needs a second model"):
        Evaluation(settings, EvalSpec(strategies=["single", "best-of-n:verifier=critic"]), task=ListTask(PROBLEMS))
    assert not (tmp_path / "store.sqlite").exists()


def test_resources_open_what_is_needed_and_close_what_they_opened(tmp_path):
    from selfcorrect.resources import Resources

    settings = load_settings(store=tmp_path / "store.sqlite", sandbox="process")
    engine = ScriptedModel({"hi": "hello"})
    store = Store(settings.store)

    async def use():
        async with Resources(settings, store, needs={"sandbox", "critic"}, critic="same", engine=engine) as res:
            assert res.critic is res.model and res.sandbox is not None
            [reply] = await res.model.generate([{"role": "user", "content": "hi"}], __import__(
                "selfcorrect.models.base", fromlist=["SamplingParams"]).SamplingParams())
            return res, reply.text

    res, text = asyncio.run(use())
    assert text == "hello" and res.sandbox is None  # the sandbox closed with the context
    assert asyncio.run(engine.generate([{"role": "user", "content": "hi"}],
                                       __import__("selfcorrect.models.base", fromlist=["SamplingParams"]).SamplingParams()))
