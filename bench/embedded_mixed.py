"""16 different prompts at once, 64 tokens each: the load an evaluation puts on the engine
(many items in flight, each its own prompt), as generated tokens per second of wall time.

    python bench/embedded_mixed.py [--quant q8_0|q4_1] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from selfcorrect.models.base import SamplingParams
from selfcorrect.models.embedded import EMBEDDED_QUANTS, EmbeddedModel


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quant", choices=EMBEDDED_QUANTS, default=EMBEDDED_QUANTS[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model = EmbeddedModel(quant=args.quant, threads=args.threads)
    params = SamplingParams(temperature=0.3, top_k=40, max_tokens=64)

    async def round_(r: int) -> tuple[int, float]:
        prompts = [[{"role": "user", "content": f"Round {r}. Q: What is {i} + {i * 7}?\n"
                     "Write a short Python program that computes it. " * 3}] for i in range(16)]
        started = time.perf_counter()
        done = await asyncio.gather(*(model.generate(p, params) for p in prompts))
        return sum(c.completion_tokens for d in done for c in d), time.perf_counter() - started

    speeds = []
    for r in range(args.repeats + 1):  # the first round warms up
        tokens, wall = asyncio.run(round_(r))
        if r:
            speeds.append(tokens / wall)
    model.close()
    print(f"{model.path.name}, {args.threads} threads: {statistics.median(speeds):.1f} tok/s "
          f"(runs: {', '.join(f'{s:.1f}' for s in speeds)})")
    print(json.dumps({"bench": "embedded_mixed", "model": model.path.name, "threads": args.threads,
                      "tok_per_s": statistics.median(speeds), "runs": speeds}))


if __name__ == "__main__":
    main()
