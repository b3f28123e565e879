"""`selfcorrect improve` end to end on a tiny model: scripted draws make each checkpoint's
behaviour known (the base answers 5, round 1 answers 2, round 2 answers 7; every program
prints 2), while the training, the lineage, the sandbox, the store, the recipe and the server
are real. A round that gets worse is rejected, no held-out item and no gold answer enters the
data, the run resumes after a kill, and the recipe loads in eval and serve."""

import asyncio
import json
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("trl")

from typer.testing import CliRunner  # noqa: E402

from selfcorrect.config import load_settings  # noqa: E402
from selfcorrect.errors import ConfigError  # noqa: E402
from selfcorrect.improve.loop import ImproveSpec, Improvement, verdict  # noqa: E402
from selfcorrect.improve.report import served_round  # noqa: E402
from selfcorrect.models.lineage import Checkpoint, Lineage  # noqa: E402
from selfcorrect.models.recipe import read_recipe  # noqa: E402
from selfcorrect.models.scripted import ScriptedModel  # noqa: E402
from selfcorrect.store import Store  # noqa: E402
from selfcorrect.tasks import TASKS  # noqa: E402
from tests.cli import EXE  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.scripts import ListTask  # noqa: E402
from tests.tinymodel import make_tiny_model  # noqa: E402

pytestmark = pytest.mark.integration

# the programs print 2 everywhere: right on the first 16 items, wrong on the last 8, whose gold is 3
PROBLEMS = [(f"What is 1 + 1? (case {k})", "2") for k in range(16)] + [(f"What is 1 + 2? (case {k})", "3")
                                                                      for k in range(8)]
ANSWERS = {"base": "5", "improve/round-1": "2"}  # any later checkpoint: 7


def scripted(checkpoint: Checkpoint) -> ScriptedModel:
    def reply(messages, params, k):
        if "Python program" in messages[0]["content"]:
            return "```python\nprint(2)\n```"
        return f"The answer is {ANSWERS.get(checkpoint.name, '7')}."
    return ScriptedModel(reply, identity=f"scripted:{checkpoint.name}")


@pytest.fixture
def toy_task():
    TASKS.register("toy-improve")(lambda: ListTask(PROBLEMS))
    yield "toy-improve"
    TASKS.unregister("toy-improve")


@pytest.fixture
def setup(tmp_path, toy_task):
    settings = load_settings(store=tmp_path / "store.sqlite", hf={"batch": 8}, sandbox_workers=1)
    lineage = Lineage(settings.store)
    lineage.register(Checkpoint(name="base", round=0, path=str(make_tiny_model(tmp_path / "tiny"))))
    lineage.close()
    spec = ImproveSpec(task=toy_task, limit=24, heldout=0.5, rounds=2, chains=2, agree=2, student_samples=2,
                       epochs=1, learning_rate=1e-3, batch_size=8)
    return settings, spec


def improve(settings, spec, out):
    stages = []
    report = asyncio.run(Improvement(settings, spec, out, on_stage=stages.append, engine_factory=scripted).run())
    return report, stages


