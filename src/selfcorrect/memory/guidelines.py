"""Guidelines: a namespace's lessons distilled into a few rules, versioned.

Lessons are grouped by the failure that exposed them (an exception's name, a wrong result,
no code, no printed number, a timeout); a failure seen in at least `min_support` active
lessons becomes a rule, written by a template (the embedded model is too weak to distil
rules worth reading). At each distillation a rule is
  kept     when its failure still has support and its counters do not say it hurts,
  edited   when its support changed (its words say how often the failure was seen),
  merged   when the list is over `max_rules`: the least supported rules become one,
  dropped  when its support is gone, or when its use is measured to hurt (more items that
           were shown it went right→wrong than wrong→right, over at least `min_uses`).
Counters move as lessons' do (`record_use`). Every change makes a new version, kept with
the earlier ones; each rule lists the lessons it rests on.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterable

from pydantic import BaseModel, Field

from selfcorrect.memory.bank import LessonBank
from selfcorrect.memory.lessons import Lesson

TABLE = """
CREATE TABLE IF NOT EXISTS guidelines (
    namespace TEXT NOT NULL,
    version INTEGER NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (namespace, version)
);
"""
ADVICE = {
    "wrong result": "Earlier solutions ran but gave wrong results: check your answer against "
                    "every example in the problem before replying.",
    "no code": "Earlier replies had no code: reply with the complete code in one ```python block.",
    "no number printed": "Earlier programs printed no number: end the program by printing only the answer.",
    "timeout": "Earlier programs ran too long: avoid unbounded loops and slow brute force.",
    "NameError": "Earlier code used names it never defined: define or import everything you use.",
    "SyntaxError": "Earlier code did not parse: check brackets, colons and indentation.",
    "TypeError": "Earlier code mixed up types: check what each argument and return value is.",
}


class Rule(BaseModel):
    failure: str  # the failure it guards against
    text: str
    lessons: list[str] = Field(default_factory=list)  # the lessons it rests on (provenance)
    uses: int = 0
    helped: int = 0
    hurt: int = 0
    ended_right: int = 0
    ended_wrong: int = 0

    @property
    def id(self) -> str:
        return hashlib.sha256(self.failure.encode()).hexdigest()[:12]


class Guidelines(BaseModel):
    namespace: str
    version: int = 0
    rules: list[Rule] = Field(default_factory=list)
    changes: dict[str, list[str]] = Field(default_factory=dict)  # what the last distillation did
    retired: list[str] = Field(default_factory=list)  # failures whose rule was measured to hurt: never again
    created_at: float = Field(default_factory=time.time)


def failure_of(feedback: str) -> str:
    """The failure a lesson's feedback describes, as a short label."""
    if re.search(r"no code|contained no program", feedback, re.I):
        return "no code"
    if "does not state a number" in feedback or "printed nothing" in feedback:
        return "no number printed"
    if re.search(r"timed out", feedback, re.I):
        return "timeout"
    errors = re.findall(r"\b([A-Z]\w*(?:Error|Exception))\b", feedback)
    errors = [e for e in errors if e != "AssertionError"]
    if errors:
        return errors[0]
    if re.search(r"AssertionError|Failed:|wrong|expected", feedback, re.I):
        return "wrong result"
    return " ".join(feedback.lower().split()[:4]) or "unknown"


