"""RL with verifiable rewards: the reward is the task's own check (a restated question or a
reply cut at the cap earns nothing), the optional shaping terms, and a GRPO run on a tiny
model that records TRL's signals and saves an adapter."""

import pytest

pytest.importorskip("trl")

from selfcorrect.train.grpo import GRPOSettings, TaskReward, train_grpo  # noqa: E402
from tests.scripts import ListTask  # noqa: E402
from tests.tinymodel import make_tiny_model  # noqa: E402

TASK = ListTask([("What is 64 * 49?", "3136"), ("What is 5 - 3?", "2")])


def rewards(texts, ids, lengths, **options):
    reward = TaskReward(TASK, TASK.items(), max_completion_length=10, **options)
    try:
        completions = [[{"role": "assistant", "content": t}] for t in texts]
        return reward(prompts=None, completions=completions, completion_ids=[[0] * n for n in lengths], item_id=ids)
    finally:
        reward.close()


def test_the_reward_is_the_tasks_check():
    first, second = (i.id for i in TASK.items())
    texts = ["64 * 49 = 3136. The answer is 3136.", "The answer is 64 * 49.", "The answer is 3135.",
             "Step 1: 64 * 49 is about", "5 - 3 = 2. The answer is 2."]
    ids = [first, first, first, first, second]
    assert rewards(texts, ids, [5, 5, 5, 10, 5]) == [1.0, 0.0, 0.0, 0.0, 1.0]  # restated, wrong, cut off: nothing
    shaped = rewards(texts, ids, [5, 5, 5, 10, 5], format_weight=0.1, partial_credit=True)
    assert shaped[0] == pytest.approx(1.1) and shaped[1] == 0.0  # an expression is no answer, not even in form
    assert shaped[2] == pytest.approx(0.1 + 0.5 * (1 - 1 / 3136))  # near the gold, readable
    assert shaped[3] == 0.0 and shaped[4] == pytest.approx(1.1)


def test_grpo_trains_on_the_check_and_records_its_signals(tmp_path):
    base = make_tiny_model(tmp_path / "tiny")
    settings = GRPOSettings(steps=3, generations=4, prompts_per_step=2, max_completion_length=8, learning_rate=1e-3,
                            format_reward=0.1, partial_credit=True, save_steps=100)
    metrics = train_grpo(base, TASK, TASK.items(), tmp_path / "grpo", settings, progress=False)
    assert metrics["steps"] == 3 and len(metrics["signals"]) == 3
    assert all({"reward", "reward_std", "frac_reward_zero_std", "entropy"} <= set(s) for s in metrics["signals"])
    assert 0.0 <= metrics["zero_variance_groups"] <= 1.0
    # TRL's count of what it processed: every row's prompt and completion (the bench's throughput)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    shortest = min(len(tokenizer(tokenizer.apply_chat_template(list(i.view.messages), tokenize=False,
                                                               add_generation_prompt=True))["input_ids"])
                   for i in TASK.items())
    assert 3 * 8 * shortest <= metrics["tokens"] <= 3 * 8 * (shortest + 50 + 8)
    seconds = metrics["step_seconds"]  # TRL's step times, rounded to 0.1 s
    assert 0 < seconds <= metrics["seconds"] + 0.1
    assert metrics["tokens"] / (seconds + 0.05) <= metrics["tokens_per_s"] <= metrics["tokens"] / max(seconds - 0.05, 1e-3)
    assert (tmp_path / "grpo" / "model" / "adapter_config.json").is_file()


