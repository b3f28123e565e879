"""A fully cached re-run of 1,000 requests.

Target: under 2 seconds with zero model calls. The requests are chat-sized (a system
message, a ~400-character question, 4 samples each); the first pass fills a fresh store
from the scripted model; the re-run opens the store anew in front of a model that fails
if it is ever called.

    python bench/cache_rerun.py [--requests 1000] [--samples 4]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from selfcorrect.models.base import SamplingParams
from selfcorrect.cache import CachedModel
from selfcorrect.models.scripted import ScriptedModel
from selfcorrect.store import Store


def refuse(messages, params, index):
    raise AssertionError("the re-run called the model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=4)
    args = parser.parse_args()

    question = "A train leaves the station at {i} o'clock and travels at sixty miles an hour. " * 5
    requests = [[{"role": "system", "content": "Solve the problem step by step."},
                 {"role": "user", "content": question.format(i=i)}] for i in range(args.requests)]
    params = SamplingParams(temperature=0.7, max_tokens=256, n=args.samples)

    async def run(model):
        return await asyncio.gather(*(model.generate(m, params) for m in requests))

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.sqlite"
        with Store(path) as store:
            started = time.perf_counter()
            asyncio.run(run(CachedModel(ScriptedModel(lambda m, p, i: f"answer {i} " * 40), store)))
            first = time.perf_counter() - started
        with Store(path) as store:
            replay = CachedModel(ScriptedModel(refuse), store)
            started = time.perf_counter()
            results = asyncio.run(run(replay))
            rerun = time.perf_counter() - started
    assert all(c.cached for r in results for c in r)
    print(f"first pass (scripted model, writes): {first:.3f}s")
    print(f"cached re-run of {args.requests} requests x {args.samples} samples: {rerun:.3f}s, "
          f"{replay.stats.model_calls} model calls, {replay.stats.hits} samples from the cache")
    print(json.dumps({"bench": "cache_rerun", "requests": args.requests, "samples": args.samples,
                      "rerun_seconds": rerun, "model_calls": replay.stats.model_calls}))


if __name__ == "__main__":
    main()
