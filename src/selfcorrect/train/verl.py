"""GRPO at scale on verl: `selfcorrect train --method grpo --export verl DIR` writes what verl's
PPO entry point (`python -m verl.trainer.main_ppo`) takes, and trains nothing here.

    DIR/train.parquet    the train side: verl's row schema (data_source, prompt as chat messages,
                         ability, reward_model.ground_truth, extra_info with the item's id)
    DIR/heldout.parquet  the held-out side, for verl's validation only (never trained on)
    DIR/reward.py        `compute_score(data_source, solution_str, ground_truth, extra_info)`:
                         the task's own check (selfcorrect's answer reader; its sandbox for code)
    DIR/run.sh           the command: GRPO advantages, groups with no spread filtered out
                         (`algorithm.filter_groups.enable=True`), the run's settings

The check is the one `train --method grpo` rewards with in process (grpo.py `TaskReward`), so
the rewards mean the same on one machine and on a verl cluster.
"""

from __future__ import annotations

import functools
import json
import shlex
from pathlib import Path

from selfcorrect.tasks import Item, parse_task
from selfcorrect.tasks.kinds import KINDS
from selfcorrect.train.grpo import TaskReward

RUN = """#!/usr/bin/env bash
# GRPO on verl for selfcorrect's {task}: written by `selfcorrect train --method grpo --export verl`.
# Set GPUS (per node) and NODES for your cluster; arguments after the script override any setting
# (e.g. trainer.logger=[console,wandb]). The reward calls selfcorrect: install it beside verl.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
exec python -m verl.trainer.main_ppo \\
{arguments} \\
  trainer.n_gpus_per_node="${{GPUS:-8}}" trainer.nnodes="${{NODES:-1}}" "$@"
"""


def rows(task_spec: str, items: list[Item], split: str, data: str | None, kind: str) -> list[dict]:
    """verl's rows for these items; extra_info names the task and item the reward checks."""
    return [{"data_source": f"selfcorrect/{task_spec}", "prompt": list(item.view.messages), "ability": kind,
             "reward_model": {"style": "rule", "ground_truth": item.answer or ""},
             "extra_info": {"split": split, "index": k, "item_id": item.id, "task": task_spec, "data": data or ""}}
            for k, item in enumerate(items)]


def export(out: Path, *, task_spec: str, data: str | None, train_items: list[Item], held_items: list[Item],
           kind: str, base: Path, steps: int, generations: int, learning_rate: float, beta: float,
           temperature: float, max_response_length: int, lora: bool, rank: int) -> dict:
    """Write the parquet files, the reward and the command; what was written."""
    from datasets import Dataset

    out.mkdir(parents=True, exist_ok=True)
    for name, items, split in (("train", train_items, "train"), ("heldout", held_items, "test")):
        Dataset.from_list(rows(task_spec, items, split, data, kind)).to_parquet(str(out / f"{name}.parquet"))
    (out / "reward.py").write_text(
        '"""verl\'s reward for selfcorrect: the task\'s own check (selfcorrect.train.verl.compute_score)."""\n\n'
        "from selfcorrect.train.verl import compute_score  # noqa: F401\n")
    settings = {
        "algorithm.adv_estimator": "grpo",
        # DAPO's dynamic sampling; `++` adds it where a verl version's base config lacks the key
        "++algorithm.filter_groups.enable": "True",
        "data.train_files": "$here/train.parquet", "data.val_files": "$here/heldout.parquet",
        "data.prompt_key": "prompt", "data.max_response_length": max_response_length,
        "data.train_batch_size": max(1, min(len(train_items), 256)),
        "actor_rollout_ref.model.path": str(base),
        "actor_rollout_ref.model.lora_rank": rank if lora else 0,
        "actor_rollout_ref.actor.optim.lr": learning_rate,
        "actor_rollout_ref.actor.use_kl_loss": "True", "actor_rollout_ref.actor.kl_loss_coef": beta,
        "actor_rollout_ref.rollout.name": "vllm", "actor_rollout_ref.rollout.n": generations,
        "actor_rollout_ref.rollout.temperature": temperature,
        "custom_reward_function.path": "$here/reward.py", "custom_reward_function.name": "compute_score",
        "trainer.total_training_steps": steps, "trainer.project_name": "selfcorrect",
        "trainer.experiment_name": f"grpo-{task_spec}".replace("/", "-"), "trainer.logger": "[console]",
    }
    arguments = " \\\n".join(f"  {key}={_shell(value)}" for key, value in settings.items())
    run = out / "run.sh"
    run.write_text(RUN.format(task=task_spec, arguments=arguments))
    run.chmod(0o755)
    return {"folder": str(out), "train": len(train_items), "heldout": len(held_items), "command": str(run),
            "settings": settings}


def _shell(value) -> str:
    """A value on the command line: paths beside the script expand `$here`, the rest quoted."""
    text = str(value)
    return f'"{text}"' if text.startswith("$here/") else shlex.quote(text)


@functools.lru_cache(maxsize=8)
def _reward(task_spec: str, data: str) -> TaskReward:
    """The in-process GRPO reward (grpo.py) for a task, one per task and process: its sandbox
    (for code) and its event loop are made once, not per reply."""
    task = parse_task(task_spec, data or None)
    sandbox = None
    if task.kind == "code":
        from selfcorrect.sandbox import Sandbox

        sandbox = Sandbox()
    return TaskReward(task, task.items(), max_completion_length=KINDS[task.kind].max_tokens, sandbox=sandbox)


def compute_score(data_source: str, solution_str: str, ground_truth: str, extra_info: dict | None = None) -> float:
    """1.0 when the task's check accepts the reply, else 0.0 (verl's reward signature): the
    reward `train --method grpo` gives in process, so the rewards mean the same on verl."""
    if not extra_info or "item_id" not in extra_info:
        raise ValueError(f"a selfcorrect row needs extra_info with task and item_id (got {json.dumps(extra_info)})")
    reward = _reward(extra_info["task"], extra_info.get("data") or "")
    # verl hands over the decoded reply, not its tokens: it finished ("stop"), as the check reads it
    return reward(None, [solution_str], [[]], [extra_info["item_id"]])[0]
