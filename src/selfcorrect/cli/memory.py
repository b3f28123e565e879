"""`selfcorrect memory`: the error memory's lessons and guidelines (docs/memory.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from selfcorrect.cli.app import LessonId, app, err, preview, show
from selfcorrect.config import Settings
from selfcorrect.errors import ConfigError


memory_app = typer.Typer(help="The error memory: lessons from verified mistakes (docs/memory.md).",
                         no_args_is_help=True)
app.add_typer(memory_app, name="memory")
Namespace = Annotated[str, typer.Argument(help="the namespace (a task's name, a server's memory)")]


def _bank(ctx: typer.Context):
    from selfcorrect.memory import LessonBank

    settings: Settings = ctx.find_root().obj
    settings.store.parent.mkdir(parents=True, exist_ok=True)
    return LessonBank(settings.store)


@memory_app.command("list")
def memory_list(
    ctx: typer.Context,
    namespace: Annotated[Optional[str], typer.Option(help="one namespace (a task, a server's memory)")] = None,
    retired: Annotated[bool, typer.Option("--retired", help="include retired lessons")] = False,
) -> None:
    """The lessons, with their verified record."""
    bank = _bank(ctx)
    table = Table(title="lessons")
    for column in ("id", "namespace", "kind", "uses", "helped", "hurt", "lesson"):
        table.add_column(column)
    for lesson in bank.lessons(namespace, include_retired=retired):
        table.add_row(lesson.id[:12] + (" (retired)" if lesson.retired else ""), escape(lesson.namespace),
                      lesson.feedback_kind + (" ORACLE" if lesson.oracle else ""), str(lesson.uses),
                      str(lesson.helped), str(lesson.hurt), escape(preview(lesson.text, 120)))
    show(table)


@memory_app.command("show")
def memoryshow(ctx: typer.Context, lesson_id: LessonId) -> None:
    """One lesson, whole, as JSON."""
    lesson = _find_lesson(_bank(ctx), lesson_id)
    print(json.dumps({"id": lesson.id, **lesson.model_dump()}, indent=2, ensure_ascii=False))


@memory_app.command("retire")
def memory_retire(ctx: typer.Context, lesson_id: LessonId) -> None:
    """Stop handing a lesson out (it stays on record)."""
    bank = _bank(ctx)
    lesson = _find_lesson(bank, lesson_id)
    bank.retire(lesson.id)
    err.print(f"retired {lesson.id}")


@memory_app.command("export")
def memory_export(ctx: typer.Context, path: Annotated[Path, typer.Argument(help="a JSONL file to write")],
                  namespace: Annotated[Optional[str], typer.Option(help="one namespace")] = None) -> None:
    """Write lessons as JSONL (schema selfcorrect.lesson/1)."""
    count = _bank(ctx).export(path, namespace)
    err.print(f"{count} lessons written to {path}")


@memory_app.command("import")
def memory_import(ctx: typer.Context, path: Annotated[Path, typer.Argument(help="a JSONL export")]) -> None:
    """Read lessons from a JSONL export (every line checked first)."""
    if not path.is_file():
        raise ConfigError(f"no file {path}", "give the path of a `selfcorrect memory export` file")
    count = _bank(ctx).import_(path)
    err.print(f"{count} lessons read from {path}")


@memory_app.command("clear")
def memory_clear(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(help="the namespace to forget")],
    yes: Annotated[bool, typer.Option("--yes", help="do it (without it, only say what would go)")] = False,
) -> None:
    """Forget a namespace: its lessons (retired ones too), its guidelines' versions, its worked
    examples and the gate's evidence."""
    from selfcorrect.memory import GuidelineBook
    from selfcorrect.memory.examples import ExampleBank
    from selfcorrect.memory.gate import Gate

    bank = _bank(ctx)
    settings: Settings = ctx.find_root().obj
    examples, gate = ExampleBank(settings.store), Gate(settings.store)
    try:
        count, solved = len(bank.lessons(namespace, include_retired=True)), len(examples.examples(namespace))
        if not yes:
            err.print(f"{count} lessons, {solved} worked examples, the guidelines and the gate's evidence of "
                      f"{escape(namespace)} would be forgotten: add --yes")
            return
        bank.clear(namespace)
        GuidelineBook(bank).clear(namespace)
        examples.clear(namespace)
        gate.reset(namespace)
    finally:
        examples.close()
        gate.close()
    err.print(f"forgot {count} lessons, {solved} worked examples, the guidelines and the gate's evidence of "
              f"{escape(namespace)}")


