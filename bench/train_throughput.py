"""Training throughput: selfcorrect's trainer (`train_sft`, as `selfcorrect train` and `fit`
run it) against the same TRL job written directly (SFTTrainer with the same config and data),
for LoRA and for full fine-tuning of the embedded model. Target: the harness costs ≤ 5%.

Each job runs in a process of its own, so that its peak memory (max RSS) is its own; the two
sides alternate, so that a busy machine slows both alike. The data: the arithmetic task's
train items, the gold reply in the model's own answer format (the figure is about speed,
not what is learned).

    python bench/train_throughput.py [--model PATH] [--examples 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from checkpoint import add_option, checked


def examples(count: int) -> list:
    from selfcorrect.tasks import parse_task
    from selfcorrect.train.data import Example

    items = parse_task(f"arithmetic:n={count}", None).items()
    return [Example(prompt=list(i.view.messages), completion=f"{i.view.question.split('What is ')[-1].rstrip('?')} = "
                    f"{i.answer}. The answer is {i.answer}.", item_id=i.id) for i in items]


def one(side: str, lora: bool, model: Path, count: int, out: Path) -> dict:
    """One training job; returns its figures."""
    import torch

    from selfcorrect.train.data import to_dataset
    from selfcorrect.train.sft import SFTSettings, train_sft

    dataset = to_dataset(examples(count))
    # fp32 as the direct side runs (bench/precision.py compares precisions)
    settings = SFTSettings(lora=lora, epochs=1, learning_rate=2e-4 if lora else 1e-5, batch_size=8, precision="fp32")
    started = time.perf_counter()
    if side == "harness":
        metrics = train_sft(model, dataset, out, settings, progress=False)
        seconds, tokens = metrics["seconds"], metrics["tokens"]
    else:
        from peft import LoraConfig
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import SFTConfig, SFTTrainer

        tokenizer = AutoTokenizer.from_pretrained(model)
        network = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        config = SFTConfig(output_dir=str(out / "steps"), num_train_epochs=1, per_device_train_batch_size=8,
                           learning_rate=settings.learning_rate, logging_steps=1, save_strategy="steps",
                           save_steps=settings.save_steps, save_total_limit=2, report_to=[], seed=0,
                           max_length=settings.max_length, bf16=False, use_cpu=True, dataloader_num_workers=0,
                           disable_tqdm=True, lr_scheduler_type="cosine", warmup_steps=0.05, completion_only_loss=True)
        peft = (LoraConfig(r=settings.rank, lora_alpha=2 * settings.rank, lora_dropout=0.0, target_modules="all-linear",
                           task_type="CAUSAL_LM") if lora else None)
        trainer = SFTTrainer(model=network, args=config, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft)
        begun = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - begun
        trainer.save_model(str(out / "model"))
        tokens = sum(len(ids) for ids in trainer.train_dataset["input_ids"])
    wall = time.perf_counter() - started
    return {"side": side, "lora": lora, "tokens": tokens, "train_seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1), "wall_seconds": round(wall, 2),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser()
    add_option(parser)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--one", nargs=2, metavar=("SIDE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    model = checked(args.model)
    if args.one:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(one(args.one[0], args.one[1] == "lora", model, args.examples, Path(folder))))
        return
    results = []
    for _ in range(args.repeats):
        for mode in ("lora", "full"):
            for side in ("harness", "direct"):
                done = subprocess.run([sys.executable, __file__, "--model", str(model), "--examples", str(args.examples),
                                       "--one", side, mode], capture_output=True, text=True, check=True)
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(results[-1]), flush=True)
    for mode in (True, False):
        by_side = {side: [r for r in results if r["lora"] is mode and r["side"] == side] for side in ("harness", "direct")}
        speed = {side: sum(r["tokens_per_s"] for r in rows) / len(rows) for side, rows in by_side.items()}
        wall = {side: sum(r["wall_seconds"] for r in rows) / len(rows) for side, rows in by_side.items()}
        peak = {side: max(r["peak_rss_mb"] for r in rows) for side, rows in by_side.items()}
        print(f"{'LoRA' if mode else 'full'}: harness {speed['harness']:.1f} tok/s, direct TRL {speed['direct']:.1f} tok/s "
              f"(ratio {speed['harness'] / speed['direct']:.3f}); wall {wall['harness']:.1f} s vs {wall['direct']:.1f} s; "
              f"peak RSS {peak['harness']} MB vs {peak['direct']} MB")


if __name__ == "__main__":
    main()