def test_improve_accepts_a_better_round_rejects_a_worse_one_and_hands_over_a_recipe(tmp_path, setup):
    settings, spec = setup
    out = tmp_path / "improve"
    report, stages = improve(settings, spec, out)

    rounds = report["rounds"]
    # where each round's time went: every phase timed, tokens/s where tokens were made
    assert set(rounds[0]["phases"]) == {"export", "measure"}
    phases = rounds[1]["phases"]
    assert set(phases) == {"sample", "label", "train", "export", "measure"}
    assert phases["sample"]["tokens"] > 0 and phases["train"]["tokens_per_s"] > 0 and "tokens" not in phases["label"]
    assert 0 < phases["train"]["cpu_share"] < 2  # the share of its threads' time the training got
    assert sum(p["seconds"] for p in phases.values()) <= rounds[1]["seconds"] + 0.1
    assert "Where the time went" in (out / "report.md").read_text()
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert [r["accepted"] for r in rounds] == [True, True, False], [r["why"] for r in rounds]
    assert "significantly worse" in rounds[2]["why"] and rounds[1]["gained"]
    held = set(rounds[0]["heldout"]["single"]["correct"])
    assert len(held) == report["heldout_items"] and rounds[0]["heldout"]["single"]["accuracy"] == 0.0
    assert rounds[1]["heldout"]["single"]["accuracy"] > 0.5 and rounds[2]["heldout"]["single"]["accuracy"] == 0.0
    assert rounds[2]["sampled_by"] == "improve/round-1"  # sampled by the accepted model

    gold = {f"list/{k}": answer for k, (_, answer) in enumerate(PROBLEMS)}
    for number in (1, 2):
        data = [json.loads(line) for line in (out / f"round-{number}" / "data.jsonl").read_text().splitlines()]
        assert data and not {d["item_id"] for d in data} & held  # never a held-out item
        assert {d["label"] for d in data} == {"programs"}
        # the label is what the programs agreed on, never the gold: items whose gold is 3 are taught 2
        wrong_gold = [d for d in data if gold[d["item_id"]] == "3"]
        assert wrong_gold and all("3" not in d["completion"] and "2" in d["completion"] for d in wrong_gold)
        assert {d["provenance"]["format"] for d in data} >= {"program-aided", "single"}
    assert rounds[1]["written"] > 0  # the base's own samples never agreed: the label was written out
    assert rounds[2]["written"] == 0  # round 1's samples agree with the programs: its own replies taught
    assert rounds[1]["train"]["labels_right"] < 1  # measured against gold afterwards, and shown

    recipe = read_recipe(out)
    assert recipe.round == 1 and recipe.checkpoint.name == "improve/round-1"
    assert Path(recipe.checkpoint.adapter).is_absolute() and Path(recipe.checkpoint.adapter).is_dir()
    assert recipe.labels == "none" and not recipe.oracle
    assert recipe.base_best.strategy == "program-aided" and recipe.heldout.accuracy >= recipe.base_best.accuracy
    markdown = (out / "report.md").read_text()
    assert "**rejected**" in markdown and "Recipe (recipe.json): round 1" in markdown
    assert (out / "report.html").read_text().count("<svg") >= 2
    assert any("REJECTED" in s for s in stages)

    # a finished run read again: nothing runs
    again, stages = improve(settings, spec, out)
    assert again["rounds"] == report["rounds"] and not stages


def test_a_killed_round_is_done_again_from_the_start(tmp_path, setup):
    settings, spec = setup
    spec = spec.model_copy(update={"rounds": 1})
    out = tmp_path / "improve"
    first, _ = improve(settings, spec, out)
    # as if killed in round 1: the report has round 0 only, round 1's folder is half written
    saved = json.loads((out / "report.json").read_text())
    saved["rounds"], saved["stopped"] = saved["rounds"][:1], None
    (out / "report.json").write_text(json.dumps(saved))
    (out / "round-1" / "data.jsonl").write_text("half a line")
    report, stages = improve(settings, spec, out)
    assert any("did not finish" in s for s in stages)
    assert [r["round"] for r in report["rounds"]] == [0, 1] and report["rounds"][1]["accepted"]
    assert (out / "round-1" / "data.jsonl").read_text().startswith("{")
    with pytest.raises(ConfigError, match="other settings"):
        improve(settings, spec.model_copy(update={"chains": 3}), out)
    # a finished run given another round goes on from where it stopped, its rounds kept
    longer, stages = improve(settings, spec.model_copy(update={"rounds": 2}), out)
    assert any("rounds 1 → 2" in s for s in stages)
    assert [r["round"] for r in longer["rounds"]] == [0, 1, 2] and longer["rounds"][:2] == report["rounds"]
    assert longer["spec"]["rounds"] == 2 and longer["stopped"] == "all 2 rounds done"


