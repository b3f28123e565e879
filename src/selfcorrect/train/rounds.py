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

import asyncio
import math
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from selfcorrect.config import Settings
from selfcorrect.errors import ConfigError
from selfcorrect.measure.stats import mcnemar, wilson
from selfcorrect.models.base import SamplingParams
from selfcorrect.models.load import load_gguf
from selfcorrect.runner import EvalSpec, Evaluation, results_by_strategy
from selfcorrect.store import Store
from selfcorrect.strategies import parse_strategy
from selfcorrect.tasks import Subset, Task, parse_task, select
from selfcorrect.tasks.kinds import KINDS
from selfcorrect.train.data import (
    build_correction,
    build_correction_pairs,
    build_dpo,
    build_label_free,
    build_rft,
    check_heldout,
    data_hash,
    pseudo_label_accuracy,
    split,
    to_dataset,
    to_preference_dataset,
    write_jsonl,
)
from selfcorrect.train.grpo import GRPOSettings, train_grpo
from selfcorrect.train.judge import judged_pairs
from selfcorrect.models.lineage import Checkpoint, Lineage
from selfcorrect.train.report import write as write_report
from selfcorrect.train.score import REVIEW, SCoReSettings, train_score
from selfcorrect.train.sft import SFTSettings, train_dpo, train_sft
from selfcorrect.train.star import rationalize
from selfcorrect.train.to_gguf import fits_template, write_checkpoint_gguf
from selfcorrect.verify.answers import vote_key

MEASURE_TEMPERATURE = 0.3  # the held-out side, and program-aided pseudo-labels: as the studies measure
DIVERSITY_ALARM = 0.5  # distinct answers per item below half of the base's
TAIL_ALARM = 0.1  # the share of never-solved items up by ten points or more


