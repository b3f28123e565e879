"""The main job's wall time against the model's own generation time, in one run.

Target: the wall time of an eval on the embedded model is within 5% of the time the model
spends generating (llama.cpp's engine busy time: prompt evaluation, decoding, sampling).
The run starts from an empty store, so every draw is generated; the wall time covers
loading the model, starting the sandbox, every unit, grading, and writing the reports.

    python bench/eval_wall.py [--items 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from selfcorrect.config import load_settings
from selfcorrect.models.embedded import EmbeddedModel
from selfcorrect.report import write_reports
from selfcorrect.runner import MAIN_JOB_STRATEGIES, EvalSpec, Evaluation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(store=Path(folder) / "store.sqlite", threads=args.threads)
        started = time.perf_counter()
        engine = EmbeddedModel(threads=args.threads)
        evaluation = Evaluation(settings, EvalSpec(limit=args.items, strategies=MAIN_JOB_STRATEGIES), engine=engine)
        run = asyncio.run(evaluation.run())
        write_reports(evaluation.store, run, "math", Path(folder) / "report")
        wall = time.perf_counter() - started
        busy = engine.stats.busy_seconds
        engine.close()
    print(f"{args.items} items x {len(MAIN_JOB_STRATEGIES)} strategies: wall {wall:.1f}s, model busy {busy:.1f}s "
          f"-> wall / model = {wall / busy:.3f} ({100 * (wall / busy - 1):+.1f}%); "
          f"{engine.stats.generated_tokens} tokens generated, {engine.stats.prompt_tokens_evaluated} prompt "
          f"tokens evaluated ({engine.stats.prompt_tokens_reused} reused)")
    print(json.dumps({"bench": "eval_wall", "items": args.items, "wall": wall, "model_busy": busy,
                      "ratio": wall / busy}))


if __name__ == "__main__":
    main()
