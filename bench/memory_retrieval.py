"""The lesson bank at size: retrieval of k=5 lessons among 100,000 (p50 target < 5 ms) and
writing one lesson (p50 target < 2 ms), on the SQLite file and bm25s index of the bank.

    python bench/memory_retrieval.py [--lessons 100000] [--queries 200]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from selfcorrect.memory import Lesson, LessonBank

WORDS = ("apples marbles coins books shells pencils stamps river lake train garden violin desert robot "
         "market winter dragon lighthouse sum product difference quotient carry borrow digit tens units "
         "hundreds multiply add subtract divide share split pile twice half total each more fewer").split()


def lesson(rng: random.Random, i: int) -> Lesson:
    words = " ".join(rng.choice(WORDS) for _ in range(12))
    return Lesson(namespace="bench", input=f"Question {i}: {words} {rng.randint(10, 99)} {rng.randint(10, 99)}?",
                  wrong=f"The answer is {rng.randint(0, 999)}.", feedback=f"check {i} failed",
                  feedback_kind="external", text=f"Careful with the {rng.choice(WORDS)} step: {words[:40]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lessons", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as folder:
        bank = LessonBank(Path(folder) / "store.sqlite", capacity=args.lessons + 1000, batch=1000)
        started = time.perf_counter()
        for i in range(args.lessons):
            bank.add(lesson(rng, i))
        fill = time.perf_counter() - started
        bank.search("bench", "warm the index")  # the first search builds the namespace's index
        searches = []
        for q in range(args.queries):
            query = " ".join(rng.choice(WORDS) for _ in range(10))
            t = time.perf_counter()
            bank.search("bench", query, k=5)
            searches.append(time.perf_counter() - t)
        writes = []
        for i in range(args.queries):
            item = lesson(rng, args.lessons + i)
            t = time.perf_counter()
            bank.add(item)
            writes.append(time.perf_counter() - t)
        bank.close()
    p50 = lambda xs: 1000 * statistics.median(xs)
    p99 = lambda xs: 1000 * sorted(xs)[int(0.99 * len(xs)) - 1]
    print(f"{args.lessons} lessons written in {fill:.1f}s; search k=5: p50 {p50(searches):.2f} ms, "
          f"p99 {p99(searches):.2f} ms; write one (index tail included): p50 {p50(writes):.2f} ms, p99 {p99(writes):.2f} ms")
    print(json.dumps({"bench": "memory_retrieval", "lessons": args.lessons, "search_p50_ms": p50(searches),
                      "search_p99_ms": p99(searches), "write_p50_ms": p50(writes), "write_p99_ms": p99(writes)}))


if __name__ == "__main__":
    main()
