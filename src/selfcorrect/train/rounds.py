"""Self-training rounds (`selfcorrect train`): each round samples the train side with the
current model, keeps what the task's check accepts, trains on it, and measures the new model
on the held-out side through the normal evaluation.

    round 0   the base (round 0 of the lineage): held-out evaluation, samples of the train side
    round r   data from round r-1's samples -> train (from the base, as ReST-EM does, or from
              round r-1) -> register the checkpoint -> held-out evaluation -> samples

Every round is measured: held-out accuracy with its interval, the paired test against the
previous round and the base, flips between rounds; on the train side pass@1 and pass@k from
the same samples, distinct answers and their entropy per item (diversity), the share of items
never solved and the solve rate of items by how hard they were for the base (the tail). An
alarm is raised when diversity or the tail collapses. It stops early when held-out accuracy
stops improving.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from selfcorrect import interrupt
from selfcorrect.config import Settings
from selfcorrect.errors import ConfigError
from selfcorrect.stats import wilson
from selfcorrect.models.lineage import Checkpoint, Lineage
from selfcorrect.precision import describe, resolve
from selfcorrect.store import Store
from selfcorrect.strategies import parse_strategy
from selfcorrect.tasks import Subset, parse_task
from selfcorrect.train.cycle import (MEASURE_TEMPERATURE, Phases, Scaling, close_opener, decay_alarms,
                                     measure_side, merged_master, open_base, opened, register_round, tokens_of, resumed_report, round_folder, split_items, start_of,
                                     versus)
from selfcorrect.train.data import SplitSpec, check_heldout, read_jsonl, write_jsonl
from selfcorrect.train.methods import METHODS, TrainingRun, method_of
from selfcorrect.train.report import write as write_report
from selfcorrect.verify.answers import vote_key

__all__ = ["TrainSpec", "Training", "merged_master", "run", "train_rounds"]


class TrainSpec(SplitSpec, Scaling):
    """What a training runs. Each field's description is its `selfcorrect train` option's help
    (cli/train.py makes the options from these fields)."""

    rounds: int = Field(2, ge=1, le=20, description="training rounds after the base's")
    method: str = Field("rft", description="how a round trains (train/methods.py, docs/train.md)")
    labels: Literal["gold", "vote", "program", "judge"] = Field(
        "gold", description="gold (the task's check), vote or program (no gold: pseudo-labels, train/data.py), "
                            "judge (dpo: the model ranks its own samples, train/judge.py)")
    traces: Literal["revisions", "pairs"] = Field(
        "revisions", description="correction: revisions (made by the --sample strategy, which must revise) or pairs "
                                 "(independent samples: a wrong one shown, the review turn, a right one)")
    agreement: float = Field(0.5, gt=0, le=1, description="vote labels: the least share of samples the majority needs")
    sample: str = Field("self-consistency:n=8", description="how the train side is sampled each round")
    sample_temperature: float = Field(0.7, ge=0, le=2, description="its temperature")
    evaluate: list[str] = Field(["single"], description="comma-separated strategies measured on the held-out side")
    restart: Literal["base", "continue"] = Field(
        "base", description="base (ReST-EM: each round from the base) or continue")
    per_item: int = Field(4, ge=1, description="the most training replies per item")
    rare_boost: int = Field(1, ge=1, le=10, description="rft: repeat the replies of items right in at most a quarter "
                                                        "of their samples this many times")
    patience: int = Field(1, ge=1, description="rounds without a held-out gain before stopping")
    lora: bool = Field(True, description="LoRA, or full fine-tuning (--full)")
    epochs: float = Field(2.0, gt=0, description="epochs per round")
    learning_rate: float = Field(2e-4, gt=0, description="2e-4 suits LoRA; full fine-tuning wants about 1e-5")
    batch_size: int = Field(8, ge=1, description="examples per step")
    grpo_steps: int = Field(40, ge=1, description="grpo: steps per round")
    generations: int = Field(8, ge=2, description="grpo and score: completions per prompt (the group)")
    beta: float = Field(0.04, ge=0, description="grpo: the KL penalty towards the starting model (score: Stage II's)")
    format_reward: float = Field(0.0, ge=0, le=1, description="grpo: reward for a readable answer (0: off)")
    partial_credit: bool = Field(False, description="grpo: up to 0.5 for a numeric answer near the gold")
    vllm_server: str = Field("", description="grpo: TRL's vLLM server mode, the rollouts drawn by `trl vllm-serve "
                                             "--model BASE` at this URL (e.g. http://10.0.0.2:8000) on other GPUs")
    stage1_steps: int = Field(20, ge=0, description="score: Stage I steps (reward attempt 2, strong KL)")
    stage2_steps: int = Field(20, ge=0, description="score: Stage II steps (reward both, bonus for improving)")
    alpha: float = Field(1.0, ge=0, description="score: Stage II's bonus weight on r2 - r1")
    beta_stage1: float = Field(0.5, ge=0, description="score: Stage I's KL weight (--beta is Stage II's)")
    review_feedback: Literal["none", "tests"] = Field(
        "none", description="score: the review turn says nothing of attempt 1 (none: intrinsic) or shows its "
                            "visible tests' results (tests: code)")

    LATER: ClassVar[dict[str, object]] = {**Scaling.LATER, "vllm_server": ""}

    @model_validator(mode="after")
    def _method_takes_it(self):
        METHODS.get(self.method)  # an unknown method: its error names the known ones
        method_of(self).check(self)
        if self.labels != "vote" and self.agreement != type(self).model_fields["agreement"].default:
            raise ValueError(f"--agreement is read with --labels vote alone: --agreement {self.agreement} goes "
                             "with --labels vote")
        return self


STOPPING = ("rounds", "patience")  # what may change when a run is resumed


class Training:
    """One `train` run: set up from a spec and an output folder, then `await run()`. The
    report is written after each finished round; a round that did not finish is done again
    from nothing (its folder removed), and the same spec and folder resume the run."""

    def __init__(self, settings: Settings, spec: TrainSpec, out: Path, on_stage: Callable[[str], None] | None = None,
                 engine_factory=None, on_progress: Callable | None = None):
        self.settings, self.spec, self.out = settings, spec, Path(out)
        self.say = on_stage or (lambda text: None)
        self.on_progress, self.engine_factory = on_progress, engine_factory
        self.task = parse_task(spec.task, settings.data)
        items, self.split = split_items(self.task, spec)
        self.train_ids, self.held_ids = self.split.train_ids, self.split.held_ids
        if spec.review_feedback == "tests" and (self.task.kind != "code" or not all(i.view.visible_tests for i in items)):
            raise ConfigError(f"--review-feedback tests shows the visible tests' results: {spec.task} has no visible "
                              "tests on every item", "use a code task with visible tests (mbpp), or --review-feedback none")
        self.train_side, self.held_side = Subset(self.task, set(self.train_ids)), Subset(self.task, set(self.held_ids))
        self.method = method_of(spec)

    async def run(self) -> dict:
        spec, out = self.spec, self.out
        lineage, store = Lineage(self.settings.store), Store(self.settings.store)
        try:
            base, engine, self.open_model = open_base(self.settings, lineage, spec.engine, self.engine_factory,
                                                      self.say, serving=spec.serving(), out=out, lora=spec.lora)
            self.training_run = TrainingRun(spec, store, self.task, self.train_ids, self.held_ids,
                                            self.train_side, parse_strategy(spec.sample).spec, self.settings.precision)
            out.mkdir(parents=True, exist_ok=True)
            report = resumed_report(out, spec, STOPPING, self.say, "train") or {
                "spec": spec.model_dump(), "engine": engine,
                "precision": resolve(self.settings.precision), "machine": describe(),
                "train_items": len(self.train_ids), "heldout_items": len(self.held_ids),
                "split": self.split.record(), "base": base.name,
                "rounds": [], "stopped": None}
            while not report["stopped"] and len(report["rounds"]) <= spec.rounds:
                number = len(report["rounds"])
                folder = round_folder(out, number, self.say)
                started = time.perf_counter()
                entry = await self._round(number, report, lineage, base, folder)
                if entry is None:
                    break
                entry["seconds"] = round(time.perf_counter() - started, 1)
                report["rounds"].append(entry)
                report["stopped"] = self._stop(report)
                write_report(report, out)
        finally:
            await close_opener(getattr(self, "open_model", None))
            lineage.close()
            store.close()
        write_report(report, out)
        return report

    async def _round(self, number: int, report: dict, lineage: Lineage, base: Checkpoint, folder: Path) -> dict | None:
        """Round `number`: train on the previous round's samples (round 0: the base as it is),
        then measure and sample; None when there was nothing to train on (report["stopped"] says why)."""
        entry: dict = {"round": number, "checkpoint": base.name}
        current, self.phases = base, Phases()
        if number > 0:
            previous = report["rounds"][-1]
            current = await self._train(number, previous, lineage, base, folder, entry)
            if current is None:
                report["stopped"] = entry["stopped"]
                return None
        async with opened(self.phases.opener(self.open_model), current) as engine:
            await self._measure_and_sample(number, engine, entry, report)
        entry["phases"] = self.phases.record()
        return entry

    async def _train(self, number: int, previous: dict, lineage: Lineage, base: Checkpoint, folder: Path,
                     entry: dict) -> Checkpoint | None:
        spec, run = self.spec, self.training_run
        self.say(f"round {number}: building data from round {number - 1}'s samples")
        with self.phases("label"):
            data = self.method.data(run, previous["train_runs"], self._carried(number - 1), previous)
        examples = data.examples
        check_heldout(examples, self.held_ids, self.split.measured_prompts)
        if not examples and not self.method.online:
            why = ("the judge ordered no pair of samples (no readable score, or equal scores)"
                   if spec.labels == "judge" else "no sample was verified right")
            entry["stopped"] = f"round {number}: {why}, nothing to train on"
            return None
        if examples:
            write_jsonl(examples, folder / "data.jsonl")
        previous_checkpoint = lineage.get(previous["checkpoint"])
        start = base if spec.restart == "base" else previous_checkpoint
        if start.adapter:
            self.say(f"round {number}: merging round {number - 1}'s adapter")
        start_path = start_of(start, folder)
        self.say(f"round {number}: {self.method.training(examples, run)}")
        with self.phases("train"):
            metrics = self.method.train(run, start_path, folder, examples)
        self.phases.made("train", metrics.get("tokens") or 0)
        self.phases.note("train", cpu_share=metrics.get("cpu_share"))
        current = register_round(lineage, self.out, number, parent=previous_checkpoint.name, method=spec.method,
                                 start_path=start_path, folder=folder, lora=spec.lora, examples=examples,
                                 metrics=metrics)
        entry.update(checkpoint=current.name, examples=len(examples), data_hash=current.data_hash,
                     pseudo_labels=data.pseudo_labels, data_right=data.data_right,
                     training={k: v for k, v in metrics.items() if k not in ("log", "signals")},
                     loss_log=metrics["log"], signals=metrics.get("signals"))
        return current

    async def _measure_and_sample(self, number: int, engine, entry: dict, report: dict) -> None:
        """The held-out side measured, the train side sampled (and pseudo-labelled, and what the
        method prepares for the next round made), all by this round's model."""
        spec, run, settings = self.spec, self.training_run, self.settings
        self.say(f"round {number}: evaluating the held-out side")
        with self.phases("measure"):
            held_run, held = await measure_side(settings, self.held_side, spec.evaluate, engine, spec.seed,
                                                MEASURE_TEMPERATURE, self.on_progress)
        self.phases.made("measure", tokens_of(held))
        self.say(f"round {number}: sampling the train side")
        with self.phases("sample"):
            sample_run, sampled = await measure_side(settings, self.train_side, [spec.sample], engine,
                                                     spec.seed + number, spec.sample_temperature, self.on_progress)
        self.phases.made("sample", tokens_of(sampled))
        runs = [sample_run]
        # the labeller answers as it would be measured, not as it explores; the last round's
        # samples only measure, and need no labels
        if spec.labels == "program" and number < spec.rounds:
            self.say(f"round {number}: program-aided answers of the train side, the pseudo-labels")
            with self.phases("label"):
                label_run, labelled = await measure_side(settings, self.train_side, ["program-aided"], engine,
                                                         spec.seed + number, MEASURE_TEMPERATURE, self.on_progress)
            self.phases.made("label", tokens_of(labelled))
            runs.append(label_run)
        if number < spec.rounds:
            if self.method.preparing(run):
                self.say(f"round {number}: {self.method.preparing(run)}")
            with self.phases("label"):
                carried, record = await self.method.prepare(run, engine, runs, sampled[run.sampler])
            if carried:  # kept on disk, so that a resumed run trains on them too
                write_jsonl(carried, self.out / f"round-{number}" / "carried.jsonl")
            if record is not None:
                entry[self.method.prepared] = record
        rows = sampled[run.sampler]
        train = _train_side(rows)
        solve_rates = train.pop("solve_rates")
        report.setdefault("base_solve_rates", solve_rates)  # round 0's: the tail is grouped by them
        entry.update(heldout_run=held_run, sample_run=sample_run, train_runs=runs,
                     heldout=_heldout(held, report["rounds"]), train=train)
        entry["train"]["tail"] = _tail(rows, report["base_solve_rates"])
        entry["alarms"] = _alarms(entry, report["rounds"])

    def _carried(self, number: int) -> list:
        """What round `number`'s model prepared for the next round (method.prepare)."""
        path = self.out / f"round-{number}" / "carried.jsonl"
        return read_jsonl(path) if path.is_file() else []

    def _stop(self, report: dict) -> str | None:
        """Stop when held-out accuracy has not improved on the best so far for `patience` rounds."""
        best, waited = None, 0
        for entry in report["rounds"]:
            accuracy = entry["heldout"]["accuracy"]
            if best is not None and accuracy <= best:
                waited += 1
            else:
                best, waited = accuracy, 0
        number = report["rounds"][-1]["round"]
        if waited >= self.spec.patience and number < self.spec.rounds:
            return f"held-out accuracy did not improve after round {number}"
        return None


