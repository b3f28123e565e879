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

from pydantic import Field, model_validator

from selfcorrect.config import Settings
from selfcorrect.errors import ConfigError
from selfcorrect.stats import mcnemar, wilson
from selfcorrect.models.lineage import Checkpoint, Lineage
from selfcorrect.models.load import load_gguf
from selfcorrect.precision import describe, resolve
from selfcorrect.runner import EvalSpec, Evaluation, results_by_strategy
from selfcorrect.store import Store
from selfcorrect.strategies import parse_strategy
from selfcorrect.tasks import Subset, parse_task, select
from selfcorrect.train.data import SplitSpec, check_heldout, data_hash, split, write_jsonl
from selfcorrect.train.methods import METHODS, TrainingRun, method_of
from selfcorrect.train.report import write as write_report
from selfcorrect.train.to_gguf import fits_template, write_checkpoint_gguf
from selfcorrect.verify.answers import vote_key

MEASURE_TEMPERATURE = 0.3  # the held-out side, and program-aided pseudo-labels: as the studies measure
DIVERSITY_ALARM = 0.5  # distinct answers per item below half of the base's
TAIL_ALARM = 0.1  # the share of never-solved items up by ten points or more


class TrainSpec(SplitSpec):
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
    engine: Literal["auto", "gguf", "hf"] = Field(
        "auto", description="what samples and evaluates: gguf (each checkpoint written back to GGUF, on llama.cpp: "
                            "~2.5x faster on CPU, the embedded model's shape only), hf (transformers) or auto")
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
    stage1_steps: int = Field(20, ge=0, description="score: Stage I steps (reward attempt 2, strong KL)")
    stage2_steps: int = Field(20, ge=0, description="score: Stage II steps (reward both, bonus for improving)")
    alpha: float = Field(1.0, ge=0, description="score: Stage II's bonus weight on r2 - r1")
    beta_stage1: float = Field(0.5, ge=0, description="score: Stage I's KL weight (--beta is Stage II's)")
    review_feedback: Literal["none", "tests"] = Field(
        "none", description="score: the review turn says nothing of attempt 1 (none: intrinsic) or shows its "
                            "visible tests' results (tests: code)")

    @model_validator(mode="after")
    def _method_takes_it(self):
        METHODS.get(self.method)  # an unknown method: its error names the known ones
        method_of(self).check(self)
        return self


async def train_rounds(settings: Settings, spec: TrainSpec, out: Path,
                       on_stage: Callable[[str], None] | None = None, engine_factory=None,
                       on_progress: Callable | None = None) -> dict:
    """Run the rounds; write out/report.{json,md,html} after each one; return the report.
    `engine_factory(checkpoint)` opens a checkpoint's model (default: by `spec.engine`)."""

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

    open_model = engine_factory or checkpoint_opener(settings, lineage, use_gguf, say)
    out.mkdir(parents=True, exist_ok=True)
    method = method_of(spec)
    run = TrainingRun(spec, store, task, train_ids, held_ids, train_side, parse_strategy(spec.sample).spec,
                      settings.precision)
    report = {"spec": spec.model_dump(), "engine": "gguf" if use_gguf else "hf", "precision": resolve(settings.precision),
              "machine": describe(), "train_items": len(train_ids),
              "heldout_items": len(held_ids), "base": base.name, "rounds": [], "stopped": None}
    current, best, waited = base, None, 0
    carried: list = []  # made with round r-1's model, trained on in round r (method.prepare)
    base_solved: dict[str, float] | None = None
    try:
        for number in range(spec.rounds + 1):
            started = time.perf_counter()
            entry = {"round": number, "checkpoint": current.name}
            if number > 0:
                say(f"round {number}: building data from round {number - 1}'s samples")
                previous = report["rounds"][-1]
                data = method.data(run, previous["train_runs"], carried, previous)
                examples = data.examples
                check_heldout(examples, held_ids)
                if not examples and not method.online:
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
                    start_path = merged_master(start, folder)
                say(f"round {number}: {method.training(examples, run)}")
                metrics = method.train(run, start_path, folder, examples)
                current = lineage.register(Checkpoint(
                    name=f"{out.name}/round-{number}", round=number, parent=current.name, method=spec.method,
                    path=str(start_path) if spec.lora else str(folder / "model"),
                    adapter=str(folder / "model") if spec.lora else None, data_hash=data_hash(examples),
                    metrics={k: v for k, v in metrics.items() if k not in ("log", "signals")}))
                entry.update(checkpoint=current.name, examples=len(examples), data_hash=current.data_hash,
                             pseudo_labels=data.pseudo_labels, data_right=data.data_right,
                             training={k: v for k, v in metrics.items() if k not in ("log", "signals")},
                             loss_log=metrics["log"], signals=metrics.get("signals"))
            engine = open_model(current)
            try:
                say(f"round {number}: evaluating the held-out side")
                held_run, held = await evaluate_side(settings, held_side, spec.evaluate, engine, spec.seed,
                                                 MEASURE_TEMPERATURE, on_progress)
                say(f"round {number}: sampling the train side")
                sample_run, sampled = await evaluate_side(settings, train_side, [spec.sample], engine, spec.seed + number,
                                                      spec.sample_temperature, on_progress)
                runs = [sample_run]
                # the labeller answers as it would be measured, not as it explores; the last round's
                # samples only measure, and need no labels
                if spec.labels == "program" and number < spec.rounds:
                    say(f"round {number}: program-aided answers of the train side, the pseudo-labels")
                    label_run, _ = await evaluate_side(settings, train_side, ["program-aided"], engine, spec.seed + number,
                                                   MEASURE_TEMPERATURE, on_progress)
                    runs.append(label_run)
                if number < spec.rounds:
                    if method.preparing(run):
                        say(f"round {number}: {method.preparing(run)}")
                    carried, record = await method.prepare(run, engine, runs, sampled[run.sampler])
                    if record is not None:
                        entry[method.prepared] = record
            finally:
                await engine.aclose()
            entry.update(heldout_run=held_run, sample_run=sample_run, train_runs=runs,
                         heldout=_heldout(held, report["rounds"]), train=_train_side(sampled[run.sampler]))
            if base_solved is None:
                base_solved = entry["train"].pop("solve_rates")
            else:
                entry["train"].pop("solve_rates")
            entry["train"]["tail"] = _tail(sampled[run.sampler], base_solved)
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


def merged_master(start: Checkpoint, folder: Path) -> Path:
    """A trained round's adapter merged into its base, in fp32: the next round's master copy."""
    from selfcorrect.models.hf import HFModel

    merger = HFModel(start.path, start.adapter, precision="fp32")
    try:
        return merger.merge_adapter(folder / "start")
    finally:
        merger.close()


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


async def evaluate_side(settings: Settings, side, strategies: list[str], engine, seed: int,
                    temperature: float, on_progress=None) -> tuple[str, dict[str, list]]:
    evaluation = Evaluation(settings, EvalSpec(task=side.name, strategies=strategies, reference=False, seed=seed,
                                               temperature=temperature), task=side, engine=engine,
                            on_progress=on_progress)
    run = await evaluation.run()
    return run.run_id, results_by_strategy(evaluation.store, run)


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
