"""`selfcorrect improve`: self-improvement over rounds into a recipe (docs/improve.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from selfcorrect.cli.app import app, check_strategies, err, progress_bars, spec_options
from selfcorrect.config import Settings
from selfcorrect.improve.loop import ImproveSpec


@app.command()
@spec_options(ImproveSpec, "improve", flags={"lora": ("--lora/--full",)})
def improve(
    ctx: typer.Context,
    spec: ImproveSpec,
    folder: Annotated[Optional[Path], typer.Option("--out", help="where the rounds, the report and recipe.json go "
                                                   "(default: improve/improve-HASH beside the store, named by the "
                                                   "settings); the same command again resumes a killed run, or "
                                                   "goes on with more --rounds")] = None,
) -> None:
    """Expert iteration: the model's best system labels the train side with checks it can
    verify, the model learns from it in the teacher's format and the students', every
    strategy is measured held out; worse rounds are rejected. Ends with DIR/recipe.json, which
    `--model recipe:DIR` and `serve --recipe DIR` load. On a store with no round 0 it first
    exports the embedded model as the base."""
    from selfcorrect.improve.loop import STOPPING, run
    from selfcorrect.improve.report import render
    from selfcorrect.train.cycle import run_folder

    settings: Settings = ctx.obj
    check_strategies([*spec.students, *spec.evaluate, *([spec.teacher] if spec.teacher else [])])
    out = folder or run_folder(settings.store, "improve", spec, STOPPING)
    with progress_bars() as (progress, on_progress):
        report = run(settings, spec, out, on_stage=lambda text: progress.console.print(escape(text)),
                     on_progress=on_progress)
    print(render(report))
    err.print(f"report: {out / 'report.md'}; recipe: {out / 'recipe.json'} "
              f"(`selfcorrect --model recipe:{out} eval`, `selfcorrect serve --recipe {out}`)")
