"""The record: every attempt keeps what produced it, and a reader finds graded attempts
across runs, with their conversations and provenance (what training and memory read)."""

import asyncio

from selfcorrect.config import load_settings
from selfcorrect.models.base import Completion
from selfcorrect.runner import EvalSpec, Evaluation
from selfcorrect.store import Store, pack_floats, pack_ints, unpack_floats, unpack_ints
from tests.scripts import ListTask, Script, asked

PROBLEMS = [(f"What is {i} + {i}?", str(2 * i)) for i in range(1, 5)]
INITIAL = "Solve it step by step"


def right_on_even(last, messages, k):
    i = int(messages[0]["content"].split("What is ")[1].split(" ")[0])
    return f"The answer is {2 * i if i % 2 == 0 or k == 1 else 2 * i + 1}."


def run(tmp_path, strategies, task=None, **spec):
    settings = load_settings(store=tmp_path / "store.sqlite")
    script = Script([(asked(INITIAL), right_on_even), (asked("Check this answer"), "Wrong.\nScore: 2"),
                     (asked("Using the feedback"), lambda last, m, k: "The answer is 4.")])
    evaluation = Evaluation(settings, EvalSpec(strategies=strategies, reference=False, **spec),
                            task=task or ListTask(PROBLEMS), engine=script.model)
    return asyncio.run(evaluation.run()), Store(settings.store)


def test_an_attempt_keeps_its_conversation_once_its_parameters_and_its_request(tmp_path):
    record, store = run(tmp_path, ["self-consistency:n=5"])
    attempts = list(store.graded_attempts(run_ids=[record.run_id]))
    assert len(attempts) == 20
    first = attempts[0]
    assert first.messages == [{"role": "user", "content": first.messages[0]["content"]}]
    assert INITIAL in first.messages[0]["content"]
    assert first.attempt.params["temperature"] == 0.3 and first.attempt.params["max_tokens"] == 192
    assert first.attempt.finish_reason == "stop" and first.attempt.request
    with store._lock:  # 5 samples of each of 4 prompts: 4 conversations kept, not 20
        assert store._db.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 4


def test_the_reader_filters_across_runs(tmp_path):
    first, store = run(tmp_path, ["single", "self-refine:rounds=1"])
    second, _ = run(tmp_path, ["single"], task=ListTask(PROBLEMS[:2]))
    everything = list(store.graded_attempts())
    assert {a.run_id for a in everything} == {first.run_id, second.run_id}
    singles = list(store.graded_attempts(strategy="single"))
    assert len(singles) == 4 + 2 and all(a.strategy == "single" for a in singles)
    right = list(store.graded_attempts(strategy="single", correct=True))
    assert right and all(a.correct for a in right) and len(right) < len(singles)
    assert [a.item_id for a in store.graded_attempts(run_ids=[second.run_id])] == ["list/0", "list/1"]
    assert {a.item_id for a in store.graded_attempts(item_ids=["list/3"])} == {"list/3"}
    revised = list(store.graded_attempts(strategy="self-refine", feedback_kind="intrinsic"))
    assert revised and all("intrinsic" in a.feedback_kinds for a in revised)
    assert all(a.attempt.phase == "revise" or a.attempt.round == 0 for a in revised)
    finals = list(store.graded_attempts(run_ids=[first.run_id], final_only=True))
    assert len(finals) == 8 and all(a.final for a in finals)
    assert not list(store.graded_attempts(task="no such task"))
    assert all(a.model == "scripted" and not a.oracle for a in everything)


def test_oracle_runs_are_left_out_unless_asked_for(tmp_path):
    script = Script([(asked("Your answer is wrong"), right_on_even), (asked(INITIAL), right_on_even)])
    settings = load_settings(store=tmp_path / "store.sqlite")
    record = asyncio.run(Evaluation(settings, EvalSpec(strategies=["oracle-refine"], reference=False),
                                    task=ListTask(PROBLEMS), engine=script.model).run())
    store = Store(settings.store)
    assert not list(store.graded_attempts())
    marked = list(store.graded_attempts(include_oracle=True))
    assert marked and all(a.oracle and a.run_id == record.run_id for a in marked)


def test_token_ids_and_logprobs_are_packed():
    assert unpack_ints(pack_ints([1, 2, 49151])) == (1, 2, 49151)
    assert unpack_floats(pack_floats([-0.5, -1.25])) == (-0.5, -1.25)
    assert unpack_floats('[-0.5, -1.25]') == (-0.5, -1.25)  # schema 1 kept JSON
    assert len(pack_ints(range(100))) == 400  # 4 bytes a token, not a row per token


def test_a_store_of_an_older_schema_is_migrated_and_keeps_its_samples(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema', '1');
        CREATE TABLE samples (request_key TEXT NOT NULL, sample_index INTEGER NOT NULL, model TEXT NOT NULL,
            text TEXT NOT NULL, finish_reason TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL, seconds REAL NOT NULL, logprobs TEXT, created_at REAL NOT NULL,
            PRIMARY KEY (request_key, sample_index)) WITHOUT ROWID;
        INSERT INTO samples VALUES ('k', 0, 'm', 'old draw', 'stop', 3, 2, 0.1, '[-0.5]', 0);
    """)
    db.commit()
    db.close()
    read_only = Store(path, read_only=True)  # read as it is
    assert read_only.get_samples("k", [0])[0].text == "old draw"
    read_only.close()
    with Store(path) as store:
        [old] = store.get_samples("k", [0]).values()
        assert (old.text, old.logprobs, old.token_ids, old.model_ended) == ("old draw", (-0.5,), None, None)
        assert store._db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == "3"
        new = Completion(text="new draw", finish_reason="stop", prompt_tokens=3, completion_tokens=2, seconds=0.1,
                         index=1, model_ended=True)
        store.put_samples("k", "m", [new])
        assert store.get_samples("k", [1])[1].model_ended is True  # the added column holds it
