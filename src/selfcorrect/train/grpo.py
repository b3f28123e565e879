"""Reinforcement learning with verifiable rewards: TRL's GRPOTrainer, rewarded by the task's
own check of each completion (the answer reader and the gold answer of train items, or the
hidden tests run in the sandbox), never by a model.

A 135M model mostly gets every completion of a prompt right or every one wrong, and a group
whose rewards are all equal gives GRPO no gradient; two optional shaping terms make some of
them differ, both from the reply alone:
    format          a reward for a reply the reader can read an answer from (not cut off at
                    the cap, an answer marker or a final equation)
    partial credit  for numeric answers, up to 0.5 for being near the gold answer
                    (0.5 · max(0, 1 − |answer − gold| / |gold|))
The share of groups with zero reward variance is recorded every step (TRL's
`frac_reward_zero_std`), with the reward, its spread, the entropy and the clipped ratio.

Only train items reach the trainer; the held-out side is measured by the rounds around it
(train/rounds.py), as for every other method.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
from dataclasses import dataclass
from pathlib import Path

from selfcorrect.errors import ConfigError
from selfcorrect.precision import Precision
from selfcorrect.tasks import Item, Task
from selfcorrect.tasks.kinds import read
from selfcorrect.train.sft import load_policy, run_trainer, trainer_args
from selfcorrect.verify.answers import is_numeric

SIGNALS = ("reward", "reward_std", "frac_reward_zero_std", "entropy", "clip_ratio/region_mean", "kl", "loss")


@dataclass
class OnlineSettings:
    """What every training rewarded online by the task's check shares (GRPO, SCoRe)."""

    lora: bool = True
    rank: int = 16
    learning_rate: float = 2e-5
    generations: int = 8  # completions per prompt: the group
    prompts_per_step: int = 2
    max_completion_length: int = 96
    temperature: float = 1.0
    save_steps: int = 20
    seed: int = 0
    precision: Precision = "auto"


@dataclass
class GRPOSettings(OnlineSettings):
    steps: int = 40
    beta: float = 0.04  # the KL penalty towards the starting model
    format_reward: float = 0.0  # weight of the format term (0: off)
    partial_credit: bool = False
    vllm_server: str = ""  # TRL's vLLM server mode: rollouts from `trl vllm-serve` at this URL


class TaskReward:
    """TRL reward function: the task's check of each completion, 1.0 or 0.0, plus the optional
    shaping terms. Called by the trainer with the batch's completions and the dataset's
    `item_id` column."""

    __name__ = "check"

    def __init__(self, task: Task, items: list[Item], max_completion_length: int, *, format_weight: float = 0.0,
                 partial_credit: bool = False, sandbox=None):
        self.task, self.items = task, {item.id: item for item in items}
        self.cap, self.format_weight, self.partial_credit = max_completion_length, format_weight, partial_credit
        self.sandbox = sandbox
        self._pool = concurrent.futures.ThreadPoolExecutor(1)  # a loop of its own: the trainer may run inside one

    def __call__(self, prompts, completions, completion_ids, item_id, **_) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        finishes = ["length" if len(ids) >= self.cap else "stop" for ids in completion_ids]
        items = [self.items[i] for i in item_id]
        return self._pool.submit(asyncio.run, self._score(items, texts, finishes)).result()

    async def _score(self, items: list[Item], texts: list[str], finishes: list[str]) -> list[float]:
        checks = await asyncio.gather(*(self.task.check(item, text, self.sandbox, finish)
                                        for item, text, finish in zip(items, texts, finishes)))
        rewards = []
        for item, text, finish, check in zip(items, texts, finishes, checks):
            reward = 1.0 if check.correct else self._partial(item, check.answer)
            if self.format_weight and read(item.view, text, finish).answer is not None:
                reward += self.format_weight
            rewards.append(reward)
        return rewards

    def _partial(self, item: Item, answer: str | None) -> float:
        if not self.partial_credit or answer is None or item.answer is None or not is_numeric(item.answer):
            return 0.0
        try:
            got, gold = float(answer.replace(",", "")), float(item.answer.replace(",", ""))
        except ValueError:
            return 0.0
        if not math.isfinite(got):
            return 0.0
        return 0.5 * max(0.0, 1.0 - abs(got - gold) / max(abs(gold), 1.0))

    def close(self) -> None:
        self._pool.shutdown()


