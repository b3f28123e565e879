"""`selfcorrect tasks`, `sandbox` and `strategies`: what there is, and whether it works."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from selfcorrect.cli.app import app, out, preview, show
from selfcorrect.config import Settings
from selfcorrect.sandbox import Sandbox


@app.command()
def tasks(
    ctx: typer.Context,
    name: Annotated[Optional[str], typer.Argument(help="a task to preview (or a .jsonl path)")] = None,
    limit: Annotated[int, typer.Option(help="items to show")] = 3,
) -> None:
    """List the tasks, or show a task's first items (to check a .jsonl file loads)."""
    settings: Settings = ctx.obj
    if name is None:
        from selfcorrect.tasks import TASKS

        show(_registry_table(TASKS, "tasks (spec: name:key=value,... or PATH.jsonl:key=value,...)",
                                  hidden=("data", "path")))
        return
    from selfcorrect.tasks import parse_task

    task = parse_task(name, settings.data)
    items = task.items()
    out.print(f"[bold]{escape(task.name)}[/]: {len(items)} {task.kind} items")
    served = hasattr(task, "referenced")
    if served:  # traffic: where each item's reference comes from, and what was left out
        sources = Counter(i.meta["reference"] or "none" for i in items)
        out.print(f"{sum(i.meta['requests'] for i in items)} requests in {len(items)} questions, "
                  f"{len({i.meta['family'] for i in items})} families (wordings of one question); references: "
                  + ", ".join(f"{n} {s}" for s, n in sources.most_common())
                  + "; left out: " + ", ".join(f"{n} {k} requests" for k, n in task.skipped.items()))
    for item in items[:limit]:
        view = item.view
        out.rule(escape(view.id), style="dim")
        out.print(preview(view.question), markup=False, highlight=False)
        if served:
            feedback = item.meta["feedback"]
            out.print(f"[dim]asked {item.meta['requests']}x; feedback {feedback['right']} right, {feedback['wrong']} "
                      f"wrong; reference:[/] {escape(item.meta['reference'] or 'none (a run labels it by its check)')}"
                      + (f" {escape(preview(item.answer))}" if item.answer is not None else ""))
        else:
            gold = item.answer if item.answer is not None else f"{len(item.tests)} hidden tests"
            out.print(f"[dim]gold:[/] {escape(preview(gold))}")
        for test in view.visible_tests:
            out.print(f"[dim]visible:[/] {escape(preview(test))}")


@app.command()
def sandbox(ctx: typer.Context) -> None:
    """Check that the sandbox runs code and keeps it in: files, network, processes."""
    settings: Settings = ctx.obj
    probes = [
        ("runs a program", "def f():\n    return 42\n", "assert f() == 42", True),
        ("hides home directories", "import os\ndef f():\n    return os.listdir('/root') + os.listdir('/home')\n",
         "f()", False),
        ("blocks the network", "import socket\ndef f():\n    socket.create_connection(('1.1.1.1', 53), 2)\n",
         "f()", False),
        ("limits memory", "def f():\n    return len(bytearray(10 ** 11))\n", "f()", False),
        ("limits processes", "import os\ndef f():\n    while True:\n        os.fork()\n", "f()", False),
    ]
    table = Table(title=f"sandbox ({settings.sandbox})")
    table.add_column("probe")
    table.add_column("result")
    with Sandbox(workers=settings.sandbox_workers, isolation=settings.sandbox) as box:
        for label, program, test, should_pass in probes:
            result = box.run(program, [test])
            ok = result.passed == should_pass
            outcome = result.tests[0].message or result.tests[0].error_type or "passed"
            table.add_row(label, f"[{'green' if ok else 'red'}]{'ok' if ok else 'NOT CONTAINED'}[/]: "
                                 f"{escape(str(outcome))[:80]}")
    show(table)


@app.command()
def strategies() -> None:
    """List the strategies, the tasks they suit, and their options."""
    from selfcorrect.strategies import STRATEGIES

    table = Table(title="strategies (spec: name:key=value,...; any takes chains=K,select=vote|tests, "
                        "and memory=on for the error memory)")
    for column in ("strategy", "tasks", "options", "feedback", "from"):
        table.add_column(column)
    for entry in STRATEGIES.entries():
        cls = entry.factory
        needs = entry.factory().needs
        feedback = "oracle (upper bound)" if cls.oracle else ("critic model" if "critic" in needs else "")
        table.add_row(entry.name, ", ".join(sorted(cls.kinds)), _options(entry, ("memory",)) or "—", feedback,
                      entry.plugin or "built in")
    show(table)


def _options(entry, hidden: tuple[str, ...] = ()) -> str:
    return ", ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in entry.options.items()
                     if k not in hidden)


def _registry_table(registry, title: str, hidden: tuple[str, ...] = ()) -> Table:
    table = Table(title=title)
    for column in (registry.kind, "options", "about", "from"):
        table.add_column(column)
    for entry in registry.entries():
        table.add_row(entry.name, escape(_options(entry, hidden)) or "—", escape(entry.about),
                      entry.plugin or "built in")
    return table
