"""Traffic as a task (`served:STORE`): the questions a server's store holds, their references
(clients' feedback, the request's own check, a label a run adopts), no gold; every wording of
one question on one side of a split."""

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from selfcorrect.cli import app
from selfcorrect.errors import ConfigError
from selfcorrect.sandbox import Sandbox
from selfcorrect.serve.records import Completions
from selfcorrect.tasks import parse_task
from selfcorrect.tasks.served import family
from selfcorrect.train.data import split_by_prompt

WORDINGS = [json.loads(line) for line in (Path(__file__).parents[1] / "data" / "served_wordings.jsonl").open()]


def request(question: str, answer: str | None, kind: str = "math", tests=(), checker=None, namespace=None) -> dict:
    """A completion's payload as `serve` records it."""
    return {"kind": kind, "question": question, "messages": [{"role": "user", "content": question}],
            "tests": list(tests), "checker": checker, "numeric": True, "namespace": namespace, "answer": answer,
            "text": f"The answer is {answer}."}


def traffic(path: Path, requests: list[tuple[dict, dict | None]]) -> Path:
    records = Completions(path)
    for n, (payload, feedback) in enumerate(requests):
        records.put(f"chatcmpl-{n}", None, "single", payload)
        if feedback is not None:
            records.set_feedback(f"chatcmpl-{n}", feedback)
    records.close()
    return path


@pytest.mark.parametrize("case", WORDINGS, ids=[c["case"] for c in WORDINGS])
def test_the_wordings_of_one_question_are_one_family(case):
    if "same" in case:
        assert len({family("math", q) for q in case["same"]}) == 1
    else:
        assert len({family("math", q) for q in case["differ"]}) == len(case["differ"])


@pytest.fixture
def store(tmp_path):
    return traffic(tmp_path / "store.sqlite", [
        (request("What is 48 - 39?", "9"), {"correct": True}),
        (request("what is 48 -  39?", "7"), None),  # asked again: the same item
        (request("Subtract 39 from 48.", "8"), {"correct": False, "answer": "9"}),  # reworded: another item, one family
        (request("What is 12 + 5?", "17"), {"correct": True}),
        (request("What is 12 + 5?", "16"), {"correct": True}),  # clients disagree: no reference
        (request("What is 3 * 3?", "9"), None),  # nothing: a run's check labels it
        (request("Is 7 prime?", "yes", checker="def check(a):\n    return a.strip().lower() == 'yes'"), None),
        (request("Say hi", None, kind="chat"), None),
        ({**request("What is 2 + 2?", "4"), "messages": [  # a few-shot conversation: left out, counted
            {"role": "user", "content": "What is 1 + 1?"}, {"role": "assistant", "content": "The answer is 2."},
            {"role": "user", "content": "What is 2 + 2?"}]}, None),
    ])


def test_traffic_items_carry_their_references_and_no_gold(store):
    task = parse_task(f"served:{store},kind=math")
    items = {i.view.question: i for i in task.items()}
    assert list(items) == ["What is 48 - 39?", "Subtract 39 from 48.", "What is 12 + 5?", "What is 3 * 3?", "Is 7 prime?"]
    assert items["What is 48 - 39?"].meta["requests"] == 2
    assert [task.reference(items[q]) for q in items] == [
        ("9", "feedback"), ("9", "feedback"), (None, None), (None, None), (None, "checker")]
    assert items["What is 12 + 5?"].meta["feedback"] == {"right": 2, "wrong": 0}
    assert items["What is 48 - 39?"].meta["family"] == items["Subtract 39 from 48."].meta["family"]
    assert task.skipped["chat"] == 1 and task.skipped["conversations"] == 1
    assert set(task.referenced()) == {items[q].id for q in ("What is 48 - 39?", "Subtract 39 from 48.", "Is 7 prime?")}
    task.adopt({items["What is 3 * 3?"].id: "9", items["What is 48 - 39?"].id: "1"})  # never over a client's
    assert task.reference(items["What is 3 * 3?"]) == ("9", "check")
    assert task.reference(items["What is 48 - 39?"]) == ("9", "feedback")

    sandbox = Sandbox()
    grade = lambda q, a: asyncio.run(task.grade(items[q], a, sandbox)).correct  # noqa: E731
    assert grade("What is 48 - 39?", "9.0") and not grade("What is 48 - 39?", "8")
    assert grade("What is 3 * 3?", "9") and not grade("What is 3 * 3?", "6")
    assert grade("Is 7 prime?", "Yes") and not grade("Is 7 prime?", "no")
    unscored = asyncio.run(task.grade(items["What is 12 + 5?"], "17", sandbox))
    assert not unscored.correct and unscored.failure == "unreferenced"


