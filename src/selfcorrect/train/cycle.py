"""The self-training core that `train` (train/rounds.py) and `improve` (improve/loop.py) share:
what every round of either does the same way. The loops keep only what differs: where a
round's data come from and how a round is accepted.

    split_items      the task's items, selected and split (by id, then by question; a
                     confirmation side set aside first where asked)
    start_of         a round's starting weights (an adapter merged into its base first)
    register_round   a trained round's checkpoint in the lineage, named for its run
    open_base        the base (exported on first use) and how the rounds open checkpoints
    checkpoint_opener / served_opener / opened / close_opener   a round's checkpoint on an
                     engine in process or on servers this run starts, closed when done
    measure_side     one side of the split run through the normal evaluation
    versus           the paired comparison of a round against an earlier one, per strategy
    decay_alarms     diversity collapse and tail narrowing against the first measured round
    Phases           where a round's time goes (report.json's `phases`)
    run_folder / resumed_report / round_folder   where a run lives by default, going on
                     with one, and a round's folder, cleared when a killed run left it
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import shlex
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, model_validator

from selfcorrect.config import Settings
from selfcorrect.errors import ConfigError
from selfcorrect.models.lineage import Checkpoint, Lineage
from selfcorrect.models.load import load_gguf
from selfcorrect.models.served import SERVED_ENGINES, ServedEngines, Serving
from selfcorrect.runner import EvalSpec, Evaluation, results_by_strategy
from selfcorrect.stats import paired
from selfcorrect.tasks import Item, Task, select
from selfcorrect.train.data import Split, SplitSpec, data_hash, split_by_prompt
from selfcorrect.train.export import base_of
from selfcorrect.train.to_gguf import fits_template, write_checkpoint_gguf

MEASURE_TEMPERATURE = 0.3  # the held-out side, and program-aided pseudo-labels: as the studies measure
DIVERSITY_ALARM = 0.5  # distinct answers per item below half of the first round's
TAIL_ALARM = 0.1  # the share of unsolved train items up by ten points or more


class Scaling(BaseModel):
    """Where a run's rounds sample, measure and train: in this process (gguf, hf), or on
    servers each round starts, with its training under a launcher. Each description is its
    option's help (`train` and `improve`)."""

    engine: Literal["auto", "gguf", "hf", "llama-server", "vllm", "sglang", "command"] = Field(
        "auto", description="what samples and measures: gguf (each checkpoint written back to GGUF, on llama.cpp in "
                            "process: ~2.5x faster on CPU, the embedded model's shape only), hf (transformers), auto; "
                            "or servers each round starts: llama-server (llama.cpp's, on the GGUF), vllm or sglang (on "
                            "the merged checkpoint; vllm loads LoRA rounds by name into one server), command "
                            "(--serve-command)")
    replicas: int = Field(1, ge=1, le=64, description="served engines: servers of each round's model, the requests "
                                                      "spread over them")
    engine_args: str = Field("", description="served engines: arguments added to each server's command line "
                                             "(e.g. '--gpu-memory-utilization 0.8')")
    serve_command: str = Field("", description="--engine command: the server's command line, with {model} and "
                                               "{port} (and {name}, the model name to answer to)")
    launcher: str = Field("", description="runs each round's training as this command around `selfcorrect fit` "
                                          "(e.g. 'accelerate launch --num_processes 8'); in process when empty")

    # options added after runs were named by their settings, with the value every run had before:
    # at that value they leave a run's name as it was, and an older report is read with it
    LATER: ClassVar[dict[str, object]] = {"replicas": 1, "engine_args": "", "serve_command": "", "launcher": ""}

    @model_validator(mode="after")
    def _served_options(self):
        self.serving()
        if self.launcher:
            try:
                shlex.split(self.launcher)
            except ValueError as e:
                raise ConfigError(f"--launcher {self.launcher!r} does not parse: {e}", "quote it as a shell would") from None
        return self

    def serving(self) -> Serving | None:
        """The served engine's settings, or None for an engine in this process."""
        if self.engine in SERVED_ENGINES:
            return Serving(self.engine, self.replicas, self.engine_args, self.serve_command)
        given = [flag for flag, value in (("--replicas", self.replicas != 1), ("--engine-args", self.engine_args),
                                          ("--serve-command", self.serve_command)) if value]
        if given:
            raise ConfigError(f"{', '.join(given)} go{'es' if len(given) == 1 else ''} with a served engine, not "
                              f"--engine {self.engine}", f"add --engine {' or '.join(SERVED_ENGINES)}")
        return None