def test_two_attempt_rollouts_mask_the_review_turn_and_reward_by_stage(tmp_path):
    from transformers import AutoTokenizer

    from selfcorrect.train.score import REVIEW, SCoReReward, SCoReSettings, TwoAttemptRollout, train_score

    base = make_tiny_model(tmp_path / "tiny")
    tokenizer = AutoTokenizer.from_pretrained(base, padding_side="left")
    rollout = TwoAttemptRollout(tokenizer, "math", max_new_tokens=6, temperature=1.0)
    prompt = [{"role": "user", "content": "What is 5 - 3?"}]
    turn = rollout._review_turn(prompt, rollout.review(prompt, "2"), ended=True)
    assert REVIEW["math"] in tokenizer.decode(turn) and tokenizer.decode(turn).rstrip().endswith("assistant")
    assert turn[0] != tokenizer.eos_token_id  # attempt 1 ended with its own end token: not repeated
    assert rollout._review_turn([{"role": "user", "content": "x"}], REVIEW["math"], ended=False)[0] == tokenizer.eos_token_id

    first, second = (i.id for i in TASK.items())
    reward = SCoReReward(TASK, TASK.items(), 10, stage1_steps=5, alpha=2.0)
    try:
        kwargs = dict(prompts=None, completions=None, completion_ids=None, item_id=[first, second, second],
                      attempt_1=["The answer is 3136.", "The answer is 7.", "The answer is 2."],
                      attempt_2=["The answer is 3136.", "The answer is 2.", "The answer is 9."],
                      length_1=[5, 5, 5], length_2=[5, 5, 5])
        early, late = type("S", (), {"global_step": 0}), type("S", (), {"global_step": 5})
        assert reward(trainer_state=early, **kwargs) == [1.0, 1.0, 0.0]  # Stage I: attempt 2 only
        assert reward(trainer_state=late, **kwargs) == [2.0, 3.0, -1.0]  # r1 + r2 + 2 (r2 - r1)
    finally:
        reward.close()

    settings = SCoReSettings(stage1_steps=2, stage2_steps=1, generations=2, prompts_per_step=2,
                             max_completion_length=6, learning_rate=1e-3, save_steps=100)
    metrics = train_score(base, TASK, TASK.items(), tmp_path / "score", settings, progress=False)
    assert metrics["steps"] == 3 and [s["stage"] for s in metrics["signals"]] == [1, 1, 2]
    assert all("attempt_1_accuracy" in s and "attempt_2_accuracy" in s for s in metrics["signals"])
    assert (tmp_path / "score" / "model" / "adapter_config.json").is_file()


def test_the_review_turn_can_show_the_visible_tests_results(tmp_path):
    """feedback="tests": the review turn carries what attempt 1's code gave on the item's visible
    tests, worded as self-correct:feedback=tests words it at inference."""
    import json

    from transformers import AutoTokenizer

    from selfcorrect.sandbox.harness import RunResult, TestOutcome
    from selfcorrect.tasks import load_task
    from selfcorrect.train.score import TwoAttemptRollout

    path = tmp_path / "add.jsonl"
    path.write_text(json.dumps({"prompt": "Write add(a, b).", "tests": ["assert add(1, 2) == 3"],
                                "visible_tests": ["assert add(1, 2) == 3"]}) + "\n")
    [item] = load_task(str(path)).items()
    ran = []

    class Sandbox:  # what the real one answers for `return a - b`
        async def arun(self, program, tests, setup=""):
            ran.append((program, [t.name for t in tests]))
            return RunResult(loaded=True, tests=(TestOutcome("visible 1", False, 0.0, error_type="AssertionError",
                                                             message="add(1, 2) returned -1, expected 3"),))

    tokenizer = AutoTokenizer.from_pretrained(make_tiny_model(tmp_path / "tiny"), padding_side="left")
    rollout = TwoAttemptRollout(tokenizer, "code", 8, 1.0, feedback="tests", items=[item], sandbox=Sandbox())
    try:
        prompt = list(item.view.messages)
        review = rollout.review(prompt, "```python\ndef add(a, b):\n    return a - b\n```")
        assert review.startswith("Your code was run on the tests:\nFailed: add(1, 2) returned -1, expected 3\n\n")
        assert ran == [("def add(a, b):\n    return a - b\n", ["visible 1"])]
        assert rollout.review(prompt, "I cannot do that.").startswith("Your code was run on the tests:\n"
                                                                      "Your reply contained no code.")
        assert len(ran) == 1  # no code: nothing run
    finally:
        rollout.close()


