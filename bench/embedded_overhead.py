"""selfcorrect's embedded backend against llama_cpp.Llama called directly.

Target: selfcorrect's per-call overhead is at most 2% of wall time, on the same prompts
(50 calls, 64-token generations), measured side by side in one run. Calls alternate
A B B A so that drift in the machine's speed falls on both sides alike. Both use the same
sampler chain (top_k 40, temperature 0.7, seeded), the model's chat template and their
own prompt-prefix reuse. Wall time is also reported per generated token, in case one side
stopped early on an end-of-turn token.

    python bench/embedded_overhead.py [--calls 50] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from selfcorrect.models.base import SamplingParams
from selfcorrect.models.embedded import EmbeddedModel, default_model_path

TOPICS = ["a lighthouse", "a dragon", "the sea", "a robot", "winter", "a market", "a violin",
          "a desert", "a train", "a garden"]


def prompts(count: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Write a long story about {TOPICS[i % len(TOPICS)]}, "
              f"chapter {i // len(TOPICS) + 1}."}] for i in range(count)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()

    from llama_cpp import Llama

    from selfcorrect.models.llama_server import plain_cpu_buffers

    plain_cpu_buffers()  # the same weight buffers as selfcorrect's engine uses
    path = default_model_path()
    direct = Llama(str(path), n_ctx=4096, n_threads=args.threads, n_threads_batch=args.threads,
                   n_batch=512, verbose=False)
    ours = EmbeddedModel(path, threads=args.threads, n_ctx=4096, parallel=8)

    def call_direct(messages, seed):
        out = direct.create_chat_completion(
            messages=messages, max_tokens=args.max_tokens, temperature=0.7, top_k=40, top_p=1.0,
            min_p=0.0, repeat_penalty=1.0, seed=seed)
        return out["usage"]["completion_tokens"]

    def call_ours(messages, seed):
        params = SamplingParams(temperature=0.7, top_k=40, max_tokens=args.max_tokens, seed=seed)
        return asyncio.run(ours.generate(messages, params))[0].completion_tokens

    calls = {"llama_cpp.Llama": call_direct, "selfcorrect": call_ours}
    for call in calls.values():  # warm up both
        call([{"role": "user", "content": "Hello."}], 0)
    wall = {name: 0.0 for name in calls}
    tokens = {name: 0 for name in calls}
    for i, messages in enumerate(prompts(args.calls)):
        order = list(calls) if i % 2 == 0 else list(reversed(calls))
        for name in order:
            started = time.perf_counter()
            tokens[name] += calls[name](messages, i)
            wall[name] += time.perf_counter() - started
    ours.close()

    ratio = wall["selfcorrect"] / wall["llama_cpp.Llama"]
    per_token = (wall["selfcorrect"] / tokens["selfcorrect"]) / (
        wall["llama_cpp.Llama"] / tokens["llama_cpp.Llama"])
    for name in calls:
        print(f"{name:16s} {wall[name]:7.2f}s  {tokens[name]:5d} tokens  "
              f"{tokens[name] / wall[name]:6.1f} tok/s")
    print(f"wall ratio selfcorrect/direct: {ratio:.4f} (overhead {100 * (ratio - 1):+.2f}%)")
    print(f"per-token ratio:               {per_token:.4f} (overhead {100 * (per_token - 1):+.2f}%)")
    print(json.dumps({"bench": "embedded_overhead", "calls": args.calls, "threads": args.threads,
                      "wall": wall, "tokens": tokens, "wall_ratio": ratio,
                      "per_token_ratio": per_token}))


if __name__ == "__main__":
    main()
