"""Training data from the stored record: graded attempts, read across runs through the
store's reader, made into prompt-completion examples, each with its provenance.

    rft   rejection sampling (ReST-EM): the attempts the task's check accepted, at most
          `per_item` per item (easy items do not crowd out hard ones), deduplicated.
    correction: revisions as multi-turn examples: the conversation that showed the model its
          wrong attempt and the feedback, and the revision the check accepted (wrong→right);
          and, so that the model also learns to keep a right answer, revisions of a right
          attempt that kept it right (right→right, `keep` per wrong→right at most).
          Pair traces (Pair-SFT, the SCoRe paper's offline baseline): from independent samples
          of one item, a wrong one shown as attempt 1, the review request, a right one as the
          revision; and right→right the same way.
    dpo   preference pairs: a right and a wrong sample of the same prompt, and a revision the
          check accepted against the wrong attempt it revised.
    label-free (`labels="vote"` or `"program"`): no gold at all. The pseudo-label of an item
          is the majority answer of its samples (kept only when at least `agreement` of
          them give it), or the answer of the model's own program-aided run, executed in
          the sandbox; the samples that give the pseudo-label are kept. How often the
          pseudo-labels were right is measured against the gold afterwards
          (`pseudo_label_accuracy`), and never enters the data.

The train and held-out sides are split by item id (a hash of the id and the seed, so an
item's side never depends on which other items there are), and then by the question: a train
item that asks what a held-out item asks (its normalised first user turn), under whatever id,
is dropped from the train side (`split_by_prompt`). A builder only reads items of the train
side it is given, and `check_heldout` refuses a training set that holds a held-out item's id
or its question.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field

from selfcorrect.errors import ConfigError
from selfcorrect.store import GradedAttempt, Store
from selfcorrect.verify.answers import vote_key


MAX_REPLY_CHARS = 2000  # a longer reply rambles: not worth learning


def usable_reply(text: str, finish_reason: str | None, max_chars: int = MAX_REPLY_CHARS) -> str | None:
    """The one rule for a reply fit to learn from: its stripped text, when that is not empty,
    was not cut off at the token limit and is at most `max_chars` long; else None."""
    text = text.strip()
    return text if text and finish_reason != "length" and len(text) <= max_chars else None


def usable(graded: GradedAttempt, max_chars: int = MAX_REPLY_CHARS) -> str | None:
    """A stored attempt's reply fit to learn from (usable_reply), with the conversation it
    answered on record; else None."""
    if graded.messages is None:
        return None
    return usable_reply(graded.attempt.text, graded.attempt.finish_reason, max_chars)


class Example(BaseModel):
    """One training example: the conversation the model was given, and the reply to learn."""

    prompt: list[dict]
    completion: str
    item_id: str
    label: str = "gold"  # what decided the reply was right: gold, vote, program
    oracle: bool = False  # the gold answer shaped the example itself (star's hints)
    provenance: dict = Field(default_factory=dict)  # run, strategy, attempt, model


class SplitSpec(BaseModel):
    """A task's items split by id into a train and a held-out side: what every training command
    starts from. Each description is its command-line option's help."""

    task: str = Field("arithmetic", description="the task whose items are split into train and held-out sides")
    limit: int | None = Field(400, ge=2, description="items, both sides together")
    heldout: float = Field(0.5, gt=0, lt=1, description="the held-out share of the items (split by item id)")
    seed: int = Field(0, description="the split and the draws")


