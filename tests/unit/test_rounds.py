"""Self-training rounds end to end on a tiny model taught to answer a toy task: sampling the
train side, data from verified samples only, training, the checkpoint registered in the
lineage, the held-out side measured every round and never trained on, the report."""

import asyncio
import json

import pytest

pytest.importorskip("trl")

from selfcorrect.config import load_settings  # noqa: E402
from selfcorrect.errors import ConfigError  # noqa: E402
from selfcorrect.models.hf import HFModel  # noqa: E402
from selfcorrect.tasks import TASKS  # noqa: E402
from selfcorrect.train.data import Example, to_dataset  # noqa: E402
from selfcorrect.models.lineage import Checkpoint, Lineage  # noqa: E402
from selfcorrect.train.rounds import TrainSpec, train_rounds  # noqa: E402
from selfcorrect.train.sft import SFTSettings, train_sft  # noqa: E402
from tests.scripts import ListTask  # noqa: E402
from tests.tinymodel import make_tiny_model  # noqa: E402

PROBLEMS = [(f"What is 1 + 1? (case {k})", "2") for k in range(16)]


@pytest.fixture
def toy_task():
    TASKS.register("toy-twos")(lambda: ListTask(PROBLEMS))
    yield "toy-twos"
    TASKS.unregister("toy-twos")


@pytest.fixture(scope="module")
def taught(tmp_path_factory) -> str:
    """The tiny model, trained a little to say "The answer is 2." to the task's prompt."""
    tmp_path = tmp_path_factory.mktemp("taught")
    base = make_tiny_model(tmp_path / "tiny")
    items = ListTask(PROBLEMS).items()
    examples = [Example(prompt=list(i.view.messages), completion="The answer is 2.", item_id=i.id) for i in items]
    train_sft(base, to_dataset(examples), tmp_path / "taught", SFTSettings(lora=False, epochs=15, learning_rate=1e-2,
                                                                          save_steps=1000), progress=False)
    return str(tmp_path / "taught" / "model")


