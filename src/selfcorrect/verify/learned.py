"""A trained verifier as a scorer in strategy specs: `prm:PATH` (a process reward model, one
score per step) or `orm:PATH` (an outcome verifier, one score per solution), both a
classification head on a transformers checkpoint, trained by `selfcorrect train-verifier`
(train/verifier.py, train/classifier.py). This module owns everything inference needs:
loading, encoding a conversation with its steps, and reading the scores.

    PRM  token classification: a step's verdict sits on its last token
    ORM  sequence classification on the last token of prompt and solution

A verifier scores with the probability of "good"/"right". Scoring runs off the event loop;
its forward pass is charged to the feedback phase as the tokens it read, since at equal
compute a verifier's reading counts like the policy's."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, NamedTuple, get_args

from selfcorrect.errors import ConfigError
from selfcorrect.precision import Precision, dtype, resolve

VerifierKind = Literal["prm", "orm"]
VERIFIER_KINDS: tuple[str, ...] = get_args(VerifierKind)


def parse_learned(spec: str) -> tuple[str, Path] | None:
    """("prm" | "orm", path) for a learned verifier's spec, None for any other scorer name."""
    kind, colon, path = spec.partition(":")
    if kind not in VERIFIER_KINDS:
        return None
    if not colon or not path:
        raise ConfigError(f"{kind} names a trained verifier by its folder: {kind}:PATH",
                          "train one with `selfcorrect train-verifier`, then give its model folder")
    return kind, Path(path)


def load_classifier(base: Path, kind: str, precision: Precision = "fp32"):
    """The tokenizer and a two-class head of `kind` on the checkpoint at `base`: fp32 to train
    (the master copy), `precision` to score."""
    try:
        import torch  # noqa: F401  (without it, the error below rather than transformers')
        from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer
    except ImportError:
        raise ConfigError("verifiers need torch and transformers", "pip install torch==2.13.0 'selfcorrect[train]'") from None
    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    classes = AutoModelForTokenClassification if kind == "prm" else AutoModelForSequenceClassification
    model = classes.from_pretrained(base, num_labels=2, dtype=dtype(precision))
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


class VerifierScores(NamedTuple):
    """One forward pass: the scores, the tokens read, the seconds it took."""

    scores: list[float]
    tokens: int
    seconds: float


class Verifier:
    """A trained PRM or ORM, loaded once per path and process; scoring runs one request at a
    time (the model is not thread-safe), off the event loop."""

    _loaded: dict[str, Verifier] = {}
    _guard = threading.Lock()

    def __init__(self, path: Path, precision: Precision = "auto"):
        meta = path / "verifier.json"
        if not meta.is_file():
            raise ConfigError(f"no trained verifier at {path}", "train one with `selfcorrect train-verifier` "
                              "and name its model folder (…/model)")
        self.path, self.kind = path, json.loads(meta.read_text())["kind"]
        self.precision = resolve(precision)
        self.tokenizer, self.model = load_classifier(path, self.kind, self.precision)
        self.model.eval()
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path, kind: str, precision: Precision = "auto") -> Verifier:
        key = f"{Path(path).resolve()}@{resolve(precision)}"
        with cls._guard:
            if key not in cls._loaded:
                cls._loaded[key] = cls(Path(path), precision)
        verifier = cls._loaded[key]
        if verifier.kind != kind:
            raise ConfigError(f"{path} is a trained {verifier.kind}, not a {kind}", f"name it as {verifier.kind}:{path}")
        return verifier

    def step_scores(self, prompt: list[dict], steps: Sequence[str], max_length: int = 2048) -> list[float]:
        """PRM: the probability that each step is good (ORM: one score, of the whole)."""
        return self.score(prompt, steps, max_length).scores

    def score(self, prompt: list[dict], steps: Sequence[str], max_length: int = 2048) -> VerifierScores:
        """The scores of `step_scores`, how many tokens the verifier read for them, and the
        seconds of its forward pass (not the wait for the model: calls queue behind each other)."""
        import torch  # noqa: F401  (without it, the error below rather than transformers')

        ids, positions = encode(self.tokenizer, prompt, steps, max_length)
        with self._lock, torch.no_grad():
            started = time.perf_counter()
            logits = self.model(input_ids=torch.tensor([ids])).logits[0]
            seconds = time.perf_counter() - started
        probabilities = torch.softmax(logits.float(), dim=-1)[..., 1]
        scores = [float(probabilities)] if self.kind == "orm" else [float(probabilities[p]) for p in positions]
        return VerifierScores(scores, len(ids), seconds)


async def learned_scores(session, spec: str, steps: Sequence[str]) -> list[float]:
    """The verifier's scores of a (partial) solution given as steps: one per step for a PRM,
    one for the whole for an ORM."""
    kind, path = parse_learned(spec)
    verifier = await asyncio.to_thread(Verifier.load, path, kind, session.ctx.precision)
    scored = await asyncio.to_thread(verifier.score, list(session.view.messages), list(steps))
    cost = session.trajectory.cost["feedback"]
    cost.calls += 1
    cost.prompt_tokens += scored.tokens
    cost.sent_requests += 1  # a forward pass: never served from a cache
    cost.sent_prompt_tokens += scored.tokens
    cost.seconds += scored.seconds
    return scored.scores
