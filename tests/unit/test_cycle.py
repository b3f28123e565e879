"""The self-training core both loops share (train/cycle.py), the one paired comparison, the
lineage that cannot mix runs up, the training flags a method does not read, the bounds of an
evaluation checked in its spec, and a locked store named as locked."""

import subprocess
import sys
import time

import pytest

from selfcorrect.errors import ConfigError, SelfcorrectError
from selfcorrect.models.lineage import Checkpoint, Lineage
from selfcorrect.runner import EvalSpec
from selfcorrect.stats import mcnemar, paired


def test_the_paired_comparison_counts_flips_on_the_items_both_runs_hold():
    before = {"a": True, "b": False, "c": False, "d": True, "only-before": True}
    after = {"a": True, "b": True, "c": True, "d": False, "only-after": False}
    result = paired(before, after)
    assert (result.items, result.wrong_to_right, result.right_to_wrong) == (4, 2, 1)
    assert result.difference == pytest.approx(1 / 4) and result.p_value == mcnemar(2, 1)
    assert set(result.to_dict()) == {"items", "wrong_to_right", "right_to_wrong", "p_value", "difference"}
    assert paired({}, {}).to_dict() == {"items": 0, "wrong_to_right": 0, "right_to_wrong": 0, "p_value": 1.0,
                                        "difference": 0.0}


def test_every_comparison_of_two_runs_has_the_one_shape():
    from selfcorrect.measure.online import _paired as online_pair
    from selfcorrect.memory.gate import ArmEvidence
    from selfcorrect.train.cycle import versus

    keys = {"items", "wrong_to_right", "right_to_wrong", "p_value", "difference"}
    online = online_pair([True, False, True], [False, False, True], range(3))  # memory, then its twin
    assert keys <= set(online) and (online["wrong_to_right"], online["right_to_wrong"]) == (1, 0)
    assert set(versus({"single": {"x": True}}, {"single": {"x": False}})["single"]) == keys
    assert set(ArmEvidence(arm="rules", pairs=6, helped=4, hurt=1).paired().to_dict()) == keys


def test_a_checkpoint_name_belongs_to_one_run(tmp_path):
    lineage = Lineage(tmp_path / "store.sqlite")
    lineage.register(Checkpoint(name="base", round=0, path="/base"))
    first = Checkpoint(name="run/round-1", round=1, path="/base", parent="base", run="/a/run")
    lineage.register(first)
    lineage.register(first.model_copy(update={"gguf": "/a/run/round-1.gguf"}))  # the same run: updated
    with pytest.raises(ConfigError, match="belongs to the run in /a/run; this run is in /b/run") as refused:
        lineage.register(Checkpoint(name="run/round-1", round=1, path="/other", parent="base", run="/b/run"))
    assert "another name than 'run'" in refused.value.fix
    assert lineage.get("run/round-1").path == "/base"  # never replaced
    lineage.close()


def test_a_round_is_registered_under_its_run(tmp_path):
    from selfcorrect.train.cycle import register_round

    lineage = Lineage(tmp_path / "store.sqlite")
    lineage.register(Checkpoint(name="base", round=0, path="/base"))
    made = register_round(lineage, tmp_path / "first", 1, parent="base", method="rft", start_path=tmp_path / "b",
                          folder=tmp_path / "first" / "round-1", lora=True, examples=[], metrics={"log": [1], "loss": 2})
    assert made.name == "first/round-1" and made.run == str((tmp_path / "first").resolve())
    assert made.adapter.endswith("round-1/model") and made.metrics == {"loss": 2}
    with pytest.raises(ConfigError, match="belongs to the run"):
        register_round(lineage, tmp_path / "elsewhere" / "first", 1, parent="base", method="rft",
                       start_path=tmp_path / "b", folder=tmp_path / "x", lora=True, examples=[], metrics={})
    lineage.close()