def test_the_recipe_loads_in_eval_and_serve(tmp_path, setup):
    from selfcorrect.cli import app

    settings, spec = setup
    out = tmp_path / "improve"
    improve(settings, spec.model_copy(update={"rounds": 1}), out)
    recipe = read_recipe(out)
    store = tmp_path / "store.sqlite"

    result = CliRunner().invoke(app, ["--store", str(store), "--model", f"recipe:{out}", "eval", "--task",
                                      "toy-improve", "--limit", "2", "--no-reference", "--out", str(tmp_path / "eval")])
    assert result.exit_code == 0, result.output
    runs = Store(store).runs()
    assert runs[-1].config["strategies"] == [recipe.strategy]  # the recipe's strategy, none named
    assert runs[-1].config["params"]["temperature"] == recipe.sampling["temperature"]
    assert "+lora:" in runs[-1].config["model"]  # the accepted round's adapter, on transformers

    port = free_port()
    server = subprocess.Popen([str(EXE), "--store", str(store), "--threads", "1", "serve", "--recipe", str(out),
                               "--port", str(port)], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.HTTPError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
                time.sleep(0.3)
        assert health.json()["strategy"] == recipe.strategy and "+lora:" in health.json()["model"]
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60, json={
            "model": "default", "max_tokens": 8, "messages": [{"role": "user", "content": "What is 1 + 1?"}]})
        assert reply.status_code == 200 and reply.json()["choices"][0]["message"]["content"] is not None
    finally:
        server.terminate()
        server.wait(timeout=30)
    missing = subprocess.run([str(EXE), "serve", "--recipe", str(tmp_path / "nowhere")], cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "no recipe at" in missing.stderr


def test_a_round_is_judged_by_paired_tests_on_every_strategy():
    same = {"wrong_to_right": 3, "right_to_wrong": 2, "p_value": 1.0, "difference": 0.01}
    worse = {"wrong_to_right": 0, "right_to_wrong": 9, "p_value": 0.004, "difference": -0.09}
    better = {"wrong_to_right": 9, "right_to_wrong": 0, "p_value": 0.004, "difference": 0.09}
    assert verdict({"single": same}, 0.05)[:2] == (True, False)
    assert verdict({"single": better, "program-aided": same}, 0.05)[:2] == (True, True)
    # one strategy worse rejects the round, even when another gained
    accepted, gained, why = verdict({"single": better, "program-aided": worse}, 0.05)
    assert (accepted, gained) == (False, False) and "program-aided" in why


def test_code_is_labelled_by_the_visible_tests_never_by_the_hidden_ones(tmp_path, setup):
    """f adds one; the visible test is f(1) == 2, the hidden ones add f(5) == 6. Cases 0-7 are
    written right, 8-15 double x (pass the visible test only), 16-23 return 2 (pass it hard-coded,
    reading no input), 24-31 return x (fail it)."""
    settings, math_spec = setup
    path = tmp_path / "code.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Write f(x) that adds one to x. (case {k})",
                                        "tests": ["assert f(1) == 2", "assert f(5) == 6"]}) + "\n" for k in range(32)))

    def case(text) -> int:
        return int(re.search(r"case (\d+)", json.dumps(text)).group(1))

    def program(messages, params, k):
        n = case(messages[0]["content"])
        return f"```python\ndef f(x):\n    return {'x + 1' if n < 8 else 'x * 2' if n < 16 else '2' if n < 24 else 'x'}\n```"

    spec = ImproveSpec(task=str(path), limit=32, heldout=0.5, rounds=1, chains=1, student_samples=2,
                       epochs=1, learning_rate=1e-3, batch_size=8)  # --agree 2 > --chains 1 binds math only
    with pytest.raises(ConfigError, match="--agree 2 needs at least as many chains"):
        Improvement(settings, math_spec.model_copy(update={"chains": 1}), tmp_path / "math")
    out = tmp_path / "improve"
    report = asyncio.run(Improvement(settings, spec, out, engine_factory=lambda c: ScriptedModel(
        program, identity=f"scripted-code:{c.name}")).run())

    assert report["teacher"] == "best-of-n:n=5"
    items = {i.id: case(i.view.question) for i in Improvement(settings, spec, out).task.items()}
    base = report["rounds"][0]["heldout"]["best-of-n:n=5"]
    held = set(base["correct"])
    assert base["accuracy"] == sum(items[i] < 8 for i in held) / len(held)  # the hidden tests measure
    data = [json.loads(line) for line in (out / "round-1" / "data.jsonl").read_text().splitlines()]
    taught = {case(d["prompt"]) for d in data}
    train = {items[i] for i in Improvement(settings, spec, out).train_ids}  # the confirmation side is neither
    assert taught == {n for n in train if n < 16}  # what passed the visible test reading its input, no other
    assert not {d["item_id"] for d in data} & held and {d["label"] for d in data} == {"tests"}
    assert {d["provenance"]["format"] for d in data} == {"best-of-n:n=5", "single"}
    assert report["rounds"][1]["written"] == 0  # the student's own programs passed the visible tests
    hard_coded = sum(16 <= n < 24 for n in train)
    assert hard_coded and report["rounds"][1]["train"]["hard_coded"] >= hard_coded  # each such item's program refused
    # measured against the hidden tests afterwards: the programs that double x were wrong labels
    assert report["rounds"][1]["train"]["labels_right"] == pytest.approx(
        sum(n < 8 for n in train) / sum(n < 16 for n in train))
    markdown = (out / "report.md").read_text()
    assert "a program that passes every visible test and reads its inputs" in markdown
    assert "hard-coded programs refused" in markdown