def settings_named(spec: BaseModel, stopping: tuple[str, ...]) -> dict:
    """A run's settings as its folder's name and its resuming compare them: less the stopping
    rules, and less options added later while they hold their defaults."""
    later = getattr(spec, "LATER", {})
    return {k: v for k, v in spec.model_dump().items() if k not in stopping and not (k in later and v == later[k])}


class Phases:
    """Where a round's time goes: seconds per phase (sample, label, train, export: opening a
    checkpoint on its engine, its GGUF write-back or its servers included; measure), and the
    tokens made where tokens are made. `with phases("train"): ...`; `phases.made("sample", n)`."""

    ORDER = ("sample", "label", "train", "export", "measure")

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.tokens: dict[str, int] = {}
        self.notes: dict[str, dict] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started

    def made(self, phase: str, tokens: int) -> None:
        self.tokens[phase] = self.tokens.get(phase, 0) + int(tokens)

    def note(self, phase: str, **figures) -> None:
        """Figures of a phase beside its time (the training's cpu_share)."""
        self.notes.setdefault(phase, {}).update({k: v for k, v in figures.items() if v is not None})

    def record(self) -> dict:
        out = {}
        for phase in sorted(self.seconds, key=lambda p: (self.ORDER.index(p) if p in self.ORDER else 99, p)):
            seconds = self.seconds[phase]
            out[phase] = {"seconds": round(seconds, 1)}
            if self.tokens.get(phase):
                out[phase].update(tokens=self.tokens[phase],
                                  tokens_per_s=round(self.tokens[phase] / seconds, 1) if seconds else None)
            out[phase].update(self.notes.get(phase, {}))
        return out

    def opener(self, open_model):
        """`open_model`, its time counted as export."""
        async def open_timed(checkpoint):
            with self("export"):
                engine = open_model(checkpoint)
                return await engine if inspect.isawaitable(engine) else engine
        return open_timed


def tokens_of(results: dict[str, list]) -> int:
    """The tokens an evaluation's rows made, every strategy together."""
    return sum(r.tokens for rows in results.values() for r in rows)


def round_folder(out: Path, number: int, say: Callable[[str], None]) -> Path:
    """Round `number`'s folder, removed first when a killed run left it: a round that did not
    finish is done again from nothing, never trusted."""
    folder = out / f"round-{number}"
    if folder.exists():
        say(f"round {number} did not finish: doing it again from the start")
        shutil.rmtree(folder)
    return folder


def split_items(task: Task, spec: SplitSpec, confirmation: float = 0.0) -> tuple[list[Item], Split]:
    """The items a run uses (a seeded selection of `spec.limit`, or all), split by id and then
    by question (data.py `split_by_prompt`: no question on two sides), with a `confirmation`
    share set aside first."""
    items = select(task.items(), seed=spec.seed)[: spec.limit] if spec.limit else task.items()
    return items, split_by_prompt(items, spec.heldout, spec.seed, confirmation)


def merged_master(start: Checkpoint, folder: Path) -> Path:
    """A trained round's adapter merged into its base, in fp32: the next round's master copy."""
    from selfcorrect.models.hf import HFModel

    merger = HFModel(start.path, start.adapter, precision="fp32")
    try:
        return merger.merge_adapter(folder / "start")
    finally:
        merger.close()


