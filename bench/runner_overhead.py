"""The runner's own overhead: strategies on the scripted model, which answers instantly.

Target: at least 2,000 strategy steps per second on one core (the harness must never be
the bottleneck). A step is a model call or a sandbox run a strategy makes through its
session; each one also costs a sample-cache lookup and write, a trajectory event written
to SQLite, and its share of grading and result storage, all of which are timed here.

    python bench/runner_overhead.py [--items 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from selfcorrect.config import load_settings
from selfcorrect.models.scripted import ScriptedModel
from selfcorrect.runner import EvalSpec, Evaluation, results_by_strategy
from selfcorrect.tasks.arithmetic import Arithmetic

STRATEGIES = ["single", "self-consistency:n=4", "self-refine:rounds=2", "gated-refine",
              "best-of-n:n=4", "reflexion", "universal-self-consistency:n=4"]


def reply(messages, params, index) -> str:
    last = messages[-1]["content"]
    if "Score: N/10" in last:
        return "The answer looks off. Score: 4/10"
    if "How sure" in last:
        return "40"
    if "yes or no" in last:
        return "no, it is wrong"
    if "agrees most" in last:
        return "Response 2"
    if "what went wrong" in last:
        return "I should add more carefully."
    return f"Let me compute. The answer is {index + len(last) % 7}."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=500)
    args = parser.parse_args()
    os.sched_setaffinity(0, {0})  # one core
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(store=Path(folder) / "store.sqlite")
        spec = EvalSpec(task="arithmetic", strategies=STRATEGIES, reference=False)
        evaluation = Evaluation(settings, spec, task=Arithmetic(n=args.items), engine=ScriptedModel(reply))
        started = time.perf_counter()
        run = asyncio.run(evaluation.run())
        elapsed = time.perf_counter() - started
        results = results_by_strategy(evaluation.store, run)
    steps = sum(c.calls + c.sandbox_runs for rows in results.values() for r in rows
                for c in r.trajectory.cost.values())
    units = sum(len(rows) for rows in results.values())
    print(f"{units} units ({args.items} items x {len(STRATEGIES)} strategies), {steps} steps in {elapsed:.2f}s "
          f"on one core: {steps / elapsed:.0f} steps/s, {units / elapsed:.0f} units/s")
    print(json.dumps({"bench": "runner_overhead", "units": units, "steps": steps, "seconds": elapsed,
                      "steps_per_second": steps / elapsed}))


if __name__ == "__main__":
    main()