def split(item_ids: Iterable[str], heldout: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train, held-out) item ids: an item is held out when the hash of its id and the seed
    falls in the held-out share."""
    if not 0 < heldout < 1:
        raise ConfigError(f"a held-out share of {heldout} leaves nothing to train or to measure",
                          "choose a share between 0 and 1, e.g. 0.5")
    train, held = [], []
    for item_id in item_ids:
        digest = hashlib.sha256(f"{seed}:{item_id}".encode()).digest()
        (held if int.from_bytes(digest[:8], "big") / 2**64 < heldout else train).append(item_id)
    return train, held


def normalised(text: str) -> str:
    """A question as compared across items: case and runs of white space do not count."""
    return " ".join(text.lower().split())


def first_prompt(messages: Sequence[dict]) -> str:
    """What a conversation asks: its first user turn, normalised."""
    return normalised(next((m["content"] for m in messages if m["role"] == "user"), ""))


@dataclass
class Split:
    """The sides of a task's items: ids by side, and what was dropped because an item of a
    measured side asks the same question under another id. `measured_prompts`: every
    question a measured side (held-out, confirmation) asks."""

    train_ids: list[str]
    held_ids: list[str]
    dropped: list[str]
    measured_prompts: set[str]
    confirm_ids: list[str] = field(default_factory=list)
    held_dropped: list[str] = field(default_factory=list)  # held out, but asked on the confirmation side

    def record(self) -> dict:
        return {"train": len(self.train_ids), "heldout": len(self.held_ids), "confirmation": len(self.confirm_ids),
                "dropped_for_a_shared_prompt": len(self.dropped) + len(self.held_dropped)}


def split_by_prompt(items: Sequence, heldout: float, seed: int = 0, confirmation: float = 0.0) -> Split:
    """`split` by id, then every question on one side: a train item whose first user turn a
    measured item also asks is dropped (the held-out side stays as the id split made it).
    With `confirmation`, that share of the items (by another hash of the id) is set aside
    first, a side nothing is chosen on; a held-out item asking what it asks is dropped too."""
    by_id = {i.id: i for i in items}
    prompt = {i.id: first_prompt(i.view.messages) for i in items}
    # the key an item's side is drawn by: its id, or its family (served traffic: every wording
    # of one question), so that the wordings of one question share a side
    key = {i.id: i.meta.get("family", i.id) for i in items}
    confirm_ids = [i.id for i in items if _share(f"confirm:{seed}:{key[i.id]}") < confirmation]
    confirm_prompts = {prompt[i] for i in confirm_ids}
    aside = set(confirm_ids)
    _, held_keys = split(dict.fromkeys(key[i] for i in by_id if i not in aside), heldout, seed)
    held_keys = set(held_keys)
    held_all = [i for i in by_id if i not in aside and key[i] in held_keys]
    train_ids = [i for i in by_id if i not in aside and key[i] not in held_keys]
    held_ids = [i for i in held_all if prompt[i] not in confirm_prompts]
    measured = {prompt[i] for i in held_ids} | confirm_prompts
    kept = [i for i in train_ids if prompt[i] not in measured]
    return Split(kept, held_ids, sorted(set(train_ids) - set(kept)), measured, confirm_ids,
                 sorted(set(held_all) - set(held_ids)))


def _share(key: str) -> float:
    """Where a key's hash falls in [0, 1): the same key, the same place, whatever else there is."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def build_rft(store: Store, *, task: str, train_ids: Sequence[str], run_ids: Sequence[str] | None = None,
              model: str | None = None, per_item: int = 4, max_chars: int = MAX_REPLY_CHARS,
              rare_boost: int = 1) -> list[Example]:
    """Rejection sampling: every correct attempt of the train items, answering the task's own
    conversation (as the model will be asked), at most `per_item` distinct replies per item.
    `rare_boost` > 1 repeats the replies of rarely solved items (right in at most a quarter of
    their samples) that many times, so the hard items the model just learned weigh more."""
    allowed = set(train_ids)
    kept: dict[str, list[Example]] = {}
    seen: set[tuple[str, str]] = set()
    tried: dict[str, list[bool]] = {}
    for graded in store.graded_attempts(task=task, run_ids=run_ids, item_ids=list(allowed), model=model):
        if graded.item_id not in allowed:
            continue
        tried.setdefault(graded.item_id, []).append(graded.correct)
        text = usable(graded, max_chars) if graded.correct else None
        if text is None:
            continue
        key = (graded.attempt.messages_hash, " ".join(text.split()))
        if key in seen:
            continue
        examples = kept.setdefault(graded.item_id, [])
        if len(examples) >= per_item:
            continue
        seen.add(key)
        examples.append(Example(prompt=graded.messages, completion=text, item_id=graded.item_id, label="gold",
                                provenance={"run": graded.run_id, "strategy": graded.strategy,
                                            "attempt": graded.attempt.index, "model": graded.model}))
    out = []
    for item_id, examples in kept.items():
        rare = sum(tried[item_id]) <= len(tried[item_id]) / 4
        out += examples * (rare_boost if rare else 1)
    return out


