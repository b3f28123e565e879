"""A user's own task from a JSONL file, one item per line, of one of two kinds:

  math: {"question": "...", "answer": "42"}                       (+ optional "id")
  code: {"prompt": "...", "tests": ["assert f(1) == 2", ...],     (+ optional "id",
         "entry_point": "f", "setup": "import math", "visible_tests": [...]})

Every line is checked before any item is made: a bad line is reported with its number and
what is wrong, and nothing is half-loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from selfcorrect.errors import ConfigError
from selfcorrect.tasks.base import CodeTask, MathTask, Task
from selfcorrect.tasks.items import Item, ItemView
from selfcorrect.verify.code import guess_entry_point

CODE_TEMPLATE = "{prompt}\nWrite the Python code in a ```python code block."
MAX_REPORTED = 10
# An item longer than this is almost surely a mistake (a whole file pasted into a field);
# it would only fail later, after minutes, for want of context. The option max_chars raises it.
MAX_CHARS = 100_000


class MathRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | int | None = None
    question: str = Field(min_length=1)
    answer: str | int | float

    @field_validator("answer")
    @classmethod
    def _text(cls, value):
        text = str(value).strip()
        if not text:
            raise ValueError("must not be empty")
        return text


class CodeRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | int | None = None
    prompt: str = Field(min_length=1)
    tests: list[str] = Field(min_length=1)
    entry_point: str | None = None
    setup: str = ""
    visible_tests: list[str] | None = None


def load_jsonl(path, visible: int = 1, tolerance: float = 0.0, max_chars: int = MAX_CHARS) -> Task:
    """The task a JSONL file describes (math or code, by its keys). `tolerance`: a relative
    tolerance on numeric answers (off: answers compare exactly); `max_chars`: the longest
    item line accepted."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"task file not found: {path}", "check the path to your .jsonl file")
    if not 0 <= tolerance < 1:
        raise ConfigError(f"tolerance={tolerance} is not in [0, 1)", "use e.g. tolerance=1e-6, or 0 for exact")
    if max_chars < 1:
        raise ConfigError(f"max_chars={max_chars} must be positive", f"the default is {MAX_CHARS}")
    records, kind = _read(path, max_chars)
    if kind == "math":
        return JsonlMath(path, records, tolerance)
    return JsonlCode(path, records, visible)


def _lines(path: Path, max_chars: int, problems: list[str]):
    """(number, text) of each line; a line that is not UTF-8 or too long becomes a problem
    (read in binary, so one bad byte names its line rather than ending the file)."""
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if len(raw) > max_chars:
                problems.append(f"line {number}: {len(raw):,} bytes, over the limit of {max_chars:,} "
                                "(raise it with the task option max_chars=N if the item is meant to be this long)")
                continue
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                problems.append(f"line {number}: not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1})")


def _read(path: Path, max_chars: int) -> tuple[list, str]:
    records, problems, kinds, seen = [], [], set(), {}
    for number, line in _lines(path, max_chars, problems):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"line {number}: not JSON ({e.msg} at column {e.colno})")
            continue
        if not isinstance(data, dict):
            problems.append(f"line {number}: not a JSON object")
            continue
        kind = "code" if "tests" in data or "prompt" in data else "math"
        try:
            record = (CodeRecord if kind == "code" else MathRecord)(**data)
        except ValidationError as e:
            for error in e.errors():
                where = ".".join(str(p) for p in error["loc"]) or "the line"
                message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"].lower()
                problems.append(f"line {number}: {where}: {message} ({kind} item)")
            continue
        item_id = str(record.id) if record.id is not None else str(len(records))
        if item_id in seen:
            problems.append(f"line {number}: id {item_id!r} repeats line {seen[item_id]}")
            continue
        seen[item_id] = number
        kinds.add(kind)
        records.append((item_id, record))
    if len(kinds) > 1:
        problems.append("the file mixes math items (question, answer) and code items (prompt, tests)")
    if not records and not problems:
        problems.append("the file has no items")
    if problems:
        more = f" (and {len(problems) - MAX_REPORTED} more)" if len(problems) > MAX_REPORTED else ""
        raise ConfigError(f"{path} has {len(problems)} problem(s): "
                          + "; ".join(problems[:MAX_REPORTED]) + more,
                          "fix these lines; nothing was loaded")
    return records, kinds.pop()


class JsonlMath(MathTask):
    def __init__(self, path: Path, records: list[tuple[str, MathRecord]], tolerance: float = 0.0):
        self.name = f"jsonl:{path.name}"
        self.records = records
        self.tolerance = tolerance

    def items(self) -> list[Item]:
        return [self.make_item(f"{self.name}/{i}", r.question, r.answer) for i, r in self.records]


class JsonlCode(CodeTask):
    template = CODE_TEMPLATE

    def __init__(self, path: Path, records: list[tuple[str, CodeRecord]], visible: int):
        self.name = f"jsonl:{path.name}"
        self.records = records
        self.visible = visible

    def items(self) -> list[Item]:
        return [self._item(i, r) for i, r in self.records]

    def _item(self, item_id: str, record: CodeRecord) -> Item:
        visible = tuple(record.visible_tests if record.visible_tests is not None
                        else record.tests[: self.visible])
        content = CODE_TEMPLATE.format(prompt=record.prompt)
        if visible:
            content += "\nYour code should pass these tests:\n" + "\n".join(visible)
        view = ItemView(
            id=f"{self.name}/{item_id}", task=self.name, kind="code", question=record.prompt,
            messages=({"role": "user", "content": content},), visible_tests=visible,
            entry_point=record.entry_point or guess_entry_point(record.tests), setup=record.setup)
        return Item(view, tests=tuple(record.tests))
