"""`selfcorrect train`, `train-verifier`, `train-compare` and `fit`: the slow path
(docs/train.md, docs/rl.md, docs/search.md)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from selfcorrect import interrupt
from selfcorrect.cli.app import app, check_strategies, err, progress_bars, spec_options
from selfcorrect.config import Settings
from selfcorrect.errors import ConfigError
from selfcorrect.models.load import load_model
from selfcorrect.train.rounds import TrainSpec
from selfcorrect.train.verifier import VerifierSpec


def _methods_help() -> str:
    from selfcorrect.train.methods import METHODS

    return ": " + ", ".join(METHODS.names())


@app.command()
@spec_options(TrainSpec, "train", flags={"lora": ("--lora/--full",)}, more_help={"method": _methods_help})
def train(
    ctx: typer.Context,
    spec: TrainSpec,
    folder: Annotated[Optional[Path], typer.Option("--out", help="where the rounds and the report go (default: "
                                                   "train/train-HASH beside the store, named by the settings); "
                                                   "the same command again resumes a killed run, or goes on "
                                                   "with more --rounds")] = None,
    export: Annotated[Optional[tuple[str, Path]], typer.Option(
        help="verl DIR: write what verl's PPO entry point takes for this GRPO run (the train and held-out "
             "sides as parquet, a reward calling the task's check, run.sh) and train nothing here")] = None,
) -> None:
    """Self-training rounds: sample the train side, keep what the check accepts, train, measure
    the held-out side, repeat (docs/train.md). On a store with no round 0 it first exports
    the embedded model as the base."""
    from selfcorrect.train.cycle import run_folder
    from selfcorrect.train.report import render
    from selfcorrect.train.rounds import STOPPING, run

    settings: Settings = ctx.obj
    if export is not None:
        return _export_verl(settings, spec, *export)
    check_strategies([spec.sample, *spec.evaluate])
    out = folder or run_folder(settings.store, "train", spec, STOPPING)
    with progress_bars() as (progress, on_progress):
        report = run(settings, spec, out, on_stage=lambda text: progress.console.print(escape(text)),
                     on_progress=on_progress)
    print(render(report))
    err.print(f"report: {out / 'report.md'}, {out / 'report.json'}")


def _export_verl(settings: Settings, spec: TrainSpec, kind: str, folder: Path) -> None:
    from selfcorrect.models.lineage import Lineage
    from selfcorrect.tasks import parse_task
    from selfcorrect.tasks.kinds import KINDS
    from selfcorrect.train.cycle import split_items
    from selfcorrect.train.export import base_of
    from selfcorrect.train.grpo import GRPOSettings
    from selfcorrect.train.methods import ONLINE_TEMPERATURE
    from selfcorrect.train.verl import export

    if kind != "verl":
        raise ConfigError(f"--export {kind} is not a trainer selfcorrect writes for", "use --export verl DIR")
    if spec.method != "grpo":
        raise ConfigError(f"--export verl writes a GRPO run, not --method {spec.method}", "add --method grpo")
    task = parse_task(spec.task, settings.data)
    items, split = split_items(task, spec)
    by_id = {i.id: i for i in items}
    lineage = Lineage(settings.store)
    try:
        base = base_of(settings.store, lineage, settings.precision, err.print)
    finally:
        lineage.close()
    written = export(folder.resolve(), task_spec=spec.task, data=str(settings.data) if settings.data else None,
                     train_items=[by_id[i] for i in split.train_ids], held_items=[by_id[i] for i in split.held_ids],
                     kind=task.kind, base=Path(base.path), steps=spec.grpo_steps, generations=spec.generations,
                     learning_rate=spec.learning_rate, beta=spec.beta,
                     temperature=max(spec.sample_temperature, ONLINE_TEMPERATURE),
                     max_response_length=KINDS[task.kind].max_tokens, lora=spec.lora, rank=GRPOSettings.rank)
    print(json.dumps(written, indent=2))
    err.print(f"verl: {written['train']} train and {written['heldout']} held-out items in {folder}; "
              f"run it with GPUS=8 NODES=1 {written['command']}")


@app.command(name="train-verifier")
@spec_options(VerifierSpec, "train-verifier")
def train_verifier(
    ctx: typer.Context,
    spec: VerifierSpec,
    base: Annotated[Optional[Path], typer.Option(help="the checkpoint the verifier starts from (default: the "
                                                      "lineage's base, `selfcorrect models export`)")] = None,
    folder: Annotated[Optional[Path], typer.Option("--out", help="where labels, the model and the report go")] = None,
) -> None:
    """A verifier learned from the model's own samples: a process reward model (step labels
    from rollouts) or an outcome verifier, measured on held-out items; then a scorer in
    strategy specs (`beam-search:scorer=prm:PATH`, `best-of-n:verifier=orm:PATH`). docs/search.md"""
    from selfcorrect.models.lineage import Lineage
    from selfcorrect.train.verifier import build

    settings: Settings = ctx.obj
    check_strategies([spec.sample])
    if base is None:
        lineage = Lineage(settings.store)
        try:
            base = Path(lineage.of_round(0).path)
        finally:
            lineage.close()
    out = folder or settings.store.parent / "verifiers" / f"{spec.kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    engine = load_model(settings)
    try:
        with progress_bars() as (progress, on_progress):
            report = interrupt.run(build(settings, spec, base, out, engine,
                                       on_stage=lambda text: progress.console.print(escape(text)),
                                       on_progress=on_progress))
    finally:
        interrupt.run(engine.aclose())
    print((out / "report.md").read_text())
    err.print(f"verifier: {report['scorer']}")


@app.command(name="train-compare")
def train_compare(
    runs: Annotated[list[Path], typer.Argument(help="two or more `train --out` folders measured on the same held-out items")],
    strategy: Annotated[Optional[str], typer.Option(help="the strategy of the paired tests (default: the first "
                                                          "revising strategy every run measured)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="where compare.{md,json,html} go")] = None,
) -> None:
    """Self-training runs side by side: the base and each run's last round on every strategy,
    the two attempts of revising strategies with their flips, paired tests between the models."""
    from selfcorrect.train.compare import compare, load, render, write

    reports = {}
    for folder in runs:
        label = folder.resolve().name if folder.is_dir() else folder.resolve().parent.name
        if label in reports:
            raise ConfigError(f"two runs are named {label}", "give runs from folders with different names")
        reports[label] = load(folder)
    comparison = compare(reports, strategy)
    print(write(comparison, out) if out else render(comparison))
    if out:
        err.print(f"comparison: {out / 'compare.md'}, {out / 'compare.json'}, {out / 'compare.html'}")


@app.command()
def fit(
    ctx: typer.Context,
    data: Annotated[Path, typer.Argument(help="a round's data.jsonl: examples (SFT) or preference pairs (DPO)")],
    base: Annotated[Path, typer.Option(help="the checkpoint to start from (a transformers folder)")],
    out: Annotated[Path, typer.Option(help="where the model goes (out/model), with checkpoints to resume from")],
    full: Annotated[bool, typer.Option("--full", help="full fine-tuning instead of LoRA")] = False,
    epochs: Annotated[float, typer.Option(help="epochs")] = 2.0,
    learning_rate: Annotated[float, typer.Option(help="2e-4 suits LoRA; full fine-tuning wants about 1e-5")] = 2e-4,
    batch_size: Annotated[int, typer.Option(help="per device")] = 8,
    seed: Annotated[int, typer.Option(help="the data order")] = 0,
) -> None:
    """One training step of the slow path on a data file, alone: the job to run under
    `accelerate launch -m selfcorrect.cli fit ...` on several GPUs (docs/train.md)."""
    from selfcorrect.train.data import Pair, read_jsonl, to_dataset, to_preference_dataset
    from selfcorrect.train.sft import SFTSettings, train_dpo, train_sft

    rows = read_jsonl(data)
    settings = SFTSettings(lora=not full, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, seed=seed,
                           precision=ctx.obj.precision)
    if rows and isinstance(rows[0], Pair):
        metrics = train_dpo(base, to_preference_dataset(rows), out, settings)
    else:
        metrics = train_sft(base, to_dataset(rows), out, settings)
    if os.environ.get("RANK", "0") == "0":  # under a launcher, the main process speaks for all
        print(json.dumps(metrics))  # one line, the loss log with it: what a launching round reads
        err.print(f"model: {out / 'model'}")
