"""The self-training core that `train` (train/rounds.py) and `improve` (improve/loop.py) share:
what every round of either does the same way. The loops keep only what differs: where a
round's data come from and how a round is accepted.

    split_items      the task's items, selected and split (by id, then by question; a
                     confirmation side set aside first where asked)
    start_of         a round's starting weights (an adapter merged into its base first)
    register_round   a trained round's checkpoint in the lineage, named for its run
    open_base        the base (exported on first use) and how the rounds open checkpoints
    checkpoint_opener / opened   a round's checkpoint on an engine, closed when done
    measure_side     one side of the split run through the normal evaluation
    versus           the paired comparison of a round against an earlier one, per strategy
    decay_alarms     diversity collapse and tail narrowing against the first measured round
    run_folder / resumed_report / round_folder   where a run lives by default, going on
                     with one, and a round's folder, cleared when a killed run left it
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from pydantic import BaseModel

from selfcorrect.config import Settings
from selfcorrect.errors import ConfigError
from selfcorrect.models.lineage import Checkpoint, Lineage
from selfcorrect.models.load import load_gguf
from selfcorrect.runner import EvalSpec, Evaluation, results_by_strategy
from selfcorrect.stats import paired
from selfcorrect.tasks import Item, Task, select
from selfcorrect.train.data import Split, SplitSpec, data_hash, split_by_prompt
from selfcorrect.train.export import base_of
from selfcorrect.train.to_gguf import fits_template, write_checkpoint_gguf

MEASURE_TEMPERATURE = 0.3  # the held-out side, and program-aided pseudo-labels: as the studies measure
DIVERSITY_ALARM = 0.5  # distinct answers per item below half of the first round's
TAIL_ALARM = 0.1  # the share of unsolved train items up by ten points or more


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


def checkpoint_opener(settings: Settings, lineage: Lineage, use_gguf: bool, say: Callable[[str], None]):
    """How a round's checkpoint is opened to sample and measure: written back to GGUF once (and
    the lineage told) for the llama.cpp engine, or on transformers."""
    from selfcorrect.models.hf import HFModel

    def open_gguf(c: Checkpoint):
        if c.gguf is None or not Path(c.gguf).exists():
            say(f"writing {c.name} to GGUF for the llama.cpp engine")
            c = lineage.register(c.model_copy(update={"gguf": write_checkpoint_gguf(c)["path"]}))
        return load_gguf(settings, c.gguf)

    def open_hf(c: Checkpoint):
        return HFModel(c.path, c.adapter, batch=settings.hf.batch, threads=settings.hf.threads,
                       precision=settings.precision)

    return open_gguf if use_gguf else open_hf


def open_base(settings: Settings, lineage: Lineage, engine: str, engine_factory, say: Callable[[str], None]):
    """(the base, whether rounds run on llama.cpp, how a checkpoint is opened): round 0 of the
    lineage (exported on first use), and `engine_factory` or the opener `engine` names
    (gguf, hf, or auto: gguf where the checkpoint fits the embedded model's template)."""
    base = base_of(settings.store, lineage, settings.precision, say)
    use_gguf = engine == "gguf" or (engine == "auto" and fits_template(Path(base.path)))
    return base, use_gguf, engine_factory or checkpoint_opener(settings, lineage, use_gguf, say)


@contextlib.asynccontextmanager
async def opened(open_model: Callable[[Checkpoint], object], checkpoint: Checkpoint):
    """A checkpoint's engine for the length of a block, closed however the block ends."""
    engine = open_model(checkpoint)
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
    settings = {k: v for k, v in spec.model_dump().items() if k not in stopping}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
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
    mine, theirs = spec.model_dump(), dict(report.get("spec") or {})
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
