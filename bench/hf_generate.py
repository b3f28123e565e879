"""The transformers backend against calling `model.generate` directly, batch 8.

Both decode the same 8 prompts (sampling, the same length cap, no early stop: min_new_tokens
equal to the cap, so both make the same number of tokens) on the same model; the figure is
tokens per second. Target: the backend at ≥ 95% of model.generate. Rounds alternate between
the two, so that a busy machine slows both alike.

    python bench/hf_generate.py [--model PATH] [--tokens 96] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

from checkpoint import add_option, checked

QUESTIONS = [f"What is {a} + {b}? Explain step by step." for a, b in ((12, 7), (31, 45), (8, 9), (66, 21),
                                                                        (14, 14), (50, 25), (3, 98), (41, 17))]


def main() -> None:
    parser = argparse.ArgumentParser()
    add_option(parser)
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch

    from selfcorrect.models.base import SamplingParams
    from selfcorrect.models.hf import HFModel

    checked(args.model)
    engine = HFModel(args.model, batch=8, threads=args.threads)
    # no end-of-sequence: both sides make exactly `tokens` per sequence
    engine._stops = {-1}
    tokenizer, model = engine.tokenizer, engine.model
    prompts = [engine.tokenize_chat([{"role": "user", "content": q}]) for q in QUESTIONS]
    params = SamplingParams(temperature=0.7, top_k=40, max_tokens=args.tokens)

    async def ours() -> int:
        replies = await asyncio.gather(*(engine.generate([{"role": "user", "content": q}], params.replace(seed=i))
                                         for i, q in enumerate(QUESTIONS)))
        return sum(r[0].completion_tokens for r in replies)

    def direct() -> int:
        width = max(len(p) for p in prompts)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, do_sample=True, temperature=0.7, top_k=40,
                                 max_new_tokens=args.tokens, min_new_tokens=args.tokens, pad_token_id=pad)
        return (out.shape[1] - width) * len(prompts)

    asyncio.run(ours()), engine._on_worker(direct)  # warm up
    times = {"selfcorrect": [], "generate": []}
    tokens = {"selfcorrect": 0, "generate": 0}
    for _ in range(args.rounds):
        # model.generate runs on the thread that loaded the model, as a direct user's would
        for name, run in (("selfcorrect", lambda: asyncio.run(ours())), ("generate", lambda: engine._on_worker(direct))):
            started = time.perf_counter()
            tokens[name] += run()
            times[name].append(time.perf_counter() - started)
    rate = {name: tokens[name] / sum(times[name]) for name in times}
    engine.close()
    print(json.dumps({"cpu": _cpu(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                      "batch": 8, "tokens_per_sequence": args.tokens, "rounds": args.rounds,
                      "tokens_per_s": rate, "ratio": rate["selfcorrect"] / rate["generate"]}, indent=2))


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
