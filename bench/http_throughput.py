"""The HTTP backend against plain concurrent httpx requests to the same local llama.cpp server.

Target: at least 95% of the throughput of plain httpx. Both send the same requests (same
prompts, seeds and limits, so the server does the same work) with the same concurrency;
rounds alternate between the two so that drift falls on both alike.

    python bench/http_throughput.py [--requests 24] [--rounds 3] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import urllib.request

import httpx

from selfcorrect.models.base import SamplingParams, sample_seed
from selfcorrect.models.embedded import default_model_path
from selfcorrect.models.openai_http import OpenAICompatibleModel

PORT = 8391


def start_server(threads: int, port: int = PORT, n_ctx: int = 2048) -> subprocess.Popen:
    """llama-cpp-python's OpenAI server on the embedded model, served as 'smollm2'."""
    process = subprocess.Popen(
        [sys.executable, "-m", "selfcorrect.models.llama_server", "--model", str(default_model_path()),
         "--model_alias", "smollm2", "--port", str(port), "--n_threads", str(threads), "--n_ctx", str(n_ctx),
         "--verbose", "false"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1)
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("llama_cpp.server did not start")


def requests(count: int, round_: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Round {round_}: give me fact number {i} about owls."}]
            for i in range(count)]


async def plain_httpx(url: str, batch, params: SamplingParams, concurrency: int) -> int:
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=120) as client:
        async def one(messages):
            async with limit:
                body = {"model": "smollm2", "messages": messages, "temperature": params.temperature,
                        "top_p": params.top_p, "top_k": params.top_k, "max_tokens": params.max_tokens,
                        "seed": sample_seed(params.seed, 0), "n": 1}
                response = await client.post(url + "/chat/completions", json=body)
                return response.json()["usage"]["completion_tokens"]

        return sum(await asyncio.gather(*(one(m) for m in batch)))


async def selfcorrect_http(url: str, batch, params: SamplingParams, concurrency: int) -> int:
    model = OpenAICompatibleModel("smollm2", url, concurrency=concurrency)
    try:
        results = await asyncio.gather(*(model.generate(m, params) for m in batch))
    finally:
        await model.aclose()
    return sum(c[0].completion_tokens for c in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    server = start_server(args.threads)
    url = f"http://127.0.0.1:{PORT}/v1"
    params = SamplingParams(temperature=0.7, top_k=40, max_tokens=args.max_tokens, seed=1)
    clients = {"httpx": plain_httpx, "selfcorrect": selfcorrect_http}
    rates: dict[str, list[float]] = {name: [] for name in clients}
    try:
        asyncio.run(plain_httpx(url, requests(2, -1), params, 1))  # warm up
        for round_ in range(args.rounds):
            order = list(clients) if round_ % 2 == 0 else list(reversed(clients))
            for name in order:
                started = time.perf_counter()
                tokens = asyncio.run(clients[name](url, requests(args.requests, round_), params,
                                                   args.concurrency))
                rates[name].append(args.requests / (time.perf_counter() - started))
                print(f"round {round_} {name:12s} {rates[name][-1]:6.2f} requests/s ({tokens} tokens)")
    finally:
        server.terminate()
        server.wait()
    median = {name: statistics.median(v) for name, v in rates.items()}
    ratio = median["selfcorrect"] / median["httpx"]
    print(f"selfcorrect / plain httpx throughput: {ratio:.3f}")
    print(json.dumps({"bench": "http_throughput", "requests": args.requests,
                      "concurrency": args.concurrency, "requests_per_s": median, "ratio": ratio}))


if __name__ == "__main__":
    main()
