"""MBPP (sanitized): short Python functions, each with three assert tests.

The first `visible` tests appear in the prompt (they show the function's name and how it
is called) and a strategy may run them; the gold check runs all of them, as MBPP's own
metric does.
"""

from __future__ import annotations

import json

from selfcorrect.errors import ConfigError
from selfcorrect.tasks.base import CodeTask
from selfcorrect.tasks.items import Item, ItemView
from selfcorrect.tasks.data import find_file
from selfcorrect.verify.code import guess_entry_point

TEMPLATE = ("{question}\nYour code should pass these tests:\n{tests}\n"
            "Write the Python function in a ```python code block.")


class MBPP(CodeTask):
    name = "mbpp"
    template = TEMPLATE

    def __init__(self, path=None, visible: int = 1):
        if not 0 <= visible <= 3:
            raise ConfigError(f"visible={visible}: MBPP items have 3 tests", "use 0 to 3")
        self.visible = visible
        self.path = find_file(path, "mbpp", "sanitized-mbpp.json")

    def items(self) -> list[Item]:
        records = json.loads(self.path.read_text())
        return [self.make_item(r) for r in records]

    def make_item(self, record: dict) -> Item:
        tests = tuple(record["test_list"])
        visible = tests[: self.visible]
        question = record["prompt"]
        content = TEMPLATE.format(question=question, tests="\n".join(visible)) if visible else (
            f"{question}\nWrite the Python function in a ```python code block.")
        view = ItemView(
            id=f"mbpp/{record['task_id']}", task=self.name, kind="code", question=question,
            messages=({"role": "user", "content": content},), visible_tests=visible,
            entry_point=guess_entry_point(list(tests), record["code"]),
            setup="\n".join(record.get("test_imports") or []))
        return Item(view, tests=tests, meta={"reference": record["code"]})