def test_decay_alarms_name_whose_diversity_collapsed_and_the_tail():
    from selfcorrect.train.cycle import decay_alarms

    alarms = decay_alarms([("single gives ", 1.0, 3.0), ("other gives ", 2.9, 3.0)], (0.4, 0.2),
                          against="in round 1", unsolved_what="the train items unlabelled")
    assert alarms == ["diversity collapse: single gives 1.00 distinct answers per item against 3.00 in round 1",
                      "tail narrowing: 40% of the train items unlabelled against 20% in round 1"]
    assert decay_alarms([("", 2.0, 3.0)], (0.25, 0.2), against="for the base", unsolved_what="x") == []


def test_the_default_folder_is_named_by_the_settings_less_the_stopping_rules(tmp_path):
    pytest.importorskip("trl")
    from selfcorrect.train.cycle import run_folder
    from selfcorrect.train.rounds import STOPPING, TrainSpec

    store = tmp_path / ".selfcorrect" / "store.sqlite"
    folder = run_folder(store, "train", TrainSpec(), STOPPING)
    assert folder.parent == tmp_path / ".selfcorrect" / "train" and folder.name.startswith("train-")
    assert run_folder(store, "train", TrainSpec(rounds=5, patience=3), STOPPING) == folder  # the same run, resumed
    assert run_folder(store, "train", TrainSpec(seed=1), STOPPING) != folder


def test_a_run_folder_resumes_only_the_same_settings(tmp_path):
    import json

    pytest.importorskip("trl")
    from selfcorrect.train.cycle import resumed_report
    from selfcorrect.train.rounds import STOPPING, TrainSpec

    said = []
    assert resumed_report(tmp_path, TrainSpec(), STOPPING, said.append, "train") is None  # a new run
    (tmp_path / "report.json").write_text(json.dumps({"spec": TrainSpec().model_dump(), "rounds": [{"round": 0}],
                                                      "stopped": "held-out accuracy did not improve after round 0"}))
    with pytest.raises(ConfigError, match=r"holds a train run with other settings \(seed\)") as refused:
        resumed_report(tmp_path, TrainSpec(seed=3), STOPPING, said.append, "train")
    assert "--rounds, --patience" in refused.value.fix
    report = resumed_report(tmp_path, TrainSpec(patience=2), STOPPING, said.append, "train")
    assert report["stopped"] is None and report["rounds"] == [{"round": 0}]  # goes on where it stopped
    assert said == ["stopping rules changed: patience 1 → 2"]


@pytest.mark.parametrize("given, phrase", [
    ({"method": "rft", "grpo_steps": 10}, "--grpo-steps is read by grpo alone: --grpo-steps 10 goes with --method grpo"),
    ({"method": "dpo", "generations": 4}, "--generations is read by grpo and score alone"),
    ({"method": "grpo", "stage1_steps": 3}, "--stage1-steps is read by score alone"),
    ({"method": "score", "rare_boost": 3}, "--rare-boost is read by rft and star alone"),
    ({"method": "rft", "labels": "gold", "agreement": 0.8}, "--agreement is read with --labels vote alone"),
])
def test_a_training_flag_the_method_does_not_read_is_refused(given, phrase):
    pytest.importorskip("trl")
    from pydantic import ValidationError

    from selfcorrect.train.rounds import TrainSpec

    with pytest.raises(ValidationError, match=phrase):
        TrainSpec(**given)
    TrainSpec(method="score", generations=4, beta=0.1)  # read by the method chosen: taken
    TrainSpec(method="rft", labels="vote", agreement=0.8)


@pytest.mark.parametrize("given, phrase", [
    ({"limit": 0}, "--limit 0 is out of range"), ({"pool_cap": 300}, "--pool-cap 300 is out of range"),
    ({"memory_k": 0}, "--memory-k 0 is out of range"), ({"holdout": 1.0}, "--holdout 1.0 is out of range"),
    ({"memory_explore": 1.5}, "--memory-explore 1.5 is out of range"), ({"temperature": -1}, "--temperature -1"),
    ({"lesson_writer": "poet"}, "--lesson-writer 'poet' is not a writer"),
    ({"memory_show": "everything"}, "--memory-show 'everything' is not an arm"),
    ({"retriever": "magic"}, "unknown retriever 'magic'"),
])
def test_a_library_caller_meets_the_bounds_the_command_line_does(given, phrase):
    with pytest.raises(ConfigError, match=phrase):
        EvalSpec(**given)


