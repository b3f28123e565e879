"""`selfcorrect eval`, `report`, `regrade` and `runs`: evaluations and their reports."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from selfcorrect.cli.app import (Critic, MemoryExplore, MemoryShow, ReportFolder, Retriever, RunId, app, check_share,
                                 check_show, check_strategies, err, out, progress_bars, show)
from selfcorrect.config import Settings
from selfcorrect.errors import ConfigError, SelfcorrectError
from selfcorrect.registry import split_specs
from selfcorrect.store import Store


@app.command(name="eval")
def eval_(
    ctx: typer.Context,
    task: Annotated[Optional[str], typer.Option(help="task[:key=value,...], e.g. arithmetic:digits=1 or mbpp")] = None,
    strategy: Annotated[Optional[str], typer.Option("--strategy", "-s", help="comma-separated strategy specs")] = None,
    limit: Annotated[Optional[int], typer.Option(help="the first K items")] = None,
    ids: Annotated[Optional[str], typer.Option(help="item positions, e.g. 0-199")] = None,
    sample: Annotated[Optional[int], typer.Option(help="a seeded random sample of N items")] = None,
    seed: Annotated[int, typer.Option(help="draws and sampling")] = 0,
    temperature: Annotated[float, typer.Option(help="sampling temperature for every strategy")] = 0.3,
    top_k: Annotated[Optional[int], typer.Option(help="default: 40 (every built-in engine)")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(help="default: 192 for math, 384 for code")] = None,
    critic: Critic = None,
    no_reference: Annotated[bool, typer.Option("--no-reference", help="draw no reference pool of plain samples")] = False,
    pool_cap: Annotated[int, typer.Option(help="the most samples per item the reference pool may grow to")] = 32,
    online: Annotated[bool, typer.Option("--online", help="items in order, the memory learning from each "
                                          "before the next; memory=on strategies run beside twins without")] = False,
    holdout: Annotated[float, typer.Option(help="online: the last share of items only reads the memory")] = 0.0,
    memory: Annotated[Optional[str], typer.Option(help="the error memory's namespace (default: the task's name)")] = None,
    memory_k: Annotated[int, typer.Option(help="lessons shown per item")] = 3,
    no_memory_fixes: Annotated[bool, typer.Option("--no-memory-fixes", help="lessons show only what went "
                                                  "wrong, not what passed instead")] = False,
    retriever: Retriever = "bm25",
    memory_show: MemoryShow = "gated",
    memory_explore: MemoryExplore = 0.2,
    lesson_writer: Annotated[str, typer.Option(help="online: lessons written by \"template\" or the \"model\"")] = "template",
    resume: Annotated[Optional[str], typer.Option(help="continue an interrupted run")] = None,
    force: Annotated[bool, typer.Option("--force", help="resume a run made by another code version or prompts")] = False,
    folder: ReportFolder = None,
) -> None:
    """Run strategies on a task and compare them. With no options: the main job on the
    embedded model (arithmetic, four strategies, a few minutes on 2 cores)."""
    from selfcorrect.memory.embed import check_retriever
    from selfcorrect.runner import MAIN_JOB_LIMIT, EvalSpec, Evaluation

    settings: Settings = ctx.obj
    for flag, value, low, high in (("--limit", limit, 1, None), ("--sample", sample, 1, None),
                                   ("--pool-cap", pool_cap, 1, 256), ("--max-tokens", max_tokens, 1, None),
                                   ("--memory-k", memory_k, 1, 20)):
        if value is not None and (value < low or (high is not None and value > high)):
            raise ConfigError(f"{flag} {value} is out of range",
                              f"use a number from {low}" + (f" to {high}" if high else " up") +
                              (", or omit it to run every item" if flag in ("--limit", "--sample") else ""))
    if resume is not None:
        _refuse_settings_on_resume(ctx, resume)
    recipe = _recipe(settings)
    if recipe is not None and resume is None:
        # a recipe's model is meant to be run with its strategy, sampled as it was measured
        strategy = strategy or recipe.strategy
        if not _given(ctx, "temperature"):
            temperature = recipe.sampling.get("temperature", temperature)
        task = task or recipe.task
    main_job = task is None and strategy is None and resume is None
    spec = EvalSpec(task=task or "arithmetic", limit=limit if limit is not None else (MAIN_JOB_LIMIT if main_job else None),
                    ids=ids, sample=sample, seed=seed, temperature=temperature, top_k=top_k, max_tokens=max_tokens,
                    critic=critic, reference=not no_reference, pool_cap=pool_cap, online=online,
                    holdout=_holdout(holdout), memory=memory, memory_k=memory_k, lesson_writer=_writer(lesson_writer),
                    retriever=check_retriever(retriever), memory_fixes=not no_memory_fixes,
                    memory_show=check_show(memory_show), memory_explore=check_share("--memory-explore", memory_explore),
                    **({"strategies": split_specs(strategy)} if strategy else {}))
    check_strategies(spec.strategies)
    with progress_bars() as (progress, on_progress):
        evaluation = Evaluation(settings, spec, resume=resume, on_progress=on_progress, force=force,
                                pool_cap=pool_cap if resume and _given(ctx, "pool_cap") else None)
        progress.console.print(f"[bold]{escape(evaluation.task.name)}[/]: {len(evaluation.items)} items × "
                               f"{', '.join(escape(s.spec) for s in evaluation.strategies)}")
        try:
            run = asyncio.run(evaluation.run())
        except KeyboardInterrupt:
            record = evaluation.run_record
            if record is not None:
                err.print(f"interrupted: resume with `selfcorrect eval --resume {record.run_id}`")
            raise
        except SelfcorrectError as e:
            record = evaluation.run_record
            if record is not None:
                raise SelfcorrectError(e.what, f"{e.fix}; then resume with `selfcorrect eval --resume "
                                               f"{record.run_id}`" if e.fix else
                                       f"resume with `selfcorrect eval --resume {record.run_id}`") from e
            raise
    finish_report(evaluation.store, run, evaluation.task.kind, folder)


def _recipe(settings: Settings):
    from selfcorrect.models.recipe import read_recipe

    name, _, folder = settings.model.partition(":")
    return read_recipe(folder) if name == "recipe" and folder else None


# What a resumed run may be given: the rest of its settings come from its record.
RESUME_OPTIONS = {"resume", "force", "folder", "pool_cap"}


def _given(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


def _refuse_settings_on_resume(ctx: typer.Context, run_id: str) -> None:
    """A resumed run keeps the settings it was made with: an option that would change them is
    an error, not silently ignored."""
    given = [p.opts[0] for p in ctx.command.params if p.name not in RESUME_OPTIONS and _given(ctx, p.name)]
    if given:
        raise ConfigError(f"--resume {run_id} goes on with the settings the run was made with; "
                          f"{', '.join(given)} would change them",
                          f"drop {', '.join(given)} (only --pool-cap, --out and --force go with --resume), "
                          "or start a new run with them")


def _holdout(share: float) -> float:
    if not 0 <= share < 1:
        raise ConfigError(f"--holdout {share} is out of range", "give a share from 0 up to (not including) 1, e.g. 0.3")
    return share


def _writer(name: str) -> str:
    if name not in ("template", "model"):
        raise ConfigError(f"--lesson-writer {name!r} is not a writer", "use template or model")
    return name


def finish_report(store: Store, run, kind: str, folder: Optional[Path]) -> None:
    from selfcorrect.report import write_reports
    from selfcorrect.report.console import console_table

    paths = write_reports(store, run, kind, folder or Path("runs") / run.run_id)
    console_table(json.loads(paths["json"].read_text()), out)
    err.print(f"run {run.run_id}: " + ", ".join(f"{k} {v}" for k, v in paths.items()), soft_wrap=True)


@app.command()
def report(
    ctx: typer.Context,
    run_id: RunId,
    folder: ReportFolder = None,
) -> None:
    """Write report.json, report.md and report.html for a run."""
    from selfcorrect.runner import check_complete

    settings: Settings = ctx.obj
    store = Store(settings.store, read_only=True)
    run = store.run(run_id)
    check_complete(store, run)
    kind = run.config.get("kind")  # runs from before it was recorded: ask the task
    if kind is None:
        from selfcorrect.tasks import parse_task

        kind = parse_task(run.config["spec"]["task"], settings.data).kind
    finish_report(store, run, kind, folder)


@app.command()
def regrade(
    ctx: typer.Context,
    run_id: RunId,
    folder: ReportFolder = None,
) -> None:
    """Grade a run's stored attempts again with the current answer readers and gold checks
    (no model call), and write its reports. Strategies' selections stay as they were made."""
    from selfcorrect.regrade import regrade as regrade_run

    settings: Settings = ctx.obj
    run, changed = asyncio.run(regrade_run(settings, run_id))
    err.print(f"regraded {changed['attempts']} attempts of {changed['units']} units: "
              f"{changed['answers']} answers read differently, {changed['grades']} grades changed, "
              f"{changed['finals']} final verdicts changed")
    with Store(settings.store, read_only=True) as store:
        finish_report(store, run, run.config["kind"], folder)


@app.command()
def runs(ctx: typer.Context) -> None:
    """List the runs in the store."""
    settings: Settings = ctx.obj
    store = Store(settings.store, read_only=True)
    table = Table(title=str(settings.store))
    table.add_column("run", no_wrap=True)  # ids are copied into other commands
    for column in ("status", "task", "items", "strategies", "created"):
        table.add_column(column)
    for run in store.runs():
        table.add_row(run.run_id, run.status + (" ORACLE" if run.oracle else ""), escape(run.config.get("task", "")),
                      str(run.config.get("items", "")), escape(", ".join(run.config.get("strategies", []))),
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(run.created_at)))
    show(table)