class TrainSpec(BaseModel):
    """What a training runs (the labels of correction traces are always the task's check)."""

    task: str = "arithmetic"
    limit: int | None = Field(400, ge=2)  # items, train and held-out together
    heldout: float = Field(0.5, gt=0, lt=1)
    seed: int = 0
    sample: str = "self-consistency:n=8"  # how the train side is sampled each round
    sample_temperature: float = Field(0.7, ge=0, le=2)
    evaluate: list[str] = Field(default_factory=lambda: ["single"])  # strategies on the held-out side
    rounds: int = Field(2, ge=1, le=20)
    # rft: the accepted samples; correction: accepted revisions of the sampling strategy
    # (it must revise: self-refine, self-debug, program-aided, ...), as multi-turn traces
    # dpo: preference pairs (a right and a wrong sample of one prompt; a fix against what it fixed)
    # star: rft plus rationales for the failed items, asked again with the answer as a hint
    # (gold: oracle-derived data, marked; program: the model's own program-aided answer)
    # grpo: reinforcement learning on the train items, rewarded by the task's check (train/grpo.py)
    # score: two attempts per prompt, trained to correct itself in two stages (train/score.py)
    method: Literal["rft", "star", "correction", "dpo", "grpo", "score"] = "rft"
    # correction traces: the revisions the sampling strategy made, or pairs of independent
    # samples (a wrong one shown, the self-correct review turn, a right one: Pair-SFT)
    traces: Literal["revisions", "pairs"] = "revisions"
    # gold: the task's check picks the samples; vote / program: no gold (train/data.py);
    # judge (dpo only): the model ranks its own samples, self-rewarding (train/judge.py)
    labels: Literal["gold", "vote", "program", "judge"] = "gold"
    agreement: float = Field(0.5, gt=0, le=1)  # vote labels: the majority's least share

    restart: Literal["base", "continue"] = "base"
    # what samples and evaluates each round: the checkpoint itself on transformers (hf), or
    # its Q8_0 GGUF write-back on llama.cpp (gguf: ~2.5x faster on CPU, the embedded model's
    # shape only); auto: gguf when the base has the embedded model's shape
    engine: Literal["auto", "gguf", "hf"] = "auto"
    per_item: int = Field(4, ge=1)
    rare_boost: int = Field(1, ge=1, le=10)  # rft: repeat the replies of rarely solved items
    patience: int = Field(1, ge=1)
    lora: bool = True
    epochs: float = Field(2.0, gt=0)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(8, ge=1)
    # grpo: steps per round, completions per prompt, the KL weight, the shaping terms
    grpo_steps: int = Field(40, ge=1)
    generations: int = Field(8, ge=2)
    beta: float = Field(0.04, ge=0)
    format_reward: float = Field(0.0, ge=0, le=1)
    partial_credit: bool = False
    # score: the steps of each stage, Stage II's bonus for improving, Stage I's KL weight
    stage1_steps: int = Field(20, ge=0)
    stage2_steps: int = Field(20, ge=0)
    alpha: float = Field(1.0, ge=0)
    beta_stage1: float = Field(0.5, ge=0)
    # what the review turn between the attempts says: nothing of whether attempt 1 was right
    # (intrinsic), or the visible tests' results of its code (external; code tasks)
    review_feedback: Literal["none", "tests"] = "none"

    @model_validator(mode="after")
    def _labels_of_corrections(self):
        if self.method in ("correction", "grpo", "score") and self.labels != "gold":
            raise ValueError(f"{self.method} is rewarded by the task's check: use labels gold")
        ranked = self.labels in ("gold", "judge")
        if (self.method == "dpo" and not ranked) or (self.labels == "judge" and self.method != "dpo"):
            raise ValueError("preference pairs are ranked by the task's check (labels gold) or by the model as "
                             "judge (labels judge, with method dpo)")
        if self.review_feedback == "tests" and self.method != "score":
            raise ValueError("--review-feedback is the review turn of two-attempt training: it goes with --method score")
        if self.traces == "pairs" and self.method != "correction":
            raise ValueError("traces are what correction trains on: --traces pairs goes with --method correction")
        if self.method == "star" and self.labels == "vote":
            raise ValueError("star hints the answer of items with no sample agreeing with it; a majority vote "
                             "always has one: use labels gold or program")
        return self


