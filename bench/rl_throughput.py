"""RL throughput: selfcorrect's GRPO (`train_grpo`, as `selfcorrect train --method grpo` runs
it: the task's check as reward, TRL's signals kept) against a plain `GRPOTrainer` written
directly on the same items with the same config and a reward function of four lines. Target:
the harness costs ≤ 5% in tokens per second (rollout and training together). The two-attempt
self-correction trainer (`train_score`) is measured in the same run for reference: it
generates two attempts and a review turn per prompt, so its figure is not an overhead.

Each job runs in a process of its own (its peak memory is its own); the sides alternate, so a
busy machine slows them alike. Tokens: TRL's own count of the tokens it processed
(`num_tokens`: prompts and completions), read the same way for every side.

    python bench/rl_throughput.py [--model PATH] [--steps 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from checkpoint import add_option, checked

GENERATIONS, PROMPTS_PER_STEP, MAX_COMPLETION, TEMPERATURE, BETA, LEARNING_RATE = 8, 2, 96, 1.0, 0.04, 2e-5


def train_items():
    from selfcorrect.tasks import parse_task

    return parse_task("arithmetic:n=64", None).items()


def one(side: str, model: Path, steps: int, out: Path) -> dict:
    """One training job; returns its figures."""
    from selfcorrect.tasks import parse_task

    items, task = train_items(), parse_task("arithmetic", None)
    started = time.perf_counter()
    if side == "harness":
        from selfcorrect.train.grpo import GRPOSettings, train_grpo

        metrics = train_grpo(model, task, items, out, GRPOSettings(
            steps=steps, generations=GENERATIONS, prompts_per_step=PROMPTS_PER_STEP, max_completion_length=MAX_COMPLETION,
            temperature=TEMPERATURE, beta=BETA, learning_rate=LEARNING_RATE, save_steps=1000, precision="fp32"),
            progress=False)
        seconds, tokens = metrics["seconds"], metrics["tokens"]
    elif side == "two-attempt":
        from selfcorrect.train.score import SCoReSettings, train_score

        metrics = train_score(model, task, items, out, SCoReSettings(
            stage1_steps=steps // 2, stage2_steps=steps - steps // 2, generations=GENERATIONS // 2,
            max_completion_length=MAX_COMPLETION, temperature=TEMPERATURE, learning_rate=LEARNING_RATE,
            save_steps=1000, precision="fp32"), progress=False)
        seconds, tokens = metrics["seconds"], metrics["tokens"]
    else:
        import torch
        from datasets import Dataset
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import GRPOConfig, GRPOTrainer

        gold = {item.id: item.answer for item in items}

        def check(prompts, completions, item_id, **_):
            found = [re.findall(r"answer is\s*(-?\d+)", c[-1]["content"]) for c in completions]
            return [1.0 if f and f[-1] == gold[i] else 0.0 for f, i in zip(found, item_id)]

        tokenizer = AutoTokenizer.from_pretrained(model, padding_side="left")
        network = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        config = GRPOConfig(output_dir=str(out / "steps"), learning_rate=LEARNING_RATE, logging_steps=1,
                            save_strategy="steps", save_steps=1000, report_to=[], seed=0, bf16=False, use_cpu=True,
                            dataloader_num_workers=0, disable_tqdm=True, max_steps=steps,
                            per_device_train_batch_size=GENERATIONS * PROMPTS_PER_STEP, num_generations=GENERATIONS,
                            max_completion_length=MAX_COMPLETION, temperature=TEMPERATURE, top_k=40, beta=BETA)
        dataset = Dataset.from_list([{"prompt": list(item.view.messages), "item_id": item.id} for item in items])
        trainer = GRPOTrainer(model=network, reward_funcs=[check], args=config, train_dataset=dataset,
                              processing_class=tokenizer,
                              peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                     task_type="CAUSAL_LM"))
        begun = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - begun
        trainer.save_model(str(out / "model"))
        tokens = max(e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e)
    wall = time.perf_counter() - started
    return {"side": side, "steps": steps, "tokens": int(tokens), "train_seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1), "wall_seconds": round(wall, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser()
    add_option(parser)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", metavar="SIDE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    model = checked(args.model)
    if args.one:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(one(args.one, model, args.steps, Path(folder))))
        return
    results = []
    for _ in range(args.repeats):
        for side in ("harness", "direct", "two-attempt"):
            done = subprocess.run([sys.executable, __file__, "--model", str(model), "--steps", str(args.steps),
                                   "--one", side], capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{side} failed:\n{done.stderr[-3000:]}")
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    by_side = {side: [r for r in results if r["side"] == side] for side in ("harness", "direct", "two-attempt")}
    speed = {side: sum(r["tokens_per_s"] for r in rows) / len(rows) for side, rows in by_side.items()}
    wall = {side: sum(r["wall_seconds"] for r in rows) / len(rows) for side, rows in by_side.items()}
    peak = {side: max(r["peak_rss_mb"] for r in rows) for side, rows in by_side.items()}
    print(f"GRPO, LoRA, {args.steps} steps × {PROMPTS_PER_STEP} prompts × {GENERATIONS} completions: harness "
          f"{speed['harness']:.1f} tok/s, direct TRL {speed['direct']:.1f} tok/s (ratio "
          f"{speed['harness'] / speed['direct']:.3f}); wall {wall['harness']:.1f} s vs {wall['direct']:.1f} s; peak RSS "
          f"{peak['harness']} MB vs {peak['direct']} MB")
    print(f"two-attempt (score), {GENERATIONS // 2} per prompt: {speed['two-attempt']:.1f} tok/s, wall "
          f"{wall['two-attempt']:.1f} s, peak RSS {peak['two-attempt']} MB")


if __name__ == "__main__":
    main()
