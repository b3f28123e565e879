"""The slow path's pieces on a tiny random model: training data from stored graded attempts
(no held-out item can reach it), and a LoRA round of TRL's SFT that lowers the loss on it,
saved as an adapter the transformers backend loads."""

import asyncio
import json
from pathlib import Path

import pytest

pytest.importorskip("trl")

from selfcorrect.config import load_settings  # noqa: E402
from selfcorrect.errors import ConfigError  # noqa: E402
from selfcorrect.runner import EvalSpec, Evaluation  # noqa: E402
from selfcorrect.store import Store  # noqa: E402
from selfcorrect.train.data import build_rft, check_heldout, data_hash, split, to_dataset  # noqa: E402
from tests.scripts import ListTask, Script, asked  # noqa: E402

PROBLEMS = [(f"What is {a} + {b}?", str(a + b)) for a in range(1, 9) for b in (2, 5)]


def sampled(tmp_path):
    """Five samples per problem from a scripted model that is right on samples 0, 1 (the same
    reply as 0) and 3."""
    def reply(last, messages, k):
        a, b = (int(w.strip("?")) for w in last.split() if w.strip("?").isdigit())
        return {0: f"The answer is {a + b}.", 3: f"The answer is {a + b}, since {a} + {b} = {a + b}.",
                1: f"The answer is {a + b}."}.get(k, f"The answer is {a + b + 1}.")  # 1 repeats 0
    script = Script([(asked("What is"), reply)])
    settings = load_settings(store=tmp_path / "store.sqlite")
    evaluation = Evaluation(settings, EvalSpec(strategies=["self-consistency:n=5"], reference=False),
                            task=ListTask(PROBLEMS), engine=script.model)
    asyncio.run(evaluation.run())
    return Store(tmp_path / "store.sqlite")


def test_the_split_is_by_item_and_stable_and_nothing_held_out_is_trained_on(tmp_path):
    ids = [f"list/{i}" for i in range(len(PROBLEMS))]
    train, held = split(ids, 0.5, seed=1)
    assert set(train) | set(held) == set(ids) and not set(train) & set(held) and train and held
    assert split(ids[:7], 0.5, seed=1)[1] == [i for i in held if i in ids[:7]]  # a side never depends on the others
    store = sampled(tmp_path)
    examples = build_rft(store, task="list", train_ids=train, per_item=1)
    assert {e.item_id for e in examples} == set(train)  # only train items, one each (the cap)
    assert all(e.completion.startswith("The answer is") and e.label == "gold" for e in examples)
    assert all(e.provenance["strategy"] == "self-consistency:n=5" for e in examples)
    two = build_rft(store, task="list", train_ids=train, per_item=4)
    assert len(two) == 2 * len(train)  # samples 0 and 3 were right: distinct replies only
    check_heldout(two, held)
    with pytest.raises(ConfigError, match="held-out items are in the training set"):
        check_heldout(two, train[:1])
    assert data_hash(two) == data_hash(build_rft(store, task="list", train_ids=train, per_item=4))
    with pytest.raises(ConfigError, match="leaves nothing"):
        split(ids, 1.0)


