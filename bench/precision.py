"""fp32 against bf16, side by side in one run, on this CPU: the slow path's torch work as
selfcorrect runs it (`--precision fp32|bf16`).

    sft-lora   train_sft, LoRA (the frozen base in bf16, the adapter fp32 under autocast)
    sft-full   train_sft, full fine-tuning (fp32 master weights under bf16 autocast)
    grpo       train_grpo, LoRA: rollouts and updates (TRL's token count)
    generate   the transformers engine, 8 sequences decoded together (no early stop)
    prm        a PRM's forward passes over arithmetic solutions (the search scorer)

Each job runs in a process of its own (its peak RSS is its own), fp32 and bf16 alternating so
that a busy machine slows both alike; the training jobs also give their loss curves. Needs
`selfcorrect models export`.

    python bench/precision.py [--model PATH] [--jobs sft-lora,sft-full,grpo,generate,prm] [--repeats 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from checkpoint import add_option, checked

JOBS = ("sft-lora", "sft-full", "grpo", "generate", "prm")


def one(job: str, precision: str, model: Path, out: Path) -> dict:
    import torch

    figures: dict = {}
    if job.startswith("sft"):
        from train_throughput import examples

        from selfcorrect.train.data import to_dataset
        from selfcorrect.train.sft import SFTSettings, train_sft

        lora = job == "sft-lora"
        metrics = train_sft(model, to_dataset(examples(64)), out, SFTSettings(
            lora=lora, epochs=1, learning_rate=2e-4 if lora else 1e-5, batch_size=8, precision=precision), progress=False)
        figures = {"tokens": metrics["tokens"], "seconds": metrics["seconds"], "loss": [round(x, 3) for x in metrics["log"]]}
    elif job == "grpo":
        from rl_throughput import BETA, GENERATIONS, LEARNING_RATE, MAX_COMPLETION, PROMPTS_PER_STEP, TEMPERATURE, train_items

        from selfcorrect.tasks import parse_task
        from selfcorrect.train.grpo import GRPOSettings, train_grpo

        metrics = train_grpo(model, parse_task("arithmetic", None), train_items(), out, GRPOSettings(
            steps=4, generations=GENERATIONS, prompts_per_step=PROMPTS_PER_STEP, max_completion_length=MAX_COMPLETION,
            temperature=TEMPERATURE, beta=BETA, learning_rate=LEARNING_RATE, save_steps=1000, precision=precision),
            progress=False)
        figures = {"tokens": metrics["tokens"], "seconds": metrics["seconds"], "loss": [round(x, 4) for x in metrics["log"]]}
    elif job == "generate":
        from hf_generate import QUESTIONS

        from selfcorrect.models.base import SamplingParams
        from selfcorrect.models.hf import HFModel

        engine = HFModel(model, batch=8, precision=precision)
        engine._stops = {-1}  # no end-of-sequence: every sequence makes the whole cap
        params = SamplingParams(temperature=0.7, top_k=40, max_tokens=96)

        async def draw(seed: int) -> int:
            replies = await asyncio.gather(*(engine.generate([{"role": "user", "content": q}], params.replace(seed=seed + i))
                                             for i, q in enumerate(QUESTIONS)))
            return sum(r[0].completion_tokens for r in replies)

        asyncio.run(draw(100))  # warm up
        started = time.perf_counter()
        tokens = sum(asyncio.run(draw(k * 10)) for k in range(3))
        figures = {"tokens": tokens, "seconds": round(time.perf_counter() - started, 2)}
        engine.close()
    elif job == "prm":
        from selfcorrect.tasks.arithmetic import Arithmetic
        from selfcorrect.verify.learned import encode, load_classifier
        from selfcorrect.verify.steps import split_steps

        tokenizer, network = load_classifier(model, "prm", precision)
        network.eval()
        items = Arithmetic(n=64).items()
        solutions = [(list(i.view.messages), split_steps(f"{i.view.question.split('What is ')[-1].rstrip('?')} = "
                                                         f"{i.answer}. The answer is {i.answer}.")) for i in items]
        encoded = [encode(tokenizer, prompt, steps, 2048)[0] for prompt, steps in solutions]
        with torch.no_grad():
            network(input_ids=torch.tensor([encoded[0]]))  # warm up
            started = time.perf_counter()
            for ids in encoded:
                network(input_ids=torch.tensor([ids]))
        figures = {"tokens": sum(len(ids) for ids in encoded), "seconds": round(time.perf_counter() - started, 2),
                   "steps": sum(len(s) for _, s in solutions)}
    return {"job": job, "precision": precision, **figures, "tokens_per_s": round(figures["tokens"] / figures["seconds"], 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def main() -> None:
    parser = argparse.ArgumentParser()
    add_option(parser)
    parser.add_argument("--jobs", default=",".join(JOBS))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--one", nargs=2, metavar=("JOB", "PRECISION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    model = checked(args.model)
    if args.one:
        with tempfile.TemporaryDirectory() as folder:
            print(json.dumps(one(*args.one, model, Path(folder))))
        return
    from selfcorrect.precision import describe

    print(json.dumps({"machine": describe()}), flush=True)
    results = []
    for _ in range(args.repeats):
        for job in args.jobs.split(","):
            for precision in ("fp32", "bf16"):
                done = subprocess.run([sys.executable, __file__, "--model", str(model), "--one", job, precision],
                                      capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"{job} {precision} failed:\n{done.stderr[-3000:]}")
                results.append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(json.dumps(results[-1]), flush=True)
    print("| job | fp32 tokens/s | bf16 tokens/s | speed-up | peak RSS fp32 / bf16 (MB) |")
    print("|---|---|---|---|---|")
    for job in args.jobs.split(","):
        rows = {p: [r for r in results if r["job"] == job and r["precision"] == p] for p in ("fp32", "bf16")}
        speed = {p: sum(r["tokens_per_s"] for r in rs) / len(rs) for p, rs in rows.items()}
        peak = {p: max(r["peak_rss_mb"] for r in rs) for p, rs in rows.items()}
        print(f"| {job} | {speed['fp32']:.0f} | {speed['bf16']:.0f} | {speed['bf16'] / speed['fp32']:.2f}x | "
              f"{peak['fp32']} / {peak['bf16']} |")


if __name__ == "__main__":
    main()