def test_rounds_train_on_verified_train_samples_and_measure_the_held_out_side(tmp_path, toy_task, taught):
    settings = load_settings(store=tmp_path / "store.sqlite", hf={"batch": 8})
    path = taught
    lineage = Lineage(settings.store)
    lineage.register(Checkpoint(name="base", round=0, path=path))
    lineage.close()
    spec = TrainSpec(task=toy_task, limit=16, heldout=0.5, sample="self-consistency:n=4", sample_temperature=0.5,
                     rounds=2, patience=2, epochs=1, learning_rate=1e-3, batch_size=8, per_item=2)
    stages = []
    report = asyncio.run(train_rounds(settings, spec, tmp_path / "train", stages.append))

    rounds = report["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2] and report["stopped"] is None, (report["stopped"], rounds[0]["train"])
    assert rounds[0]["train"]["pass_at_1"] > 0  # the taught model is right sometimes: there is data
    data = [json.loads(line) for line in (tmp_path / "train" / "round-1" / "data.jsonl").read_text().splitlines()]
    heldout = set(rounds[0]["heldout"]["correct"])
    assert data and not {d["item_id"] for d in data} & heldout  # never a held-out item
    assert all(d["completion"] and d["label"] == "gold" for d in data)
    assert len(heldout) == report["heldout_items"] and report["train_items"] + len(heldout) == 16
    for r in rounds[1:]:
        assert "versus_previous" in r["heldout"] and "versus_base" in r["heldout"]
        assert 0 <= r["train"]["pass_at_1"] <= r["train"]["pass_at_k"] <= 1
        assert r["train"]["tail"]["hard (base 0%)"]["items"] + r["train"]["tail"]["middle"]["items"] \
            + r["train"]["tail"]["easy (base ≥ 50%)"]["items"] == report["train_items"]
    lineage = Lineage(settings.store)
    second = lineage.get("train/round-2")
    assert second.parent == "train/round-1" and second.adapter and second.data_hash == rounds[2]["data_hash"]
    assert second.path == path  # ReST-EM: each round trains from the base
    lineage.close()
    assert any("training on" in s for s in stages)
    markdown = (tmp_path / "train" / "report.md").read_text()
    assert "| 2 |" in markdown and "never solved" in markdown and "Alarms:" in markdown
    page = (tmp_path / "train" / "report.html").read_text()
    assert page.count("<svg") == 3 and "<table>" in page and "<td>2</td>" in page  # curves, loss, the table
    # the round-2 model is a model the backend serves
    model = HFModel(second.path, second.adapter)
    assert "+lora:" in model.identity
    model.close()


def test_label_free_rounds_train_on_pseudo_labels_and_report_their_accuracy(tmp_path, toy_task, taught):
    settings = load_settings(store=tmp_path / "store.sqlite", hf={"batch": 8})
    lineage = Lineage(settings.store)
    lineage.register(Checkpoint(name="base", round=0, path=taught))
    lineage.close()
    spec = TrainSpec(task=toy_task, limit=16, sample="self-consistency:n=4", sample_temperature=0.5, rounds=1,
                     labels="vote", agreement=0.25, epochs=1, learning_rate=1e-3)
    report = asyncio.run(train_rounds(settings, spec, tmp_path / "train"))
    assert len(report["rounds"]) == 2, report["stopped"]
    first = report["rounds"][1]
    assert first["pseudo_labels"]["items_labelled"] > 0
    assert first["pseudo_labels"]["accuracy_against_gold"] is not None
    data = [json.loads(line) for line in (tmp_path / "train" / "round-1" / "data.jsonl").read_text().splitlines()]
    assert data and {d["label"] for d in data} == {"vote"}
    assert "Pseudo-labels (vote" in (tmp_path / "train" / "report.md").read_text()


def test_each_method_takes_only_the_labels_it_can_use():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="by the task.s check: use labels gold"):
        TrainSpec(method="correction", labels="vote")
    for method, labels in (("dpo", "vote"), ("dpo", "program"), ("rft", "judge"), ("star", "judge")):
        with pytest.raises(ValidationError, match="ranked by the task's check"):
            TrainSpec(method=method, labels=labels)
    with pytest.raises(ValidationError, match="use labels gold or program"):
        TrainSpec(method="star", labels="vote")
    assert TrainSpec(method="correction", sample="self-refine:rounds=1").method == "correction"
    assert TrainSpec(method="dpo", labels="judge").labels == "judge"
    assert TrainSpec(method="star", labels="program").method == "star"
    with pytest.raises(ValidationError, match="--traces pairs goes with --method correction"):
        TrainSpec(method="rft", traces="pairs")
    assert TrainSpec(method="correction", traces="pairs").traces == "pairs"


def test_a_review_turn_with_test_results_needs_items_with_visible_tests(tmp_path):
    from selfcorrect.errors import ConfigError

    code = tmp_path / "code.jsonl"
    code.write_text("".join(json.dumps({"prompt": f"Write f returning {k}.", "tests": [f"assert f() == {k}"],
                                        "visible_tests": []}) + "\n" for k in range(4)))
    settings = load_settings(store=tmp_path / "store.sqlite")
    lineage = Lineage(settings.store)
    lineage.register(Checkpoint(name="base", round=0, path=str(tmp_path / "never-opened")))
    lineage.close()
    for task in ("arithmetic", str(code)):  # math: no tests; this JSONL: no visible tests
        with pytest.raises(ConfigError, match="has no visible tests on every item"):
            asyncio.run(train_rounds(settings, TrainSpec(task=task, method="score", review_feedback="tests"),
                                     tmp_path / "train"))
    assert not (tmp_path / "train").exists()
    with pytest.raises(ValueError, match="goes with --method score"):
        TrainSpec(method="grpo", review_feedback="tests")


def test_a_dpo_round_trains_on_pairs_of_the_train_side(tmp_path, toy_task, taught):
    settings = load_settings(store=tmp_path / "store.sqlite", hf={"batch": 8})
    lineage = Lineage(settings.store)
    lineage.register(Checkpoint(name="base", round=0, path=taught))
    lineage.close()
    spec = TrainSpec(task=toy_task, limit=16, sample="self-consistency:n=4", sample_temperature=0.5, rounds=1,
                     method="dpo", epochs=1, learning_rate=1e-3)
    report = asyncio.run(train_rounds(settings, spec, tmp_path / "train"))
    assert len(report["rounds"]) == 2, report["stopped"]
    pairs = [json.loads(line) for line in (tmp_path / "train" / "round-1" / "data.jsonl").read_text().splitlines()]
    assert pairs and all(p["chosen"] != p["rejected"] for p in pairs)
    assert not {p["item_id"] for p in pairs} & set(report["rounds"][0]["heldout"]["correct"])
    assert report["rounds"][1]["training"]["pairs"] == len(pairs)


