"""`selfcorrect generate` and `selfcorrect models`: drawing from any backend, the backends'
status and speed, and the checkpoints the slow path trains."""

from __future__ import annotations

import importlib.metadata
import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from selfcorrect import interrupt
from selfcorrect.cache import CachedModel
from selfcorrect.cli.app import app, err, out, show
from selfcorrect.config import Settings
from selfcorrect.errors import ConfigError, SelfcorrectError
from selfcorrect.models.base import Completion, Message, SamplingParams
from selfcorrect.models.load import load_model
from selfcorrect.store import Store


@app.command()
def generate(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(help="the user message")],
    system: Annotated[Optional[str], typer.Option(help="a system message")] = None,
    n: Annotated[int, typer.Option("--n", "-n", help="samples to draw")] = 1,
    temperature: Annotated[float, typer.Option(help="0 for greedy")] = 0.7,
    top_p: Annotated[float, typer.Option(help="nucleus sampling mass")] = 1.0,
    top_k: Annotated[int, typer.Option(help="0 for off")] = 0,
    max_tokens: Annotated[int, typer.Option(help="most tokens per sample")] = 256,
    seed: Annotated[int, typer.Option(help="sample k is seeded from (seed, k)")] = 0,
    stop: Annotated[Optional[list[str]], typer.Option(help="stop string (repeatable)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for machines")] = False,
) -> None:
    """Draw completions for one prompt through any backend."""
    settings: Settings = ctx.obj
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    params = SamplingParams(
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        max_tokens=max_tokens,
        seed=seed,
        n=n,
        stop=tuple(stop or ()),
    )
    identity, completions, wall = interrupt.run(_generate(settings, messages, params))
    if as_json:
        print(json.dumps({"model": identity, "completions": [c.to_dict() for c in completions]}, indent=2))
        return
    for c in completions:
        if len(completions) > 1:
            out.rule(f"sample {c.index}", style="dim")
        out.print(c.text, markup=False, highlight=False)
    _speed_line(identity, completions, wall)


async def _generate(
    settings: Settings, messages: list[Message], params: SamplingParams
) -> tuple[str, list[Completion], float]:
    engine = load_model(settings)  # before the store: a model that fails to load writes nothing
    store = Store(settings.store) if settings.cache else None
    model = CachedModel(engine, store) if store is not None else engine
    try:
        started = time.perf_counter()
        completions = await model.generate(messages, params)
        return model.identity, completions, time.perf_counter() - started
    finally:
        await model.aclose()
        if store is not None:
            store.close()


def _speed_line(identity: str, completions: list[Completion], wall: float) -> None:
    tokens = sum(c.completion_tokens for c in completions)
    cached = sum(c.cached for c in completions)
    finishes = ", ".join(sorted({c.finish_reason for c in completions}))
    line = f"{identity} · {tokens} tokens ({finishes}) in {wall:.2f}s"
    if cached == len(completions):
        line += " · all from the sample cache"
    else:
        model_seconds = sum(c.seconds for c in completions if not c.cached)
        fresh = sum(c.completion_tokens for c in completions if not c.cached)
        line += f" · {fresh / max(model_seconds, 1e-9):.0f} tok/s"
        if cached:
            line += f" · {cached} of {len(completions)} from the sample cache"
    err.print(escape(line), style="dim", soft_wrap=True)


models_app = typer.Typer(help="The backends, and the checkpoints the slow path trains.", invoke_without_command=True)
app.add_typer(models_app, name="models")


@models_app.callback()
def models(ctx: typer.Context) -> None:
    """List the backends, check that the configured one works, and measure its speed."""
    from selfcorrect.models.load import BACKENDS

    if ctx.invoked_subcommand is not None:
        return
    settings: Settings = ctx.find_root().obj
    table = Table(title="selfcorrect backends (--model NAME[:ARG])")
    for column in ("backend", "about", "status", "from"):
        table.add_column(column)
    configured = settings.model.partition(":")[0]
    for entry in BACKENDS.entries():
        if entry.name == configured:
            status = _check_http(settings) if configured == "openai" else (
                _check_local(settings, settings.model) if configured in ("embedded", "gguf") else
                _check_other(settings))
        elif entry.name in ("embedded", "gguf"):
            status = _llama_version()
        else:
            status = "not configured"
        table.add_row(entry.name, escape(entry.about), status, entry.plugin or "built in")
    show(table)