def test_the_memory_s_examples_join_the_data_unless_they_ask_a_held_out_question(tmp_path, setup):
    settings, spec = setup
    items = ListTask(PROBLEMS).items()
    held = set(Improvement(settings, spec, tmp_path / "x", engine_factory=scripted).held_ids)
    asked = next(i for i in items if i.id in held)
    row = {"prompt": [{"role": "user", "content": "What is 40 + 2?"}], "completion": "The answer is 42.",
           "item_id": "memory/desk/abc", "label": "user"}
    clean = tmp_path / "clean.jsonl"
    clean.write_text(json.dumps(row) + "\n")
    # a label-free run takes no row a client's answer or the gold check labelled
    with pytest.raises(ConfigError, match="1 rows were labelled 1 by a client's answer"):
        Improvement(settings, spec.model_copy(update={"extra_data": str(clean)}), tmp_path / "c")
    report, _ = improve(settings, spec.model_copy(update={"rounds": 1, "extra_data": str(clean), "labels": "gold"}),
                        tmp_path / "a")
    assert report["oracle"]  # an oracle run, and it says so
    data = [json.loads(line) for line in (tmp_path / "a" / "round-1" / "data.jsonl").read_text().splitlines()]
    assert sum(d["item_id"] == "memory/desk/abc" for d in data) == 1
    agreed = tmp_path / "agreed.jsonl"  # a row a label-free check verified joins a label-free run
    agreed.write_text(json.dumps({**row, "label": "programs"}) + "\n")
    assert Improvement(settings, spec.model_copy(update={"extra_data": str(agreed)}), tmp_path / "d").extra
    leaking = tmp_path / "leaking.jsonl"
    leaking.write_text(json.dumps({**row, "prompt": [{"role": "user", "content": asked.view.question}]}) + "\n")
    with pytest.raises(ConfigError, match="held-out or probe question"):
        Improvement(settings, spec.model_copy(update={"extra_data": str(leaking)}), tmp_path / "b")


def test_the_recipe_serves_the_best_accepted_round_not_the_last():
    def entry(number, accuracy, tokens, accepted=True):
        return {"round": number, "accepted": accepted, "best": "s",
                "heldout": {"s": {"accuracy": accuracy, "tokens_per_item": tokens}}}

    # round 3 was accepted (not significantly worse) but measured below round 2; round 4 was rejected
    rounds = [entry(0, 0.11, 547), entry(1, 0.12, 304), entry(2, 0.15, 235), entry(3, 0.13, 219), entry(4, 0.3, 90, False)]
    assert served_round(rounds)["round"] == 2
    assert served_round(rounds[:2] + [entry(2, 0.12, 250)])["round"] == 2  # equal accuracy: the cheaper
    assert served_round([entry(0, 0.5, 100), entry(1, 0.4, 50)])["round"] == 0  # nothing beat the base: the base