def grpo_config(settings: GRPOSettings, out: Path, progress: bool = True):
    """TRL's GRPO settings; with `vllm_server`, rollouts from TRL's vLLM server (`trl vllm-serve`),
    weights synced to it after each step."""
    from trl import GRPOConfig

    return GRPOConfig(
        **trainer_args(out, settings.learning_rate, settings.seed, settings.save_steps, progress, settings.precision),
        max_steps=settings.steps, per_device_train_batch_size=settings.generations * settings.prompts_per_step,
        num_generations=settings.generations, max_completion_length=settings.max_completion_length,
        temperature=settings.temperature, top_k=40, beta=settings.beta,
        **({"use_vllm": True, "vllm_mode": "server", "vllm_server_base_url": settings.vllm_server}
           if settings.vllm_server else {}))


def train_grpo(base: Path, task: Task, items: list[Item], out: Path, settings: GRPOSettings = GRPOSettings(), *,
               progress: bool = True) -> dict:
    """GRPO on `items` (train items only) from the checkpoint at `base`; the adapter (LoRA) or
    the model goes to `out/model`. Resumes from `out/steps` after a kill. Returns the metrics,
    with TRL's signals per step."""
    if not items:
        raise ConfigError("no train items for GRPO", "give the train side some items (--limit, --heldout)")
    tokenizer, model, peft = load_policy(base, settings.lora, settings.rank, padding_side="left",
                                         precision=settings.precision)
    from datasets import Dataset
    from trl import GRPOTrainer

    from selfcorrect.sandbox import Sandbox

    config = grpo_config(settings, out, progress)
    dataset = Dataset.from_list([{"prompt": list(item.view.messages), "item_id": item.id} for item in items])
    sandbox = Sandbox() if task.kind == "code" else None
    reward = TaskReward(task, items, settings.max_completion_length, format_weight=settings.format_reward,
                        partial_credit=settings.partial_credit, sandbox=sandbox)
    try:
        trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=config, train_dataset=dataset,
                              processing_class=tokenizer, peft_config=peft)
        result, seconds, resumed_from = run_trainer(trainer, tokenizer, out)
    finally:
        reward.close()
        if sandbox is not None:
            sandbox.close()
    log = [{key: entry[key] for key in SIGNALS if key in entry} | {"step": entry.get("step")}
           for entry in trainer.state.log_history if "reward" in entry]
    completions = settings.steps * settings.generations * settings.prompts_per_step
    metrics = online_metrics(trainer, result, seconds, resumed_from, settings, log)
    return {**metrics, "completions": completions,
            "completions_per_s": round(completions / metrics["step_seconds"], 2) if metrics["step_seconds"] else None}


def online_metrics(trainer, result, seconds: float, resumed_from: int, settings: OnlineSettings, log: list) -> dict:
    """The metrics every online training reports: loss, steps, speed over the steps' own time,
    the share of groups whose rewards were all equal (no signal), the logged signals."""
    zero = [entry["frac_reward_zero_std"] for entry in log if "frac_reward_zero_std" in entry]
    tokens, stepped = processed(trainer)
    return {"loss": result.training_loss, "steps": result.global_step, "seconds": round(seconds, 1),
            "resumed": resumed_from > 0, "lora": settings.lora, "tokens": tokens, "step_seconds": round(stepped, 1),
            "tokens_per_s": round(tokens / stepped, 1) if stepped else None,
            "zero_variance_groups": sum(zero) / len(zero) if zero else None, "signals": log,
            "log": [entry["loss"] for entry in log if "loss" in entry]}


def processed(trainer) -> tuple[int, float]:
    """The prompt and completion tokens the trainer went through (TRL's own count) and the
    seconds its steps took (TRL's `step_time`): over every step, also those before a resume."""
    log = trainer.state.log_history
    return (int(max((e["num_tokens"] for e in log if "num_tokens" in e), default=0)),
            sum(e["step_time"] for e in log if "step_time" in e))
