"""The how-to pages run as written: each page's Python blocks, in order, in one namespace."""

import json
import re
from pathlib import Path

import pytest

from selfcorrect.models.load import BACKENDS
from selfcorrect.store import Store
from selfcorrect.strategies import STRATEGIES
from selfcorrect.tasks import TASKS

DOCS = Path(__file__).parent.parent.parent / "docs"


def blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), re.S)


def run_page(page: str, tmp_path, capsys) -> tuple[dict, str]:
    namespace = {"STORE": tmp_path / "store.sqlite"}
    for code in blocks(page):
        exec(compile(code, f"docs/{page}", "exec"), namespace)
    return namespace, capsys.readouterr().out


@pytest.fixture
def cleanup():
    yield
    STRATEGIES.unregister("majority-or-pick")
    TASKS.unregister("squares")
    BACKENDS.unregister("calculator")


def test_write_a_strategy(tmp_path, capsys, cleanup):
    _, out = run_page("write-a-strategy.md", tmp_path, capsys)
    assert "complete ['single', 'majority-or-pick:n=6']" in out
    [run] = Store(tmp_path / "store.sqlite").runs()
    results = Store(tmp_path / "store.sqlite").results(run.run_id, "majority-or-pick:n=6")
    # samples 1, 2, 4, 5 say 4 and 0, 3 say 5: a clear majority of 4 out of 6
    assert all(r["trajectory"]["stop"] == "majority" and r["final"]["answer"] == "4" for r in results)


def test_write_a_task(tmp_path, capsys, cleanup):
    _, out = run_page("write-a-task.md", tmp_path, capsys)
    assert "complete ['squares/6', 'squares/7', 'squares/8']" in out
    store = Store(tmp_path / "store.sqlite")
    [run] = store.runs()
    assert [r["final"]["correct"] for r in store.results(run.run_id)] == [False, True, False]  # only 7 * 7 = 49


def test_write_a_backend(tmp_path, capsys, cleanup):
    _, out = run_page("write-a-backend.md", tmp_path, capsys)
    assert "complete calculator:exact" in out
    store = Store(tmp_path / "store.sqlite")
    [run] = store.runs()
    assert all(r["final"]["correct"] for r in store.results(run.run_id))
    assert json.loads(json.dumps(run.config))["model"] == "calculator:exact"


def test_write_a_training_method(tmp_path, capsys):
    pytest.importorskip("trl")
    from selfcorrect.train.methods import METHODS
    from tests.tinymodel import make_tiny_model

    namespace = {"STORE": tmp_path / "store.sqlite", "BASE": make_tiny_model(tmp_path / "tiny")}
    try:
        for code in blocks("write-a-training-method.md"):
            exec(compile(code, "docs/write-a-training-method.md", "exec"), namespace)
    finally:
        METHODS.unregister("shortest-right")
    report = namespace["report"]
    out = capsys.readouterr().out
    assert f"trained on {report['train_items']} examples of {report['train_items']} train items" in out
    data = [json.loads(line) for line in (tmp_path / "shortest" / "round-1" / "data.jsonl").read_text().splitlines()]
    # one example per train item, and always the short reply, never the wordy one
    assert len({d["item_id"] for d in data}) == len(data) == report["train_items"]
    assert all(d["completion"].startswith("The answer is") for d in data)
    assert report["rounds"][1]["checkpoint"] == "shortest/round-1"