class GuidelineBook:
    """Versioned guidelines per namespace, in the lesson bank's file."""

    def __init__(self, bank: LessonBank, *, min_support: int = 2, max_rules: int = 6, min_uses: int = 4):
        self.bank, self.min_support, self.max_rules, self.min_uses = bank, min_support, max_rules, min_uses
        self._db = bank._db
        self._db.executescript(TABLE)

    def current(self, namespace: str) -> Guidelines:
        row = self._db.execute("SELECT payload FROM guidelines WHERE namespace = ? ORDER BY version DESC LIMIT 1",
                               (namespace,)).fetchone()
        return Guidelines.model_validate_json(row[0]) if row else Guidelines(namespace=namespace)

    def history(self, namespace: str) -> list[Guidelines]:
        rows = self._db.execute("SELECT payload FROM guidelines WHERE namespace = ? ORDER BY version",
                                (namespace,)).fetchall()
        return [Guidelines.model_validate_json(row[0]) for row in rows]

    def distil(self, namespace: str) -> Guidelines:
        """Rebuild the rule list from the active lessons and the rules' counters; a new
        version only when the list changed."""
        old = self.current(namespace)
        support: dict[str, list[Lesson]] = {}
        for lesson in self.bank.lessons(namespace):
            support.setdefault(failure_of(lesson.feedback), []).append(lesson)
        changes: dict[str, list[str]] = {"kept": [], "edited": [], "added": [], "merged": [], "dropped": []}
        previous = {rule.failure: rule for rule in old.rules}
        retired = list(old.retired)
        rules = []
        for failure, lessons in sorted(support.items(), key=lambda kv: -len(kv[1])):
            if len(lessons) < self.min_support or failure in retired:
                continue
            rule = previous.pop(failure, None)
            if rule is not None and self._hurts(rule):
                changes["dropped"].append(f"{failure} (measured to hurt)")
                retired.append(failure)
                continue
            text = _advice(failure, len(lessons))
            ids = [lesson.id for lesson in lessons]
            if rule is None:
                rule = Rule(failure=failure, text=text, lessons=ids)
                changes["added"].append(failure)
            else:
                changes["edited" if rule.text != text else "kept"].append(failure)
                rule = rule.model_copy(update={"text": text, "lessons": ids})
            rules.append(rule)
        changes["dropped"] += [f"{failure} (no support left)" for failure in previous]
        if len(rules) > self.max_rules:
            keep, rest = rules[: self.max_rules - 1], rules[self.max_rules - 1:]
            merged = Rule(failure="other: " + ", ".join(r.failure for r in rest),
                          text="Earlier answers also failed with: " + "; ".join(
                              f"{r.failure} ({len(r.lessons)} times)" for r in rest) + ". Avoid these.",
                          lessons=[i for r in rest for i in r.lessons],
                          **{c: sum(getattr(r, c) for r in rest) for c in ("uses", "helped", "hurt", "ended_right", "ended_wrong")})
            changes["merged"] = [r.failure for r in rest]
            rules = [*keep, merged]
        if [(r.failure, r.text) for r in rules] == [(r.failure, r.text) for r in old.rules]:
            return old
        new = Guidelines(namespace=namespace, version=old.version + 1, rules=rules, retired=retired,
                         changes={k: v for k, v in changes.items() if v})
        self._save(new)
        return new

    def record_use(self, namespace: str, rule_ids: Iterable[str], before_right: bool | None,
                   after_right: bool) -> None:
        """Count a verified outcome for the rules an item was shown (in the current version)."""
        ids = set(rule_ids)
        if not ids:
            return
        current = self.current(namespace)
        for rule in current.rules:
            if rule.id in ids:
                rule.uses += 1
                rule.helped += before_right is False and after_right
                rule.hurt += before_right is True and not after_right
                rule.ended_right += after_right
                rule.ended_wrong += not after_right
        self._db.execute("UPDATE guidelines SET payload = ? WHERE namespace = ? AND version = ?",
                         (current.model_dump_json(), namespace, current.version))

    def clear(self, namespace: str) -> None:
        self._db.execute("DELETE FROM guidelines WHERE namespace = ?", (namespace,))

    def _hurts(self, rule: Rule) -> bool:
        return rule.uses >= self.min_uses and rule.hurt > rule.helped

    def _save(self, guidelines: Guidelines) -> None:
        self._db.execute("INSERT INTO guidelines VALUES (?, ?, ?, ?)",
                         (guidelines.namespace, guidelines.version, guidelines.model_dump_json(),
                          guidelines.created_at))


def _advice(failure: str, seen: int) -> str:
    advice = ADVICE.get(failure, f"Earlier answers failed with {failure}: avoid it.")
    return f"{advice} (seen {seen} times)"