def test_a_collapse_raises_the_next_round_s_temperature():
    first = {"round": 1, "train": {"diversity": {"single": 3.0}, "unlabelled_share": 0.1}}
    collapsed = {"round": 2, "train": {"diversity": {"single": 1.2}, "unlabelled_share": 0.3}}
    alarms, hotter = Improvement._steer(None, collapsed, {"rounds": [{"round": 0}, first]}, 0.5)
    assert hotter == pytest.approx(0.7) and len(alarms) == 3
    assert "diversity collapse" in alarms[0] and "tail narrowing" in alarms[1] and "temperature 0.7" in alarms[2]
    assert Improvement._steer(None, first, {"rounds": [{"round": 0}, first]}, 0.5) == ([], 0.5)
    assert Improvement._steer(None, collapsed, {"rounds": [{"round": 0}, first]}, 1.0)[1] == 1.0  # its ceiling


def test_a_held_out_question_never_enters_training_under_another_id(tmp_path, setup):
    from selfcorrect.train.data import first_prompt

    settings, spec = setup
    twice = PROBLEMS[:12] * 2  # every question under two ids
    TASKS.register("toy-twice")(lambda: ListTask(twice))
    try:
        report, _ = improve(settings, spec.model_copy(update={"task": "toy-twice", "rounds": 1}), tmp_path / "twice")
        items = {i.id: i for i in ListTask(twice).items()}
    finally:
        TASKS.unregister("toy-twice")
    split = report["split"]
    assert split["dropped_for_a_shared_prompt"] > 0 and split["train"] == report["train_items"]
    held = {first_prompt(items[i].view.messages) for i in report["rounds"][0]["heldout"]["single"]["correct"]}
    data = [json.loads(line) for line in (tmp_path / "twice" / "round-1" / "data.jsonl").read_text().splitlines()]
    assert data and not {first_prompt(d["prompt"]) for d in data} & held
    assert "train items dropped for asking what a measured item asks" in (tmp_path / "twice" / "report.md").read_text()


def test_a_recipe_names_the_weights_it_measured_and_refuses_others(tmp_path, setup):
    from selfcorrect.errors import ConfigError
    from selfcorrect.models.load import load_model

    settings, spec = setup
    out = tmp_path / "improve"
    improve(settings, spec.model_copy(update={"rounds": 1}), out)
    recipe = read_recipe(out)
    assert recipe.weights == recipe.checkpoint.content_hash() and "+lora:" in recipe.weights
    model = load_model(settings.model_copy(update={"model": f"recipe:{out}"}))  # the files it measured: loads
    asyncio.run(model.aclose())
    adapter = Path(recipe.checkpoint.adapter) / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:-8] + b"\0" * 8)  # another model under the recipe's figures
    with pytest.raises(ConfigError, match="was measured with other weights"):
        load_model(settings.model_copy(update={"model": f"recipe:{out}"}))


def test_the_confirmation_side_is_measured_once_for_the_served_recipe_and_never_touched_before(tmp_path, setup):
    from selfcorrect.store import Store

    settings, spec = setup
    out = tmp_path / "improve"
    report, stages = improve(settings, spec.model_copy(update={"rounds": 1}), out)
    confirm = set(Improvement(settings, spec, out).confirm_ids)
    confirmed = report["confirmation"]
    assert confirm and confirmed["items"] == len(confirm) == report["split"]["confirmation"]
    served = served_round(report["rounds"])
    assert (confirmed["round"], confirmed["strategy"]) == (served["round"], served["best"])
    assert confirmed["base"]["strategy"] == report["rounds"][0]["best"]
    with Store(settings.store) as store:
        touching = [r for r in store.runs() if confirm & set(r.config["item_ids"])]
    assert len(touching) == 2 and all(set(r.config["item_ids"]) == confirm for r in touching)  # the two, at the end
    assert [s for s in stages if s.startswith("confirmation:")] == stages[-2:]
    recipe = read_recipe(out)
    assert recipe.confirmation.items == len(confirm) and recipe.confirmation.base.strategy == confirmed["base"]["strategy"]
    assert "Confirmation (" in (out / "report.md").read_text()
    again, stages = improve(settings, spec.model_copy(update={"rounds": 1}), out)
    assert not stages and again["confirmation"] == confirmed  # measured once