def test_a_grpo_round_is_rewarded_by_the_check_and_reports_its_signals(tmp_path, toy_task, taught):
    settings = load_settings(store=tmp_path / "store.sqlite", hf={"batch": 8})
    lineage = Lineage(settings.store)
    lineage.register(Checkpoint(name="base", round=0, path=taught))
    lineage.close()
    spec = TrainSpec(task=toy_task, limit=16, sample="self-consistency:n=2", rounds=1, method="grpo", grpo_steps=2,
                     generations=4, learning_rate=1e-4, format_reward=0.1)
    report = asyncio.run(train_rounds(settings, spec, tmp_path / "train"))
    assert len(report["rounds"]) == 2, report["stopped"]
    trained = report["rounds"][1]
    assert trained["training"]["steps"] == 2 and len(trained["signals"]) == 2 and trained["data_right"] is None
    assert trained["training"]["zero_variance_groups"] is not None
    assert not (tmp_path / "train" / "round-1" / "data.jsonl").exists()  # rewarded online: no data file
    assert "GRPO (rewarded by the task's check" in (tmp_path / "train" / "report.md").read_text()
    assert (tmp_path / "train" / "report.html").read_text().count("<svg") == 4


def test_a_two_attempt_round_reports_both_attempts_and_their_flips(tmp_path, toy_task, taught):
    settings = load_settings(store=tmp_path / "store.sqlite", hf={"batch": 8})
    lineage = Lineage(settings.store)
    lineage.register(Checkpoint(name="base", round=0, path=taught))
    lineage.close()
    spec = TrainSpec(task=toy_task, limit=16, sample="self-consistency:n=2", rounds=1, method="score",
                     evaluate=["self-correct:keep=last"], stage1_steps=1, stage2_steps=1, generations=2,
                     learning_rate=1e-4)
    report = asyncio.run(train_rounds(settings, spec, tmp_path / "train"))
    assert len(report["rounds"]) == 2, report["stopped"]
    for r in report["rounds"]:
        attempts = r["heldout"]["attempts"]["self-correct:keep=last"]
        assert 0 <= attempts["attempt_1"] <= 1 and 0 <= attempts["attempt_2"] <= 1
        assert attempts["attempt_2"] - attempts["attempt_1"] == pytest.approx(
            (attempts["wrong_to_right"] - attempts["right_to_wrong"]) / r["heldout"]["items"])
        # keep=last returns attempt 2: its verdicts per item are the strategy's
        assert attempts["second"] == r["heldout"]["by_strategy"]["self-correct:keep=last"] == r["heldout"]["correct"]
    assert [s["stage"] for s in report["rounds"][1]["signals"]] == [1, 2]
    markdown = (tmp_path / "train" / "report.md").read_text()
    assert "| `self-correct:keep=last` | 1 |" in markdown and "Two-attempt GRPO" in markdown
    assert "not to attempt 1 only" in markdown


def test_independent_samples_are_not_read_as_two_attempts(tmp_path, toy_task, taught):
    settings = load_settings(store=tmp_path / "store.sqlite", hf={"batch": 8})
    lineage = Lineage(settings.store)
    lineage.register(Checkpoint(name="base", round=0, path=taught))
    lineage.close()
    spec = TrainSpec(task=toy_task, limit=16, sample="self-consistency:n=2", rounds=1, patience=1,
                     evaluate=["self-consistency:n=3"], epochs=1, learning_rate=1e-3)
    report = asyncio.run(train_rounds(settings, spec, tmp_path / "train"))
    assert all(r["heldout"]["attempts"] == {} for r in report["rounds"])


