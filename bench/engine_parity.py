"""The same strategies on the main job's items through the embedded engine and through
llama.cpp's OpenAI-compatible server (the same GGUF file on 127.0.0.1), and through that server
with its own sampling defaults (repeat penalty 1.1, min_p 0.05: what selfcorrect sent before it
turned them off). Prints accuracy with its interval, tokens per item (notional and sent) and
requests per item for each; each arm has its own store, so nothing is served across arms.

    python bench/engine_parity.py [--items 60] [--strategies single,program-aided] [--threads 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from pathlib import Path

from http_throughput import start_server  # bench/ is this script's folder

from selfcorrect.config import load_settings
from selfcorrect.measure.summary import summarize
from selfcorrect.models.embedded import EmbeddedModel
from selfcorrect.models.openai_http import OpenAICompatibleModel
from selfcorrect.runner import EvalSpec, Evaluation, results_by_strategy

PORT = 8393


class ServerDefaults(OpenAICompatibleModel):
    """Requests as selfcorrect sent them before: the server's own extra samplers stay on."""

    @staticmethod
    def _sampling(params):
        return {}


def arm(name: str, engine, spec: EvalSpec, folder: Path) -> dict:
    settings = load_settings(store=folder / f"{name}.sqlite", sandbox_workers=2)
    evaluation = Evaluation(settings, spec, engine=engine)
    started = time.perf_counter()
    run = asyncio.run(evaluation.run())
    wall = time.perf_counter() - started
    summary = summarize(results_by_strategy(evaluation.store, run), set(), "math")
    return {"wall_seconds": round(wall, 1), "strategies": {
        s: {"accuracy": v["accuracy"], "interval": v["interval"], "tokens_per_item": v["tokens_per_item"],
            "sent_per_item": v["sent_per_item"]} for s, v in summary["strategies"].items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--strategies", default="single,program-aided")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=0.3)
    args = parser.parse_args()
    spec = EvalSpec(task="arithmetic", strategies=args.strategies.split(","), limit=args.items,
                    temperature=args.temperature, reference=False)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    flags = next((line for line in open("/proc/cpuinfo") if line.startswith("flags")), "").split()
    figures = {"cpu": cpu, "bf16": [f for f in ("amx_bf16", "avx512_bf16") if f in flags],
               "items": args.items, "temperature": args.temperature, "threads": args.threads, "arms": {}}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        with EmbeddedModel(threads=args.threads) as engine:
            figures["arms"]["embedded"] = arm("embedded", engine, spec, folder)
        server = start_server(args.threads, PORT, n_ctx=4096)
        try:
            url = f"http://127.0.0.1:{PORT}/v1"
            figures["arms"]["http"] = arm("http", OpenAICompatibleModel("smollm2", url, probe=True), spec, folder)
            figures["arms"]["http, server defaults"] = arm("defaults", ServerDefaults("smollm2", url), spec, folder)
        finally:
            server.terminate()
            server.wait(timeout=20)
    for name, result in figures["arms"].items():
        for strategy, s in result["strategies"].items():
            low, high = s["interval"]
            sent = s["sent_per_item"]
            print(f"{name:24} {strategy:16} {100 * s['accuracy']:5.1f}% ({100 * low:.1f}–{100 * high:.1f})  "
                  f"{s['tokens_per_item']:6.0f} tok/item notional, {sent['tokens']:6.0f} sent in "
                  f"{sent['requests']:.2f} requests")
        print(f"{name:24} wall {result['wall_seconds']} s")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
