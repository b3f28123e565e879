"""The `selfcorrect` command."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import json
import logging
import sqlite3
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from selfcorrect.config import Settings, load_settings
from selfcorrect.errors import ConfigError, SelfcorrectError
from selfcorrect.models.base import Completion, Message, SamplingParams
from selfcorrect.cache import CachedModel
from selfcorrect.models.load import load_model
from selfcorrect.sandbox import Sandbox
from selfcorrect.registry import split_specs
from selfcorrect.store import Store

app = typer.Typer(
    help="Make language models correct and improve themselves, and measure whether they did.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)


def _show(table: Table) -> None:
    """A table on stdout; in a pipe wide enough not to wrap every cell (not 80 columns)."""
    (out if out.is_terminal else Console(width=160)).print(table)


@app.callback()
def options(
    ctx: typer.Context,
    model: Annotated[
        Optional[str], typer.Option("--model", "-m", help="embedded, gguf:PATH, openai:NAME, hf:PATH or round:N")
    ] = None,
    base_url: Annotated[
        Optional[list[str]],
        typer.Option("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1 (repeat for replicas)"),
    ] = None,
    config: Annotated[
        Optional[Path], typer.Option("--config", help="TOML settings (default: ./selfcorrect.toml if present)")
    ] = None,
    data: Annotated[
        Optional[Path], typer.Option("--data", help="datasets folder (holding gsm8k/, mbpp/); default: the shipped copy")
    ] = None,
    store: Annotated[Optional[Path], typer.Option("--store", help="SQLite store file")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="llama.cpp threads")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="neither read nor write the sample cache")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks and debug logs")] = False,
) -> None:
    ctx.obj = load_settings(
        config,
        model=model,
        base_url=base_url or None,
        store=store,
        data=data,
        threads=threads,
        cache=False if no_cache else None,
    )


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
    identity, completions, wall = asyncio.run(_generate(settings, messages, params))
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
    _show(table)


@models_app.command("export")
def models_export(
    ctx: typer.Context,
    out: Annotated[Optional[Path], typer.Option(help="the checkpoint folder (default: models/base beside the store)")] = None,
) -> None:
    """The embedded model as a transformers checkpoint that can be trained, registered as
    round 0 of the lineage (`--model round:0`)."""
    from selfcorrect.train.export import export_embedded
    from selfcorrect.models.lineage import Checkpoint, Lineage

    settings: Settings = ctx.find_root().obj
    folder = out or settings.store.parent / "models" / "base"
    started = time.perf_counter()
    export_embedded(folder)
    lineage = Lineage(settings.store)
    lineage.register(Checkpoint(name="base", round=0, path=str(folder.resolve()), method="export",
                                metrics={"export_seconds": round(time.perf_counter() - started, 1)}))
    lineage.close()
    err.print(f"exported the embedded model to {folder} in {time.perf_counter() - started:.0f} s: --model round:0 "
              f"or --model hf:{folder}")


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
    _show(table)


def _describe(settings: Settings) -> dict:
    """Load the configured backend, ask what it is (a server: whether it answers), close it."""
    async def probe() -> dict:
        model = load_model(settings)
        try:
            return await model.describe()
        finally:
            await model.aclose()

    return asyncio.run(probe())


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

    about, speeds = asyncio.run(probe())
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

        _show(_registry_table(TASKS, "tasks (spec: name:key=value,... or PATH.jsonl:key=value,...)",
                                  hidden=("data", "path")))
        return
    from selfcorrect.tasks import parse_task

    task = parse_task(name, settings.data)
    items = task.items()
    out.print(f"[bold]{escape(task.name)}[/]: {len(items)} {task.kind} items")
    for item in items[:limit]:
        view = item.view
        out.rule(escape(view.id), style="dim")
        out.print(_preview(view.question), markup=False, highlight=False)
        gold = item.answer if item.answer is not None else f"{len(item.tests)} hidden tests"
        out.print(f"[dim]gold:[/] {escape(_preview(gold))}")
        for test in view.visible_tests:
            out.print(f"[dim]visible:[/] {escape(_preview(test))}")


def _preview(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters in all)"


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
    _show(table)


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
    critic: Annotated[Optional[str], typer.Option(help="a model spec for critic-refine, or \"same\"")] = None,
    no_reference: Annotated[bool, typer.Option("--no-reference", help="draw no reference pool of plain samples")] = False,
    pool_cap: Annotated[int, typer.Option(help="the most samples per item the reference pool may grow to")] = 32,
    online: Annotated[bool, typer.Option("--online", help="items in order, the memory learning from each "
                                          "before the next; memory=on strategies run beside twins without")] = False,
    holdout: Annotated[float, typer.Option(help="online: the last share of items only reads the memory")] = 0.0,
    memory: Annotated[Optional[str], typer.Option(help="the error memory's namespace (default: the task's name)")] = None,
    memory_k: Annotated[int, typer.Option(help="lessons shown per item")] = 3,
    no_memory_fixes: Annotated[bool, typer.Option("--no-memory-fixes", help="lessons show only what went "
                                                  "wrong, not what passed instead")] = False,
    retriever: Annotated[str, typer.Option(help="how lessons are found: bm25, embedding, embedding:PATH")] = "bm25",
    lesson_writer: Annotated[str, typer.Option(help="online: lessons written by \"template\" or the \"model\"")] = "template",
    resume: Annotated[Optional[str], typer.Option(help="continue an interrupted run")] = None,
    force: Annotated[bool, typer.Option("--force", help="resume a run made by another code version or prompts")] = False,
    folder: Annotated[Optional[Path], typer.Option("--out", help="report folder (default: runs/RUN_ID)")] = None,
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
    main_job = task is None and strategy is None and resume is None
    spec = EvalSpec(task=task or "arithmetic", limit=limit if limit is not None else (MAIN_JOB_LIMIT if main_job else None),
                    ids=ids, sample=sample, seed=seed, temperature=temperature, top_k=top_k, max_tokens=max_tokens,
                    critic=critic, reference=not no_reference, pool_cap=pool_cap, online=online,
                    holdout=_holdout(holdout), memory=memory, memory_k=memory_k, lesson_writer=_writer(lesson_writer),
                    retriever=check_retriever(retriever), memory_fixes=not no_memory_fixes,
                    **({"strategies": split_specs(strategy)} if strategy else {}))
    _check_strategies(spec.strategies)
    with _progress() as (progress, on_progress):
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
    _finish_report(evaluation.store, run, evaluation.task.kind, folder)


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


def _check_strategies(specs: list[str]) -> None:
    from selfcorrect.strategies import parse_strategy

    for spec in specs:
        parse_strategy(spec)


@contextlib.contextmanager
def _progress():
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    progress = Progress(TextColumn("items {task.fields[items]}"), BarColumn(), TextColumn("units {task.fields[units]}"),
                        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                        TimeRemainingColumn(), console=err, transient=False)
    bars: dict[int, tuple] = {}  # one bar per evaluation (self-training runs several)

    def on_progress(p) -> None:
        if id(p) not in bars:
            bars[id(p)] = (None, time.perf_counter())
        bar, started = bars[id(p)]
        fields = {"items": f"{p.items_done}/{p.items_total}", "units": f"{p.units_done}/{p.units_total}",
                  "rate": f"{p.fresh_tokens / max(time.perf_counter() - started, 1e-9):.0f} tok/s"}
        if bar is None:
            bar = progress.add_task("eval", total=p.units_total, completed=p.units_done, **fields)
            bars[id(p)] = (bar, started)
        progress.update(bar, completed=p.units_done, **fields)

    with progress:
        yield progress, on_progress


def _finish_report(store: Store, run, kind: str, folder: Optional[Path]) -> None:
    from selfcorrect.report import write_reports
    from selfcorrect.report.console import console_table

    paths = write_reports(store, run, kind, folder or Path("runs") / run.run_id)
    console_table(json.loads(paths["json"].read_text()), out)
    err.print(f"run {run.run_id}: " + ", ".join(f"{k} {v}" for k, v in paths.items()), soft_wrap=True)


@app.command()
def report(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="the run (see `selfcorrect runs`)")],
    folder: Annotated[Optional[Path], typer.Option("--out", help="report folder (default: runs/RUN_ID)")] = None,
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
    _finish_report(store, run, kind, folder)


@app.command()
def regrade(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="the run (see `selfcorrect runs`)")],
    folder: Annotated[Optional[Path], typer.Option("--out", help="report folder (default: runs/RUN_ID)")] = None,
) -> None:
    """Grade a run's stored attempts again with the current answer readers and gold checks
    (no model call), and write its reports. Strategies' selections stay as they were made."""
    from selfcorrect.runner import regrade as regrade_run

    settings: Settings = ctx.obj
    run, changed = asyncio.run(regrade_run(settings, run_id))
    err.print(f"regraded {changed['attempts']} attempts of {changed['units']} units: "
              f"{changed['answers']} answers read differently, {changed['grades']} grades changed, "
              f"{changed['finals']} final verdicts changed")
    with Store(settings.store, read_only=True) as store:
        _finish_report(store, run, run.config["kind"], folder)


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
    _show(table)


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
    _show(table)


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


