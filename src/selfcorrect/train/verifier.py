"""Verifiers learned from the model's own outputs: a process reward model (PRM: a good/bad
verdict at the end of every step) and an outcome verifier (ORM, V-STaR style: right/wrong of
a whole solution), both a classification head on a transformers checkpoint (the embedded
model's export, or any), trained with transformers' Trainer. TRL's PRM trainer is gone from
current releases; this is the small trainer it would have been.

    PRM  token classification: the label of a step sits on its last token, every other
         token is ignored by the loss (-100)
    ORM  sequence classification on the last token of prompt and solution

A trained verifier scores with the probability of "good"/"right"; search and best-of-n take
it as a scorer (`scorer=prm:PATH`, `verifier=orm:PATH`). Its kind is external: its signal
comes from the task's checks on train items, not from the policy's own judgement at test time.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from selfcorrect.errors import ConfigError
from selfcorrect.train.process import Labelled

KINDS = ("prm", "orm")


@dataclass
class VerifierSettings:
    epochs: float = 2.0
    learning_rate: float = 2e-5  # all weights: a reward model is fine-tuned whole
    batch_size: int = 8
    max_length: int = 512
    seed: int = 0


def _load_classifier(base: Path, kind: str):
    try:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer
    except ImportError:
        raise ConfigError("verifiers need torch and transformers", "pip install torch==2.13.0 'selfcorrect[train]'") from None
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    classes = AutoModelForTokenClassification if kind == "prm" else AutoModelForSequenceClassification
    model = classes.from_pretrained(base, num_labels=2, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def encode(tokenizer, prompt: list[dict], steps: Sequence[str], max_length: int) -> tuple[list[int], list[int]]:
    """Token ids of the conversation with the solution as the assistant's reply, and the
    position of each step's last token (steps cut off by `max_length` have none)."""
    head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    text, ends = head, []
    for step in steps:
        text += step
        ends.append(len(text))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    # a step's verdict sits on the last token that ends within it
    positions = [max((i for i, (_, stop) in enumerate(offsets) if stop <= end), default=0) for end in ends]
    return ids[:max_length], [p for p in positions if p < max_length]


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
    if kind not in KINDS:
        raise ConfigError(f"unknown verifier kind {kind!r}", "use prm or orm")
    tokenizer, model = _load_classifier(base, kind)
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
                                            progress=progress),
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


class Reading(NamedTuple):
    scores: list[float]
    tokens: int
    seconds: float


class Verifier:
    """A trained PRM or ORM, loaded once per path and process; scoring runs one request at a
    time (the model is not thread-safe), off the event loop."""

    _loaded: dict[str, Verifier] = {}
    _guard = threading.Lock()

    def __init__(self, path: Path):
        meta = path / "verifier.json"
        if not meta.is_file():
            raise ConfigError(f"no trained verifier at {path}", "train one with `selfcorrect train-verifier` "
                              "and name its model folder (…/model)")
        self.path, self.kind = path, json.loads(meta.read_text())["kind"]
        self.tokenizer, self.model = _load_classifier(path, self.kind)
        self.model.eval()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path, kind: str) -> Verifier:
        key = str(Path(path).resolve())
        with cls._guard:
            if key not in cls._loaded:
                cls._loaded[key] = cls(Path(path))
        verifier = cls._loaded[key]
        if verifier.kind != kind:
            raise ConfigError(f"{path} is a trained {verifier.kind}, not a {kind}", f"name it as {verifier.kind}:{path}")
        return verifier

    def step_scores(self, prompt: list[dict], steps: Sequence[str], max_length: int = 2048) -> list[float]:
        """PRM: the probability that each step is good (ORM: one score, of the whole)."""
        return self.read(prompt, steps, max_length).scores

    def read(self, prompt: list[dict], steps: Sequence[str], max_length: int = 2048) -> Reading:
        """The scores of `step_scores`, how many tokens the verifier read for them, and the
        seconds of its forward pass (not the wait for the model: calls queue behind each other)."""
        import torch

        ids, positions = encode(self.tokenizer, prompt, steps, max_length)
        with self._lock, torch.no_grad():
            started = time.perf_counter()
            logits = self.model(input_ids=torch.tensor([ids])).logits[0]
            seconds = time.perf_counter() - started
        probabilities = torch.softmax(logits, dim=-1)[..., 1]
        scores = [float(probabilities)] if self.kind == "orm" else [float(probabilities[p]) for p in positions]
        return Reading(scores, len(ids), seconds)


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