async def train_rounds(settings: Settings, spec: TrainSpec, out: Path,
                       on_stage: Callable[[str], None] | None = None, engine_factory=None,
                       on_progress: Callable | None = None) -> dict:
    """Run the rounds; write out/report.{json,md,html} after each one; return the report.
    `engine_factory(checkpoint)` opens a checkpoint's model (default: by `spec.engine`)."""
    return await Training(settings, spec, out, on_stage, engine_factory, on_progress).run()


def _heldout(results: dict[str, list], earlier: list[dict]) -> dict:
    """Accuracy of the first evaluated strategy with its interval; paired tests and flips
    against the previous round and the base. Every evaluated strategy's verdict per item is
    kept, so that runs on the same held-out items can be compared item by item
    (train/compare.py), and for each revising one the verdicts of its two attempts."""
    spec, rows = next(iter(results.items()))
    correct = {r.item: r.final.correct for r in rows}
    n, right = len(correct), sum(correct.values())
    out = {"strategy": spec, "items": n, "accuracy": right / n if n else 0.0, "interval": list(wilson(right, n)),
           "correct": correct, "all": {s: sum(r.final.correct for r in rs) / len(rs) for s, rs in results.items() if rs},
           "by_strategy": {s: {r.item: r.final.correct for r in rs} for s, rs in results.items()},
           "attempts": {}}
    for name, rs in results.items():
        # a revising strategy (attempt 2 revises attempt 1), not independent samples
        if rs and all(len(r.trajectory.attempts) >= 2 and r.trajectory.attempts[1].parent == r.trajectory.attempts[0].index
                      for r in rs):
            first = {r.item: r.grades[0].correct for r in rs}
            second = {r.item: r.grades[1].correct for r in rs}
            out["attempts"][name] = {
                "attempt_1": sum(first.values()) / len(rs), "attempt_2": sum(second.values()) / len(rs),
                "wrong_to_right": sum(not first[i] and second[i] for i in first),
                "right_to_wrong": sum(first[i] and not second[i] for i in first), "first": first, "second": second}
    for name, other in (("previous", earlier[-1] if earlier else None), ("base", earlier[0] if earlier else None)):
        if other is not None:
            out[f"versus_{name}"] = versus({spec: correct}, {spec: other["heldout"]["correct"]})[spec]
    return out