memory_app = typer.Typer(help="The error memory: lessons from verified mistakes (docs/memory.md).",
                         no_args_is_help=True)
app.add_typer(memory_app, name="memory")


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
                      str(lesson.helped), str(lesson.hurt), escape(_preview(lesson.text, 120)))
    _show(table)


@memory_app.command("show")
def memory_show(ctx: typer.Context, lesson_id: Annotated[str, typer.Argument(help="an id, or its first characters")]) -> None:
    """One lesson, whole, as JSON."""
    lesson = _find_lesson(_bank(ctx), lesson_id)
    print(json.dumps({"id": lesson.id, **lesson.model_dump()}, indent=2, ensure_ascii=False))


@memory_app.command("retire")
def memory_retire(ctx: typer.Context, lesson_id: Annotated[str, typer.Argument(help="an id, or its first characters")]) -> None:
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
    """Forget a namespace: its lessons (retired ones too) and its guidelines' versions."""
    from selfcorrect.memory import GuidelineBook

    bank = _bank(ctx)
    count = len(bank.lessons(namespace, include_retired=True))
    if not yes:
        err.print(f"{count} lessons and the guidelines of {escape(namespace)} would be forgotten: add --yes")
        return
    bank.clear(namespace)
    GuidelineBook(bank).clear(namespace)
    err.print(f"forgot {count} lessons and the guidelines of {escape(namespace)}")