def start_of(start: Checkpoint, folder: Path) -> Path:
    """The weights a round trains from: the checkpoint's own, or its adapter merged in."""
    return merged_master(start, folder) if start.adapter else Path(start.path)


def register_round(lineage: Lineage, out: Path, number: int, *, parent: str, method: str, start_path: Path,
                   folder: Path, lora: bool, examples: list, metrics: dict, arm: str = "") -> Checkpoint:
    """Round `number`'s trained model in the lineage, as `<out's name>/round-N` (`-arm` for
    another arm of the round, a control), owned by the run in `out`: another run's checkpoint
    of that name is refused, never replaced."""
    return lineage.register(Checkpoint(
        name=f"{out.name}/round-{number}" + (f"-{arm}" if arm else ""), round=number, parent=parent, method=method,
        run=str(out.resolve()), path=str(start_path) if lora else str(folder / "model"),
        adapter=str(folder / "model") if lora else None,
        data_hash=data_hash(examples), metrics={k: v for k, v in metrics.items() if k not in ("log", "signals")}))


def gguf_writer(lineage: Lineage, say: Callable[[str], None]) -> Callable[[Checkpoint], str]:
    """A checkpoint's GGUF file, written back once (and the lineage told) for llama.cpp."""

    def gguf_of(c: Checkpoint) -> str:
        if c.gguf is None or not Path(c.gguf).exists():
            say(f"writing {c.name} to GGUF for the llama.cpp engine")
            c = lineage.register(c.model_copy(update={"gguf": write_checkpoint_gguf(c)["path"]}))
        return c.gguf

    return gguf_of


def checkpoint_opener(settings: Settings, lineage: Lineage, use_gguf: bool, say: Callable[[str], None]):
    """How a round's checkpoint is opened to sample and measure: written back to GGUF once for
    the llama.cpp engine, or on transformers."""
    from selfcorrect.models.hf import HFModel

    gguf_of = gguf_writer(lineage, say)

    def open_gguf(c: Checkpoint):
        return load_gguf(settings, gguf_of(c))

    def open_hf(c: Checkpoint):
        return HFModel(c.path, c.adapter, batch=settings.hf.batch, threads=settings.hf.threads,
                       precision=settings.precision)

    return open_gguf if use_gguf else open_hf


def served_opener(settings: Settings, lineage: Lineage, serving: Serving, out: Path, lora: bool,
                  say: Callable[[str], None]) -> ServedEngines:
    """Checkpoints on servers this run starts (models/served.py), their logs in `out/serving`;
    vLLM and SGLang serve a LoRA round merged into its base (vLLM with `lora`: loaded by name)."""
    logs = Path(out) / "serving"
    return ServedEngines(settings, serving, logs, gguf_of=gguf_writer(lineage, say), say=say, lora=lora,
                         merged_of=lambda c: merged_master(c, logs / c.name.replace("/", "_")))


def open_base(settings: Settings, lineage: Lineage, engine: str, engine_factory, say: Callable[[str], None], *,
              serving: Serving | None = None, out: Path | None = None, lora: bool = True):
    """(the base, the engine's name, how a checkpoint is opened): round 0 of the lineage
    (exported on first use), and `engine_factory`, or servers (`serving`), or the in-process
    opener `engine` names (gguf, hf, or auto: gguf where the checkpoint fits the embedded
    model's template)."""
    base = base_of(settings.store, lineage, settings.precision, say)
    if serving is not None:
        return base, serving.engine, engine_factory or served_opener(settings, lineage, serving, out, lora, say)
    use_gguf = engine == "gguf" or (engine == "auto" and fits_template(Path(base.path)))
    return base, "gguf" if use_gguf else "hf", engine_factory or checkpoint_opener(settings, lineage, use_gguf, say)


async def close_opener(open_model) -> None:
    """What an opener keeps between rounds (a served engine's long-lived server), stopped."""
    if hasattr(open_model, "aclose"):
        await open_model.aclose()