async def train_rounds(settings: Settings, spec: TrainSpec, out: Path,
                       on_stage: Callable[[str], None] | None = None, engine_factory=None,
                       on_progress: Callable | None = None) -> dict:
    """Run the rounds; write out/report.{json,md,html} after each one; return the report.
    `engine_factory(checkpoint)` opens a checkpoint's model (default: by `spec.engine`)."""
    from selfcorrect.models.hf import HFModel

    def say(text: str) -> None:
        if on_stage is not None:
            on_stage(text)

    lineage = Lineage(settings.store)
    store = Store(settings.store)
    base = lineage.of_round(0)
    task = parse_task(spec.task, settings.data)
    items = select(task.items(), seed=spec.seed)[: spec.limit] if spec.limit else task.items()
    if spec.review_feedback == "tests" and (task.kind != "code" or not all(i.view.visible_tests for i in items)):
        raise ConfigError(f"--review-feedback tests shows the visible tests' results: {spec.task} has no visible "
                          "tests on every item", "use a code task with visible tests (mbpp), or --review-feedback none")
    train_ids, held_ids = split([i.id for i in items], spec.heldout, spec.seed)
    train_side, held_side = Subset(task, set(train_ids)), Subset(task, set(held_ids))
    use_gguf = spec.engine == "gguf" or (spec.engine == "auto" and fits_template(Path(base.path)))

    def open_hf(c: Checkpoint):
        return HFModel(c.path, c.adapter, batch=settings.hf.batch, threads=settings.hf.threads)

    def open_gguf(c: Checkpoint):
        if c.gguf is None or not Path(c.gguf).exists():
            say(f"writing {c.name} to GGUF for the llama.cpp engine")
            c = lineage.register(c.model_copy(update={"gguf": write_checkpoint_gguf(c)["path"]}))
        return load_gguf(settings, c.gguf)

    open_model = engine_factory or (open_gguf if use_gguf else open_hf)
    out.mkdir(parents=True, exist_ok=True)
    sampler = parse_strategy(spec.sample).spec
    report = {"spec": spec.model_dump(), "engine": "gguf" if use_gguf else "hf", "train_items": len(train_ids),
              "heldout_items": len(held_ids), "base": base.name, "rounds": [], "stopped": None}
    current, best, waited = base, None, 0
    # made with round r-1's model, trained on in round r: star's rationales, self-judged pairs
    rationales: list = []
    judged: list = []
    base_solved: dict[str, float] | None = None
    try:
        for number in range(spec.rounds + 1):
            started = time.perf_counter()
            entry = {"round": number, "checkpoint": current.name}
            if number > 0:
                say(f"round {number}: building data from round {number - 1}'s samples")
                runs = report["rounds"][-1]["train_runs"]
                # exploitation: the share of the data the task's check agrees with (by
                # construction with gold labels; measured afterwards for the others)
                pseudo, data_right = None, 1.0
                if spec.method in ("grpo", "score"):
                    examples, data_right = [], None  # rewarded online by the check: no data to build
                elif spec.labels == "judge":
                    examples = judged
                    judge = report["rounds"][-1]["judge"]
                    data_right = judge["pairs_as_the_check"] / judge["pairs"] if judge["pairs"] else None
                elif spec.method == "dpo":
                    examples = build_dpo(store, task=task.name, train_ids=train_ids, run_ids=runs, per_item=spec.per_item)
                elif spec.method == "correction" and spec.traces == "pairs":
                    examples = build_correction_pairs(store, task=task.name, train_ids=train_ids, run_ids=runs,
                                                      review=REVIEW[task.kind],
                                                      per_item=spec.per_item)
                elif spec.method == "correction":
                    examples = build_correction(store, task=task.name, train_ids=train_ids, run_ids=runs)
                elif spec.labels == "gold":
                    examples = rationales + build_rft(store, task=task.name, train_ids=train_ids, run_ids=runs,
                                                      per_item=spec.per_item, rare_boost=spec.rare_boost)
                else:
                    examples, labelled = build_label_free(
                        store, task=task.name, train_ids=train_ids, run_ids=runs, sample_strategy=sampler,
                        labels=spec.labels, agreement=spec.agreement, per_item=spec.per_item)
                    examples = rationales + examples
                    data_right = (sum(labelled[e.item_id]["right"] for e in examples) / len(examples)
                                  if examples else None)
                    pseudo = {"items_labelled": len(labelled), "accuracy_against_gold": pseudo_label_accuracy(labelled)}
                check_heldout(examples, held_ids)
                if not examples and spec.method not in ("grpo", "score"):
                    why = ("the judge ordered no pair of samples (no readable score, or equal scores)"
                           if spec.labels == "judge" else "no sample was verified right")
                    report["stopped"] = f"round {number}: {why}, nothing to train on"
                    break
                folder = out / f"round-{number}"
                if examples:
                    write_jsonl(examples, folder / "data.jsonl")
                start = base if spec.restart == "base" else current
                start_path = Path(start.path)
                if start.adapter and spec.restart == "continue":
                    say(f"round {number}: merging round {number - 1}'s adapter")
                    merger = open_hf(start)
                    start_path = merger.merge_adapter(folder / "start")
                    merger.close()
                if spec.method == "grpo":
                    say(f"round {number}: GRPO for {spec.grpo_steps} steps on {len(train_ids)} train items")
                    metrics = train_grpo(start_path, task, train_side.items(), folder, GRPOSettings(
                        lora=spec.lora, learning_rate=spec.learning_rate, steps=spec.grpo_steps,
                        generations=spec.generations, beta=spec.beta, format_reward=spec.format_reward,
                        partial_credit=spec.partial_credit, temperature=max(spec.sample_temperature, 0.7),
                        max_completion_length=KINDS[task.kind].max_tokens, seed=spec.seed))
                elif spec.method == "score":
                    say(f"round {number}: two-attempt training, {spec.stage1_steps} + {spec.stage2_steps} steps")
                    metrics = train_score(start_path, task, train_side.items(), folder, SCoReSettings(
                        lora=spec.lora, learning_rate=spec.learning_rate, stage1_steps=spec.stage1_steps,
                        stage2_steps=spec.stage2_steps, alpha=spec.alpha, beta_stage1=spec.beta_stage1,
                        beta_stage2=spec.beta, generations=spec.generations,
                        temperature=max(spec.sample_temperature, 0.7), feedback=spec.review_feedback,
                        max_completion_length=KINDS[task.kind].max_tokens, seed=spec.seed))
                else:
                    say(f"round {number}: training on {len(examples)} examples")
                    training = SFTSettings(lora=spec.lora, epochs=spec.epochs, learning_rate=spec.learning_rate,
                                           batch_size=spec.batch_size, seed=spec.seed)
                    metrics = (train_dpo(start_path, to_preference_dataset(examples), folder, training)
                               if spec.method == "dpo" else train_sft(start_path, to_dataset(examples), folder, training))
                current = lineage.register(Checkpoint(
                    name=f"{out.name}/round-{number}", round=number, parent=current.name, method=spec.method,
                    path=str(start_path) if spec.lora else str(folder / "model"),
                    adapter=str(folder / "model") if spec.lora else None, data_hash=data_hash(examples),
                    metrics={k: v for k, v in metrics.items() if k not in ("log", "signals")}))
                entry.update(checkpoint=current.name, examples=len(examples), data_hash=current.data_hash,
                             pseudo_labels=pseudo, data_right=data_right,
                             training={k: v for k, v in metrics.items() if k not in ("log", "signals")},
                             loss_log=metrics["log"], signals=metrics.get("signals"))
            engine = open_model(current)
            try:
                say(f"round {number}: evaluating the held-out side")
                held_run, held = await _evaluate(settings, held_side, spec.evaluate, engine, spec.seed,
                                                 MEASURE_TEMPERATURE, on_progress)
                say(f"round {number}: sampling the train side")
                sample_run, sampled = await _evaluate(settings, train_side, [spec.sample], engine, spec.seed + number,
                                                      spec.sample_temperature, on_progress)
                runs = [sample_run]
                # the labeller answers as it would be measured, not as it explores; the last round's
                # samples only measure, and need no labels
                if spec.labels == "program" and number < spec.rounds:
                    say(f"round {number}: program-aided answers of the train side, the pseudo-labels")
                    label_run, _ = await _evaluate(settings, train_side, ["program-aided"], engine, spec.seed + number,
                                                   MEASURE_TEMPERATURE, on_progress)
                    runs.append(label_run)
                if spec.method == "star" and number < spec.rounds:
                    say(f"round {number}: rationalizing the train items it failed, the "
                        f"{'gold answer' if spec.labels == 'gold' else 'program-aided answer'} as a hint")
                    rationales, entry["rationales"] = await _rationales(
                        engine, store, task, train_side, runs, sampled[sampler], spec)
                if spec.labels == "judge" and number < spec.rounds:
                    say(f"round {number}: the model judges its own samples of the train side")
                    judged, entry["judge"] = await judged_pairs(
                        engine, train_side.items(), sampled[sampler],
                        SamplingParams(temperature=0.0, max_tokens=KINDS[task.kind].max_tokens, seed=spec.seed),
                        per_item=spec.per_item)
            finally:
                await engine.aclose()
            entry.update(heldout_run=held_run, sample_run=sample_run, train_runs=runs,
                         heldout=_heldout(held, report["rounds"]), train=_train_side(sampled[sampler]))
            if base_solved is None:
                base_solved = entry["train"].pop("solve_rates")
            else:
                entry["train"].pop("solve_rates")
            entry["train"]["tail"] = _tail(sampled[sampler], base_solved)
            entry["alarms"] = _alarms(entry, report["rounds"])
            entry["seconds"] = round(time.perf_counter() - started, 1)
            report["rounds"].append(entry)
            write_report(report, out)
            accuracy = entry["heldout"]["accuracy"]
            if best is not None and accuracy <= best:
                waited += 1
                if waited >= spec.patience and number < spec.rounds:
                    report["stopped"] = f"held-out accuracy did not improve after round {number}"
                    break
            else:
                best, waited = accuracy, 0
    finally:
        lineage.close()
        store.close()
    write_report(report, out)
    return report