def _train_side(rows: list) -> dict:
    """pass@1 and pass@k from the same samples, diversity, never solved."""
    per_item, distinct, entropy, solve_rates = [], [], [], {}
    for r in rows:
        graded = [g.correct for g in r.grades]
        per_item.append(graded)
        solve_rates[r.item] = sum(graded) / len(graded) if graded else 0.0
        answers = [vote_key(a.answer) for a in r.trajectory.attempts if a.answer is not None]
        counts = Counter(answers)
        distinct.append(len(counts))
        total = sum(counts.values())
        entropy.append(-sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0)
    n = len(per_item)
    return {"items": n, "samples_per_item": max((len(g) for g in per_item), default=0),
            "pass_at_1": sum(sum(g) / len(g) for g in per_item if g) / n if n else 0.0,
            "pass_at_k": sum(any(g) for g in per_item) / n if n else 0.0,
            "never_solved": sum(not any(g) for g in per_item) / n if n else 0.0,
            "distinct_answers": sum(distinct) / n if n else 0.0, "answer_entropy": sum(entropy) / n if n else 0.0,
            "solve_rates": solve_rates}


def _tail(rows: list, base_solved: dict[str, float]) -> dict:
    """Solve rate now of the items grouped by how often the base solved them."""
    groups: dict[str, list[float]] = {"hard (base 0%)": [], "middle": [], "easy (base ≥ 50%)": []}
    for r in rows:
        was = base_solved.get(r.item, 0.0)
        group = "hard (base 0%)" if was == 0 else "easy (base ≥ 50%)" if was >= 0.5 else "middle"
        graded = [g.correct for g in r.grades]
        groups[group].append(sum(graded) / len(graded) if graded else 0.0)
    return {g: {"items": len(v), "solve_rate": sum(v) / len(v) if v else None} for g, v in groups.items()}


def _alarms(entry: dict, earlier: list[dict]) -> list[str]:
    if not earlier:
        return []
    base, now = earlier[0]["train"], entry["train"]
    return decay_alarms([("", now["distinct_answers"], base["distinct_answers"])],
                        (now["never_solved"], base["never_solved"]), against="for the base",
                        unsolved_what="train items never solved")


def run(settings: Settings, spec: TrainSpec, out: Path, on_stage=None, on_progress=None) -> dict:
    return interrupt.run(train_rounds(settings, spec, out, on_stage, on_progress=on_progress))
