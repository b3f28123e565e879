"""n=8 samples of one ~200-token prompt: decoded together against one after another.

Target: the prompt is evaluated once, and total generation throughput (generated tokens
over wall time, prompt included) is at least 1.8x that of sampling the 8 one after another.
Three ways of drawing the same 8 samples, measured side by side in one run, repeated:

  together     selfcorrect, one request with n=8 (one prompt evaluation, 8 sequences a step)
  one by one   selfcorrect, 8 requests with n=1 (prefix cache: the prompt is not re-evaluated)
  direct       llama_cpp.Llama, 8 calls (its own prefix reuse), in a process of its own

Each round uses a prompt the engines have not seen, so that every way pays for one
evaluation of it. The direct baseline runs in its own process: two llama.cpp contexts
driven from two threads of one process make their OpenMP thread teams compete (measured
here: 150 tok/s fell to 85), which would flatter selfcorrect.

    python bench/embedded_batch.py [--threads 2] [--max-tokens 128] [--repeats 3] [--model PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import time

from selfcorrect.models.base import SamplingParams
from selfcorrect.models.embedded import EmbeddedModel, default_model_path


SHORT = False  # --short-prompt: a one-line prompt instead of the ~200-token one


def prompt(day: int) -> list[dict]:
    if SHORT:
        return [{"role": "user", "content": f"Day {day}. Write a long story about a lighthouse."}]
    return [{"role": "user", "content": f"Day {day}. " + NOTES}]


NOTES = (
    "Here are some notes about a small coastal town. The town has a harbour with fishing boats, "
    "a lighthouse on the northern cliff, a market square where farmers sell vegetables every "
    "Saturday, a school with two hundred pupils, a library that opens late on Thursdays, a "
    "bakery famous for its rye bread, and a museum about shipwrecks. In winter, storms close "
    "the harbour for weeks; in summer, tourists fill the beaches and the campsite behind the "
    "dunes. The mayor wants to build a new bridge over the river mouth, but the fishermen fear "
    "it will block their boats. Write a long story about one day in this town, told by the "
    "lighthouse keeper.")


def direct_worker(conn, path: str, threads: int, max_tokens: int, n: int, short: bool) -> None:
    """Draws n samples per request with llama_cpp.Llama, one after another."""
    global SHORT
    SHORT = short
    from llama_cpp import Llama

    from selfcorrect.models.llama_server import plain_cpu_buffers

    plain_cpu_buffers()  # the same weight buffers as selfcorrect's engine uses

    llama = Llama(path, n_ctx=4096, n_threads=threads,
                  n_threads_batch=threads, verbose=False)
    while (day := conn.recv()) is not None:
        started = time.perf_counter()
        tokens = sum(
            llama.create_chat_completion(
                messages=prompt(day), max_tokens=max_tokens, temperature=0.8, top_k=40,
                top_p=1.0, min_p=0.0, repeat_penalty=1.0, seed=day * 100 + i,
            )["usage"]["completion_tokens"]
            for i in range(n))
        conn.send((tokens, time.perf_counter() - started))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--short-prompt", action="store_true")
    parser.add_argument("--model", help="a GGUF file (default: the embedded model's file)")
    args = parser.parse_args()
    path = args.model or str(default_model_path())
    global SHORT
    SHORT = args.short_prompt

    ours = EmbeddedModel(path, threads=args.threads, n_ctx=8192, parallel=args.n)
    conn, child = multiprocessing.Pipe()
    worker = multiprocessing.get_context("spawn").Process(
        target=direct_worker, args=(child, path, args.threads, args.max_tokens, args.n, SHORT))
    worker.start()
    prompt_tokens = len(ours.tokenize_chat(prompt(0)))
    params = SamplingParams(temperature=0.8, top_k=40, max_tokens=args.max_tokens)

    def timed(draw):
        started = time.perf_counter()
        completions = draw()
        return sum(c.completion_tokens for c in completions), time.perf_counter() - started

    def together(day):
        return timed(lambda: asyncio.run(ours.generate(prompt(day), params.replace(n=args.n, seed=day))))

    def one_by_one(day):
        return timed(lambda: [
            asyncio.run(ours.generate(prompt(day), params.replace(seed=day), first_index=i))[0]
            for i in range(args.n)])

    def direct(day):
        conn.send(day)
        return conn.recv()

    ways = {"together": together, "one by one": one_by_one, "direct": direct}
    throughput = {name: [] for name in ways}
    prompt_evals = []
    day = 0
    for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
        for name, way in ways.items():
            day += 1
            evals_before = ours.stats.prompt_evals
            tokens_before = ours.stats.prompt_tokens_evaluated
            tokens, elapsed = way(day)
            if repeat:
                throughput[name].append(tokens / elapsed)
                if name == "together":
                    prompt_evals.append((ours.stats.prompt_evals - evals_before,
                                         ours.stats.prompt_tokens_evaluated - tokens_before))
    conn.send(None)
    worker.join()
    ours.close()

    median = {name: statistics.median(v) for name, v in throughput.items()}
    print(f"model: {path}")
    print(f"prompt: {prompt_tokens} tokens; {args.n} samples of up to {args.max_tokens} tokens; "
          f"{args.threads} threads; median of {args.repeats}")
    for name in ways:
        print(f"{name:11s} {median[name]:7.1f} tok/s   runs: "
              + ", ".join(f"{v:.1f}" for v in throughput[name]))
    print(f"'together' prompt evaluations (count, tokens evaluated) per round: {prompt_evals}")
    print(f"together / one by one: {median['together'] / median['one by one']:.2f}x")
    print(f"together / direct:     {median['together'] / median['direct']:.2f}x")
    print(json.dumps({"bench": "embedded_batch", "threads": args.threads, "n": args.n,
                      "prompt_tokens": prompt_tokens, "max_tokens": args.max_tokens,
                      "tok_per_s": median, "prompt_evals": prompt_evals,
                      "ratio_vs_one_by_one": median["together"] / median["one by one"],
                      "ratio_vs_direct": median["together"] / median["direct"]}))


if __name__ == "__main__":
    main()
