"""Re-read the committed reports of the 2026-11-21 studies with today's readers.

Those studies' store is gone, but each report.html embeds every attempt's text and every
piece of feedback. This script applies the current answer reader (math) and score reader
(critiques) to them, with no model call and no sandbox: what `selfcorrect regrade` does to a
store, for reports whose store is lost. Math answers are regraded against the gold; code
grades stand (the code reader did not change), but the selectors' signal is re-read.

    python docs/findings/regrade_reports.py            # the three reports of commit c0ebaba
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter

from selfcorrect.verify.answers import answers_match, is_numeric, read_answer
from selfcorrect.verify.scores import read_score

COMMIT = "c0ebaba"
MAX_TOKENS = {"arithmetic": 192, "mbpp": 200, "gsm8k": 256}


def browser_data(study: str) -> list[dict]:
    page = subprocess.run(["git", "show", f"{COMMIT}:docs/findings/{study}/report.html"],
                          capture_output=True, text=True, check=True).stdout
    payload = re.search(r"<script type='application/json' id='data'>(.*?)</script>", page, re.S).group(1)
    return json.loads(payload.replace("<\\/", "</"))


def verdicts(study: str, gold: str, strategy: dict) -> list[bool]:
    """Today's verdict on every attempt of a trajectory (program output kept as graded)."""
    out = []
    for attempt, grade in zip(strategy["attempts"], strategy["grades"]):
        if any(f["source"] == "sandbox" for f in attempt["feedback"]):
            out.append(grade["correct"])
            continue
        cut = attempt["completion_tokens"] >= MAX_TOKENS[study]
        reading = read_answer(attempt["text"], numeric=is_numeric(gold), finish_reason="length" if cut else "stop")
        out.append(reading.answer is not None and answers_match(reading.answer, gold))
    return out


def regrade_math(study: str, items: list[dict]) -> dict:
    """Per strategy: old and new right counts of the returned attempt, and the revision
    flips (wrong→right, right→wrong) under the old and the new verdicts."""
    table: dict[str, Counter] = {}
    for item in items:
        gold = item["expected"]
        for s in item["strategies"]:
            counts = table.setdefault(s["strategy"], Counter())
            now = verdicts(study, gold, s)
            for revision in s["revisions"]:
                before, after = revision["before"], revision["after"]
                for era, grade in (("old", [g["correct"] for g in s["grades"]]), ("new", now)):
                    counts[f"{era} W→R"] += not grade[before] and grade[after]
                    counts[f"{era} R→W"] += grade[before] and not grade[after]
            final = s["attempts"][s["final"]] if s["final"] is not None else None
            old = s["correct"]
            if final is None or any(f["source"] == "sandbox" for f in final["feedback"]):
                new, how = old, "kept"  # program-aided: its answer is a program's output, not re-run here
            else:
                cut = final["completion_tokens"] >= MAX_TOKENS[study]
                reading = read_answer(final["text"], numeric=is_numeric(gold),
                                      finish_reason="length" if cut else "stop")
                new, how = reading.answer is not None and answers_match(reading.answer, gold), reading.how
            counts["items"] += 1
            counts["old right"] += old
            counts["new right"] += new
            counts["right→wrong"] += old and not new
            counts["wrong→right"] += new and not old
            counts[f"read: {how}"] += 1
    return table


def critique_signal(items: list[dict]) -> dict:
    """Per strategy with critiques or confidences: items where none was readable."""
    table: dict[str, Counter] = {}
    for item in items:
        for s in item["strategies"]:
            scored = [(f["source"], f["text"]) for a in s["attempts"] for f in a["feedback"]
                      if f["source"] in ("self-critique", "critic", "confidence")]
            if not scored:
                continue
            counts = table.setdefault(s["strategy"], Counter())
            counts["items"] += 1
            readable = [read_score(text, *(("Confidence", 100) if source == "confidence" else ("Score", 10)))
                        for source, text in scored]
            counts["no readable score"] += all(r is None for r in readable)
            counts["old parser scored"] += any(f["score"] is not None for a in s["attempts"]
                                               for f in a["feedback"] if f["source"] in
                                               ("self-critique", "critic", "confidence"))
    return table


def main() -> None:
    for study in sys.argv[1:] or ["arithmetic", "mbpp", "gsm8k"]:
        items = browser_data(study)
        print(f"## {study} ({len(items)} items, reports of {COMMIT})")
        if study != "mbpp":
            for strategy, c in regrade_math(study, items).items():
                reads = ", ".join(f"{k[6:]} {v}" for k, v in sorted(c.items()) if k.startswith("read: "))
                print(f"{strategy}: right {c['old right']} -> {c['new right']} of {c['items']} "
                      f"(right→wrong {c['right→wrong']}, wrong→right {c['wrong→right']}); {reads}; "
                      f"revision flips W→R {c['old W→R']} -> {c['new W→R']}, R→W {c['old R→W']} -> {c['new R→W']}")
        for strategy, c in critique_signal(items).items():
            print(f"{strategy}: no readable score on {c['no readable score']} of {c['items']} items "
                  f"(the old parser found a 'score' on {c['old parser scored']})")


if __name__ == "__main__":
    main()