async def _evaluate(settings: Settings, side, strategies: list[str], engine, seed: int,
                    temperature: float, on_progress=None) -> tuple[str, dict[str, list]]:
    evaluation = Evaluation(settings, EvalSpec(task=side.name, strategies=strategies, reference=False, seed=seed,
                                               temperature=temperature), task=side, engine=engine,
                            on_progress=on_progress)
    run = await evaluation.run()
    return run.run_id, results_by_strategy(evaluation.store, run)


async def _rationales(engine, store: Store, task: Task, train_side, runs: list[str], rows: list,
                      spec: TrainSpec) -> tuple[list, dict]:
    """STaR's rationales from this round's model for the train items no sample got right
    (gold), or with no sample agreeing with the model's own program-aided answer (program)."""
    items = train_side.items()
    if spec.labels == "gold":
        solved = {r.item for r in rows if any(g.correct for g in r.grades)}
        hints = {i.id: i.answer for i in items if i.id not in solved}
    else:
        examples, labelled = build_label_free(
            store, task=task.name, train_ids=[i.id for i in items], run_ids=runs,
            sample_strategy=parse_strategy(spec.sample).spec, labels="program", per_item=spec.per_item)
        covered = {e.item_id for e in examples}
        hints = {item_id: record["label"] for item_id, record in labelled.items() if item_id not in covered}
    params = SamplingParams(temperature=spec.sample_temperature, top_k=40, n=4, max_tokens=KINDS["math"].max_tokens,
                            seed=spec.seed)
    made, tried = await rationalize(engine, task, items, hints, label=spec.labels, params=params, per_item=spec.per_item)
    return made, {"items_hinted": len(hints), "items_rationalized": sum(1 for t in tried.values() if t["kept"]),
                  "examples": len(made), "oracle": spec.labels == "gold"}


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
        if other is None:
            continue
        before = other["heldout"]["correct"]
        up = sum(not before[i] and correct[i] for i in correct if i in before)
        down = sum(before[i] and not correct[i] for i in correct if i in before)
        out[f"versus_{name}"] = {"wrong_to_right": up, "right_to_wrong": down, "p_value": mcnemar(up, down),
                                 "difference": (up - down) / n if n else 0.0}
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
    alarms = []
    if base["distinct_answers"] and now["distinct_answers"] < DIVERSITY_ALARM * base["distinct_answers"]:
        alarms.append(f"diversity collapse: {now['distinct_answers']:.2f} distinct answers per item against "
                      f"{base['distinct_answers']:.2f} for the base")
    if now["never_solved"] - base["never_solved"] >= TAIL_ALARM:
        alarms.append(f"tail narrowing: {100 * now['never_solved']:.0f}% of train items never solved against "
                      f"{100 * base['never_solved']:.0f}% for the base")
    return alarms


def run(settings: Settings, spec: TrainSpec, out: Path, on_stage=None, on_progress=None) -> dict:
    return asyncio.run(train_rounds(settings, spec, out, on_stage, on_progress=on_progress))
