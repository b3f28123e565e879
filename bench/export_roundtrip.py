"""The embedded model exported (fp32, and bf16 when asked for) and written back to GGUF Q8_0:
does the round-tripped file answer greedily as the shipped engine does? The first N arithmetic
items, the task's own prompt, temperature 0, one request at a time (draws that repeat exactly):
the share of items with the same answer, and with the same reply token for token.

    python bench/export_roundtrip.py [--items 40]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=40)
    args = parser.parse_args()

    from selfcorrect.models.base import SamplingParams
    from selfcorrect.models.embedded import EmbeddedModel
    from selfcorrect.precision import describe
    from selfcorrect.tasks import parse_task
    from selfcorrect.tasks.kinds import read
    from selfcorrect.train.export import export_embedded
    from selfcorrect.train.to_gguf import checkpoint_to_gguf

    items = parse_task("arithmetic", None).items()[: args.items]
    params = SamplingParams(temperature=0.0, max_tokens=192)

    def greedy(path):
        with EmbeddedModel(path, threads=2, parallel=1, n_ctx=2048, prefix_cache=0) as engine:
            replies = [asyncio.run(engine.generate(list(i.view.messages), params.replace(stop=i.view.stop)))[0]
                       for i in items]
        return [(r.token_ids, read(i.view, r.text).answer) for r, i in zip(replies, items)]

    shipped = greedy(None)
    rows = {"machine": describe(), "items": len(items),
            "shipped_accuracy": sum(a == i.answer for (_, a), i in zip(shipped, items)) / len(items)}
    with tempfile.TemporaryDirectory() as folder:
        for precision in ("fp32", "bf16"):
            checkpoint = export_embedded(Path(folder) / precision, "bf16" if precision == "bf16" else "auto")
            back = checkpoint_to_gguf(checkpoint, Path(folder) / f"{precision}.gguf")["path"]
            again = greedy(back)
            rows[precision] = {"same_answer": sum(x[1] == y[1] for x, y in zip(again, shipped)) / len(items),
                               "same_reply": sum(x[0] == y[0] for x, y in zip(again, shipped)) / len(items),
                               "accuracy": sum(a == i.answer for (_, a), i in zip(again, items)) / len(items)}
            print(json.dumps({precision: rows[precision]}), flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
