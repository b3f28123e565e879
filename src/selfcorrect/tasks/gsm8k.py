"""GSM8K: grade-school math word problems; the gold is the number after '####'."""

from __future__ import annotations

import json

from selfcorrect.errors import ConfigError
from selfcorrect.tasks.base import MathTask
from selfcorrect.tasks.items import Item
from selfcorrect.tasks.data import find_file


def gold_answer(solution: str) -> str:
    """'...\\n#### 1,234' -> '1234'."""
    if "####" not in solution:
        raise ConfigError(f"a GSM8K answer has no '####': {solution[-80:]!r}", "check the data file")
    return solution.rsplit("####", 1)[1].strip().replace(",", "").rstrip(".")


class GSM8K(MathTask):
    name = "gsm8k"

    def __init__(self, path=None, split: str = "test"):
        if split not in ("train", "test"):
            raise ConfigError(f"GSM8K has no split {split!r}", "use train or test")
        self.split = split
        self.path = find_file(path, "gsm8k", f"{split}.jsonl")

    def items(self) -> list[Item]:
        with self.path.open() as f:
            records = [json.loads(line) for line in f if line.strip()]
        return [self.make_item(f"gsm8k/{self.split}/{i}", r["question"], gold_answer(r["answer"]),
                               solution=r["answer"])
                for i, r in enumerate(records)]