@models_app.command("export")
def models_export(
    ctx: typer.Context,
    out: Annotated[Optional[Path], typer.Option(help="the checkpoint folder (default: models/base beside the store)")] = None,
) -> None:
    """The embedded model as a transformers checkpoint that can be trained, registered as
    round 0 of the lineage (`--model round:0`)."""
    from selfcorrect.train.export import export_base

    settings: Settings = ctx.find_root().obj
    started = time.perf_counter()
    base = export_base(settings.store, settings.precision, out)
    err.print(f"exported the embedded model to {base.path} in {time.perf_counter() - started:.0f} s: --model round:0 "
              f"or --model hf:{base.path}")


@models_app.command("gguf")
def models_gguf(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="a checkpoint of the lineage (see `selfcorrect models lineage`)")],
    out: Annotated[Optional[Path], typer.Option(help="the GGUF file (default: beside the checkpoint)")] = None,
) -> None:
    """Write a checkpoint back to GGUF (Q8_0, LoRA merged), to run on the llama.cpp engine."""
    from selfcorrect.models.lineage import Lineage
    from selfcorrect.train.to_gguf import write_checkpoint_gguf

    lineage = Lineage(ctx.find_root().obj.store)
    try:
        checkpoint = lineage.get(name)
        if checkpoint is None:
            raise ConfigError(f"no checkpoint {name!r}", "list them with `selfcorrect models lineage`")
        written = write_checkpoint_gguf(checkpoint, out)
        lineage.register(checkpoint.model_copy(update={"gguf": written["path"]}))
    finally:
        lineage.close()
    err.print(f"wrote {written['path']} ({written['megabytes']} MB) in {written['seconds']:.0f} s: "
              f"--model gguf:{written['path']}")


@models_app.command("lineage")
def models_lineage(ctx: typer.Context) -> None:
    """The checkpoints of the slow path: round, parent, method, data, metrics."""
    from selfcorrect.models.lineage import Lineage

    lineage = Lineage(ctx.find_root().obj.store)
    table = Table(title="checkpoints (--model round:N)")
    for column in ("round", "name", "parent", "method", "data", "metrics", "path"):
        table.add_column(column)
    for c in lineage.all():
        table.add_row(str(c.round), escape(c.name), escape(c.parent or "—"), c.method, c.data_hash or "—",
                      escape(json.dumps(c.metrics)[:60]), escape(c.path + (f" + {c.adapter}" if c.adapter else "")))
    lineage.close()
    show(table)


def _describe(settings: Settings) -> dict:
    """Load the configured backend, ask what it is (a server: whether it answers), close it."""
    async def probe() -> dict:
        model = load_model(settings)
        try:
            return await model.describe()
        finally:
            await model.aclose()

    return interrupt.run(probe())


def _check_other(settings: Settings) -> str:
    try:
        return f"[green]ok[/]: {escape(str(_describe(settings)))}"
    except SelfcorrectError as e:
        return f"[red]unavailable[/]: {escape(str(e))}"


def _llama_version() -> str:
    try:
        return f"available (llama-cpp-python {importlib.metadata.version('llama-cpp-python')})"
    except importlib.metadata.PackageNotFoundError:
        return "not installed: pip install 'selfcorrect[embedded]'"


def _check_local(settings: Settings, spec: str) -> str:
    """Load the model and time a single sequence and 8 samples drawn together."""
    try:
        model = load_model(settings.model_copy(update={"model": spec}))
    except SelfcorrectError as e:
        return f"[red]unavailable[/]: {escape(str(e))}"
    messages: list[Message] = [{"role": "user", "content": "Write a long story about a lighthouse."}]

    async def probe() -> tuple[dict, list[float]]:
        try:
            speeds = []
            for n in (1, 8):
                params = SamplingParams(temperature=0.8, top_k=40, max_tokens=64, n=n, seed=1)
                completions = await model.generate(messages, params)
                speeds.append(sum(c.completion_tokens for c in completions) / sum(c.seconds for c in completions))
            return await model.describe(), speeds
        finally:
            await model.aclose()

    about, speeds = interrupt.run(probe())
    return (
        f"[green]ok[/]: {escape(about['file'])} ({about['megabytes']} MB), context {about['context']}, "
        f"{about['threads']} threads: {speeds[0]:.0f} tok/s one sequence, {speeds[1]:.0f} tok/s 8 together"
    )


def _check_http(settings: Settings) -> str:
    try:
        about = _describe(settings)
    except SelfcorrectError as e:
        return f"[red]unavailable[/]: {escape(str(e))}"
    return (f"[green]reachable[/]: {escape(', '.join(about['servers']))} serves "
            f"{escape(', '.join(about['serves']) or '(no list)')}")
