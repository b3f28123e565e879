"""Training methods of the self-training rounds, each a registered class with one protocol:

    check(spec)        the labels and options it accepts (a wrong combination fails before anything runs)
    data(run, ...)     the examples a round trains on, from the previous round's stored samples
    train(run, ...)    the optimisation step from the round's starting checkpoint
    prepare(run, ...)  what the round's own model makes for the next round (STaR's rationales,
                       self-judged pairs), and what the round's report records of it

train/rounds.py drives the rounds and never asks which method it runs. Methods register in
METHODS (plugins through the `selfcorrect.train_methods` entry point), as strategies do.

    rft         rejection sampling: the train side's samples the labels accept
    star        rft, plus rationales for the items it failed, asked again with the answer as a hint
    correction  traces of revisions that fixed an answer (or pairs: a wrong sample, the review
                turn, a right one)
    dpo         preference pairs (a right and a wrong sample; or ranked by the model as judge)
    grpo        reinforcement learning rewarded by the task's check (train/grpo.py)
    score       two attempts per prompt, trained to correct itself in two stages (train/score.py)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from pydantic import BaseModel

from selfcorrect.models.base import SamplingParams
from selfcorrect.registry import Registry
from selfcorrect.tasks import Subset, Task
from selfcorrect.tasks.kinds import KINDS
from selfcorrect.train.data import (
    build_correction,
    build_correction_pairs,
    build_dpo,
    build_label_free,
    build_rft,
    pseudo_label_accuracy,
)
from selfcorrect.train.grpo import GRPOSettings, train_grpo
from selfcorrect.train.judge import judged_pairs
from selfcorrect.train.score import REVIEW, SCoReSettings, train_score
from selfcorrect.train.sft import SFTSettings, fit
from selfcorrect.store import Store
from selfcorrect.train.star import rationalize

ONLINE_TEMPERATURE = 0.7  # the least temperature of online methods' own rollouts
PREFERENCE_LABELS = ("preference pairs are ranked by the task's check (labels gold) or by the model as judge "
                     "(labels judge, with method dpo)")


@dataclass
class TrainingRun:
    """What a method sees of the run in progress."""

    spec: BaseModel  # the TrainSpec (train/rounds.py, which stands above the methods)
    store: Store
    task: Task
    train_ids: list[str]
    held_ids: list[str]
    train_side: Subset
    sampler: str  # the sampling strategy's spec, as its results are keyed
    precision: str = "auto"  # torch's, for every training step (precision.py)


@dataclass
class RoundData:
    """The examples a round trains on, with what is known of them."""

    examples: list = field(default_factory=list)
    # the share of the data the task's check agrees with: 1.0 by construction with gold
    # labels, measured afterwards for the others, None where there is nothing to measure
    data_right: float | None = 1.0
    pseudo_labels: dict | None = None


def settings_of(run: TrainingRun, settings_type, **given):
    """A trainer's settings: every field the spec also has, copied, the run's precision; the
    rest as given."""
    spec = run.spec
    shared = {f.name: getattr(spec, f.name) for f in fields(settings_type) if f.name in type(spec).model_fields}
    return settings_type(**{**shared, "precision": run.precision, **given})


class Method:
    name: str
    labels: tuple[str, ...] = ("gold",)  # the labels it learns from
    # options only this method reads: giving one another value with another method is an error
    owns: tuple[str, ...] = ()
    launchable = True  # trains on a data file: `selfcorrect fit` runs it under --launcher
    online = False  # rewarded by the check while it trains: no data from the samples

    def check(self, spec: BaseModel) -> None:
        """Raise ValueError when the spec asks this method for labels it cannot learn from, or
        sets an option that only another method reads."""
        if spec.labels not in self.labels:
            raise ValueError(self.refuse(spec.labels))
        if getattr(spec, "launcher", "") and not self.launchable:
            raise ValueError(f"--launcher runs `selfcorrect fit` on a round's data file; {self.name} samples while it "
                             "trains: at scale, `--export verl` or TRL's vLLM server mode (docs/train.md)")
        readers: dict[str, list[str]] = {}
        for entry in METHODS.entries():
            for option in entry.factory.owns:
                readers.setdefault(option, []).append(entry.name)
        for option, names in readers.items():
            value = getattr(spec, option, None)
            if option in self.owns or option not in type(spec).model_fields:
                continue
            if value != type(spec).model_fields[option].default:
                flag = "--" + option.replace("_", "-")
                raise ValueError(f"{flag} is read by {' and '.join(names)} alone: {flag} {value} goes with "
                                 f"--method {' or '.join(names)}")

    def refuse(self, labels: str) -> str:
        """Why this method cannot learn from `labels`."""
        if labels == "judge":
            return PREFERENCE_LABELS
        return f"{self.name} is rewarded by the task's check: use labels gold"

    def data(self, run: TrainingRun, runs: list[str], carried: list, previous: dict) -> RoundData:
        """The examples of the next round from the stored samples of `runs`; `carried` is what
        `prepare` made with the previous round's model, `previous` that round's report entry."""
        raise NotImplementedError

    def training(self, examples: list, run: TrainingRun) -> str:
        """What the progress line says of the training step."""
        return f"training on {len(examples)} examples"

    def train(self, run: TrainingRun, start: Path, folder: Path, examples: list) -> dict:
        """Train from the checkpoint at `start` into `folder`/model (under the run's launcher
        where it has one); the training metrics."""
        return fit(start, examples, folder, settings_of(run, SFTSettings), launcher=run.spec.launcher)

    prepared = ""  # the report entry's key for what `prepare` records

    def preparing(self, run: TrainingRun) -> str:
        """What the progress line says of `prepare` (empty: it does nothing)."""
        return ""

    async def prepare(self, run: TrainingRun, engine, runs: list[str], rows: list) -> tuple[list, dict | None]:
        """After the round's model sampled the train side (`rows`, the sampler's results):
        examples for the next round made with it, and their record for the report."""
        return [], None


METHODS = Registry("training method", "selfcorrect.train_methods")


def register(cls: type[Method]) -> type[Method]:
    METHODS.register(options={})(cls)
    return cls


def method_of(spec: BaseModel) -> Method:
    return METHODS.get(spec.method).factory()


@register
class RFT(Method):
    """rejection sampling: the samples the labels accept"""

    name = "rft"
    labels = ("gold", "vote", "program")
    owns = ("rare_boost",)

    def data(self, run, runs, carried, previous):
        spec = run.spec
        if spec.labels == "gold":
            return RoundData(carried + build_rft(run.store, task=run.task.name, train_ids=run.train_ids, run_ids=runs,
                                                 per_item=spec.per_item, rare_boost=spec.rare_boost))
        examples, labelled = build_label_free(
            run.store, task=run.task.name, train_ids=run.train_ids, run_ids=runs, sample_strategy=run.sampler,
            labels=spec.labels, agreement=spec.agreement, per_item=spec.per_item)
        examples = carried + examples
        right = sum(labelled[e.item_id]["right"] for e in examples) / len(examples) if examples else None
        return RoundData(examples, right, {"items_labelled": len(labelled),
                                           "accuracy_against_gold": pseudo_label_accuracy(labelled)})


@register
class STaR(RFT):
    """rft, plus rationales of failed items asked again with the answer as a hint"""

    name = "star"
    # a majority vote always has an answer some sample agrees with: nothing would be hinted
    labels = ("gold", "program")
    prepared = "rationales"

    def refuse(self, labels):
        if labels == "vote":
            return ("star hints the answer of items with no sample agreeing with it; a majority vote always has one: "
                    "use labels gold or program")
        return super().refuse(labels)

    def preparing(self, run):
        hint = "gold answer" if run.spec.labels == "gold" else "program-aided answer"
        return f"rationalizing the train items it failed, the {hint} as a hint"

    async def prepare(self, run, engine, runs, rows):
        """Rationales from this round's model for the train items no sample got right
        (gold), or with no sample agreeing with the model's own program-aided answer (program)."""
        spec, items = run.spec, run.train_side.items()
        if spec.labels == "gold":
            solved = {r.item for r in rows if any(g.correct for g in r.grades)}
            hints = {i.id: i.answer for i in items if i.id not in solved}
        else:
            examples, labelled = build_label_free(
                run.store, task=run.task.name, train_ids=run.train_ids, run_ids=runs,
                sample_strategy=run.sampler, labels="program", per_item=spec.per_item)
            covered = {e.item_id for e in examples}
            hints = {item_id: record["label"] for item_id, record in labelled.items() if item_id not in covered}
        params = SamplingParams(temperature=spec.sample_temperature, top_k=40, n=4,
                                max_tokens=KINDS["math"].max_tokens, seed=spec.seed)
        made, tried = await rationalize(engine, run.task, items, hints, label=spec.labels, params=params,
                                        per_item=spec.per_item)
        return made, {"items_hinted": len(hints), "items_rationalized": sum(1 for t in tried.values() if t["kept"]),
                      "examples": len(made), "oracle": spec.labels == "gold"}


