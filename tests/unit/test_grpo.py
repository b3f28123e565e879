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
