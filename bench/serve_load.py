"""The server under load, and its cost over running a strategy in-process.

1. Scripted backend (answers instantly), `single`: 64 concurrent clients for 60 s against the
   server on 127.0.0.1, from a bounded load generator: each client sends a request every
   1/rate seconds (2 per second by default: 128 requests per second in all) and waits for its
   reply before the next. With an instant backend a request's latency is what the server
   adds: parsing, the strategy's session, the sample cache, SQLite records, JSON. Targets:
   zero errors, p50 < 5 ms, p99 < 50 ms. Then the same clients with no pause between
   requests: the most the server answers per second on this machine (latency is then
   mostly queueing).
2. Embedded model: the same requests through the server and in-process, side by side in this
   run (sample cache off, so every token is generated). Target: the server's throughput within
   10% of in-process.

The server runs in its own process (`--serve`), so that the load generator does not share
its interpreter.

    python bench/serve_load.py [--clients 64] [--seconds 60] [--embedded-requests 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

QUESTIONS = [f"What is {a} + {b}? Explain step by step, then end with: The answer is N."
             for a in range(10, 30) for b in range(3, 11)]


def serve(kind: str, port: int, store: str) -> None:
    import uvicorn

    from selfcorrect.config import load_settings
    from selfcorrect.models.scripted import ScriptedModel
    from selfcorrect.serve.app import ServeConfig, create_app

    if kind == "scripted":
        settings = load_settings(store=store, sandbox_workers=1)
        app = create_app(settings, ServeConfig(), engine=ScriptedModel(lambda m, p, k: "The answer is 42."))
    else:
        settings = load_settings(store=store, sandbox_workers=1, cache=False)
        app = create_app(settings, ServeConfig())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", limit_concurrency=1024)


def start(kind: str, folder: str) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen([sys.executable, __file__, "--serve", kind, "--port", str(port),
                                "--store", str(Path(folder) / f"{kind}.sqlite")])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit(f"the {kind} server did not start")


async def load(url: str, clients: int, seconds: float, rate: float | None = None) -> dict:
    """`rate`: requests per second per client (None: back to back)."""
    latencies, errors = [], 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        async def client(k: int) -> None:
            nonlocal errors
            i = k
            await asyncio.sleep(k / clients / rate if rate else 0)  # clients spread over the interval
            while time.monotonic() < deadline:
                tick = time.monotonic()
                body = {"model": "scripted", "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                        "seed": i}
                started = time.perf_counter()
                try:
                    response = await http.post("/v1/chat/completions", json=body)
                    ok = response.status_code == 200 and response.json()["choices"][0]["message"]["content"]
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - started)
                errors += not ok
                i += clients
                if rate:
                    await asyncio.sleep(max(0.0, tick + 1 / rate - time.monotonic()))

        await asyncio.gather(*(client(k) for k in range(clients)))
    latencies.sort()
    return {"requests": len(latencies), "errors": errors, "requests_per_s": len(latencies) / seconds,
            "p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
            "max_ms": 1000 * latencies[-1]}


async def through_server(url: str, requests: int, concurrency: int, max_tokens: int) -> dict:
    limit = asyncio.Semaphore(concurrency)
    tokens = 0
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        async def one(i: int) -> None:
            nonlocal tokens
            async with limit:
                response = await http.post("/v1/chat/completions", json={
                    "model": "default", "max_tokens": max_tokens, "seed": i,
                    "messages": [{"role": "user", "content": QUESTIONS[i]}]})
                response.raise_for_status()
                tokens += response.json()["usage"]["completion_tokens"]

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
    return {"seconds": time.perf_counter() - started, "completion_tokens": tokens}


async def in_process(requests: int, concurrency: int, max_tokens: int) -> dict:
    from selfcorrect.config import load_settings
    from selfcorrect.models.load import load_model
    from selfcorrect.serve.protocol import ChatRequest
    from selfcorrect.serve.run import answer, view_of
    from selfcorrect.strategies import parse_strategy
    from selfcorrect.models.base import SamplingParams

    model = load_model(load_settings(cache=False))
    limit = asyncio.Semaphore(concurrency)
    tokens = 0

    async def one(i: int) -> None:
        nonlocal tokens
        async with limit:
            request = ChatRequest(model="default", messages=[{"role": "user", "content": QUESTIONS[i]}])
            params = SamplingParams(temperature=0.3, top_k=model.capabilities.default_top_k, max_tokens=max_tokens, seed=i)
            result = await answer(parse_strategy("single"), view_of(request, f"bench-{i}"), model, params,
                                  budget=(None, None), timeout=600)
            tokens += sum(c.completion_tokens for c in result.trajectory.cost.values())

    try:
        await one(0)  # load and warm up, as the server did before it answered /health
        tokens = 0
        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(requests)))
        return {"seconds": time.perf_counter() - started, "completion_tokens": tokens}
    finally:
        await model.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=2.0, help="requests per second per client")
    parser.add_argument("--embedded-requests", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--serve", choices=["scripted", "embedded"])
    parser.add_argument("--port", type=int)
    parser.add_argument("--store")
    args = parser.parse_args()
    if args.serve:
        return serve(args.serve, args.port, args.store)
    results = {"cpu": _cpu(), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory() as folder:
        process, url = start("scripted", folder)
        try:
            asyncio.run(load(url, 4, 3))  # warm up
            results["scripted_bounded"] = {"clients": args.clients, "rate_per_client": args.rate, "seconds": args.seconds,
                                           **asyncio.run(load(url, args.clients, args.seconds, args.rate))}
            results["scripted_saturated"] = {"clients": args.clients, "seconds": args.seconds / 2,
                                             **asyncio.run(load(url, args.clients, args.seconds / 2))}
        finally:
            process.terminate()
            process.wait()
        if args.embedded_requests:
            process, url = start("embedded", folder)
            try:
                asyncio.run(through_server(url, 1, 1, args.max_tokens))  # warm up
                served = asyncio.run(through_server(url, args.embedded_requests, args.concurrency, args.max_tokens))
            finally:
                process.terminate()
                process.wait()
            direct = asyncio.run(in_process(args.embedded_requests, args.concurrency, args.max_tokens))
            rate = {k: v["completion_tokens"] / v["seconds"] for k, v in (("server", served), ("in_process", direct))}
            results["embedded"] = {"requests": args.embedded_requests, "concurrency": args.concurrency,
                                   "server": served, "in_process": direct,
                                   "tokens_per_s": rate, "server_over_in_process": rate["server"] / rate["in_process"]}
    print(json.dumps(results, indent=2))


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
