"""The evaluation on the real embedded model, its reports in a real browser, and the CLI."""

import asyncio
import json
import re
import subprocess

import pytest

from selfcorrect.config import load_settings
from selfcorrect.report import write_reports
from selfcorrect.runner import EvalSpec, Evaluation
from tests.cli import selfcorrect

pytestmark = pytest.mark.integration

STRATEGIES = ["single", "self-consistency:n=3", "self-refine:rounds=1", "program-aided:rounds=1"]


@pytest.fixture(scope="module")
def evaluated(embedded, tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval")
    settings = load_settings(store=folder / "store.sqlite", sandbox_workers=1)
    evaluation = Evaluation(settings, EvalSpec(task="arithmetic:n=4", strategies=STRATEGIES), engine=embedded)
    run = asyncio.run(evaluation.run())
    paths = write_reports(evaluation.store, run, "math", folder / "report")
    return evaluation, run, paths


def test_every_strategy_ran_on_every_item_and_was_graded(evaluated):
    evaluation, run, paths = evaluated
    report = json.loads(paths["json"].read_text())
    pool = run.config["pool"]  # the reference pool, sized to the largest budget
    assert run.status == "complete" and list(report["strategies"]) == [*STRATEGIES, pool]
    for spec, summary in report["strategies"].items():
        assert summary["items"] == 4 and 0 <= summary["accuracy"] <= 1
        assert summary["tokens_per_item"] > 0 and summary["cost_per_item"]["generate"]["calls"] >= 1
    refine = report["strategies"]["self-refine:rounds=1"]
    assert refine["flips"][0]["n"] == 4  # one revision per item, each counted in the flip matrix
    assert report["strategies"]["program-aided:rounds=1"]["cost_per_item"]["feedback"]["sandbox_runs"] >= 1
    assert report["curves"]["vote"]["strategy"] == pool and report["curves"]["vote"]["points"][0]["n"] == 1
    top = report["curves"]["vote"]["points"][-1]["tokens"]
    assert all(s["tokens_per_item"] <= top or s["compute_matched"]["budget"] == "beyond"
               for s in report["strategies"].values())
    assert run.prompt_hashes.keys() == set(STRATEGIES) | {"task"}


def test_shared_draws_make_single_the_vote_over_one(evaluated):
    _, _, paths = evaluated
    report = json.loads(paths["json"].read_text())
    single = report["strategies"]["single"]
    assert report["curves"]["vote"]["points"][0]["accuracy"] == single["accuracy"]


def chromium(url, tmp_path):
    done = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return done.stdout, console


def test_the_html_report_loads_in_a_browser_with_plots_and_items(evaluated, tmp_path):
    _, _, paths = evaluated
    dom, console = chromium(paths["html"].resolve().as_uri(), tmp_path)
    assert console == []
    assert dom.count("<svg") >= 3
    assert len(re.findall(r"<li [^>]*data-index", dom)) == 4  # the item browser, built by the page's script
    assert re.search(r'<div id="detail"><h3>arithmetic/0/0</h3>', dom)  # the first item is shown


def test_the_browser_check_catches_a_page_error(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<html><body><script>missingFunction();</script></body></html>")
    _, console = chromium(page.as_uri(), tmp_path)
    assert any("missingFunction is not defined" in line for line in console)


def test_eval_runs_lists_and_reports_from_the_command_line(tmp_path):
    done = selfcorrect("--threads", "1", "eval", "--task", "arithmetic:n=3", "--strategy", "single",
                       "--no-reference", "--out", str(tmp_path / "out"), cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "single" in done.stdout and (tmp_path / "out" / "report.html").exists()
    run_id = re.search(r"run (\d{8}-\d{6}-\w+)", done.stderr).group(1)
    listing = selfcorrect("runs", cwd=tmp_path)
    assert run_id in listing.stdout and "complete" in listing.stdout
    again = selfcorrect("report", run_id, "--out", str(tmp_path / "again"), cwd=tmp_path)
    assert again.returncode == 0 and (tmp_path / "again" / "report.md").exists()


def test_eval_rejects_a_strategy_that_does_not_fit(tmp_path):
    done = selfcorrect("eval", "--task", "arithmetic:n=3", "--strategy", "self-debug", cwd=tmp_path)
    assert done.returncode == 1 and "self-debug cannot run on arithmetic" in done.stderr
    assert "Traceback" not in done.stderr


def test_attempts_keep_token_ids_and_logprobs_of_the_embedded_model(evaluated):
    evaluation, run, _ = evaluated
    attempts = list(evaluation.store.graded_attempts(run_ids=[run.run_id], strategy="single", tokens=True))
    assert len(attempts) == 4
    for graded in attempts:
        assert graded.messages and graded.messages[-1]["role"] == "user"
        assert graded.token_ids and len(graded.token_ids) == len(graded.logprobs)
        assert len(graded.token_ids) >= graded.attempt.completion_tokens  # a stop string's tokens included
        assert all(lp <= 0 for lp in graded.logprobs)