def test_sft_learns_the_replies_and_a_lora_adapter_serves(tmp_path):
    from selfcorrect.models.base import SamplingParams
    from selfcorrect.models.hf import HFModel
    from selfcorrect.train.sft import SFTSettings, train_sft
    from tests.tinymodel import make_tiny_model

    base = make_tiny_model(tmp_path / "tiny")
    store = sampled(tmp_path)
    examples = build_rft(store, task="list", train_ids=[f"list/{i}" for i in range(len(PROBLEMS))], per_item=2)
    dataset = to_dataset(examples)
    full = train_sft(base, dataset, tmp_path / "full", SFTSettings(lora=False, epochs=8, learning_rate=3e-3,
                                                                   save_steps=100), progress=False)
    assert full["steps"] == 8 * -(-len(examples) // 8) and full["tokens"] > 0
    assert full["log"][-1] < full["log"][0] * 0.8, full["log"]  # it learned the replies
    assert (tmp_path / "full" / "model" / "model.safetensors").is_file()

    lora = train_sft(base, dataset, tmp_path / "lora", SFTSettings(epochs=1, save_steps=100), progress=False)
    assert lora["lora"] and (tmp_path / "lora" / "model" / "adapter_config.json").is_file()
    model = HFModel(base, tmp_path / "lora" / "model")
    try:
        [reply] = asyncio.run(model.generate(examples[0].prompt, SamplingParams(temperature=0.0, max_tokens=4)))
        assert "+lora:" in model.identity and reply.completion_tokens > 0
    finally:
        model.close()


def test_a_killed_training_resumes_from_its_last_checkpoint(tmp_path):
    from selfcorrect.train.sft import SFTSettings, train_sft
    from tests.tinymodel import make_tiny_model

    base = make_tiny_model(tmp_path / "tiny")
    store = sampled(tmp_path)
    dataset = to_dataset(build_rft(store, task="list", train_ids=[f"list/{i}" for i in range(len(PROBLEMS))]))
    settings = SFTSettings(lora=False, epochs=2, learning_rate=1e-3, save_steps=2)
    first = train_sft(base, dataset, tmp_path / "run", settings, progress=False)
    assert not first["resumed"] and any((tmp_path / "run" / "steps").glob("checkpoint-*"))
    # as after kill -9 halfway: the first checkpoint is there, the rest is not
    import shutil

    checkpoints = sorted((tmp_path / "run" / "steps").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert len(checkpoints) >= 2
    for later in checkpoints[1:]:
        shutil.rmtree(later)
    shutil.rmtree(tmp_path / "run" / "model")
    again = train_sft(base, dataset, tmp_path / "run", settings, progress=False)
    assert again["resumed"] and again["steps"] == first["steps"]
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    # its speed counts only the tokens of the steps it ran after the checkpoint, not all of them
    resumed_from = int(checkpoints[0].name.split("-")[1])
    assert again["resumed_from_step"] == resumed_from and first["resumed_from_step"] == 0
    done_here = again["tokens"] * (again["steps"] - resumed_from) / again["steps"]
    assert again["tokens_per_s"] == pytest.approx(done_here / again["seconds"], rel=0.01)
    assert again["tokens_per_s"] < again["tokens"] / again["seconds"]


def test_label_free_data_uses_no_gold_and_measures_its_pseudo_labels_after(tmp_path):
    from selfcorrect.train.data import build_label_free, pseudo_label_accuracy

    # samples: 0, 1 and 3 right (majority 3 of 5 when 1 repeats 0), 2 and 4 say a + b + 1
    store = sampled(tmp_path)
    ids = [f"list/{i}" for i in range(len(PROBLEMS))]
    voted, record = build_label_free(store, task="list", train_ids=ids, run_ids=None,
                                     sample_strategy="self-consistency:n=5", labels="vote", agreement=0.5)
    assert {e.label for e in voted} == {"vote"} and all(e.provenance["pseudo_label"] for e in voted)
    assert len(voted) == 2 * len(ids)  # the two distinct replies that give the majority answer
    assert pseudo_label_accuracy(record) == 1.0  # measured after, from the grades
    strict, none = build_label_free(store, task="list", train_ids=ids, run_ids=None,
                                    sample_strategy="self-consistency:n=5", labels="vote", agreement=0.8)
    assert strict == [] and none == {}  # no answer reaches 80% agreement


def test_program_labels_come_from_the_models_own_programs(tmp_path):
    from selfcorrect.train.data import build_label_free, pseudo_label_accuracy

    def reply(last, messages, k):
        numbers = [int(w.strip("?")) for w in last.split() if w.strip("?").isdigit()]
        a, b = numbers[-2:]
        if "Python program" in last:  # the program is right on the first four items only
            return f"```python\nprint({a} + {b + (0 if a < 3 else 1)})\n```"
        return f"The answer is {a + b + k % 2}."  # samples alternate right and wrong
    script = Script([(lambda last, m, k: "What is" in last, reply)])
    settings = load_settings(store=tmp_path / "store.sqlite", sandbox_workers=1)
    evaluation = Evaluation(settings, EvalSpec(strategies=["self-consistency:n=4", "program-aided"], reference=False),
                            task=ListTask(PROBLEMS), engine=script.model)
    asyncio.run(evaluation.run())
    store = Store(tmp_path / "store.sqlite")
    examples, record = build_label_free(store, task="list", train_ids=[f"list/{i}" for i in range(len(PROBLEMS))],
                                        run_ids=None, sample_strategy="self-consistency:n=4", labels="program")
    assert len(record) == len(PROBLEMS) and {e.label for e in examples} == {"program"}
    right = sum(r["right"] for r in record.values())
    assert right == 4 and pseudo_label_accuracy(record) == 4 / len(PROBLEMS)  # the wrong programs mislabel
    # every kept sample agrees with its program's answer, right or wrong
    assert all(e.completion == f"The answer is {e.provenance['pseudo_label']}." for e in examples)


def test_correction_traces_teach_the_fix_and_keeping_a_right_answer(tmp_path):
    from selfcorrect.train.data import build_correction

    def reply(last, messages, k):
        if "Check this answer" in last:
            return "Looks fine.\nScore: 2"
        numbers = [int(w.strip("?.,")) for w in messages[0]["content"].split() if w.strip("?.,").isdigit()]
        a, b = numbers[:2]
        if "Using the feedback" in last:
            return f"Fixed it. The answer is {a + b}."
        return f"The answer is {a + b + (1 if a % 2 else 0)}."  # odd a: wrong first
    script = Script([(lambda last, m, k: True, reply)])
    settings = load_settings(store=tmp_path / "store.sqlite")
    evaluation = Evaluation(settings, EvalSpec(strategies=["self-refine:rounds=1"], reference=False),
                            task=ListTask(PROBLEMS), engine=script.model)
    asyncio.run(evaluation.run())
    store = Store(tmp_path / "store.sqlite")
    ids = [f"list/{i}" for i in range(len(PROBLEMS))]
    examples = build_correction(store, task="list", train_ids=ids, keep=0.5)
    fixes = [e for e in examples if e.provenance["kind"] == "fix"]
    keeps = [e for e in examples if e.provenance["kind"] == "keep"]
    assert len(fixes) == len(PROBLEMS) // 2 and len(keeps) == len(fixes) // 2  # odd a were wrong first
    # the prompt is the revision's conversation: it holds the wrong attempt and the feedback
    assert all(any(m["role"] == "assistant" for m in e.prompt) for e in fixes)
    assert all(e.completion.startswith("Fixed it.") for e in examples)
    assert build_correction(store, task="list", train_ids=ids[:2]) and all(
        e.item_id in ids[:2] for e in build_correction(store, task="list", train_ids=ids[:2]))


def test_pair_traces_show_a_wrong_sample_then_the_review_turn_and_teach_a_right_one(tmp_path):
    from selfcorrect.train.data import build_correction_pairs
    from selfcorrect.train.score import REVIEW

    store = sampled(tmp_path)  # per item: two distinct right replies, one distinct wrong one
    ids = [f"list/{i}" for i in range(len(PROBLEMS))]
    train, held = split(ids, 0.5, seed=1)
    examples = build_correction_pairs(store, task="list", train_ids=train, review=REVIEW["math"])
    fixes = [e for e in examples if e.provenance["kind"] == "fix"]
    keeps = [e for e in examples if e.provenance["kind"] == "keep"]
    assert len(fixes) == len(train) and len(keeps) == len(fixes)  # keep=1: one right→right per fix
    assert {e.item_id for e in keeps} == set(train)  # the cut takes one per item first
    for e in examples:
        shown, review = e.prompt[-2], e.prompt[-1]
        assert shown["role"] == "assistant" and review == {"role": "user", "content": REVIEW["math"]}
        gold = str(sum(int(w.strip("?")) for w in e.prompt[0]["content"].split() if w.strip("?").isdigit()))
        assert f"The answer is {gold}" in e.completion  # the reply to learn is always a right one
        assert (f"The answer is {gold}" in shown["content"]) == (e.provenance["kind"] == "keep")
        assert shown["content"] != e.completion  # a keep shows one right reply and teaches the other
    check_heldout(examples, held)
    assert len(build_correction_pairs(store, task="list", train_ids=train, review="Again?", keep=0)) == len(train)


def test_preference_pairs_and_a_dpo_round(tmp_path):
    from selfcorrect.train.data import build_dpo, to_preference_dataset
    from selfcorrect.train.sft import SFTSettings, train_dpo
    from tests.tinymodel import make_tiny_model

    store = sampled(tmp_path)  # five samples per prompt: 0, 1, 3 right; 2, 4 wrong
    ids = [f"list/{i}" for i in range(len(PROBLEMS))]
    pairs = build_dpo(store, task="list", train_ids=ids[:8], per_item=2)
    assert len(pairs) == 8 and {p.source for p in pairs} == {"samples"}  # one distinct wrong reply per item
    assert all(p.chosen != p.rejected and p.item_id in ids[:8] for p in pairs)
    first = PROBLEMS[int(pairs[0].item_id.split("/")[1])]
    assert pairs[0].chosen.startswith(f"The answer is {first[1]}") and not pairs[0].rejected.startswith(
        f"The answer is {first[1]}.")
    base = make_tiny_model(tmp_path / "tiny")
    metrics = train_dpo(base, to_preference_dataset(pairs), tmp_path / "dpo",
                        SFTSettings(epochs=6, learning_rate=5e-3, save_steps=100), progress=False)
    assert metrics["pairs"] == 8 and (tmp_path / "dpo" / "model" / "adapter_config.json").is_file()
    assert metrics["log"] and metrics["log"][-1] < metrics["log"][0]  # the preference loss falls


def test_star_rationales_reach_the_hinted_answer_and_train_without_the_hint():
    from selfcorrect.models.base import SamplingParams
    from selfcorrect.train.star import rationalize

    def reply(last, messages, k):
        a, b = (int(w.strip("?")) for w in last.split()[:5] if w.strip("?").isdigit())
        if "Hint:" not in last:
            return "I do not know."
        return {0: f"{a} + {b} = {a + b}. The answer is {a + b}.",
                1: f"The hint says the correct answer is {a + b}. The answer is {a + b}.",  # cites the hint
                2: f"I think it is {a + b + 1}. The answer is {a + b + 1}.",  # misses it
                3: f"{a} + {b} = {a + b + 1}. The answer is {a + b}."}[k]  # a wrong step before it
    task = ListTask(PROBLEMS)
    items = task.items()
    model = Script([(asked("What is"), reply)]).model
    params = SamplingParams(n=4, temperature=0.7)
    hints = {i.id: i.answer for i in items[:4]}
    examples, record = asyncio.run(rationalize(model, task, items, hints, label="gold", params=params))
    assert [e.item_id for e in examples] == [i.id for i in items[:4]]  # one kept per hinted item, none other
    assert all(record[i]["tried"] == 4 and record[i]["kept"] == 1 for i in hints)
    for example, item in zip(examples, items):
        assert example.prompt == list(item.view.messages) and "Hint" not in str(example.prompt)  # trained unhinted
        assert example.completion.endswith(f"The answer is {item.answer}.") and "hint" not in example.completion
        assert example.oracle and example.label == "gold"
    # label-free: the hint is a pseudo-label, and a reply is kept when it gives the pseudo-label
    wrong = {items[0].id: str(int(items[0].answer) + 1)}
    examples, _ = asyncio.run(rationalize(model, task, items, wrong, label="program", params=params))
    assert [e.completion.split()[-1] for e in examples] == [f"{wrong[items[0].id]}."] and not examples[0].oracle
    with pytest.raises(ConfigError, match="math answers"):
        asyncio.run(rationalize(model, type("Code", (ListTask,), {"kind": "code"})(PROBLEMS), items, hints,
                                label="gold", params=params))


RATIONALES = [json.loads(line) for line in (Path(__file__).parent.parent / "data" / "rationales.jsonl").open()]


@pytest.mark.parametrize("case", RATIONALES, ids=[c["note"] for c in RATIONALES])
def test_a_rationale_is_kept_only_when_its_equations_hold(case):
    from selfcorrect.train.star import equations_hold

    assert equations_hold(case["text"]) is case["holds"]


def test_self_judged_pairs_use_the_models_scores_and_measure_the_judge_against_the_check(tmp_path):
    from selfcorrect.models.base import SamplingParams
    from selfcorrect.runner import results_by_strategy
    from selfcorrect.train.judge import judged_pairs

    settings = load_settings(store=tmp_path / "store.sqlite")

    def sample(last, messages, k):
        a, b = (int(w.strip("?")) for w in last.split() if w.strip("?").isdigit())
        return {0: f"The answer is {a + b}.", 3: f"The answer is {a + b}, since {a} + {b} = {a + b}."}.get(
            k, f"The answer is {a + b + 1}.")

    def judge(last, messages, k):
        a, b = (int(w.strip("?")) for w in last.split("Proposed answer:")[0].split() if w.strip("?").isdigit())
        proposed = last.split("Proposed answer:")[1]
        if "since" in proposed:
            return "It looks fine.\nScore: N"  # the placeholder echoed: no score
        return "Score: 3" if f"is {a + b}." in proposed else "Score: 8"  # a judge that prefers wrong answers
    script = Script([(asked("Proposed answer:"), judge), (asked("What is"), sample)])
    task = ListTask(PROBLEMS)
    evaluation = Evaluation(settings, EvalSpec(strategies=["self-consistency:n=5"], reference=False),
                            task=task, engine=script.model)
    run = asyncio.run(evaluation.run())
    rows = results_by_strategy(evaluation.store, run)["self-consistency:n=5"]
    pairs, judge_record = asyncio.run(judged_pairs(script.model, task.items(), rows, SamplingParams(temperature=0.0)))
    assert len(pairs) == len(PROBLEMS) and all(p.source == "self-judged" for p in pairs)
    # the pairs follow the model's scores, not the check: here every pair is backwards
    assert judge_record["pairs_backwards"] == len(PROBLEMS) and judge_record["pairs_as_the_check"] == 0
    assert judge_record["auc"] == 0.0 and judge_record["comparisons"] == len(PROBLEMS)
    assert judge_record["no_score"] == 1 / 3  # one of three distinct samples per item had no readable score
    assert all(p.prompt == list(i.view.messages) for p, i in zip(pairs, task.items()))


def test_a_rounds_data_file_trains_under_accelerate_launch(tmp_path):
    """The job a user runs on several GPUs, here under `accelerate launch` with one CPU process."""
    import subprocess
    import sys

    from selfcorrect.train.data import write_jsonl
    from tests.tinymodel import make_tiny_model

    base = make_tiny_model(tmp_path / "tiny")
    store = sampled(tmp_path)
    examples = build_rft(store, task="list", train_ids=[f"list/{i}" for i in range(len(PROBLEMS))], per_item=2)
    data = write_jsonl(examples, tmp_path / "round-1" / "data.jsonl")
    accelerate = Path(sys.executable).with_name("accelerate")
    done = subprocess.run([str(accelerate), "launch", "--cpu", "--num_processes", "1", "--num_machines", "1",
                           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "selfcorrect.cli", "fit",
                           str(data), "--base", str(base), "--out", str(tmp_path / "fit"), "--full", "--epochs", "4",
                           "--learning-rate", "3e-3"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    metrics = json.loads(done.stdout.strip().splitlines()[-1])
    assert metrics["examples"] == len(examples) and metrics["steps"] == 4 * -(-len(examples) // 8)
    assert (tmp_path / "fit" / "model" / "model.safetensors").is_file()

    (tmp_path / "bad.jsonl").write_text(data.read_text() + '{"prompt": []}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:\d+ is not a training example"):
        from selfcorrect.train.data import read_jsonl

        read_jsonl(tmp_path / "bad.jsonl")


def test_rarely_solved_items_can_weigh_more(tmp_path):
    def reply(last, messages, k):
        a, b = (int(w.strip("?")) for w in last.split() if w.strip("?").isdigit())
        right = k == 0 if a % 2 else k < 3  # odd a: right in 1 of 5 samples; even a: 3 of 5
        return f"The answer is {a + b if right else a + b + 1}. ({k})"
    settings = load_settings(store=tmp_path / "store.sqlite")
    evaluation = Evaluation(settings, EvalSpec(strategies=["self-consistency:n=5"], reference=False),
                            task=ListTask(PROBLEMS), engine=Script([(asked("What is"), reply)]).model)
    asyncio.run(evaluation.run())
    store = Store(tmp_path / "store.sqlite")
    ids = [f"list/{i}" for i in range(len(PROBLEMS))]
    plain = build_rft(store, task="list", train_ids=ids, per_item=4)
    boosted = build_rft(store, task="list", train_ids=ids, per_item=4, rare_boost=3)
    count = lambda examples, odd: sum(int(e.prompt[-1]["content"].split("What is ")[1].split()[0]) % 2 == odd
                                      for e in examples)
    assert count(plain, 1) == len(PROBLEMS) // 2 and count(plain, 0) == 3 * len(PROBLEMS) // 2
    assert count(boosted, 1) == 3 * count(plain, 1) and count(boosted, 0) == count(plain, 0)


def test_a_round_trains_under_a_two_process_launcher_as_in_one(tmp_path):
    """`--launcher`: the round's training as `accelerate launch --multi_gpu --num_processes 2`
    around `selfcorrect fit` (with no GPU: two CPU processes under torchrun, DDP on gloo; its
    `--cpu` would run one process), data parallel (2 x 4 examples a step), against one process
    (8 a step) on the same data: the same steps, the loss within noise, the model where the
    round expects it."""
    import sys

    from selfcorrect.train.sft import SFTSettings, fit
    from tests.tinymodel import make_tiny_model

    base = make_tiny_model(tmp_path / "tiny")
    examples = build_rft(sampled(tmp_path), task="list", train_ids=[f"list/{i}" for i in range(len(PROBLEMS))],
                         per_item=2)
    settings = dict(lora=False, epochs=4, learning_rate=3e-3, precision="fp32")
    one = fit(base, examples, tmp_path / "one", SFTSettings(batch_size=8, **settings), launcher="")
    launcher = (f"{Path(sys.executable).with_name('accelerate')} launch --multi_gpu --num_processes 2 "
                "--num_machines 1 --mixed_precision no --dynamo_backend no")
    two = fit(base, examples, tmp_path / "two", SFTSettings(batch_size=4, **settings), launcher=launcher)
    assert two["launcher"] == launcher and two["steps"] == one["steps"] and two["examples"] == len(examples)
    assert len(two["log"]) == len(one["log"]) and two["log"][-1] < two["log"][0]  # it learned
    # the same examples in each step, the gradients averaged over the two processes: the same curve
    assert all(abs(a - b) < 0.01 for a, b in zip(one["log"], two["log"])), (one["log"], two["log"])
    assert (tmp_path / "two" / "model" / "model.safetensors").is_file()
    assert "--num_processes 2" in (tmp_path / "two" / "launcher.log").read_text()

    with pytest.raises(ConfigError, match="failed .status 2.*launcher.log"):
        fit(base, examples, tmp_path / "bad", SFTSettings(batch_size=4, **settings),
            launcher=f"{Path(sys.executable).with_name('accelerate')} launch --no-such-flag")
    with pytest.raises(ConfigError, match="not installed here"):
        fit(base, examples, tmp_path / "none", SFTSettings(**settings), launcher="no-such-launcher --x")