def test_a_shuffled_control_trains_on_the_same_examples_with_other_items_replies(tmp_path, setup):
    settings, spec = setup
    out = tmp_path / "improve"
    report, stages = improve(settings, spec.model_copy(update={"rounds": 1, "control": "shuffled"}), out)
    control = report["rounds"][1]["control"]
    assert control["checkpoint"] == "improve/round-1-control" and control["examples"] > 0
    real = [json.loads(line) for line in (out / "round-1" / "data.jsonl").read_text().splitlines()]
    shuffled = [json.loads(line) for line in (out / "round-1" / "control" / "data.jsonl").read_text().splitlines()]
    assert len(shuffled) + control["left_out"] == len(real)
    assert all(d["label"] == "shuffled" and d["provenance"]["reply_of"] != d["item_id"] for d in shuffled)
    assert {d["item_id"] for d in shuffled} <= {d["item_id"] for d in real}
    # the scripted control answers 7, round 1 answers 2: the right answer on the first 16 items
    versus = control["real_minus_control"]["single"]
    assert control["heldout"]["single"]["accuracy"] == 0 and versus["wrong_to_right"] > 0 and versus["difference"] > 0
    assert report["rounds"][1]["accepted"] and "Control (round 1" in (out / "report.md").read_text()


def test_shuffled_labels_give_every_item_another_item_s_reply():
    from selfcorrect.train.data import Example, shuffled_labels

    examples = [Example(prompt=[{"role": "user", "content": f"q{i}"}], completion=f"The answer is {i}.",
                        item_id=f"i{i}", provenance={"format": fmt}) for i in range(6) for fmt in ("a", "b")]
    examples.append(Example(prompt=[], completion="alone", item_id="i9", provenance={"format": "c"}))
    shuffled, left_out = shuffled_labels(examples, seed=3)
    assert left_out == 1 and len(shuffled) == 12
    for e in shuffled:
        assert e.completion != f"The answer is {e.item_id[1:]}." and e.completion == f"The answer is {e.provenance['reply_of'][1:]}."
    assert shuffled_labels(examples, seed=3) == (shuffled, 1)  # seeded


def test_the_teacher_runs_more_chains_only_where_its_first_two_disagree(tmp_path, setup):
    """Adaptive sampling: with 4 chains, an item whose first two programs print one answer is
    labelled from those two; the other chains are never drawn (the scripted programs all print
    2, so no item needs more). The student samples each item once, and again only where that
    sample missed the label: here its first sample says 2 on the even cases."""
    settings, spec = setup

    def student_hits_even_cases(checkpoint: Checkpoint) -> ScriptedModel:
        def reply(messages, params, k):
            asked = messages[0]["content"]
            if "Python program" in asked:
                return "```python\nprint(2)\n```"
            case = int(re.search(r"case (\d+)", asked).group(1))
            return "The answer is 2." if k == 0 and case % 2 == 0 else "The answer is 5."
        return ScriptedModel(reply, identity=f"even:{checkpoint.name}")

    adaptive = spec.model_copy(update={"rounds": 1, "chains": 4})
    report = asyncio.run(Improvement(settings, adaptive, tmp_path / "adaptive",
                                     engine_factory=student_hits_even_cases).run())
    store = Store(settings.store)
    student = [r for r in store.runs() if r.config["strategies"] in (["single"], ["self-consistency:n=2"])]
    firsts = [r for r in student if r.config["strategies"] == ["single"]]
    rests = [r for r in student if r.config["strategies"] == ["self-consistency:n=2"]]
    asked = lambda run: {g.item_id for g in store.graded_attempts(run_ids=[run.run_id])}  # noqa: E731
    cases = {i.id: int(re.search(r"case (\d+)", i.view.question).group(1)) for i in ListTask(PROBLEMS).items()}
    assert len(firsts) == len(rests) == 1 and len(asked(firsts[0])) == report["train_items"]
    assert asked(rests[0]) == {i for i in asked(firsts[0]) if cases[i] % 2}  # the label (2) missed: again
    assert report["rounds"][1]["train"]["diversity"]["single"] is not None
    teacher_runs = [r for r in store.runs() if any("chains=4" in s for s in r.config["strategies"])]
    assert [r.config["strategies"] for r in teacher_runs] == [["program-aided:chains=4,select=vote,adaptive=2"]]
    attempts = list(store.graded_attempts(run_ids=[teacher_runs[0].run_id]))
    assert attempts and {g.attempt.chain for g in attempts} == {0, 1}
    assert report["rounds"][1]["train"]["labelled"] == report["train_items"]  # two agreeing chains label an item
    fixed = spec.model_copy(update={"rounds": 1, "chains": 4, "adaptive": False})
    improve(settings, fixed, tmp_path / "fixed")
    runs = [r for r in Store(settings.store).runs() if r.config["strategies"] == ["program-aided:chains=4,select=vote"]]
    assert {g.attempt.chain for g in Store(settings.store).graded_attempts(run_ids=[runs[0].run_id])} == {
        0, 1, 2, 3}