def test_grpo_at_scale_on_verl_and_on_trl_s_vllm_server(tmp_path):
    """`--export verl DIR`: verl's row schema on the train and held-out sides, a reward that is
    the task's own check (the same verdicts as the in-process reward), the command with GRPO
    and group filtering; `--vllm-server URL`: TRL's GRPO in vLLM server mode."""
    import subprocess
    import sys

    import pandas as pd

    from selfcorrect.tasks import parse_task
    from selfcorrect.train.grpo import grpo_config
    from selfcorrect.train.verl import compute_score, export

    task = parse_task("arithmetic:n=10")
    items = task.items()
    written = export(tmp_path / "verl", task_spec="arithmetic:n=10", data=None, train_items=items[:6],
                     held_items=items[6:], kind="math", base=tmp_path / "base", steps=5, generations=4,
                     learning_rate=1e-5, beta=0.01, temperature=0.7, max_response_length=192, lora=True, rank=16)
    train = pd.read_parquet(tmp_path / "verl" / "train.parquet")
    assert list(train.columns) == ["data_source", "prompt", "ability", "reward_model", "extra_info"] and len(train) == 6
    row = train.iloc[0]
    assert list(row["prompt"]) == list(items[0].view.messages) and row["reward_model"]["ground_truth"] == items[0].answer
    assert set(pd.read_parquet(tmp_path / "verl" / "heldout.parquet")["extra_info"].map(lambda e: e["item_id"])) == {
        i.id for i in items[6:]}
    info = dict(row["extra_info"])
    gold = items[0].answer
    assert compute_score(row["data_source"], f"So it is {gold}. The answer is {gold}.", gold, info) == 1.0
    assert compute_score(row["data_source"], f"The answer is {int(gold) + 1}.", gold, info) == 0.0
    with pytest.raises(ValueError, match="needs extra_info"):
        compute_score(row["data_source"], "The answer is 1.", gold, None)
    reward = tmp_path / "verl" / "reward.py"
    loaded = subprocess.run([sys.executable, "-c", f"import runpy; f = runpy.run_path({str(reward)!r})['compute_score']; "
                             f"print(f('x', 'The answer is {gold}.', '{gold}', {info!r}))"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert loaded.stdout.strip() == "1.0", loaded.stderr  # as verl loads it: by path
    run = (tmp_path / "verl" / "run.sh").read_text()
    for setting in ("python -m verl.trainer.main_ppo", "algorithm.adv_estimator=grpo", "algorithm.filter_groups.enable=True",
                    'custom_reward_function.path="$here/reward.py"', "actor_rollout_ref.rollout.n=4",
                    f"actor_rollout_ref.model.path={tmp_path / 'base'}"):
        assert setting in run, setting
    assert written["train"] == 6 and subprocess.run(["bash", "-n", str(tmp_path / "verl" / "run.sh")]).returncode == 0

    server = grpo_config(GRPOSettings(vllm_server="http://10.0.0.2:8000", steps=1), tmp_path / "out")
    assert server.use_vllm and server.vllm_mode == "server" and server.vllm_server_base_url == "http://10.0.0.2:8000"
    assert not grpo_config(GRPOSettings(steps=1), tmp_path / "out").use_vllm


def test_export_verl_is_for_grpo_and_names_its_trainer(tmp_path):
    from typer.testing import CliRunner

    from selfcorrect.cli import app

    store = str(tmp_path / "store.sqlite")
    done = CliRunner().invoke(app, ["--store", store, "train", "--method", "rft", "--export", "verl", str(tmp_path)])
    assert done.exit_code == 1 and "--export verl writes a GRPO run, not --method rft" in str(done.exception)
    done = CliRunner().invoke(app, ["--store", store, "train", "--method", "grpo", "--export", "openrlhf", str(tmp_path)])
    assert done.exit_code == 1 and "--export openrlhf is not a trainer selfcorrect writes for" in str(done.exception)
