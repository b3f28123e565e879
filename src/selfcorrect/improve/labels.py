"""What a round of `improve` trains on: the train items' labels from the strongest check there
is, and examples in the teacher's format and in each student's.

labels
  none  math: the answer that at least `agree` of the teacher's independent chains (programs the
        sandbox ran) printed, with no other answer printed as often; code: a program that passed
        every visible test and reads its inputs (one that reads none hard-codes the visible
        tests' answers, and self-training learns to: FINDINGS.md section 9). No gold anywhere:
        what the gold check says of a label is measured afterwards, for the report only.
  gold  the task's gold check (the gold answer, the hidden tests): an oracle run.
  feedback  served traffic (`served:STORE`): where clients' feedback gives the answer, attempts
        that reach it; elsewhere as none. The run is feedback-labelled, and says so.

examples
  teacher   the teacher's first prompt → a reply the labels verified (a program fixed after an
            error is taught as the first answer): the strategy itself gets better
  student   a student strategy's prompt → one of its own samples that gives the label (code: that
            passed the visible tests and reads its inputs), or, where none does, the label in the
            task's answer format (`worked_reply`; for code the teacher's verified program): the
            system distilled into one sample
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from selfcorrect.errors import ConfigError
from selfcorrect.models.base import first_turn
from selfcorrect.store import GradedAttempt, Store
from selfcorrect.train.data import Example, normalised, usable
from selfcorrect.verify.answers import vote_key
from selfcorrect.verify.code import extract_code, ignores_its_inputs


# where a training row's label came from (Example.label): what --labels none may train on
# (agreeing programs, the visible tests, a vote), and what it may not
LABEL_FREE = frozenset({"programs", "tests", "vote", "program"})
LABEL_SOURCES = {"gold": "the gold check", "user": "a client's answer (feedback)"}


@dataclass
class Label:
    """A train item's label and the teacher's attempts that reach it."""

    item_id: str
    answer: str | None  # math: the verified answer's vote key; code: None (the tests are the check)
    verified: list[GradedAttempt]
    votes: int = 0  # chains that printed it (math, labels none)
    chains: int = 0
    right: bool | None = None  # measured against gold afterwards, never read by the data
    source: str | None = None  # a training row's label kind where it is not the run's (feedback)


def _passed_visible_tests(graded: GradedAttempt) -> bool:
    return any(f.kind == "external" and f.passed and "test" in f.source for f in graded.attempt.feedback)


def _hard_coded(graded: GradedAttempt, entry_point: str | None) -> bool:
    return ignores_its_inputs(extract_code(graded.attempt.text, entry_point) or "", entry_point)


def _by_item(store: Store, task: str, run_ids: Sequence[str], item_ids: Sequence[str]) -> dict[str, list[GradedAttempt]]:
    allowed, grouped = set(item_ids), {}
    for graded in store.graded_attempts(task=task, run_ids=list(run_ids), item_ids=list(allowed)):
        if graded.item_id in allowed:  # a builder reads only the train side it is given
            grouped.setdefault(graded.item_id, []).append(graded)
    return grouped


def label_items(store: Store, *, task: str, kind: str, run_id: str, item_ids: Sequence[str], labels: str,
                agree: int, entry_points: dict[str, str | None], scored: set[str] | None = None,
                feedback: set[str] = frozenset()) -> tuple[dict[str, Label], int]:
    """The labels of the train items the teacher's run (`run_id`) verified, and how many of its
    programs passed the visible tests hard-coded (refused; code, labels none). `scored`: the
    items the task's check can score (None: all), the others' `right` is unknown; `feedback`:
    the items a client's feedback gives the answer of (labels feedback)."""
    out: dict[str, Label] = {}
    refused = 0
    for item_id, attempts in _by_item(store, task, [run_id], item_ids).items():
        fit = [g for g in attempts if usable(g) is not None]
        if labels == "gold" or (labels == "feedback" and item_id in feedback):
            verified = [g for g in fit if g.correct]
            answer = vote_key(verified[0].attempt.answer) if verified and kind == "math" and verified[0].attempt.answer else None
            if verified:
                out[item_id] = Label(item_id, answer, verified, right=True,
                                     source="user" if labels == "feedback" else None)
            continue
        if kind == "code":
            passed = [g for g in fit if _passed_visible_tests(g)]
            verified = [g for g in passed if not _hard_coded(g, entry_points.get(item_id))]
            refused += len(passed) - len(verified)
            if verified:
                out[item_id] = Label(item_id, None, verified, right=any(g.correct for g in verified))
            continue
        # math: one answer per chain, the first its programs printed (as program-aided returns it)
        per_chain: dict[int, str] = {}
        for g in sorted(attempts, key=lambda g: g.attempt.index):
            if g.attempt.answer is not None and any(f.kind == "external" and f.passed for f in g.attempt.feedback):
                per_chain.setdefault(g.attempt.chain, vote_key(g.attempt.answer))
        counts = Counter(per_chain.values()).most_common(2)
        if not counts or counts[0][1] < agree or (len(counts) > 1 and counts[1][1] == counts[0][1]):
            continue
        answer, votes = counts[0]
        verified = [g for g in fit if g.attempt.answer is not None and vote_key(g.attempt.answer) == answer]
        if verified:
            out[item_id] = Label(item_id, answer, verified, votes, len(per_chain),
                                 right=any(g.correct for g in verified))
    for label in out.values():
        if scored is not None and label.item_id not in scored:
            label.right = None  # nothing to score it by (served traffic without feedback)
    return out, refused


