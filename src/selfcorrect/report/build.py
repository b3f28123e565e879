"""The report's data: everything the JSON, Markdown and HTML reports show, from the store."""

from __future__ import annotations

import datetime
import difflib

from selfcorrect import __version__
from selfcorrect.measure.online import online_summary
from selfcorrect.measure.summary import summarize
from selfcorrect.runner import results_by_strategy
from selfcorrect.store import Run, Store


def build_report(store: Store, run: Run, kind: str) -> dict:
    results = results_by_strategy(store, run)
    oracle = {spec for spec, rows in results.items() if rows and rows[0].trajectory.oracle}
    online = twins = None
    if run.config.get("spec", {}).get("online"):
        from selfcorrect.runner import without_memory

        twins = {s: without_memory(s) for s in results if "memory=true" in s}
        learned = run.config.get("online", {})
        online = online_summary(results, run.config["item_ids"], learned.get("train_items", run.config["items"]), twins)
        online.update(gate=learned.get("gate"), show=run.config["spec"].get("memory_show", "all"),
                      shadow_tokens=sum(learned.get("explored", {}).values()))
    # an online run is measured against the strategy without memory
    summary = summarize(results, oracle, kind, baseline=next(iter(twins.values()), None) if twins else None)
    for spec, custom in run.config.get("custom_prompts", {}).items():
        if spec in summary["strategies"]:
            summary["strategies"][spec]["custom_prompts"] = custom
    return {
        "selfcorrect": __version__,
        "run": {
            "id": run.run_id, "status": run.status, "oracle": run.oracle,
            "created": _time(run.created_at), "finished": _time(run.finished_at),
            "code_version": run.code_version, "prompt_hashes": run.prompt_hashes,
            "config": run.config,
        },
        "kind": kind,
        **summary,
        "online": online,
        "items": [{"item": r.item, "strategy": spec, "correct": r.final.correct,
                   "parse_failure": r.final.parse_failure, "failure": r.final.failure, "tokens": r.tokens}
                  for spec, rows in results.items() for r in rows],
    }


def browser_data(store: Store, run: Run) -> list[dict]:
    """Per item, every strategy's trajectory with its grades and the diff of each revision."""
    by_item: dict[str, dict] = {}
    for spec, rows in results_by_strategy(store, run).items():
        for r in rows:
            entry = by_item.setdefault(r.item, {"item": r.item, "question": r.question,
                                                "expected": r.expected, "strategies": []})
            attempts = r.trajectory.attempts
            revisions = [{**v.model_dump(), "diff": _diff(attempts[v.before].text, attempts[v.after].text)}
                         for v in r.trajectory.revisions]
            entry["strategies"].append({
                "strategy": spec, "final": r.trajectory.final, "stop": r.trajectory.stop,
                "correct": r.final.correct, "attempts": [_shown(a) for a in attempts],
                "grades": [g.model_dump() for g in r.grades], "revisions": revisions,
                "oracle": r.trajectory.oracle})
    return list(by_item.values())


def _shown(attempt) -> dict:
    """What the item browser shows of an attempt: not the parameters and keys behind it."""
    return attempt.model_dump(exclude={"params", "request", "messages_hash"})


def _diff(before: str, after: str) -> str:
    return "\n".join(difflib.unified_diff(before.splitlines(), after.splitlines(), "before", "after", lineterm=""))


def _time(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.datetime.fromtimestamp(stamp, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def label(strategy: dict) -> str:
    """A strategy's name as every report shows it: oracle runs are marked."""
    text = f"{strategy['strategy']} [ORACLE]" if strategy["oracle"] else strategy["strategy"]
    return text + (" [custom prompts]" if strategy.get("custom_prompts") else "")