def test_code_traffic_is_checked_by_the_tests_its_requests_carried(tmp_path):
    store = traffic(tmp_path / "code.sqlite", [
        (request("Write add(a, b).", None, kind="code", tests=["assert add(1, 2) == 3"]), None),
        (request("write add(a, b).", None, kind="code", tests=["assert add(2, 2) == 4"]), None),
        (request("Write sub(a, b).", None, kind="code"), None),  # no tests: nothing scores it
        (request("What is 1 + 1?", "2"), None),
    ])
    with pytest.raises(ConfigError, match="kind=") as error:
        parse_task(f"served:{store}")  # math and code: a task is one kind
    assert "served:" in error.value.fix
    task = parse_task(f"served:{store},kind=code")
    [item] = task.items()
    assert item.tests == ("assert add(1, 2) == 3", "assert add(2, 2) == 4") and task.skipped["untestable"] == 1
    assert item.view.visible_tests == ("assert add(1, 2) == 3",)  # the last held back from the model
    sandbox = Sandbox()
    assert asyncio.run(task.grade(item, "def add(a, b):\n    return a + b\n", sandbox)).correct
    assert not asyncio.run(task.grade(item, "def add(a, b):\n    return 3\n", sandbox)).correct  # passes the shown one


def test_a_namespace_reads_only_its_own_traffic(tmp_path):
    store = traffic(tmp_path / "ns.sqlite", [(request("What is 1 + 1?", "2", namespace="a"), None),
                                              (request("What is 2 + 2?", "4", namespace="b"), None)])
    assert [i.view.question for i in parse_task(f"served:{store},namespace=b").items()] == ["What is 2 + 2?"]
    assert len(parse_task(f"served:{store}").items()) == 2
    assert [i.view.question for i in parse_task(f"served:{store},until=1").items()] == ["What is 1 + 1?"]  # the first


def test_a_store_that_is_missing_or_not_a_server_s_is_named(tmp_path):
    with pytest.raises(ConfigError, match="no such store"):
        parse_task(f"served:{tmp_path / 'nothing.sqlite'}")
    (tmp_path / "other.sqlite").write_bytes(b"")
    with pytest.raises(ConfigError, match="not a server's store"):
        parse_task(f"served:{tmp_path / 'other.sqlite'}")


def test_every_wording_of_a_question_falls_on_one_side(tmp_path):
    """300 requests: 100 questions in three wordings each, shuffled ids: a split by question
    alone would put wordings on both sides."""
    forms = ["What is {a} - {b}?", "Compute {a} minus {b}.", "Subtract {b} from {a}."]
    requests = [(request(form.format(a=a, b=b), None), None) for a, b in ((40 + k, k) for k in range(100)) for form in forms]
    task = parse_task(f"served:{traffic(tmp_path / 'w.sqlite', requests)}")
    assert len(task.items()) == 300
    split = split_by_prompt(task.items(), 0.5, seed=3, confirmation=0.15)
    side = {i: s for s, ids in (("train", split.train_ids), ("held", split.held_ids), ("confirm", split.confirm_ids))
            for i in ids}
    families: dict[str, set] = {}
    for item in task.items():
        families.setdefault(item.meta["family"], set()).add(side.get(item.id, "dropped"))
    assert len(families) == 100 and all(len(s) == 1 for s in families.values())
    assert all((split.train_ids, split.held_ids, split.confirm_ids)) and not split.dropped


def test_the_preview_says_where_references_come_from(store):
    result = CliRunner().invoke(app, ["tasks", f"served:{store},kind=math", "--limit", "5"], env={"COLUMNS": "240"})
    assert result.exit_code == 0, result.output
    assert "7 requests in 5 questions, 4 families" in result.output
    assert "2 feedback" in result.output and "1 checker" in result.output and "1 chat requests" in result.output
    assert "asked 2x; feedback 1 right, 0 wrong; reference: feedback 9" in result.output


def test_eval_on_traffic_scores_only_what_has_a_reference(tmp_path, store):
    from selfcorrect.config import load_settings
    from selfcorrect.runner import EvalSpec, Evaluation, results_by_strategy
    from tests.scripts import Script

    script = Script([(lambda last, messages, index: "prime" in last, "The answer is yes."),
                     (lambda last, messages, index: True, "The answer is 9.")])
    settings = load_settings(store=tmp_path / "eval.sqlite")
    evaluation = Evaluation(settings, EvalSpec(task=f"served:{store},kind=math", strategies=["single"], reference=False),
                            engine=script.model)
    run = asyncio.run(evaluation.run())
    rows = {r.item: r.final.correct for r in results_by_strategy(evaluation.store, run)["single"]}
    questions = {i.id: i.view.question for i in evaluation.task.items()}
    # 48 - 39 by feedback (9), its rewording by the client's answer (9), "Is 7 prime?" by its checker;
    # 12 + 5 (clients disagree) and 3 * 3 (nothing) are not scored
    assert {questions[i]: ok for i, ok in rows.items()} == {
        "What is 48 - 39?": True, "Subtract 39 from 48.": True, "Is 7 prime?": False}
