"""Search, adaptive voting and a learned verifier on the real embedded model: partial
solutions continued by llama.cpp, rollouts in their own phase, token confidence from real
log-probabilities, and a PRM trained from the model's own rollouts then used as a scorer."""

import json
import subprocess
import sys

import pytest

from selfcorrect.config import load_settings
from selfcorrect.runner import EvalSpec, Evaluation, results_by_strategy
from selfcorrect.strategies import parse_strategy
from selfcorrect.tasks.arithmetic import Arithmetic

pytestmark = pytest.mark.integration

SEARCH = "beam-search:n=4,width=2,rollouts=2,iterations=3"


@pytest.mark.timeout(600)
def test_search_and_adaptive_voting_on_the_embedded_model(tmp_path, embedded):
    import asyncio

    settings = load_settings(store=tmp_path / "store.sqlite")
    specs = [SEARCH, "adaptive-consistency:n=8", "confidence-vote:n=4", "self-consistency:n=4"]
    evaluation = Evaluation(settings, EvalSpec(task="arithmetic", strategies=specs, reference=False),
                            task=Arithmetic(n=3), engine=embedded)
    run = asyncio.run(evaluation.run())
    results = results_by_strategy(evaluation.store, run)
    for result in results[parse_strategy(SEARCH).spec]:
        paths = result.trajectory.attempts
        assert paths and all(a.feedback and a.feedback[0].source == "step scores (rollout, last)" for a in paths)
        operands = result.question.split("What is ")[-1].rstrip("?").split()[0]
        assert any(operands in a.text for a in paths), [a.text for a in paths]  # it continued its own solution
        assert result.trajectory.cost["rollout"].calls > 0 and result.trajectory.cost["generate"].calls >= 2
    for result in results["adaptive-consistency:n=8"]:
        drawn = len(result.trajectory.attempts)
        assert 2 <= drawn <= 8 and drawn % 2 == 0 and [a.sample for a in result.trajectory.attempts] == list(range(drawn))
    for result in results["confidence-vote:n=4"]:
        assert all(a.confidence and a.confidence["lowest_window"] < 0 and a.confidence["mean"] < 0
                   for a in result.trajectory.attempts)  # the real log-probabilities, kept by the cache


@pytest.mark.timeout(900)
def test_a_prm_learned_from_the_models_rollouts_scores_search(tmp_path):
    store, out = tmp_path / "store.sqlite", tmp_path / "prm"
    base = [sys.executable, "-m", "selfcorrect.cli", "--store", str(store), "--threads", "1"]
    subprocess.run([*base, "models", "export"], check=True, capture_output=True)
    task = "arithmetic:digits=1,n=40"
    trained = subprocess.run([*base, "train-verifier", "--kind", "prm", "--task", task, "--limit", "16",
                              "--sample", "self-consistency:n=3", "--rollouts", "2", "--epochs", "1", "--out", str(out)],
                             capture_output=True, text=True)
    assert trained.returncode == 0, trained.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    labels = report["labels"]
    assert labels["train"]["solutions"] > 0 and labels["heldout"]["solutions"] > 0
    assert 0 < labels["train"]["good_steps"] < labels["train"]["steps"]  # both kinds of label
    assert labels["train"]["rollouts"] > 0  # wrong solutions were searched for their first wrong step
    assert report["heldout"]["steps"] > 0 and 0 <= report["heldout"]["step_accuracy"] <= 1
    train_items = {json.loads(line)["item_id"] for line in (out / "labels-train.jsonl").read_text().splitlines()}
    held_items = {json.loads(line)["item_id"] for line in (out / "labels-heldout.jsonl").read_text().splitlines()}
    assert train_items and held_items and not train_items & held_items
    spec = f"beam-search:n=2,width=1,iterations=2,scorer=prm:{out / 'model'}"
    scored = subprocess.run([*base, "eval", "--task", task, "--ids", "30-31", "--no-reference", "--strategy", spec,
                             "--out", str(tmp_path / "eval")], capture_output=True, text=True)
    assert scored.returncode == 0, scored.stderr[-3000:]
    result = json.loads((tmp_path / "eval" / "report.json").read_text())
    [strategy] = result["strategies"].values()
    assert strategy["items"] == 2 and strategy["cost_per_item"]["feedback"]["prompt_tokens"] > 0
