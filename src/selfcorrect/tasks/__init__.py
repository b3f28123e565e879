"""Tasks: datasets, their prompts, and the gold checks that only the task uses.

Built in: arithmetic (generated), gsm8k, mbpp, humaneval, and a user's .jsonl file.
"""

from __future__ import annotations

from pathlib import Path

from selfcorrect.errors import ConfigError
from selfcorrect.tasks.base import Check, Item, ItemView, Task, select, split

__all__ = ["Check", "Item", "ItemView", "Task", "TASKS", "load_task", "select", "split"]

TASKS = ("arithmetic", "gsm8k", "mbpp", "humaneval", "PATH.jsonl")


def load_task(name: str, data: str | Path | None = None, **options) -> Task:
    """A task by name, or a .jsonl file by path. `data` is where a dataset's files are (its
    file, its folder, or a folder holding one folder per dataset)."""
    if name == "arithmetic":
        from selfcorrect.tasks.arithmetic import Arithmetic

        return Arithmetic(**options)
    if name == "gsm8k":
        from selfcorrect.tasks.gsm8k import GSM8K

        return GSM8K(data, **options)
    if name == "mbpp":
        from selfcorrect.tasks.mbpp import MBPP

        return MBPP(data, **options)
    if name == "humaneval":
        from selfcorrect.tasks.humaneval import HumanEval

        return HumanEval(**options)
    if name.endswith(".jsonl") or name.startswith("jsonl:"):
        from selfcorrect.tasks.jsonl import load_jsonl

        return load_jsonl(name.removeprefix("jsonl:"), **options)
    raise ConfigError(f"unknown task {name!r}", f"use one of: {', '.join(TASKS)}")