def build_correction(store: Store, *, task: str, train_ids: Sequence[str], run_ids: Sequence[str] | None = None,
                     model: str | None = None, keep: float = 1.0) -> list[Example]:
    """Correction traces from stored revisions: wrong→right revisions, and as many as `keep`
    times their number of right→right ones."""
    allowed = set(train_ids)
    units: dict[tuple[str, str, str], dict[int, GradedAttempt]] = {}
    for graded in store.graded_attempts(task=task, run_ids=run_ids, item_ids=list(allowed), model=model):
        if graded.item_id in allowed:
            units.setdefault((graded.run_id, graded.strategy, graded.item_id), {})[graded.attempt.index] = graded
    fixes, keeps = [], []
    for attempts in units.values():
        for graded in attempts.values():
            parent = attempts.get(graded.attempt.parent) if graded.attempt.parent is not None else None
            text = usable(graded)
            if parent is None or not graded.correct or text is None:
                continue
            example = Example(prompt=graded.messages, completion=text, item_id=graded.item_id,
                              provenance={"run": graded.run_id, "strategy": graded.strategy, "model": graded.model,
                                          "attempt": graded.attempt.index, "revises": parent.attempt.index,
                                          "kind": "keep" if parent.correct else "fix"})
            (keeps if parent.correct else fixes).append(example)
    return fixes + keeps[: int(keep * len(fixes))]


def build_correction_pairs(store: Store, *, task: str, train_ids: Sequence[str], review: str,
                           run_ids: Sequence[str] | None = None, model: str | None = None, per_item: int = 4,
                           keep: float = 1.0, max_chars: int = MAX_REPLY_CHARS) -> list[Example]:
    """Correction traces made of independent first attempts: [the item's conversation, a wrong
    sample, `review`] → a right sample of the same item (at most `per_item` per item), and as
    many as `keep` times their number of right → right ones (a right sample shown, another
    right one as the reply), so the model does not learn to change every answer."""
    allowed = set(train_ids)
    samples: dict[str, dict[bool, dict[str, GradedAttempt]]] = {}
    for graded in store.graded_attempts(task=task, run_ids=run_ids, item_ids=list(allowed), model=model):
        text = usable(graded, max_chars)
        if graded.item_id not in allowed or graded.attempt.parent is not None or text is None:
            continue
        samples.setdefault(graded.item_id, {True: {}, False: {}})[graded.correct].setdefault(" ".join(text.split()), graded)

    def trace(shown: GradedAttempt, reply: GradedAttempt, kind: str) -> Example:
        return Example(prompt=[*shown.messages, {"role": "assistant", "content": shown.attempt.text},
                               {"role": "user", "content": review}],
                       completion=reply.attempt.text.strip(), item_id=shown.item_id,
                       provenance={"run": reply.run_id, "strategy": reply.strategy, "model": reply.model,
                                   "attempt": reply.attempt.index, "shown": shown.attempt.index, "kind": kind,
                                   "traces": "pairs"})

    fixes, keeps = [], []
    for by_verdict in samples.values():
        right, wrong = list(by_verdict[True].values()), list(by_verdict[False].values())
        if not right:
            continue
        fixes += [trace(w, right[k % len(right)], "fix") for k, w in enumerate(wrong[:per_item])]
        if len(right) > 1:
            keeps += [(k, trace(r, right[(k + 1) % len(right)], "keep")) for k, r in enumerate(right[:per_item])]
    keeps.sort(key=lambda pair: pair[0])  # one per item first, so the cut spreads over the items
    return fixes + [example for _, example in keeps[: int(keep * len(fixes))]]


class Pair(BaseModel):
    """A preference pair: two replies to one prompt, the one the check accepted first."""

    prompt: list[dict]
    chosen: str
    rejected: str
    item_id: str
    source: str  # "samples" or "revision"
    provenance: dict = Field(default_factory=dict)