@memory_app.command("guidelines")
def memory_guidelines(
    ctx: typer.Context,
    namespace: Namespace,
    distil: Annotated[bool, typer.Option("--distil", help="distil the lessons into rules now")] = False,
    history: Annotated[bool, typer.Option("--history", help="every version, as JSON")] = False,
) -> None:
    """A namespace's guidelines: rules distilled from its lessons, with their record."""
    from selfcorrect.memory import GuidelineBook

    book = GuidelineBook(_bank(ctx))
    current = book.distil(namespace) if distil else book.current(namespace)
    if history:
        print(json.dumps([g.model_dump() for g in book.history(namespace)], indent=2, ensure_ascii=False))
        return
    table = Table(title=f"{namespace} guidelines, version {current.version}"
                        + (f" (last change: {current.changes})" if current.changes else ""))
    for column in ("rule", "lessons", "uses", "helped", "hurt", "text"):
        table.add_column(column)
    for rule in current.rules:
        table.add_row(rule.id, str(len(rule.lessons)), str(rule.uses), str(rule.helped), str(rule.hurt),
                      escape(rule.text))
    show(table)


@memory_app.command("stats")
def memory_stats(ctx: typer.Context) -> None:
    """Active and retired lessons per namespace."""
    table = Table(title="lessons per namespace")
    for column in ("namespace", "active", "retired"):
        table.add_column(column)
    for namespace, counts in sorted(_bank(ctx).stats().items()):
        table.add_row(escape(namespace), str(counts["active"]), str(counts["retired"]))
    show(table)


@memory_app.command("gate")
def memory_gate(
    ctx: typer.Context,
    namespace: Namespace,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for machines")] = False,
    reset: Annotated[bool, typer.Option("--reset", help="forget the evidence: every arm back on trial")] = False,
) -> None:
    """What the gate shows a namespace and why: each arm's paired evidence against no memory,
    its Wilson bounds, and whether it is on trial, admitted or retired (docs/memory.md)."""
    from selfcorrect.memory.gate import Gate

    settings: Settings = ctx.find_root().obj
    gate = Gate(settings.store)
    try:
        if reset:
            gate.reset(namespace)
            err.print(f"the gate of {escape(namespace)} starts again: every arm on trial, none served")
        report = gate.report(namespace)
    finally:
        gate.close()
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"{namespace}: served {report['served']} (explores {100 * report['explore']:.0f}% of "
                        f"requests; admits when the e-value of gain reaches {1 / report['alpha']:.0f})")
    for column in ("arm", "status", "pairs", "helped", "hurt", "e-value gain / harm", "bounds", "served", "explored"):
        table.add_column(column)
    for arm, e in report["arms"].items():
        table.add_row(arm, e["status"], str(e["pairs"]), str(e["helped"]), str(e["hurt"]),
                      f"{e['evidence'][0]:.3g} / {e['evidence'][1]:.3g}",
                      f"{e['bounds'][0]:.2f}–{e['bounds'][1]:.2f}", str(e["served"]), str(e["explored"]))
    show(table)


@memory_app.command("export-training")
def memory_export_training(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(help="the namespace whose worked examples to export")],
    path: Annotated[Path, typer.Argument(help="a data.jsonl to write (`selfcorrect fit`, `improve --extra-data`)")],
) -> None:
    """What the memory cannot fix goes to the weights: the namespace's worked examples (replies
    a check or a client verified) as training examples, each with its provenance."""
    from selfcorrect.memory.examples import ExampleBank

    settings: Settings = ctx.find_root().obj
    bank = ExampleBank(settings.store)
    try:
        rows = bank.training_data(namespace)
    finally:
        bank.close()
    if not rows:
        raise ConfigError(f"{namespace} has no worked examples to export",
                          "they are written from verified answers: run an online evaluation or serve with feedback")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    err.print(f"{len(rows)} training examples written to {path}")


def _find_lesson(bank, prefix: str):
    found = [lesson for lesson in bank.lessons(include_retired=True) if lesson.id.startswith(prefix)]
    if len(found) != 1:
        raise ConfigError(f"{len(found)} lessons have an id starting {prefix!r}",
                          "give more of the id (`selfcorrect memory list` shows them)")
    return found[0]
