import asyncio
import sqlite3
import threading

import pytest

from selfcorrect.errors import SelfcorrectError
from selfcorrect.models.base import SamplingParams
from selfcorrect.cache import CachedModel
from selfcorrect.models.scripted import ScriptedModel
from selfcorrect.store import Store, code_version


def test_store_is_wal_and_records_a_run_with_its_provenance(store):
    mode = store._db.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    run = store.create_run({"task": "arithmetic", "limit": 5}, prompt_hashes={"answer": "ab12"}, oracle=True)
    again = store.run(run.run_id)
    assert again.config == {"task": "arithmetic", "limit": 5}
    assert again.prompt_hashes == {"answer": "ab12"}
    assert again.oracle is True and again.status == "running"
    assert again.code_version == code_version() and again.code_version.startswith("0.")
    store.finish_run(run.run_id)
    assert store.run(run.run_id).status == "complete"
    assert store.run(run.run_id).finished_at is not None
    assert [r.run_id for r in store.runs()] == [run.run_id]


def test_unknown_and_duplicate_runs_are_clear_errors(store):
    with pytest.raises(SelfcorrectError, match="no run 'nope'"):
        store.run("nope")
    store.create_run({}, prompt_hashes={}, run_id="r1")
    with pytest.raises(SelfcorrectError, match="already exists"):
        store.create_run({}, prompt_hashes={}, run_id="r1")


def test_events_are_numbered_in_order_and_kept_per_item(store):
    store.create_run({}, prompt_hashes={}, run_id="r")
    assert store.append_event("r", "single", "7", {"attempt": "a"}) == 0
    assert store.append_event("r", "single", "7", {"attempt": "b"}) == 1
    assert store.append_event("r", "single", "8", {"attempt": "c"}) == 0
    assert store.events("r", "single", "7") == [{"attempt": "a"}, {"attempt": "b"}]
    store.discard_partial("r", "single", "7")
    assert store.events("r", "single", "7") == []
    assert store.events("r", "single", "8") == [{"attempt": "c"}]


def test_results_mark_items_finished(store):
    store.create_run({}, prompt_hashes={}, run_id="r")
    store.put_result("r", "single", "1", {"correct": True})
    store.put_result("r", "vote", "1", {"correct": False})
    assert store.finished("r") == {("single", "1"), ("vote", "1")}
    assert store.results("r", "vote") == [{"correct": False}]
    assert len(store.results("r")) == 2


def test_writes_from_many_threads_all_land(tmp_path):
    with Store(tmp_path / "s.sqlite") as store:
        store.create_run({}, prompt_hashes={}, run_id="r")

        def write(item):
            for k in range(50):
                store.append_event("r", "s", str(item), {"k": k})

        threads = [threading.Thread(target=write, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(len(store.events("r", "s", str(i))) == 50 for i in range(4))


def test_a_store_from_another_schema_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "old.sqlite"
    with Store(path):
        pass
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    db.commit()
    db.close()
    with pytest.raises(SelfcorrectError, match="schema 99"):
        Store(path)
    assert sqlite3.connect(path).execute("SELECT value FROM meta").fetchone()[0] == "99"


def test_a_file_that_is_not_a_store_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a database, but someone's notes\n" * 100)
    with pytest.raises(SelfcorrectError, match="cannot use the store"):
        Store(path)
    assert path.read_text().startswith("not a database")


class Crash(Exception):
    pass


def run_items(store, inner, run_id, items, crash_at=None):
    """A two-call loop per item (answer, then revise), writing each attempt as it happens:
    the shape of every strategy, small enough to test resume on its own."""
    model = CachedModel(inner, store)
    params = SamplingParams(temperature=0.7, max_tokens=16)

    async def one(item):
        store.discard_partial(run_id, "revise", item)
        answer = await model.generate([{"role": "user", "content": item}], params)
        store.append_event(run_id, "revise", item, {"answer": answer[0].text})
        if crash_at == item:
            raise Crash(item)
        revised = await model.generate(
            [{"role": "user", "content": item}, {"role": "assistant", "content": answer[0].text},
             {"role": "user", "content": "revise"}], params)
        store.append_event(run_id, "revise", item, {"answer": revised[0].text})
        store.put_result(run_id, "revise", item, {"final": revised[0].text})

    async def all_items():
        done = store.finished(run_id)
        for item in items:
            if ("revise", item) not in done:
                await one(item)

    asyncio.run(all_items())


def test_an_interrupted_run_resumes_where_it_stopped_with_no_repeated_call(store):
    def reply(messages, params, index):
        return f"{messages[0]['content']}:{len(messages)}"

    store.create_run({}, prompt_hashes={}, run_id="r")
    first = ScriptedModel(reply)
    with pytest.raises(Crash):
        run_items(store, first, "r", ["a", "b", "c"], crash_at="b")
    assert len(first.calls) == 3  # a: 2 calls, b: 1 call, then the crash
    assert store.finished("r") == {("revise", "a")}

    second = ScriptedModel(reply)
    run_items(store, second, "r", ["a", "b", "c"])
    # b's first call comes back from the cache; only b's revision and c's two calls are new
    assert [c.messages[0]["content"] for c in second.calls] == ["b", "c", "c"]
    assert store.finished("r") == {("revise", i) for i in "abc"}
    assert store.events("r", "revise", "b") == [{"answer": "b:1"}, {"answer": "b:3"}]