def build_dpo(store: Store, *, task: str, train_ids: Sequence[str], run_ids: Sequence[str] | None = None,
              model: str | None = None, per_item: int = 2) -> list[Pair]:
    """Pairs of the train items, at most `per_item` of each source per item."""
    allowed = set(train_ids)
    by_prompt: dict[tuple[str, str], list[GradedAttempt]] = {}
    units: dict[tuple[str, str, str], dict[int, GradedAttempt]] = {}
    for graded in store.graded_attempts(task=task, run_ids=run_ids, item_ids=list(allowed), model=model):
        if graded.item_id not in allowed or usable(graded) is None:
            continue
        by_prompt.setdefault((graded.item_id, graded.attempt.messages_hash), []).append(graded)
        units.setdefault((graded.run_id, graded.strategy, graded.item_id), {})[graded.attempt.index] = graded
    pairs: list[Pair] = []
    for (item_id, _), graded in by_prompt.items():
        right = list({g.attempt.text.strip(): g for g in graded if g.correct}.values())
        wrong = list({g.attempt.text.strip(): g for g in graded if not g.correct}.values())
        for good, bad in list(zip(right, wrong))[:per_item]:
            pairs.append(Pair(prompt=good.messages, chosen=good.attempt.text.strip(), rejected=bad.attempt.text.strip(),
                              item_id=item_id, source="samples",
                              provenance={"run": good.run_id, "chosen": good.attempt.index, "rejected": bad.attempt.index}))
    revised: dict[str, int] = {}
    for attempts in units.values():
        for graded in attempts.values():
            parent = attempts.get(graded.attempt.parent) if graded.attempt.parent is not None else None
            if parent is None or not graded.correct or parent.correct or parent.messages is None:
                continue
            if revised.get(graded.item_id, 0) >= per_item:
                continue
            revised[graded.item_id] = revised.get(graded.item_id, 0) + 1
            pairs.append(Pair(prompt=parent.messages, chosen=graded.attempt.text.strip(),
                              rejected=parent.attempt.text.strip(), item_id=graded.item_id, source="revision",
                              provenance={"run": graded.run_id, "strategy": graded.strategy,
                                          "chosen": graded.attempt.index, "rejected": parent.attempt.index}))
    return pairs


