"""Traffic as a task (`served:STORE`): the questions a server answered, read from its store's
completions, with what each request carried (kind, visible tests, checker) and the feedback
its clients sent. There is no gold:

- an item is a question: a request of one user turn (beside system messages; a request that
  holds earlier assistant turns is left out, counted in `skipped`, since a run cannot yet tell
  them from a strategy's revision turns); the same words (case and white space aside) asked
  again are one item; its `family` holds every wording of the same numbers (math) or the same question
  (code), and a run's split puts a family on one side (train/data.py `split_by_prompt`), so a
  reworded question never lands on both sides;
- its reference, what `grade` scores against, is the strongest there is: the clients' feedback
  ("feedback": the answer a client marked right, or the one it sent as the correct answer;
  clients who disagree give none), else the check the request carried ("tests": code's
  visible tests; "checker": a math request's checker), else a label a run adopts from its
  label-free check (`adopt`: "check", improve's agreeing programs). An item with none is not
  scored: `referenced` says which are.

A code item is scored by every test its requests carried, and shown all but the last: what
scores an answer is never all in the strategy's sight (an item with one test is shown none).
That is a weaker measure than a benchmark's hidden tests; reports say which reference scored
each side.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections import Counter
from hashlib import sha256
from pathlib import Path

from selfcorrect.errors import ConfigError
from selfcorrect.sandbox import Sandbox, TestCase
from selfcorrect.tasks.base import Check, Task
from selfcorrect.tasks.items import Item, ItemView
from selfcorrect.verify.answers import NO_ANSWER, answers_match, vote_key

CHECKED_KINDS = ("math", "code")  # a chat reply has nothing to check it by
_NUMBER = re.compile(r"\d+(?:\.\d+)?")  # unsigned: "48-39" is 48 and 39, as "48 - 39" is


def family(kind: str, question: str) -> str:
    """What the wordings of one question share: its numbers, in any order (math: "What is
    48 - 39?", "Compute 48 minus 39." and "Subtract 39 from 48." are one family; so is "48 + 39",
    which only puts more on one side), or its words (code). Numbers written in words are not
    read: "forty-eight minus 39" is another family (tests/data/served_wordings.jsonl)."""
    words = " ".join(question.lower().split())
    numbers = sorted(float(n) for n in _NUMBER.findall(words))
    key = " ".join(f"{n:g}" for n in numbers) if kind == "math" and numbers else words
    return sha256(f"{kind}:{key}".encode()).hexdigest()[:12]


class Served(Task):
    """The traffic of one server store (one namespace, one kind)."""

    template = "{question}"  # the client's own conversation, as it was sent

    def __init__(self, store: str | Path, namespace: str | None = None, kind: str | None = None,
                 until: int | None = None):
        self.store = Path(store)
        if not self.store.is_file():
            raise ConfigError(f"served:{store}: no such store file",
                              "give the path of a server's --store (e.g. served:.selfcorrect/store.sqlite)")
        rows = _completions(self.store, namespace)[:until]  # until: the first requests only (a cycle's)
        kinds = Counter(p["kind"] for p, _ in rows)
        self.skipped = {"chat": kinds.pop("chat", 0)}
        if kind is None:
            if len(kinds) > 1:
                raise ConfigError(f"served:{store} holds {dict(kinds)} requests, and a task is of one kind",
                                  f"choose one: served:{store},kind={kinds.most_common(1)[0][0]}")
            kind = next(iter(kinds), "math")
        if kind not in CHECKED_KINDS:
            raise ConfigError(f"served traffic of kind {kind!r} has nothing to check it by", "use kind=math or kind=code")
        self.kind, self.namespace = kind, namespace
        self.name = f"served:{self.store.name}" + (f":{namespace}" if namespace else "")
        self._items = self._build([(p, f) for p, f in rows if p["kind"] == kind])
        self._adopted: dict[str, str] = {}

    def _build(self, rows: list[tuple[dict, dict | None]]) -> list[Item]:
        by_question: dict[str, list[tuple[dict, dict | None]]] = {}
        for payload, feedback in rows:
            by_question.setdefault(" ".join(payload["question"].lower().split()), []).append((payload, feedback))
        self.skipped.update(untestable=0, conversations=0)
        items = []
        for question, asked in by_question.items():
            if any(m["role"] == "assistant" for m in asked[0][0]["messages"]):
                # earlier turns (a few-shot conversation, a chat's history): a run cannot yet tell them
                # from a strategy's own revision turns, which its data and split cut off
                self.skipped["conversations"] += len(asked)
                continue
            first = asked[0][0]
            tests = tuple(dict.fromkeys(t for p, _ in asked for t in p.get("tests") or ()))
            checker = next((p["checker"] for p, _ in asked if p.get("checker")), "")
            if self.kind == "code" and not tests:
                self.skipped["untestable"] += len(asked)  # no tests were sent: nothing would score it
                continue
            answer, verdicts = _from_feedback(asked)
            source = "feedback" if answer else "tests" if tests else "checker" if checker else None
            # code: the last test is held back from the model, so that what scores an answer is never all
            # shown to the strategy (which would stop on it); with one test, none is shown
            view = ItemView(id=f"served/{sha256(question.encode()).hexdigest()[:16]}", task=self.name, kind=self.kind,
                            question=first["question"], messages=tuple(first["messages"]),
                            visible_tests=tests[:-1], numeric=first.get("numeric", True), checker=checker)
            items.append(Item(view, answer=answer if self.kind == "math" else None, tests=tests,
                              meta={"family": family(self.kind, question), "requests": len(asked),
                                    "feedback": verdicts, "reference": source,
                                    "served": [p.get("answer") for p, _ in asked]}))
        return items

    def items(self) -> list[Item]:
        return self._items

    def adopt(self, labels: dict[str, str]) -> None:
        """References from a run's label-free check for items that have none (math): kept
        apart, and never over a client's."""
        self._adopted.update({i: a for i, a in labels.items() if a is not None})

    def reference(self, item: Item) -> tuple[str | None, str | None]:
        """(the answer scored against, where it came from)."""
        if item.meta.get("reference") is not None:  # a client's, or the request's own check
            return item.answer, item.meta["reference"]
        if item.id in self._adopted:
            return self._adopted[item.id], "check"
        return None, None

    def referenced(self, ids=None) -> list[str]:
        """The items (of `ids`) a grade can score."""
        return [i.id for i in self._items if (ids is None or i.id in ids) and self.reference(i)[1] is not None]

    def worked_reply(self, question: str, answer: str) -> str:
        return f"The answer is {answer}."

    async def grade(self, item: Item, answer: str | None, sandbox: Sandbox | None = None,
                    failure: str | None = None) -> Check:
        expected, source = self.reference(item)
        if source is None:  # sampled for training: nothing scores it, and no measured side holds it
            return Check(False, answer is None, answer, None, "no reference: not scored", failure="unreferenced")
        if answer is None:
            failure = failure or NO_ANSWER
            return Check(False, True, None, expected, f"no answer in the reply ({failure})", failure=failure)
        if source in ("tests", "checker"):
            if sandbox is None:
                raise ConfigError(f"checking {self.name} needs a sandbox", "pass one to Task.check")
            run = await run_request_check(sandbox, self.kind, answer, item.tests, item.view.checker)
            return Check(run.passed, False, answer, f"the request's {source}", f"{run.n_passed} of the request's "
                         f"{source} passed" if source == "tests" else f"the checker said {run.passed}", run)
        return Check(answers_match(answer, expected), False, answer, expected,
                     f"answer {answer}; {source} says {expected}")