@memory_app.command("guidelines")
def memory_guidelines(
    ctx: typer.Context,
    namespace: Annotated[str, typer.Argument(help="the namespace (a task's name, a server's memory)")],
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
    _show(table)


@memory_app.command("stats")
def memory_stats(ctx: typer.Context) -> None:
    """Active and retired lessons per namespace."""
    table = Table(title="lessons per namespace")
    for column in ("namespace", "active", "retired"):
        table.add_column(column)
    for namespace, counts in sorted(_bank(ctx).stats().items()):
        table.add_row(escape(namespace), str(counts["active"]), str(counts["retired"]))
    _show(table)


def _find_lesson(bank, prefix: str):
    found = [lesson for lesson in bank.lessons(include_retired=True) if lesson.id.startswith(prefix)]
    if len(found) != 1:
        raise ConfigError(f"{len(found)} lessons have an id starting {prefix!r}",
                          "give more of the id (`selfcorrect memory list` shows them)")
    return found[0]


@app.command()
def serve(
    ctx: typer.Context,
    strategy: Annotated[str, typer.Option("--strategy", "-s", help="for requests that name none")] = "single",
    memory: Annotated[Optional[str], typer.Option(help="an error memory namespace: lessons shown, feedback learned")] = None,
    critic: Annotated[Optional[str], typer.Option(help="a critic model spec, or \"same\"")] = None,
    retriever: Annotated[str, typer.Option(help="how lessons are found: bm25, embedding, embedding:PATH")] = "bm25",
    host: Annotated[str, typer.Option(help="the address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="the port")] = 8000,
    api_keys: Annotated[Optional[Path], typer.Option(help="a keys file (`selfcorrect serve-key NAME >> FILE`)")] = None,
    rate_limit: Annotated[float, typer.Option(help="requests per minute per key")] = 600.0,
    max_body: Annotated[int, typer.Option(help="the largest request body in bytes")] = 1_000_000,
    timeout: Annotated[float, typer.Option(help="seconds a strategy may run before the best answer so far returns")] = 600.0,
    cors: Annotated[Optional[str], typer.Option(help="comma-separated origins allowed by CORS (default: off)")] = None,
) -> None:
    """An OpenAI-compatible server whose answers are a strategy's (docs/serve.md)."""
    import uvicorn

    from selfcorrect.serve.app import ServeConfig, create_app
    from selfcorrect.serve.keys import read_keys

    settings: Settings = ctx.obj
    for flag, value in (("--port", port), ("--rate-limit", rate_limit), ("--max-body", max_body), ("--timeout", timeout)):
        if value <= 0 or (flag == "--port" and value > 65535):
            raise ConfigError(f"{flag} {value} is out of range", "give a positive number" +
                              (" up to 65535" if flag == "--port" else ""))
    keys = read_keys(api_keys) if api_keys else None
    if keys is None and host not in ("127.0.0.1", "localhost", "::1"):
        err.print(f"[yellow]warning[/]: listening on {escape(host)} with no API keys: anyone who reaches it can use it")
    config = ServeConfig(strategy=strategy, memory=memory, critic=critic, retriever=retriever, keys=keys, rate_limit=rate_limit,
                         max_body=max_body, timeout=timeout, cors=[o for o in (cors or "").split(",") if o])
    settings.store.parent.mkdir(parents=True, exist_ok=True)
    application = create_app(settings, config)  # checks the strategy and retriever before it listens
    err.print(f"serving {escape(strategy)} on http://{host}:{port}/v1 (model {escape(settings.model)}"
              + (f", memory {escape(memory)}" if memory else "") + ")")
    uvicorn.run(application, host=host, port=port, log_level="warning", timeout_keep_alive=5, limit_concurrency=1024)


@app.command()
def train(
    ctx: typer.Context,
    task: Annotated[str, typer.Option(help="the task whose items are split into train and held-out sides")] = "arithmetic",
    limit: Annotated[Optional[int], typer.Option(help="items, both sides together")] = 400,
    heldout: Annotated[float, typer.Option(help="the held-out share of the items (split by item id)")] = 0.5,
    rounds: Annotated[int, typer.Option(help="training rounds after the base's")] = 2,
    method: Annotated[str, typer.Option(help="rft, star (rft and rationales hinted with the answer), correction (revisions "
                                               "of a revising --sample strategy), dpo, grpo or score (two attempts, to correct itself)")] = "rft",
    labels: Annotated[str, typer.Option(help="gold (the task's check), vote or program (no gold: pseudo-labels), "
                                               "judge (dpo: the model ranks its own samples)")] = "gold",
    traces: Annotated[str, typer.Option(help="correction: revisions (made by the --sample strategy) or pairs "
                                               "(independent samples: a wrong one shown, the review turn, a right one)")] = "revisions",
    agreement: Annotated[float, typer.Option(help="vote labels: the least share of samples the majority needs")] = 0.5,
    sample: Annotated[str, typer.Option(help="how the train side is sampled each round")] = "self-consistency:n=8",
    sample_temperature: Annotated[float, typer.Option(help="its temperature")] = 0.7,
    evaluate: Annotated[str, typer.Option(help="comma-separated strategies measured on the held-out side")] = "single",
    restart: Annotated[str, typer.Option(help="base (ReST-EM: each round from the base) or continue")] = "base",
    engine: Annotated[str, typer.Option(help="what samples and evaluates: gguf (each checkpoint written back to "
                                               "GGUF, on llama.cpp), hf (transformers) or auto")] = "auto",
    per_item: Annotated[int, typer.Option(help="the most training replies per item")] = 4,
    rare_boost: Annotated[int, typer.Option(help="rft: repeat the replies of items right in at most a quarter "
                                                 "of their samples this many times")] = 1,
    patience: Annotated[int, typer.Option(help="rounds without a held-out gain before stopping")] = 1,
    full: Annotated[bool, typer.Option("--full", help="full fine-tuning instead of LoRA")] = False,
    epochs: Annotated[float, typer.Option(help="epochs per round")] = 2.0,
    learning_rate: Annotated[float, typer.Option(help="2e-4 suits LoRA; full fine-tuning wants about 1e-5")] = 2e-4,
    grpo_steps: Annotated[int, typer.Option(help="grpo: steps per round")] = 40,
    generations: Annotated[int, typer.Option(help="grpo: completions per prompt (the group)")] = 8,
    beta: Annotated[float, typer.Option(help="grpo: the KL penalty towards the starting model")] = 0.04,
    format_reward: Annotated[float, typer.Option(help="grpo: reward for a readable answer (0: off)")] = 0.0,
    partial_credit: Annotated[bool, typer.Option(help="grpo: up to 0.5 for a numeric answer near the gold")] = False,
    stage1_steps: Annotated[int, typer.Option(help="score: Stage I steps (reward attempt 2, strong KL)")] = 20,
    stage2_steps: Annotated[int, typer.Option(help="score: Stage II steps (reward both, bonus for improving)")] = 20,
    alpha: Annotated[float, typer.Option(help="score: Stage II's bonus weight on r2 - r1")] = 1.0,
    beta_stage1: Annotated[float, typer.Option(help="score: Stage I's KL weight (--beta is Stage II's)")] = 0.5,
    review_feedback: Annotated[str, typer.Option(help="score: the review turn says nothing of attempt 1 (none: "
                                                       "intrinsic) or shows its visible tests' results (tests: code)")] = "none",
    seed: Annotated[int, typer.Option(help="the split and the draws")] = 0,
    folder: Annotated[Optional[Path], typer.Option("--out", help="where rounds go (default: train/ beside the store)")] = None,
) -> None:
    """Self-training rounds: sample the train side, keep what the check accepts, train, measure
    the held-out side, repeat (docs/train.md). Needs `selfcorrect models export` first."""
    from pydantic import ValidationError

    from selfcorrect.train.report import render
    from selfcorrect.train.rounds import TrainSpec, run

    settings: Settings = ctx.obj
    try:
        spec = TrainSpec(task=task, limit=limit, heldout=heldout, rounds=rounds, method=method, labels=labels, traces=traces,
                         agreement=agreement,
                         sample=sample, sample_temperature=sample_temperature,
                         evaluate=split_specs(evaluate), restart=restart, engine=engine,
                         per_item=per_item, rare_boost=rare_boost, grpo_steps=grpo_steps, generations=generations,
                         beta=beta, format_reward=format_reward, partial_credit=partial_credit,
                         stage1_steps=stage1_steps, stage2_steps=stage2_steps, alpha=alpha, beta_stage1=beta_stage1,
                         review_feedback=review_feedback,
                         patience=patience, lora=not full, epochs=epochs, learning_rate=learning_rate, seed=seed)
    except ValidationError as e:
        first = e.errors()[0]
        if not first["loc"]:  # a rule across options
            raise ConfigError(first["msg"].removeprefix("Value error, "), "see `selfcorrect train --help`") from None
        raise ConfigError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg'].lower()} (got {first.get('input')!r})",
                          "see `selfcorrect train --help`") from None
    _check_strategies([spec.sample, *spec.evaluate])
    out = folder or settings.store.parent / "train" / time.strftime("%Y%m%d-%H%M%S")
    with _progress() as (progress, on_progress):
        report = run(settings, spec, out, on_stage=lambda text: progress.console.print(escape(text)),
                     on_progress=on_progress)
    print(render(report))
    err.print(f"report: {out / 'report.md'}, {out / 'report.json'}")


@app.command(name="train-verifier")
def train_verifier(
    ctx: typer.Context,
    kind: Annotated[str, typer.Option(help="prm (a verdict per step, labels from rollouts) or orm (per solution)")] = "prm",
    task: Annotated[str, typer.Option(help="a math task whose items are split into train and held-out sides")] = "arithmetic",
    limit: Annotated[Optional[int], typer.Option(help="items, both sides together")] = 400,
    heldout: Annotated[float, typer.Option(help="the held-out share of the items (split by item id)")] = 0.5,
    sample: Annotated[str, typer.Option(help="how the policy (--model) samples both sides")] = "self-consistency:n=4",
    temperature: Annotated[float, typer.Option(help="its temperature, and the rollouts'")] = 0.7,
    rollouts: Annotated[int, typer.Option(help="prm: completions per prefix")] = 4,
    step: Annotated[str, typer.Option(help="what ends a step: sentence, line or blank-line")] = "sentence",
    base: Annotated[Optional[Path], typer.Option(help="the checkpoint the verifier starts from (default: the "
                                                      "lineage's base, `selfcorrect models export`)")] = None,
    epochs: Annotated[float, typer.Option(help="epochs")] = 2.0,
    learning_rate: Annotated[float, typer.Option(help="all weights are trained")] = 2e-5,
    seed: Annotated[int, typer.Option(help="the split and the draws")] = 0,
    folder: Annotated[Optional[Path], typer.Option("--out", help="where labels, the model and the report go")] = None,
) -> None:
    """A verifier learned from the model's own samples: a process reward model (step labels
    from rollouts) or an outcome verifier, measured on held-out items; then a scorer in
    strategy specs (`beam-search:scorer=prm:PATH`, `best-of-n:verifier=orm:PATH`). docs/search.md"""
    from pydantic import ValidationError

    from selfcorrect.models.lineage import Lineage
    from selfcorrect.train.verifiers import VerifierSpec, build

    settings: Settings = ctx.obj
    try:
        spec = VerifierSpec(kind=kind, task=task, limit=limit, heldout=heldout, sample=sample, temperature=temperature,
                            rollouts=rollouts, step=step, epochs=epochs, learning_rate=learning_rate, seed=seed)
    except ValidationError as e:
        first = e.errors()[0]
        raise ConfigError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg'].lower()} (got {first.get('input')!r})",
                          "see `selfcorrect train-verifier --help`") from None
    _check_strategies([spec.sample])
    if base is None:
        lineage = Lineage(settings.store)
        try:
            base = Path(lineage.of_round(0).path)
        finally:
            lineage.close()
    out = folder or settings.store.parent / "verifiers" / f"{spec.kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    engine = load_model(settings)
    try:
        with _progress() as (progress, on_progress):
            report = asyncio.run(build(settings, spec, base, out, engine,
                                       on_stage=lambda text: progress.console.print(escape(text)),
                                       on_progress=on_progress))
    finally:
        asyncio.run(engine.aclose())
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
    settings = SFTSettings(lora=not full, epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, seed=seed)
    if rows and isinstance(rows[0], Pair):
        metrics = train_dpo(base, to_preference_dataset(rows), out, settings)
    else:
        metrics = train_sft(base, to_dataset(rows), out, settings)
    print(json.dumps({k: v for k, v in metrics.items() if k != "log"}))
    err.print(f"model: {out / 'model'}")


@app.command(name="serve-key")
def serve_key(name: Annotated[str, typer.Argument(help="who the key is for (letters, digits, - and _)")]) -> None:
    """A new API key: prints the key once (give it to the client) and, on stdout, the line for
    the keys file (its hash: the key itself is never stored)."""
    import re

    from selfcorrect.serve.keys import new_key

    if not re.fullmatch(r"[\w-]{1,64}", name):
        raise ConfigError(f"key name {name!r} is not usable", "use letters, digits, - and _ (up to 64)")
    key, digest = new_key()
    err.print(f"API key for {escape(name)} (shown once): {key}")
    print(f"{name} {digest}")


def main() -> None:
    debug = "--debug" in sys.argv
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=debug)],
    )
    if not debug:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        app()
    except SelfcorrectError as e:
        if debug:
            raise
        err.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
        sys.exit(1)
    except sqlite3.DatabaseError as e:
        if debug:
            raise
        err.print(f"[bold red]error:[/] the store is damaged or unreadable ({escape(str(e))}) — restore "
                  "it from a backup, or start a new one with --store", soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