@register
class Correction(Method):
    """traces of revisions that fixed an answer, or pairs of independent samples"""

    name = "correction"
    owns = ("traces",)

    def data(self, run, runs, carried, previous):
        spec = run.spec
        if spec.traces == "pairs":
            return RoundData(build_correction_pairs(run.store, task=run.task.name, train_ids=run.train_ids,
                                                    run_ids=runs, review=REVIEW[run.task.kind], per_item=spec.per_item))
        return RoundData(build_correction(run.store, task=run.task.name, train_ids=run.train_ids, run_ids=runs))


@register
class DPO(Method):
    """preference pairs ranked by the task's check, or by the model as its own judge"""

    name = "dpo"
    labels = ("gold", "judge")
    prepared = "judge"

    def refuse(self, labels):
        return PREFERENCE_LABELS

    def data(self, run, runs, carried, previous):
        if run.spec.labels == "judge":
            judge = previous["judge"]
            return RoundData(carried, judge["pairs_as_the_check"] / judge["pairs"] if judge["pairs"] else None)
        return RoundData(build_dpo(run.store, task=run.task.name, train_ids=run.train_ids, run_ids=runs,
                                   per_item=run.spec.per_item))

    def preparing(self, run):
        return "the model judges its own samples of the train side" if run.spec.labels == "judge" else ""

    def train(self, run, start, folder, examples):
        return fit(start, examples, folder, settings_of(run, SFTSettings), launcher=run.spec.launcher, dpo=True)

    async def prepare(self, run, engine, runs, rows):
        if run.spec.labels != "judge":
            return [], None
        return await judged_pairs(engine, run.train_side.items(), rows,
                                  SamplingParams(temperature=0.0, max_tokens=KINDS[run.task.kind].max_tokens,
                                                 seed=run.spec.seed), per_item=run.spec.per_item)


