"""Training the model to correct itself: two attempts per prompt, on-policy, rewarded by the
task's check (SCoRe, Kumar et al., 2024), on TRL's GRPOTrainer through a custom rollout.

Each rollout is attempt 1, then the `self-correct` strategy's turn asking the model to review
its answer and correct it, then attempt 2. The review turn says nothing about whether attempt
1 was right (intrinsic, `feedback="none"`), or, for code, shows what the item's visible tests
gave when attempt 1's code ran in the sandbox (external, `feedback="tests"`), exactly as
`self-correct:feedback=tests` shows it at inference. It is masked out of the loss
(`env_mask`): only the model's own tokens are trained.

    Stage I   reward r2 (attempt 2 right) under a strong KL penalty (`beta_stage1`), so that
              attempt 1 stays near the starting model while attempt 2 learns to fix it
    Stage II  reward r1 + r2 + alpha * (r2 - r1): both attempts, with a bonus for improving

One departure from the paper, said where it is reported: TRL applies one KL weight to every
trained token, so Stage I's strong penalty holds attempt 2 near the start as well as attempt
1 (SCoRe puts it on attempt 1 only).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
from dataclasses import dataclass
from pathlib import Path

from selfcorrect.errors import ConfigError
from selfcorrect.sandbox import Sandbox
from selfcorrect.strategies.session import NO_CODE, describe_run, visible_cases
from selfcorrect.strategies.refine import SelfCorrect
from selfcorrect.tasks import Item, Task
from selfcorrect.tasks.kinds import read
from selfcorrect.train.grpo import SIGNALS, OnlineSettings, TaskReward, online_metrics
from selfcorrect.train.sft import load_policy, run_trainer, trainer_args

# the review turn of the self-correct strategy, which measures the trained model
REVIEW = {kind: SelfCorrect.prompts[f"review_{kind}"] for kind in SelfCorrect.kinds}
REVIEW_TESTS = SelfCorrect.prompts["review_tests"]


@dataclass
class SCoReSettings(OnlineSettings):
    stage1_steps: int = 20
    stage2_steps: int = 20
    alpha: float = 1.0  # Stage II's bonus for improving
    beta_stage1: float = 0.5
    beta_stage2: float = 0.04
    generations: int = 4  # completions per prompt (max_completion_length is per attempt)
    feedback: str = "none"  # the review turn: "none" (intrinsic) or "tests" (code: the visible tests' results)


class TwoAttemptRollout:
    """TRL rollout function: attempt 1, the review turn, attempt 2, one row per prompt row.
    With feedback "tests", `items` and `sandbox` give each row's visible tests to run."""

    def __init__(self, tokenizer, kind: str, max_new_tokens: int, temperature: float, *, feedback: str = "none",
                 items: list[Item] = (), sandbox=None):
        self.tokenizer, self.kind = tokenizer, kind
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.feedback, self.sandbox = feedback, sandbox
        self.items = {json.dumps(list(item.view.messages)): item for item in items}
        self._pool = concurrent.futures.ThreadPoolExecutor(1)  # the sandbox is async; the trainer may run in a loop

    def review(self, prompt: list, attempt_text: str) -> str:
        """What the review turn says after this attempt."""
        if self.feedback != "tests":
            return REVIEW[self.kind]
        item = self.items[json.dumps(list(prompt))]
        code = read(item.view, attempt_text).answer
        shown = NO_CODE if code is None else describe_run(self._pool.submit(
            asyncio.run, self.sandbox.arun(code, visible_cases(item.view.visible_tests), setup=item.view.setup)).result())
        return REVIEW_TESTS.format(feedback=shown.strip())

    def close(self) -> None:
        self._pool.shutdown()

    def __call__(self, prompts: list, trainer) -> dict:
        import torch

        model = trainer.accelerator.unwrap_model(trainer.model)
        firsts = [self._ids(self.tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False))
                  for p in prompts]
        with torch.no_grad():
            attempt1 = self._generate(model, firsts)
            texts1 = self.tokenizer.batch_decode(attempt1, skip_special_tokens=True)
            turns = [self._review_turn(p, self.review(p, text), ended=bool(a1) and a1[-1] == self.tokenizer.eos_token_id)
                     for p, text, a1 in zip(prompts, texts1, attempt1)]
            seconds = [first + a1 + turn for first, a1, turn in zip(firsts, attempt1, turns)]
            attempt2 = self._generate(model, seconds)
        texts2 = self.tokenizer.batch_decode(attempt2, skip_special_tokens=True)
        return {"prompt_ids": firsts, "completion_ids": [a1 + t + a2 for a1, t, a2 in zip(attempt1, turns, attempt2)],
                "logprobs": None,
                "env_mask": [[1] * len(a1) + [0] * len(t) + [1] * len(a2) for a1, t, a2 in zip(attempt1, turns, attempt2)],
                "attempt_1": texts1, "attempt_2": texts2,
                "length_1": [len(a) for a in attempt1], "length_2": [len(a) for a in attempt2]}

    def _generate(self, model, rows: list[list[int]]) -> list[list[int]]:
        """Sampled continuations of `rows` (left-padded together), cut after the end token."""
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=self.temperature,
                             top_k=40, max_new_tokens=self.max_new_tokens, pad_token_id=pad)[:, width:].tolist()
        ends = {self.tokenizer.eos_token_id, pad}
        cut = []
        for row in out:
            end = next((i for i, t in enumerate(row) if t in ends), None)
            cut.append(row[: end + 1] if end is not None else row)  # the end token is the model's own
        return cut

    def _review_turn(self, prompt: list, review: str, ended: bool) -> list[int]:
        """The template's tokens between attempt 1 and attempt 2: the end of the assistant turn,
        the review request, the start of the next assistant turn (the end token of attempt 1,
        when the model wrote one, is already in its tokens: it is not repeated)."""
        marker = "\x00ATTEMPT\x00"
        text = self.tokenizer.apply_chat_template(
            [*prompt, {"role": "assistant", "content": marker}, {"role": "user", "content": review}],
            add_generation_prompt=True, tokenize=False)
        after = text[text.index(marker) + len(marker):]
        eos = self.tokenizer.eos_token
        if eos and after.startswith(eos):
            rest = self._ids(after[len(eos):])
            return rest if ended else [self.tokenizer.eos_token_id, *rest]
        return self._ids(after)

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


