"""`selfcorrect train-verifier`: a PRM or ORM learned from the model's own samples.

    1. the task's items are split by id into train and held-out sides (as for self-training)
    2. the policy samples both sides with the sampling strategy (through the normal
       evaluation: cached, resumable)
    3. labels: ORM, each distinct sample right or wrong by the task's check; PRM, step labels
       from rollouts (train/process.py), drawn through the sample cache
    4. the verifier is trained on the train side only (train/classifier.py)
    5. it is measured on the held-out side: AUC right vs wrong, precision of the top-scored
       sample per item, and for a PRM the step-label accuracy and AUC

The held-out side's labels are made the same way, and used only in step 5.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import Field

from selfcorrect.config import Settings
from selfcorrect.errors import ConfigError
from selfcorrect.models.base import Model, SamplingParams
from selfcorrect.cache import CachedModel
from selfcorrect.runner import EvalSpec, Evaluation, results_by_strategy
from selfcorrect.store import Store
from selfcorrect.tasks import Subset, parse_task, select
from selfcorrect.tasks.kinds import KINDS
from selfcorrect.train.data import SplitSpec, check_heldout, split_by_prompt, usable_reply
from selfcorrect.train.process import Labelled, label_solutions
from selfcorrect.train.process import write as write_labels
from selfcorrect.verify.learned import Verifier, VerifierKind
from selfcorrect.verify.steps import Step, split_steps


class VerifierSpec(SplitSpec):
    """What `selfcorrect train-verifier` runs; each description is its option's help."""

    kind: VerifierKind = Field("prm", description="prm (a verdict per step, labels from rollouts) or orm (per solution)")
    task: str = Field("arithmetic", description="a math task whose items are split into train and held-out sides")
    sample: str = Field("self-consistency:n=4", description="how the policy (--model) samples both sides")
    temperature: float = Field(0.7, ge=0, le=2, description="its temperature, and the rollouts'")
    rollouts: int = Field(4, ge=1, le=64, description="prm: completions per prefix")
    step: Step = Field("sentence", description="what ends a step: sentence, line or blank-line")
    epochs: float = Field(2.0, gt=0, description="epochs")
    learning_rate: float = Field(2e-5, gt=0, description="all weights are trained")


def solutions(rows: list, items: dict) -> list[tuple]:
    """Each distinct sampled reply, once per item, with where it came from."""
    seen, out = set(), []
    for r in rows:
        for attempt in r.trajectory.attempts:
            key = (r.item, " ".join(attempt.text.split()))
            text = usable_reply(attempt.text, attempt.finish_reason)
            if text is not None and key not in seen:
                seen.add(key)
                out.append((items[r.item], text, {"strategy": r.strategy, "sample": attempt.sample}))
    return out


async def build(settings: Settings, spec: VerifierSpec, base: Path, out: Path, engine: Model,
                on_stage: Callable[[str], None] | None = None, on_progress: Callable | None = None) -> dict:
    from selfcorrect.train.classifier import VerifierSettings, evaluate, train_verifier

    def say(text: str) -> None:
        if on_stage is not None:
            on_stage(text)

    task = parse_task(spec.task, settings.data)
    if task.kind != "math":
        raise ConfigError(f"verifiers are trained on math tasks for now, not {task.kind} ({spec.task})",
                          "use a math task (arithmetic, gsm8k, a JSONL of questions and answers)")
    items = select(task.items(), seed=spec.seed)[: spec.limit] if spec.limit else task.items()
    sides = split_by_prompt(items, spec.heldout, spec.seed)
    train_ids, held_ids = sides.train_ids, sides.held_ids
    by_id = {i.id: i for i in items}
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    store = Store(settings.store)
    labelled: dict[str, list[Labelled]] = {}
    try:
        cached = CachedModel(engine, store)
        params = SamplingParams(temperature=spec.temperature, top_k=40, max_tokens=KINDS["math"].max_tokens,
                                seed=spec.seed, stop=items[0].view.stop if items else ())
        for side, ids in (("train", train_ids), ("heldout", held_ids)):
            say(f"sampling the {side} side ({len(ids)} items) with {spec.sample}")
            evaluation = Evaluation(settings, EvalSpec(task=task.name, strategies=[spec.sample], reference=False,
                                                       seed=spec.seed, temperature=spec.temperature),
                                    task=Subset(task, set(ids)), engine=engine, on_progress=on_progress)
            run = await evaluation.run()
            rows = next(iter(results_by_strategy(evaluation.store, run).values()))
            found = solutions(rows, by_id)
            if spec.kind == "orm":
                labelled[side] = [_whole(item, text, await task.check(item, text, None, "stop"), provenance)
                                  for item, text, provenance in found]
            else:
                say(f"labelling the steps of {len(found)} {side} solutions by rollouts ({spec.rollouts} per prefix)")
                labelled[side] = await label_solutions(cached, task, found, step=spec.step, k=spec.rollouts,
                                                       params=params)
            write_labels(labelled[side], out / f"labels-{side}.jsonl")
    finally:
        store.close()
    check_heldout([_as_example(r) for r in labelled["train"]], held_ids, sides.measured_prompts)
    say(f"training the {spec.kind.upper()} on {len(labelled['train'])} train solutions")
    training = train_verifier(base, spec.kind, labelled["train"], out,
                              VerifierSettings(epochs=spec.epochs, learning_rate=spec.learning_rate, seed=spec.seed,
                                               precision=settings.precision))
    say("measuring it on the held-out side")
    verifier = Verifier.load(out / "model", spec.kind, settings.precision)
    measured = await asyncio.to_thread(evaluate, verifier, labelled["heldout"])
    report = {"spec": spec.model_dump(), "base": str(base), "policy": engine.identity,
              "train_items": len(train_ids), "heldout_items": len(held_ids),
              "labels": {side: _label_summary(records) for side, records in labelled.items()},
              "training": {k: v for k, v in training.items() if k != "log"}, "loss_log": training["log"],
              "heldout": measured, "seconds": round(time.perf_counter() - started, 1),
              "model": str(out / "model"), "scorer": f"{spec.kind}:{out / 'model'}"}
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.md").write_text(render(report))
    return report