def _unique(attempts: Sequence[GradedAttempt], per_item: int) -> list[GradedAttempt]:
    seen, kept = set(), []
    for g in attempts:
        key = " ".join(g.attempt.text.split())
        if key not in seen and len(kept) < per_item:
            seen.add(key)
            kept.append(g)
    return kept


def teacher_examples(found: dict[str, Label], *, teacher: str, label_kind: str, per_item: int) -> list[Example]:
    return [Example(prompt=first_turn(g.messages), completion=g.attempt.text.strip(), item_id=item_id,
                    label=label.source or label_kind, provenance={"format": teacher, "run": g.run_id, "attempt": g.attempt.index,
                                                  "chain": g.attempt.chain, "model": g.model, "label": label.answer})
            for item_id, label in found.items() for g in _unique(label.verified, per_item)]


def student_examples(store: Store, found: dict[str, Label], *, task, questions: dict[str, str],
                     entry_points: dict[str, str | None], student: str, run_ids: Sequence[str], label_kind: str,
                     per_item: int) -> tuple[list[Example], int]:
    """Examples in the student's format from its runs (an adaptive student's first samples and
    the rest: a sample in both is one), and how many were written rather than sampled."""
    examples, written = [], 0
    samples = _by_item(store, task.name, list(run_ids), list(found))
    for item_id, label in found.items():
        mine = [g for g in samples.get(item_id, []) if usable(g) is not None]
        if not mine:
            continue
        prompt = first_turn(mine[0].messages)
        if label.answer is not None:
            agreeing = _unique([g for g in mine if g.attempt.answer is not None
                                and vote_key(g.attempt.answer) == label.answer], per_item)
        else:  # code: its own samples that passed the visible tests, reading their inputs
            agreeing = _unique([g for g in mine if _passed_visible_tests(g) and not _hard_coded(g, entry_points.get(item_id))],
                               per_item)
        for g in agreeing:
            examples.append(Example(prompt=prompt, completion=g.attempt.text.strip(), item_id=item_id,
                                    label=label.source or label_kind, provenance={"format": student, "run": g.run_id, "attempt": g.attempt.index,
                                                "model": g.model, "label": label.answer}))
        if not agreeing:
            if label.answer is not None:
                reply = task.worked_reply(questions[item_id], label.answer)
            else:
                code = extract_code(label.verified[0].attempt.text)
                reply = f"```python\n{code}\n```" if code else label.verified[0].attempt.text.strip()
            written += 1
            examples.append(Example(prompt=prompt, completion=reply, item_id=item_id, label=label.source or label_kind,
                                    provenance={"format": student, "written": True, "label": label.answer}))
    return examples, written


def extra_examples(path: str, measured: set[str], labels: str) -> list[Example]:
    """Examples from elsewhere (the memory's), refused when one asks a measured question,
    and, in a label-free run, when a row's label came from gold or a client's answer."""
    from selfcorrect.train.data import read_jsonl

    rows = read_jsonl(Path(path))
    if rows and not isinstance(rows[0], Example):
        raise ConfigError(f"{path} holds preference pairs", "give prompt-completion examples")
    for row in rows:
        asked = normalised(" ".join(m["content"] for m in row.prompt if m["role"] == "user"))
        leaked = next((q for q in measured if q in asked), None)
        if leaked is not None:
            raise ConfigError(f"{path}: the example of {row.item_id} asks a held-out or probe question "
                              f"({leaked!r})", "export it from a namespace that never saw the held-out side")
    labelled = Counter(row.label for row in rows if row.label not in LABEL_FREE)
    if labels == "none" and labelled:
        kinds = ", ".join(f"{n} by {LABEL_SOURCES.get(k, k)}" for k, n in sorted(labelled.items()))
        raise ConfigError(f"--extra-data {path}: {sum(labelled.values())} rows were labelled {kinds}; "
                          "--labels none trains on no gold and no feedback",
                          "run with --labels gold (an oracle run, and its report and recipe say so), or "
                          "give rows a label-free check verified (label programs, tests or vote)")
    return rows