def test_every_eval_option_comes_from_the_spec():
    from selfcorrect.cli.app import app
    import typer.main

    command = typer.main.get_command(app).commands["eval"]
    options = {p.name for p in command.params}
    assert set(EvalSpec.model_fields) <= options
    assert options - set(EvalSpec.model_fields) == {"resume", "force", "folder"}


def test_a_store_locked_by_another_process_says_so_and_by_whom(tmp_path, monkeypatch):
    from selfcorrect import db
    from selfcorrect.store import Store

    path = tmp_path / "store.sqlite"
    Store(path).close()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sqlite3, sys, time\n"
        f"db = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
        "db.execute('PRAGMA locking_mode=EXCLUSIVE'); db.execute('BEGIN EXCLUSIVE')\n"
        "db.execute('INSERT INTO meta VALUES (\\'held\\', \\'1\\')'); print('held', flush=True); time.sleep(30)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(db, "BUSY_SECONDS", 0.2)
        started = time.monotonic()
        with pytest.raises(db.StoreLocked) as locked:
            Store(path)
        assert time.monotonic() - started < 10
        message = str(locked.value)
        assert f"is locked by pid {holder.pid}" in message and "sqlite3.connect" in message
        assert "damaged" not in message and "restore" not in message
        assert isinstance(locked.value, SelfcorrectError)
    finally:
        holder.kill()
        holder.wait()


def test_a_question_falls_on_one_side_whatever_its_id():
    from selfcorrect.train.data import Example, check_heldout, first_prompt, split_by_prompt
    from tests.scripts import ListTask

    # 40 ids, 10 questions: each asked four times under other ids, once with other spacing and case
    problems = [(f"What is {k} + {k}?" if r % 2 else f"what is  {k} + {k}?", str(2 * k)) for r in range(4)
                for k in range(10)]
    items = ListTask(problems).items()
    sides = split_by_prompt(items, 0.5, seed=0)
    prompt = {i.id: first_prompt(i.view.messages) for i in items}
    train = {prompt[i] for i in sides.train_ids}
    assert not train & {prompt[i] for i in sides.held_ids}
    assert sides.dropped and not set(sides.dropped) & set(sides.train_ids)
    assert len(sides.train_ids) + len(sides.dropped) + len(sides.held_ids) == 40
    assert sides.record() == {"train": len(sides.train_ids), "heldout": len(sides.held_ids), "confirmation": 0,
                              "dropped_for_a_shared_prompt": len(sides.dropped)}
    held = next(i for i in items if i.id in sides.held_ids)
    twin = next(i for i in items if i.id not in sides.held_ids and prompt[i.id] == prompt[held.id])
    leaked = Example(prompt=list(twin.view.messages), completion="The answer is 0.", item_id=twin.id)
    with pytest.raises(ConfigError, match="ask a held-out question under another id"):
        check_heldout([leaked], sides.held_ids, sides.measured_prompts)


def test_a_confirmation_side_is_set_aside_first_and_shares_no_question():
    from selfcorrect.train.data import first_prompt, split_by_prompt
    from tests.scripts import ListTask

    problems = [(f"What is {k} + {k}?", str(2 * k)) for k in range(60)] * 2  # every question under two ids
    items = ListTask(problems).items()
    prompt = {i.id: first_prompt(i.view.messages) for i in items}
    sides = split_by_prompt(items, 0.5, seed=0, confirmation=0.15)
    confirm = {prompt[i] for i in sides.confirm_ids}
    assert 0.05 < len(sides.confirm_ids) / len(items) < 0.3
    assert not confirm & {prompt[i] for i in sides.held_ids} and not confirm & {prompt[i] for i in sides.train_ids}
    assert not {prompt[i] for i in sides.train_ids} & {prompt[i] for i in sides.held_ids}
    assert sides.measured_prompts == confirm | {prompt[i] for i in sides.held_ids}
    # the confirmation side is the same whatever else is asked of the split
    assert split_by_prompt(items, 0.3, seed=0, confirmation=0.15).confirm_ids == sides.confirm_ids
    assert split_by_prompt(items, 0.5, seed=0).confirm_ids == []