def to_preference_dataset(pairs: Sequence[Pair]):
    """TRL's conversational preference form."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": p.prompt, "chosen": [{"role": "assistant", "content": p.chosen}],
                               "rejected": [{"role": "assistant", "content": p.rejected}]} for p in pairs])


def build_label_free(store: Store, *, task: str, train_ids: Sequence[str], run_ids: Sequence[str],
                     sample_strategy: str, labels: str, agreement: float = 0.5, per_item: int = 4,
                     model: str | None = None, max_chars: int = MAX_REPLY_CHARS) -> tuple[list[Example], dict]:
    """Examples labelled without gold, and the pseudo-labels' record: per item the label, and
    (measurement only) whether it was right. `labels`: "vote" (the samples' majority) or
    "program" (program-aided's answer, from the same runs)."""
    if labels not in ("vote", "program"):
        raise ConfigError(f"unknown labels {labels!r}", "use gold, vote or program")
    allowed = set(train_ids)
    samples: dict[str, list[GradedAttempt]] = {}
    programs: dict[str, GradedAttempt] = {}
    for graded in store.graded_attempts(task=task, run_ids=run_ids, item_ids=list(allowed), model=model):
        if graded.strategy == sample_strategy:
            samples.setdefault(graded.item_id, []).append(graded)
        elif graded.strategy.split(":")[0] == "program-aided" and graded.final:
            programs[graded.item_id] = graded
    examples, record = [], {}
    for item_id, graded in samples.items():
        if labels == "vote":
            keys = [vote_key(g.attempt.answer) for g in graded if g.attempt.answer is not None]
            if not keys:
                continue
            label, count = max(((k, keys.count(k)) for k in dict.fromkeys(keys)), key=lambda kc: kc[1])
            if count / len(graded) < agreement:
                continue
        else:
            program = programs.get(item_id)
            if program is None or program.attempt.answer is None:
                continue
            label = vote_key(program.attempt.answer)
        matching = [g for g in graded if g.attempt.answer is not None and vote_key(g.attempt.answer) == label]
        # measurement only: whether the pseudo-label was right (a sample giving it was graded right)
        record[item_id] = {"label": label, "right": programs[item_id].correct if labels == "program"
                           else any(g.correct for g in matching)}
        seen: set[str] = set()
        for g in matching:
            text = usable(g, max_chars)
            if len(seen) >= per_item or text is None or " ".join(text.split()) in seen:
                continue
            seen.add(" ".join(text.split()))
            examples.append(Example(prompt=g.messages, completion=text, item_id=item_id, label=labels,
                                    provenance={"run": g.run_id, "strategy": g.strategy, "attempt": g.attempt.index,
                                                "model": g.model, "pseudo_label": label}))
    return examples, record


def pseudo_label_accuracy(record: dict) -> float | None:
    return sum(r["right"] for r in record.values()) / len(record) if record else None


def shuffled_labels(examples: Sequence[Example], seed: int = 0) -> tuple[list[Example], int]:
    """The control of a label-free run: the same examples with their replies permuted across
    items, within each format (same format, wrong labels), so that what a model learns from
    them is the format alone. Each item takes the replies of another item (a seeded
    derangement); a format with a single item has nothing to swap with and is left out.
    Returns the examples and how many were left out."""
    import random

    by_format: dict[str, dict[str, list[Example]]] = {}
    for example in examples:
        by_format.setdefault(str(example.provenance.get("format")), {}).setdefault(example.item_id, []).append(example)
    out, left_out = [], 0
    for fmt, by_item in sorted(by_format.items()):
        items = sorted(by_item)
        if len(items) < 2:
            left_out += sum(len(v) for v in by_item.values())
            continue
        random.Random(f"{seed}:{fmt}").shuffle(items)
        donor = {item: items[(k + 1) % len(items)] for k, item in enumerate(items)}  # nobody keeps their own
        for item, group in by_item.items():
            given = by_item[donor[item]]
            out += [e.model_copy(update={"completion": given[k % len(given)].completion, "label": "shuffled",
                                         "provenance": {**e.provenance, "control": "shuffled", "reply_of": donor[item]}})
                    for k, e in enumerate(group)]
    return out, left_out


def check_heldout(examples: Iterable[Example | Pair], heldout_ids: Iterable[str],
                  heldout_prompts: Iterable[str] = ()) -> None:
    """Refuse a training set that holds a held-out item, by its id or by its question (the
    normalised first user turn) under any other id."""
    examples = list(examples)
    leaked = {e.item_id for e in examples} & set(heldout_ids)
    if leaked:
        raise ConfigError(f"{len(leaked)} held-out items are in the training set (first: {sorted(leaked)[0]})",
                          "build training data from the train side only")
    prompts = set(heldout_prompts)
    asked = sorted({e.item_id for e in examples if first_prompt(e.prompt) in prompts})
    if asked:
        raise ConfigError(f"{len(asked)} training examples ask a held-out question under another id "
                          f"(first: {asked[0]})", "build training data from the train side only")


def data_hash(examples: Sequence[Example | Pair]) -> str:
    payload = json.dumps([e.model_dump() for e in examples], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def write_jsonl(examples: Sequence[Example | Pair], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for example in examples:
            f.write(example.model_dump_json() + "\n")
    return path


def read_jsonl(path: Path) -> list[Example] | list[Pair]:
    """A data file `write_jsonl` wrote: examples (prompt, completion) or preference pairs
    (prompt, chosen, rejected), not a mix."""
    from pydantic import ValidationError

    if not path.is_file():
        raise ConfigError(f"no data file {path}", "give a round's data.jsonl (under the train run's round-N folder)")
    rows: list = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
            rows.append((Pair if "chosen" in fields else Example).model_validate(fields))
        except (ValueError, ValidationError) as e:
            raise ConfigError(f"{path}:{number} is not a training example or pair: {str(e).splitlines()[0]}",
                              "each line needs prompt and completion, or prompt, chosen and rejected") from None
    if len({type(r) for r in rows}) > 1:
        raise ConfigError(f"{path} mixes examples and preference pairs", "train them as separate files")
    return rows


def to_dataset(examples: Sequence[Example]):
    """A `datasets` dataset in TRL's conversational prompt-completion form (the loss falls on
    the completion only)."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": e.prompt, "completion": [{"role": "assistant", "content": e.completion}]}
                              for e in examples])