def _whole(item, text: str, check, provenance: dict) -> Labelled:
    steps = split_steps(text)
    return Labelled(item_id=item.id, prompt=list(item.view.messages), steps=steps, labels=[check.correct] * len(steps),
                    values=[None] * len(steps), correct=check.correct, provenance=provenance)


def _as_example(record: Labelled):
    from selfcorrect.train.data import Example

    return Example(prompt=record.prompt, completion="".join(record.steps), item_id=record.item_id)


def _label_summary(records: list[Labelled]) -> dict:
    steps = [label for r in records for label in r.labels]
    return {"solutions": len(records), "right": sum(r.correct for r in records), "steps": len(steps),
            "good_steps": sum(steps), "rollouts": sum(r.rollouts for r in records),
            "items": len({r.item_id for r in records})}


def render(report: dict) -> str:
    spec, held, labels = report["spec"], report["heldout"], report["labels"]

    def share(value):
        return "—" if value is None else f"{value:.3f}"

    lines = [f"# {spec['kind'].upper()} on {spec['task']}, learned from the model's own samples", "",
             f"Policy `{report['policy']}`; verifier trained from `{report['base']}`. {report['train_items']} train "
             f"items, {report['heldout_items']} held-out items (split by item id, seed {spec['seed']}); samples "
             f"`{spec['sample']}` at temperature {spec['temperature']}"
             + (f"; step labels from {spec['rollouts']} rollouts per prefix (binary search for the first wrong step)"
                if spec["kind"] == "prm" else "") + ". Gold answers decided the labels of train items; the held-out "
             "labels, made the same way, only measure the verifier.", "",
             "| side | solutions (right) | items | steps (good) | rollouts |", "|---|---|---|---|---|"]
    for side, s in labels.items():
        lines.append(f"| {side} | {s['solutions']} ({s['right']}) | {s['items']} | {s['steps']} ({s['good_steps']}) | "
                     f"{s['rollouts']} |")
    lines += ["", "On the held-out side:", "",
              f"- right vs wrong solutions, AUC of the {'last step' if spec['kind'] == 'prm' else 'solution'}'s "
              f"score: {share(held['auc'])}",
              f"- precision of the top-scored solution per item: {share(held['top_precision'])} ({held['items']} items)"]
    if spec["kind"] == "prm":
        lines += [f"- step labels: accuracy {share(held['step_accuracy'])} over {held['steps']} steps, "
                  f"AUC {share(held['step_auc'])}"]
    lines += ["", f"Training: {report['training']['rows']} rows, {report['training']['labels']} labels "
              f"({100 * report['training']['positive_share']:.0f}% good), loss {report['training']['loss']:.3f}, "
              f"{report['training']['seconds']:.0f} s. Use it as `{spec['kind']}:{report['model']}` "
              f"(e.g. `beam-search:scorer={spec['kind']}:{report['model']}`)."]
    return "\n".join(lines) + "\n"

