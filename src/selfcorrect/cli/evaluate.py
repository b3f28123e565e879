"""`selfcorrect eval`, `report`, `regrade` and `runs`: evaluations and their reports."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from selfcorrect import interrupt
from selfcorrect.cli.app import ReportFolder, RunId, app, check_strategies, err, out, progress_bars, show, spec_options
from selfcorrect.config import Settings
from selfcorrect.errors import ConfigError, SelfcorrectError
from selfcorrect.runner import EvalSpec
from selfcorrect.store import Store


@app.command(name="eval")
@spec_options(EvalSpec, "eval", flags={"strategies": ("--strategy", "-s"), "reference": ("--reference/--no-reference",),
                                       "memory_fixes": ("--memory-fixes/--no-memory-fixes",)})
def eval_(
    ctx: typer.Context,
    spec: EvalSpec,
    resume: Annotated[Optional[str], typer.Option(help="continue an interrupted run")] = None,
    force: Annotated[bool, typer.Option("--force", help="resume a run made by another code version or prompts")] = False,
    folder: ReportFolder = None,
) -> None:
    """Run strategies on a task and compare them. With no options: the main job on the
    embedded model (arithmetic, four strategies, a few minutes on 2 cores)."""
    from selfcorrect.runner import MAIN_JOB_LIMIT, Evaluation

    settings: Settings = ctx.obj
    if resume is not None:
        _refuse_settings_on_resume(ctx, resume)
    recipe = _recipe(settings)
    update = {}
    if recipe is not None and resume is None:
        # a recipe's model is meant to be run with its strategy, sampled as it was measured
        update = {name: value for name, value in (("strategies", [recipe.strategy]), ("task", recipe.task),
                                                  ("temperature", recipe.sampling.get("temperature")))
                  if value is not None and not _given(ctx, name)}
    elif not any(_given(ctx, name) for name in ("task", "strategies", "limit")) and resume is None:
        update = {"limit": MAIN_JOB_LIMIT}  # the main job
    if update:
        spec = EvalSpec(**{**spec.model_dump(), **update})
    check_strategies(spec.strategies)
    with progress_bars() as (progress, on_progress):
        evaluation = Evaluation(settings, spec, resume=resume, on_progress=on_progress, force=force,
                                pool_cap=spec.pool_cap if resume and _given(ctx, "pool_cap") else None)
        progress.console.print(f"[bold]{escape(evaluation.task.name)}[/]: {len(evaluation.items)} items × "
                               f"{', '.join(escape(s.spec) for s in evaluation.strategies)}")
        try:
            run = interrupt.run(evaluation.run())
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
    run, changed = interrupt.run(regrade_run(settings, run_id))
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