@contextlib.asynccontextmanager
async def opened(open_model: Callable[[Checkpoint], object], checkpoint: Checkpoint):
    """A checkpoint's engine for the length of a block, closed however the block ends."""
    engine = open_model(checkpoint)
    if inspect.isawaitable(engine):  # a served engine waits for its servers
        engine = await engine
    try:
        yield engine
    finally:
        await engine.aclose()


async def measure_side(settings: Settings, side, strategies: list[str], engine, seed: int,
                       temperature: float, on_progress=None) -> tuple[str, dict[str, list]]:
    """One side (a Subset) under these strategies through the normal evaluation, without a
    reference pool: its run id, and its results by strategy."""
    evaluation = Evaluation(settings, EvalSpec(task=side.name, strategies=strategies, reference=False, seed=seed,
                                               temperature=temperature), task=side, engine=engine,
                            on_progress=on_progress)
    run = await evaluation.run()
    return run.run_id, results_by_strategy(evaluation.store, run)


def versus(now: dict[str, dict[str, bool]], before: dict[str, dict[str, bool]]) -> dict[str, dict]:
    """Each strategy measured in both, compared item by item (stats.paired): verdicts by
    strategy, then by item."""
    return {name: paired(before[name], verdicts).to_dict() for name, verdicts in now.items() if name in before}


def decay_alarms(diversity: Iterable[tuple[str, float, float]], unsolved: tuple[float, float], *,
                 against: str, unsolved_what: str) -> list[str]:
    """The signs that self-training decays: `diversity` gives (whose, now, then) distinct
    answers per item, `unsolved` (now, then) the share of train items left unsolved; `then` is
    the round named by `against`."""
    alarms = []
    for whose, now, then in diversity:
        if then and now < DIVERSITY_ALARM * then:
            alarms.append(f"diversity collapse: {whose}{now:.2f} distinct answers per item against {then:.2f} "
                          f"{against}")
    now, then = unsolved
    if now - then >= TAIL_ALARM:
        alarms.append(f"tail narrowing: {100 * now:.0f}% of {unsolved_what} against {100 * then:.0f}% {against}")
    return alarms


def run_folder(store: Path, command: str, spec: BaseModel, stopping: tuple[str, ...]) -> Path:
    """The default folder of a run: named by its settings (less the stopping rules), so that
    the same command again finds it and resumes, and other settings get a folder of their own."""
    digest = hashlib.sha256(json.dumps(settings_named(spec, stopping), sort_keys=True).encode()).hexdigest()[:10]
    return Path(store).parent / command / f"{command}-{digest}"


def resumed_report(out: Path, spec: BaseModel, stopping: tuple[str, ...], say: Callable[[str], None],
                   command: str) -> dict | None:
    """The report of the run in `out` to go on with, or None for a new run. Only the stopping
    rules may differ from the run's; a run that stopped and is given other stopping rules goes
    on where it stopped. Another run's folder is refused."""
    path = out / "report.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    mine = spec.model_dump()
    theirs = {**getattr(spec, "LATER", {}), **(report.get("spec") or {})}  # an option it predates: as it ran
    if {k: v for k, v in theirs.items() if k not in stopping} != {k: v for k, v in mine.items() if k not in stopping}:
        differ = sorted(k for k in set(mine) | set(theirs) if k not in stopping and mine.get(k) != theirs.get(k))
        raise ConfigError(f"{out} holds a {command} run with other settings ({', '.join(differ)})",
                          f"give the same options to resume it (only {', '.join('--' + k.replace('_', '-') for k in stopping)} "
                          "may change), or another --out")
    changed = [k for k in stopping if theirs.get(k) != mine[k]]
    if changed:
        say(f"stopping rules changed: {', '.join(f'{k} {theirs.get(k)} → {mine[k]}' for k in changed)}")
        report["spec"], report["stopped"] = mine, None
    return report