class Online(Method):
    online = True
    launchable = False  # it samples while it trains: at scale, verl or TRL's vLLM server mode (docs/train.md)

    def data(self, run, runs, carried, previous):
        return RoundData([], None)


@register
class GRPO(Online):
    """reinforcement learning on the train items, rewarded by the task's check"""

    name = "grpo"
    owns = ("grpo_steps", "generations", "beta", "format_reward", "partial_credit", "vllm_server")

    def training(self, examples, run):
        return f"GRPO for {run.spec.grpo_steps} steps on {len(run.train_ids)} train items"

    def train(self, run, start, folder, examples):
        spec = run.spec
        return train_grpo(start, run.task, run.train_side.items(), folder, settings_of(
            run, GRPOSettings, steps=spec.grpo_steps, temperature=max(spec.sample_temperature, ONLINE_TEMPERATURE),
            max_completion_length=KINDS[run.task.kind].max_tokens))


@register
class SCoRe(Online):
    """two attempts per prompt, trained in two stages to correct itself"""

    name = "score"
    owns = ("stage1_steps", "stage2_steps", "alpha", "beta_stage1", "generations", "beta", "review_feedback")

    def training(self, examples, run):
        return f"two-attempt training, {run.spec.stage1_steps} + {run.spec.stage2_steps} steps"

    def train(self, run, start, folder, examples):
        spec = run.spec
        return train_score(start, run.task, run.train_side.items(), folder, settings_of(
            run, SCoReSettings, beta_stage2=spec.beta, feedback=spec.review_feedback,
            temperature=max(spec.sample_temperature, ONLINE_TEMPERATURE),
            max_completion_length=KINDS[run.task.kind].max_tokens))
