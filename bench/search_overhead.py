"""Step-level search: its overhead over the model's own generation time, and a PRM's scoring
throughput on CPU.

1. Overhead (target ≤ 10%): beam-search, dvts and mcts on the embedded model, items one at
   a time with a fresh store (no cached draw), each run's wall time against the seconds the
   engine spent decoding in it (its busy time: every phase, expand, rollout, judge). Calls
   of one search overlap in the engine's batches, so the model seconds each call reports
   sum to more than the wall time; busy time counts each decoding step once. Plain
   self-consistency runs through the same harness as the reference: what it adds is the
   evaluation's own cost (store, records), not search's.
2. PRM scoring (steps/s): a token-classification head on the exported embedded model
   (`selfcorrect models export`; the head untrained: speed does not depend on it) scoring
   sampled arithmetic solutions, one solution per forward pass as search asks.

    python bench/search_overhead.py [--items 6] [--base .selfcorrect/models/base] [--solutions 64]
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
from selfcorrect.runner import EvalSpec, Evaluation, results_by_strategy
from selfcorrect.tasks import Subset
from selfcorrect.tasks.arithmetic import Arithmetic

REFERENCE = "self-consistency:n=4"  # no search: what the harness itself adds
SEARCHES = ["beam-search:n=4,width=2,scorer=rollout,rollouts=2", "dvts:n=4,width=2,scorer=self",
            "mcts:simulations=6,children=2,scorer=rollout,rollouts=2"]


def overhead(items: int) -> list[dict]:
    rows = []
    for spec in [REFERENCE, *SEARCHES]:
        task = Arithmetic(n=items)
        with tempfile.TemporaryDirectory() as folder, EmbeddedModel(threads=2, parallel=8) as model:
            wall = tokens = 0.0
            busy_before = model.stats.busy_seconds
            for k in range(items):
                settings = load_settings(store=Path(folder) / f"store-{k}.sqlite")
                evaluation = Evaluation(settings, EvalSpec(task="arithmetic", strategies=[spec], reference=False),
                                        task=Subset(task, {task.items()[k].id}), engine=model)
                started = time.perf_counter()
                run = asyncio.run(evaluation.run())
                wall += time.perf_counter() - started
                [result] = next(iter(results_by_strategy(evaluation.store, run).values()))
                tokens += result.tokens
            busy = model.stats.busy_seconds - busy_before
            rows.append({"strategy": spec, "items": items, "wall_s": round(wall, 2), "engine_busy_s": round(busy, 2),
                         "overhead": round(wall / busy - 1, 4), "tokens_per_item": round(tokens / items)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def prm_throughput(base: Path, count: int) -> dict:
    from selfcorrect.verify.learned import encode, load_classifier
    from selfcorrect.verify.steps import split_steps

    import torch

    tokenizer, model = load_classifier(base, "prm")
    model.eval()
    items = Arithmetic(n=count).items()
    solutions = [(list(i.view.messages), split_steps(f"{i.view.question.split('What is ')[-1].rstrip('?')} = {i.answer}. "
                                                     f"The answer is {i.answer}.")) for i in items]
    steps = sum(len(s) for _, s in solutions)
    started = time.perf_counter()
    with torch.no_grad():
        for prompt, solution in solutions:
            ids, _ = encode(tokenizer, prompt, solution, 2048)
            model(input_ids=torch.tensor([ids]))
    seconds = time.perf_counter() - started
    return {"solutions": count, "steps": steps, "seconds": round(seconds, 2), "steps_per_s": round(steps / seconds, 1),
            "solutions_per_s": round(count / seconds, 1), "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=6)
    parser.add_argument("--base", default=".selfcorrect/models/base")
    parser.add_argument("--solutions", type=int, default=64)
    args = parser.parse_args()
    rows = overhead(args.items)
    worst = max((r for r in rows if r["strategy"] != REFERENCE), key=lambda r: r["overhead"])
    print(f"search overhead over engine busy time: worst {100 * worst['overhead']:.1f}% ({worst['strategy']}); "
          + ", ".join(f"{r['strategy'].split(':')[0]} {100 * r['overhead']:.1f}%" for r in rows))
    if (Path(args.base) / "config.json").is_file():
        print(json.dumps({"prm_scoring": prm_throughput(Path(args.base), args.solutions)}))
    else:
        print(f"no checkpoint at {args.base}: run `selfcorrect models export` for the PRM figure")


if __name__ == "__main__":
    main()
