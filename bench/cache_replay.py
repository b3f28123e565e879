"""Replay a stored run as a new run on the same store: every draw must come from the sample
cache. This is how a change is shown not to alter any strategy's draws: a study's cache made
before the change serves every draw of the same study run after it (0 model calls).

    python bench/cache_replay.py --store .selfcorrect/findings.sqlite --run RUN_ID [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path

from selfcorrect.config import load_settings
from selfcorrect.runner import EvalSpec, Evaluation
from selfcorrect.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--run", required=True)
    parser.add_argument("--data", type=Path)
    args = parser.parse_args()
    with Store(args.store) as store:
        original = store.run(args.run)
    spec = EvalSpec(**original.config["spec"])
    settings = load_settings(store=args.store, data=args.data)
    evaluation = Evaluation(settings, spec)
    started = time.perf_counter()
    replay = asyncio.run(evaluation.run())
    stats = evaluation.model.stats
    print(f"replayed {original.run_id} as {replay.run_id}: {len(evaluation.all_strategies)} strategies x "
          f"{len(evaluation.items)} items in {time.perf_counter() - started:.1f}s; model calls {stats.model_calls}, "
          f"samples from the cache {stats.hits}, drawn {stats.misses}")
    print(json.dumps({"bench": "cache_replay", "run": original.run_id, "replay": replay.run_id,
                      "model_calls": stats.model_calls, "hits": stats.hits, "misses": stats.misses,
                      "same_pool": replay.config.get("pool") == original.config.get("pool")}))


if __name__ == "__main__":
    main()
