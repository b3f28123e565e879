"""Training a verifier on the model's own outputs: a process reward model (PRM: a good/bad
verdict at the end of every step) or an outcome verifier (ORM, V-STaR style: right/wrong of a
whole solution), a classification head on a transformers checkpoint (the embedded model's
export, or any), trained with transformers' Trainer, and measured on held-out solutions. TRL's
PRM trainer is gone from current releases; this is the small trainer it would have been.

    PRM  token classification: the label of a step sits on its last token, every other
         token is ignored by the loss (-100)
    ORM  sequence classification on the last token of prompt and solution

Loading and scoring a trained verifier is inference and lives in verify/learned.py; search
and best-of-n take it as a scorer (`scorer=prm:PATH`, `verifier=orm:PATH`). Its kind is
external: its signal comes from the task's checks on train items, not from the policy's own
judgement at test time.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from selfcorrect.errors import ConfigError
from selfcorrect.precision import Precision
from selfcorrect.train.process import Labelled
from selfcorrect.verify.learned import VERIFIER_KINDS, Verifier, encode, load_classifier


@dataclass
class VerifierSettings:
    epochs: float = 2.0
    learning_rate: float = 2e-5  # all weights: a reward model is fine-tuned whole
    batch_size: int = 8
    max_length: int = 512
    seed: int = 0
    precision: Precision = "auto"  # bf16 autocast over fp32 weights where the hardware has it


def prm_rows(tokenizer, records: Sequence[Labelled], max_length: int) -> list[dict]:
    rows = []
    for r in records:
        ids, positions = encode(tokenizer, r.prompt, r.steps, max_length)
        labels = [-100] * len(ids)
        for position, good in zip(positions, r.labels):
            labels[position] = int(good)
        if positions:
            rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return rows


def orm_rows(tokenizer, records: Sequence[Labelled], max_length: int) -> list[dict]:
    rows = []
    for r in records:
        ids, _ = encode(tokenizer, r.prompt, r.steps, max_length)
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": int(r.correct)})
    return rows


def train_verifier(base: Path, kind: str, records: Sequence[Labelled], out: Path,
                   settings: VerifierSettings = VerifierSettings(), *, progress: bool = True) -> dict:
    """Fine-tune a classifier of `kind` on `records` from the checkpoint at `base`; the model
    goes to `out/model`. Returns the training metrics."""
    if kind not in VERIFIER_KINDS:
        raise ConfigError(f"unknown verifier kind {kind!r}", "use prm or orm")
    tokenizer, model = load_classifier(base, kind)
    from datasets import Dataset
    from transformers import (
        DataCollatorForTokenClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from selfcorrect.train.sft import trainer_args

    rows = (prm_rows if kind == "prm" else orm_rows)(tokenizer, records, settings.max_length)
    if not rows:
        raise ConfigError(f"no {kind} training rows", "label some solutions first (more samples, or more items)")
    labels = [label for row in rows for label in (row["labels"] if kind == "prm" else [row["labels"]]) if label != -100]
    if len(set(labels)) < 2:
        raise ConfigError(f"every {kind} label is {'good' if labels[0] else 'bad'}: nothing to tell apart",
                          "sample more items, or at a higher temperature, so that some are right and some wrong")
    collator = (DataCollatorForTokenClassification(tokenizer) if kind == "prm" else DataCollatorWithPadding(tokenizer))
    args = TrainingArguments(**trainer_args(out, settings.learning_rate, settings.seed, save_steps=10_000,
                                            progress=progress, precision=settings.precision),
                             num_train_epochs=settings.epochs, per_device_train_batch_size=settings.batch_size,
                             lr_scheduler_type="cosine", warmup_steps=0.05, remove_unused_columns=False)
    trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows), data_collator=collator)
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    trainer.save_model(str(out / "model"))
    tokenizer.save_pretrained(out / "model")
    (out / "model" / "verifier.json").write_text(json.dumps({"kind": kind, "base": str(base)}))
    return {"kind": kind, "rows": len(rows), "labels": len(labels), "positive_share": sum(labels) / len(labels),
            "loss": result.training_loss, "steps": result.global_step, "seconds": round(seconds, 1),
            "log": [e["loss"] for e in trainer.state.log_history if "loss" in e]}


def auc(right: Sequence[float], wrong: Sequence[float]) -> float | None:
    """The probability that a right example outscores a wrong one (ties count half)."""
    if not right or not wrong:
        return None
    wins = sum(1.0 if r > w else 0.5 if r == w else 0.0 for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def evaluate(verifier: Verifier, records: Sequence[Labelled]) -> dict:
    """On held-out solutions: the PRM's step-label accuracy and AUC; for both kinds, how well
    the score of a whole solution (its last step for a PRM) tells right from wrong (AUC), and
    the precision among the top-scored solution of each item."""
    steps_seen = steps_right = 0
    step_right, step_wrong, whole = [], [], []
    for r in records:
        scores = verifier.step_scores(r.prompt, r.steps)
        if verifier.kind == "prm":
            for score, good in zip(scores, r.labels):
                steps_seen += 1
                steps_right += (score > 0.5) == good
                (step_right if good else step_wrong).append(score)
        whole.append((r.item_id, scores[-1] if scores else math.nan, r.correct))
    scored = [w for w in whole if not math.isnan(w[1])]
    best: dict[str, tuple[float, bool]] = {}
    for item_id, score, correct in scored:
        if item_id not in best or score > best[item_id][0]:
            best[item_id] = (score, correct)
    return {"solutions": len(records), "right_solutions": sum(r.correct for r in records),
            "auc": auc([s for _, s, c in scored if c], [s for _, s, c in scored if not c]),
            "top_precision": sum(c for _, c in best.values()) / len(best) if best else None, "items": len(best),
            **({"steps": steps_seen, "step_accuracy": steps_right / steps_seen if steps_seen else None,
                "step_auc": auc(step_right, step_wrong)} if verifier.kind == "prm" else {})}