class SCoReReward(TaskReward):
    """r2 in Stage I; r1 + r2 + alpha * (r2 - r1) in Stage II (the stage by the trainer's step).
    Logs the accuracy of each attempt and the flips between them, every step."""

    __name__ = "score"

    def __init__(self, task: Task, items: list[Item], max_completion_length: int, stage1_steps: int, alpha: float,
                 sandbox=None):
        super().__init__(task, items, max_completion_length, sandbox=sandbox)
        self.stage1_steps, self.alpha = stage1_steps, alpha

    def __call__(self, prompts, completions, completion_ids, item_id, attempt_1, attempt_2, length_1, length_2,
                 trainer_state=None, log_metric=None, **_) -> list[float]:
        items = [self.items[i] for i in item_id]
        finish = lambda lengths: ["length" if n >= self.cap else "stop" for n in lengths]  # noqa: E731
        r1 = self._pool.submit(asyncio.run, self._score(items, attempt_1, finish(length_1))).result()
        r2 = self._pool.submit(asyncio.run, self._score(items, attempt_2, finish(length_2))).result()
        stage = 1 if trainer_state is not None and trainer_state.global_step < self.stage1_steps else 2
        if log_metric is not None:
            n = len(r1)
            log_metric("attempt_1_accuracy", sum(r1) / n)
            log_metric("attempt_2_accuracy", sum(r2) / n)
            log_metric("wrong_to_right", sum(a < b for a, b in zip(r1, r2)) / n)
            log_metric("right_to_wrong", sum(a > b for a, b in zip(r1, r2)) / n)
            log_metric("stage", stage)
        if stage == 1:
            return r2
        return [a + b + self.alpha * (b - a) for a, b in zip(r1, r2)]


def train_score(base: Path, task: Task, items: list[Item], out: Path, settings: SCoReSettings = SCoReSettings(), *,
                progress: bool = True) -> dict:
    """Both stages on `items` (train items only) from the checkpoint at `base`; the result goes
    to `out/model`. Returns the metrics with TRL's signals and the attempts' accuracies per step."""
    if not items:
        raise ConfigError("no train items for self-correction training", "give the train side some items")
    if settings.feedback == "tests" and (task.kind != "code" or not all(i.view.visible_tests for i in items)):
        raise ConfigError("a review turn with the visible tests' results needs a code task whose items have "
                          "visible tests", "use feedback none, or a code task such as mbpp")
    tokenizer, model, peft = load_policy(base, settings.lora, settings.rank, padding_side="left",
                                         precision=settings.precision)
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    class Stages(TrainerCallback):
        """Stage II's KL weight from its first step."""

        def on_step_begin(self, args, state, control, **kwargs):
            trainer.beta = settings.beta_stage1 if state.global_step < settings.stage1_steps else settings.beta_stage2

    config = GRPOConfig(
        **trainer_args(out, settings.learning_rate, settings.seed, settings.save_steps, progress, settings.precision),
        max_steps=settings.stage1_steps + settings.stage2_steps,
        per_device_train_batch_size=settings.generations * settings.prompts_per_step,
        num_generations=settings.generations, max_completion_length=3 * settings.max_completion_length,
        beta=settings.beta_stage1)
    dataset = Dataset.from_list([{"prompt": list(item.view.messages), "item_id": item.id} for item in items])
    sandbox = Sandbox() if task.kind == "code" else None
    reward = SCoReReward(task, items, settings.max_completion_length, settings.stage1_steps, settings.alpha,
                         sandbox=sandbox)
    rollout = TwoAttemptRollout(tokenizer, task.kind, settings.max_completion_length, settings.temperature,
                                feedback=settings.feedback, items=items, sandbox=sandbox)
    try:
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=config, train_dataset=dataset,
                              processing_class=tokenizer, peft_config=peft, rollout_func=rollout, callbacks=[Stages()])
        result, seconds, resumed_from = run_trainer(trainer, tokenizer, out)
    finally:
        reward.close()
        rollout.close()
        if sandbox is not None:
            sandbox.close()
    keys = (*SIGNALS, "attempt_1_accuracy", "attempt_2_accuracy", "wrong_to_right", "right_to_wrong", "stage")
    log = [{key: entry[key] for key in keys if key in entry} | {"step": entry.get("step")}
           for entry in trainer.state.log_history if "reward" in entry]
    return {**online_metrics(trainer, result, seconds, resumed_from, settings, log),
            "review": ("external: the visible tests' results of attempt 1" if settings.feedback == "tests"
                       else "intrinsic: no word on whether attempt 1 was right"),
            "kl_note": "Stage I's KL weight applies to both attempts (TRL has one weight per token), not to "
                       "attempt 1 only as in SCoRe"}