async def run_request_check(sandbox: Sandbox, kind: str, answer: str, tests, checker: str):
    """The check a request carried, run on an answer: its tests on a program (code), or its
    checker's `check(answer)` (math, chat). Served traffic is scored by it, and so is a canary's
    shadow answer (serve/canary.py)."""
    if kind == "code":
        return await sandbox.arun(answer, [TestCase(f"test {i + 1}", t) for i, t in enumerate(tests)])
    return await sandbox.arun(checker, [f"assert check({answer!r})"])


def _from_feedback(asked: list[tuple[dict, dict | None]]) -> tuple[str | None, dict]:
    """The answer the clients' feedback gives (None where there is none, or they disagree),
    and its verdicts: served answers marked right and wrong."""
    said = Counter()
    verdicts = {"right": 0, "wrong": 0}
    for payload, feedback in asked:
        if not feedback:
            continue
        verdicts["right" if feedback["correct"] else "wrong"] += 1
        answer = payload.get("answer") if feedback["correct"] else feedback.get("answer")
        if answer is not None and (key := vote_key(str(answer))) is not None:
            said[key] += 1
    return (next(iter(said)) if len(said) == 1 else None), verdicts


def _completions(store: Path, namespace: str | None) -> list[tuple[dict, dict | None]]:
    """Every completion (its payload and feedback), oldest first, read-only."""
    try:
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT payload, feedback FROM completions ORDER BY created_at, id").fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError as e:
        raise ConfigError(f"served:{store}: not a server's store ({e})",
                          "give the --store a `selfcorrect serve` wrote") from None
    out = []
    for payload, feedback in rows:
        payload = json.loads(payload)
        if namespace is None or payload.get("namespace") == namespace:
            out.append((payload, json.loads(feedback) if feedback else None))
    return out