def test_options_added_later_leave_an_older_run_s_name_and_resume_it(tmp_path):
    import json

    pytest.importorskip("trl")
    from selfcorrect.train.cycle import resumed_report, run_folder, settings_named
    from selfcorrect.train.rounds import STOPPING, TrainSpec

    older = {k: v for k, v in TrainSpec().model_dump().items() if k not in TrainSpec.LATER}  # a report from before
    assert settings_named(TrainSpec(), STOPPING) == {k: v for k, v in older.items() if k not in STOPPING}
    store = tmp_path / "store.sqlite"
    assert run_folder(store, "train", TrainSpec(engine="vllm", replicas=2), STOPPING) != run_folder(
        store, "train", TrainSpec(engine="vllm"), STOPPING)  # at another value, another run
    (tmp_path / "report.json").write_text(json.dumps({"spec": older, "rounds": [], "stopped": None}))
    assert resumed_report(tmp_path, TrainSpec(), STOPPING, print, "train")["rounds"] == []
    with pytest.raises(ConfigError, match=r"other settings \(launcher\)"):
        resumed_report(tmp_path, TrainSpec(launcher="torchrun"), STOPPING, print, "train")


@pytest.mark.parametrize("given, phrase", [
    ({"replicas": 2}, "--replicas goes with a served engine, not --engine auto"),
    ({"engine": "gguf", "engine_args": "--x", "replicas": 3}, "--replicas, --engine-args go with a served engine"),
    ({"engine": "command"}, "--engine command needs --serve-command"),
    ({"engine": "vllm", "serve_command": "x {model} {port}"}, "--serve-command goes with --engine command"),
    ({"engine": "command", "serve_command": "my-server {model}"}, "has no {port}"),
    ({"engine": "vllm", "engine_args": "'unclosed"}, "--engine-args .* does not parse"),
    ({"launcher": "accelerate launch 'x"}, "--launcher .* does not parse"),
    ({"method": "grpo", "launcher": "accelerate launch"}, "grpo samples while it trains: at scale, `--export verl`"),
])
def test_served_engines_and_launchers_are_checked_before_anything_runs(given, phrase):
    pytest.importorskip("trl")
    from pydantic import ValidationError

    from selfcorrect.train.rounds import TrainSpec

    with pytest.raises((ConfigError, ValidationError), match=phrase):
        TrainSpec(**given)


def test_each_engine_s_server_command_line():
    from selfcorrect.models.served import Serving, server_argv

    llama = server_argv(Serving("llama-server", engine_args="--n_batch 256"), "/m/x.gguf", 9001, "r1", threads=2, n_ctx=4096)
    assert llama[1:3] == ["-m", "selfcorrect.models.llama_server"] and llama[-2:] == ["--n_batch", "256"]
    assert llama[llama.index("--model_alias") + 1] == "r1" and llama[llama.index("--n_threads") + 1] == "2"
    vllm = server_argv(Serving("vllm"), "/m/base", 9002, "base", lora=True)
    assert vllm[:3] == ["vllm", "serve", "/m/base"] and "--enable-lora" in vllm
    assert vllm[vllm.index("--port") + 1] == "9002" and vllm[vllm.index("--served-model-name") + 1] == "base"
    sglang = server_argv(Serving("sglang", engine_args="--tp 2"), "/m/merged", 9003, "r2")
    assert sglang[1:3] == ["-m", "sglang.launch_server"] and sglang[sglang.index("--model-path") + 1] == "/m/merged"
    assert sglang[-2:] == ["--tp", "2"]
    own = server_argv(Serving("command", command="ollama-ish serve {model} --listen :{port} --as {name}"),
                      "/m/my model", 9004, "r3")
    assert own == ["ollama-ish", "serve", "/m/my model", "--listen", ":9004", "--as", "r3"]