def test_a_new_recipe_is_swapped_in_without_a_failed_request(tmp_path, setup):
    """`serve --recipe DIR` watches DIR: round 1's recipe serves; a recipe.json naming another
    checkpoint (the base) is written while requests keep coming; every request is answered,
    each names the checkpoint that answered it (round 1's, then the base's, never mixed back),
    and /health names the incumbent; a recipe whose weights changed is refused and the
    incumbent keeps serving."""
    import concurrent.futures

    from selfcorrect.models.recipe import checkpoint_identity, write_recipe
    from selfcorrect.serve.app import ServeConfig
    from tests.serving import serving

    settings, spec = setup
    out = tmp_path / "improve"
    improve(settings, spec.model_copy(update={"rounds": 1, "confirmation": 0.0}), out)
    first = read_recipe(out)
    lineage = Lineage(settings.store)
    base = lineage.get("base")
    lineage.close()
    weights, gguf = checkpoint_identity(base)
    second = first.model_copy(update={"round": 0, "checkpoint": base, "weights": weights, "gguf": gguf,
                                      "strategy": "single"})
    config = ServeConfig(strategy=first.strategy, recipe=str(out), recipe_strategy=True, watch_seconds=0.1)
    served = settings.model_copy(update={"model": f"recipe:{out}"})
    with serving(served, config) as (url, server):
        def ask(n):
            reply = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
                "model": "default", "max_tokens": 4, "messages": [{"role": "user", "content": f"What is {n} + 1?"}]})
            return reply.status_code, reply.json().get("selfcorrect", {}).get("checkpoint")

        before = server.model_name
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answered = list(pool.map(ask, range(8)))
            write_recipe(second, out)  # while requests are in flight
            answered += list(pool.map(ask, range(8, 40)))
            deadline = time.monotonic() + 60
            while httpx.get(f"{url}/health").json()["recipe"]["swaps"] < 1 and time.monotonic() < deadline:
                time.sleep(0.1)
            answered += list(pool.map(ask, range(40, 48)))
        health = httpx.get(f"{url}/health").json()
        assert [status for status, _ in answered] == [200] * 48  # not one request failed or was lost
        seen = [checkpoint for _, checkpoint in answered]
        after = health["recipe"]["incumbent"]["identity"]
        assert seen[0] == before and seen[-1] == after != before and set(seen) == {before, after}
        assert health["model"] == after and health["recipe"]["incumbent"]["round"] == 0
        assert health["strategy"] == "single" and health["recipe"]["retiring"] == 0  # the old model closed
        assert "+lora" in before and "+lora" not in after

        broken = second.model_copy(update={"weights": "0" * 16, "round": 1})
        write_recipe(broken, out)
        deadline = time.monotonic() + 30
        while httpx.get(f"{url}/health").json()["recipe"]["swap_error"] is None and time.monotonic() < deadline:
            time.sleep(0.1)
        health = httpx.get(f"{url}/health").json()
        assert "measured with other weights" in health["recipe"]["swap_error"]
        assert health["model"] == after and ask(99) == (200, after)  # the incumbent kept serving