def test_a_lora_round_merged_in_fp32_is_the_next_round_s_master_copy(tmp_path, taught):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from selfcorrect.train.rounds import merged_master

    items = ListTask(PROBLEMS).items()
    examples = [Example(prompt=list(i.view.messages), completion="The answer is 3.", item_id=i.id) for i in items]
    train_sft(taught, to_dataset(examples), tmp_path / "lora", SFTSettings(lora=True, epochs=2, learning_rate=1e-2,
                                                                           save_steps=1000), progress=False)
    adapter = tmp_path / "lora" / "model"
    merged = merged_master(Checkpoint(name="r1", round=1, path=taught, adapter=str(adapter)), tmp_path / "round-2")
    assert merged == tmp_path / "round-2" / "start" and not (merged / "adapter_config.json").exists()
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(taught)
        plain = AutoModelForCausalLM.from_pretrained(merged)
        assert plain.dtype == torch.float32
        assert not torch.allclose(base(ids).logits, plain(ids).logits, atol=1e-3)  # the adapter is in
        with_adapter = PeftModel.from_pretrained(base, str(adapter))
        assert torch.allclose(with_adapter(ids).logits, plain(ids).logits, atol=1e-4)


def test_the_same_command_resumes_a_run_and_a_killed_round_is_done_again(tmp_path, toy_task, taught):
    settings = load_settings(store=tmp_path / "store.sqlite", hf={"batch": 8})
    lineage = Lineage(settings.store)
    lineage.register(Checkpoint(name="base", round=0, path=taught))
    lineage.close()
    spec = TrainSpec(task=toy_task, limit=16, sample="self-consistency:n=2", sample_temperature=0.5, rounds=1,
                     patience=3, epochs=1, learning_rate=1e-3)
    first = asyncio.run(train_rounds(settings, spec, tmp_path / "train"))
    assert [r["round"] for r in first["rounds"]] == [0, 1]
    (tmp_path / "train" / "round-2").mkdir()  # what a kill in round 2 would leave
    (tmp_path / "train" / "round-2" / "data.jsonl").write_text("half a line")
    stages = []
    more = spec.model_copy(update={"rounds": 2})
    second = asyncio.run(train_rounds(settings, more, tmp_path / "train", stages.append))
    assert [r["round"] for r in second["rounds"]] == [0, 1, 2]
    assert [r["heldout_run"] for r in second["rounds"][:2]] == [r["heldout_run"] for r in first["rounds"]]  # kept
    assert "stopping rules changed: rounds 1 → 2" in stages
    assert "round 2 did not finish: doing it again from the start" in stages
    assert (tmp_path / "train" / "round-2" / "data.jsonl").read_text().startswith("{")
    with pytest.raises(ConfigError, match="holds a train run with other settings"):
        asyncio.run(train_rounds(settings, more.model_copy(update={"seed": 5}), tmp_path / "train"))
    # another run in a folder of the same name may not take over its checkpoints
    with pytest.raises(ConfigError, match="checkpoint train/round-1 belongs to the run in"):
        asyncio.run(train_rounds(settings, spec, tmp_path / "elsewhere" / "train"))


def test_a_held_out_question_never_enters_the_train_side_under_another_id(tmp_path, taught):
    from selfcorrect.train.data import first_prompt

    TASKS.register("toy-twice")(lambda: ListTask(PROBLEMS * 2))  # every question under two ids
    try:
        settings = load_settings(store=tmp_path / "store.sqlite", hf={"batch": 8})
        lineage = Lineage(settings.store)
        lineage.register(Checkpoint(name="base", round=0, path=taught))
        lineage.close()
        spec = TrainSpec(task="toy-twice", limit=32, sample="self-consistency:n=4", sample_temperature=0.5, rounds=1,
                         epochs=1, learning_rate=1e-3)
        report = asyncio.run(train_rounds(settings, spec, tmp_path / "train"))
    finally:
        TASKS.unregister("toy-twice")
    items = {i.id: i for i in ListTask(PROBLEMS * 2).items()}
    assert report["split"]["dropped_for_a_shared_prompt"] > 0 and report["stopped"] is None, report["stopped"]
    held = {first_prompt(items[i].view.messages) for i in report["rounds"][0]["heldout"]["correct"]}
    data = [json.loads(line) for line in (tmp_path / "train" / "round-1" / "data.jsonl").read_text().splitlines()]
    assert data and not {first_prompt(d["prompt"]) for d in data} & held
    assert "dropped for asking what a measured item asks" in (tmp_path / "train" / "report.md").read_text()
