"""`improve --task served:STORE` on a store of recorded traffic: scripted draws (the base
answers 5; every program prints 2), a real tiny model trained, the real store and sandbox.
No gold exists; clients' feedback answers some questions, one of them wrongly for the check
(the programs say 2 where the client says 3)."""

import asyncio
import json

import pytest

pytest.importorskip("trl")

from selfcorrect.config import load_settings  # noqa: E402
from selfcorrect.errors import ConfigError  # noqa: E402
from selfcorrect.improve.loop import ImproveSpec, Improvement  # noqa: E402
from selfcorrect.models.lineage import Checkpoint, Lineage  # noqa: E402
from selfcorrect.models.recipe import read_recipe  # noqa: E402
from tests.integration.test_improve import scripted  # noqa: E402
from tests.tinymodel import make_tiny_model  # noqa: E402
from tests.unit.test_served_task import request, traffic  # noqa: E402

pytestmark = pytest.mark.integration


@pytest.fixture
def served(tmp_path):
    requests = []
    for k in range(32):
        question = f"What is 1 + {1 + k % 2}? (case {k})"
        feedback = None
        if k < 12:  # a client marks the served 2 right, or says 3 is the answer where 2 was served
            feedback = {"correct": True} if k % 2 == 0 else {"correct": False, "answer": "3"}
        requests.append((request(question, "2"), feedback))
        if k % 4 == 0:  # the same question again, in other words: one family, one side
            requests.append((request(f"Add {1 + k % 2} to 1. (case {k})", "2"), None))
    store = traffic(tmp_path / "server.sqlite", requests)
    settings = load_settings(store=tmp_path / "store.sqlite", hf={"batch": 8}, sandbox_workers=1)
    lineage = Lineage(settings.store)
    lineage.register(Checkpoint(name="base", round=0, path=str(make_tiny_model(tmp_path / "tiny"))))
    lineage.close()
    spec = ImproveSpec(task=f"served:{store}", heldout=0.5, rounds=1, chains=2, agree=2, student_samples=2,
                       epochs=1, learning_rate=1e-3, batch_size=8, labels="feedback")
    return settings, spec


def test_a_feedback_labelled_run_on_traffic_says_so_and_scores_every_measured_item(tmp_path, served):
    settings, spec = served
    with pytest.raises(ConfigError, match="no gold"):
        Improvement(settings, spec.model_copy(update={"labels": "gold"}), tmp_path / "gold")
    with pytest.raises(ConfigError, match="not served traffic"):
        Improvement(settings, ImproveSpec(task="arithmetic:n=20", labels="feedback"), tmp_path / "arith")

    run = Improvement(settings, spec, tmp_path / "run", engine_factory=scripted)
    task = run.task
    by_id = {i.id: i for i in task.items()}
    measured = [*run.held_ids, *run.confirm_ids]
    report = asyncio.run(run.run())

    # the measured sides: every item scored, by feedback where a client gave the answer, else the check
    record = report["traffic"]
    answered = [i for i in measured if by_id[i].meta["reference"] == "feedback"]
    assert answered and record["check_vs_feedback"]["feedback_items"] == len(answered)
    assert record["check_vs_feedback"]["check_labelled"] == len(answered)  # the programs agree on 2 everywhere
    assert record["check_vs_feedback"]["agreed"] == sum(by_id[i].answer == "2" for i in answered)
    assert 0 < record["check_vs_feedback"]["agreed"] < len(answered)
    held = report["rounds"][0]["heldout"]["single"]["correct"]
    assert set(held) == set(run.held_ids) and set(held) <= set(task.referenced())
    assert record["references"]["heldout"].get("check") and record["references"]["heldout"].get("feedback")
    assert report["heldout_items"] == len(run.held_ids)

    # the train side: feedback where it answers (the client's 3 is right where the programs' 2 is not: no
    # program reaches it, so that item is not trained on), the programs' agreement elsewhere
    data = [json.loads(line) for line in (tmp_path / "run" / "round-1" / "data.jsonl").read_text().splitlines()]
    labels = {d["item_id"]: d["label"] for d in data}
    assert not set(labels) & set(measured)
    assert {by_id[i].meta["family"] for i in labels}.isdisjoint({by_id[i].meta["family"] for i in measured})
    for item_id, label in labels.items():
        assert label == ("user" if by_id[item_id].meta["reference"] == "feedback" else "programs")
        assert by_id[item_id].answer != "3"  # the client's 3 is never taught: no program printed it
    assert "user" in labels.values() and "programs" in labels.values()
    recipe = read_recipe(tmp_path / "run")
    assert report["feedback_labelled"] and recipe.feedback_labelled
    # the confirmation pairs against the base, for a canary against it to start from
    assert recipe.evidence["items"] == len(run.confirm_ids) and recipe.evidence["against"]
    assert recipe.evidence["wrong_to_right"] == report["confirmation"]["versus_base"]["wrong_to_right"]
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "FEEDBACK-LABELLED" in markdown and "Served traffic:" in markdown
