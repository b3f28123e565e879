"""The `selfcorrect` application: its global options, the consoles, and helpers every
command group shares (progress bars, tables, shared options)."""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, Optional, Union, get_args, get_origin

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.table import Table

from selfcorrect.config import load_settings
from selfcorrect.errors import ConfigError
from selfcorrect.registry import split_specs

app = typer.Typer(
    help="Make language models correct and improve themselves, and measure whether they did.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)


def show(table: Table) -> None:
    """A table on stdout; in a pipe wide enough not to wrap every cell (not 80 columns)."""
    (out if out.is_terminal else Console(width=160)).print(table)


@app.callback()
def options(
    ctx: typer.Context,
    model: Annotated[
        Optional[str], typer.Option("--model", "-m", help="embedded, gguf:PATH, openai:NAME, hf:PATH, round:N or recipe:DIR")
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
    precision: Annotated[Optional[str], typer.Option(
        "--precision", help="torch's precision (training, hf engine, verifiers): auto (bf16 where the CPU has "
                            "amx_bf16/avx512_bf16 or the GPU bf16; fp32 elsewhere), fp32 or bf16")] = None,
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
        precision=precision,
        cache=False if no_cache else None,
    )


def check_strategies(specs: list[str]) -> None:
    from selfcorrect.strategies import parse_strategy

    for spec in specs:
        parse_strategy(spec)


@contextlib.contextmanager
def progress_bars():
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


def preview(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters in all)"


def build_spec(spec_type: type[BaseModel], command: str, **values) -> BaseModel:
    """A command's spec from its options; a value the spec refuses is named by its flag."""
    try:
        return spec_type(**values)
    except ValidationError as e:
        first = e.errors()[0]
        if not first["loc"]:  # a rule across options
            raise ConfigError(first["msg"].removeprefix("Value error, "), f"see `selfcorrect {command} --help`") from None
        raise ConfigError(f"--{str(first['loc'][0]).replace('_', '-')}: {first['msg'].lower()} (got {first.get('input')!r})",
                          f"see `selfcorrect {command} --help`") from None


# Options more than one command takes, each written once.
ReportFolder = Annotated[Optional[Path], typer.Option("--out", help="report folder (default: runs/RUN_ID)")]
RunId = Annotated[str, typer.Argument(help="the run (see `selfcorrect runs`)")]
MemoryShow = Annotated[str, typer.Option(help="gated (the arm paired evidence admitted; none until then), or one "
                                               "arm always: all, lessons, rules, examples (docs/memory.md)")]
MemoryExplore = Annotated[float, typer.Option(help="gated: the share of items or requests that also try an arm on "
                                                   "trial in the shadow (scored, never returned)")]


def check_show(value: str) -> str:
    from selfcorrect.memory.arms import CHOICES

    if value not in CHOICES:
        raise ConfigError(f"--memory-show {value!r} is not an arm", f"use one of: {', '.join(CHOICES)}")
    return value


def check_share(flag: str, value: float) -> float:
    if not 0 <= value <= 1:
        raise ConfigError(f"{flag} {value} is out of range", "give a share from 0 to 1")
    return value


Critic = Annotated[Optional[str], typer.Option(help="a critic model spec (critic-refine), or \"same\"")]
Retriever = Annotated[str, typer.Option(help="how lessons are found: bm25, embedding, embedding:PATH")]
LessonId = Annotated[str, typer.Argument(help="an id, or its first characters")]


def spec_options(spec_type: type[BaseModel], command: str, *, flags: dict[str, tuple[str, ...]] | None = None,
                 more_help: dict[str, Callable[[], str]] | None = None):
    """A decorator: the command takes every field of `spec_type` as an option (named after the
    field, its help the field's description, its default the field's) and is called with the
    spec they make as `spec`. So a spec's fields are written once, in the spec. A list field
    is given comma-separated; `flags` renames options, `more_help` adds to a help (when the
    command is defined: for what a registry holds, its plugins included)."""
    flags, more_help = flags or {}, more_help or {}

    def option(name: str, field) -> inspect.Parameter:
        annotation, default = field.annotation, field.get_default(call_default_factory=True)
        if get_origin(annotation) is Literal:
            annotation = str
        elif get_origin(annotation) is list:
            annotation, default = str, ",".join(default)
        elif get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation):
            annotation = Optional[next(a for a in get_args(annotation) if a is not type(None))]
        help = field.description + (more_help[name]() if name in more_help else "")
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                 annotation=Annotated[annotation, typer.Option(*flags.get(name, ()), help=help)])

    fields = spec_type.model_fields
    lists = {name for name, f in fields.items() if get_origin(f.annotation) is list}

    def decorate(func):
        own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.name != "spec"]

        @functools.wraps(func)
        def run(**given):
            values = {name: given.pop(name) for name in list(given) if name in fields}
            values.update({name: split_specs(values[name]) for name in lists & set(values)})
            return func(spec=build_spec(spec_type, command, **values), **given)

        parameters = own + [option(name, f) for name, f in fields.items()]
        run.__signature__ = inspect.Signature(parameters)
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run

    return decorate
