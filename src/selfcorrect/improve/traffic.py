"""`improve --task served:STORE`: a run on a server's traffic, which has no gold.

The measured sides (held-back traffic, the confirmation split) are scored by the strongest
reference each item has (tasks/served.py): the clients' feedback, else the check the request
carried (code's tests, a checker), else, for math, the label the base's teacher gives it
before round 0 (agreeing independent programs, as a train item is labelled). An item none of
these reaches is not measured. The teacher's label is also drawn for the items clients gave
feedback on, and the report says how often the two agreed: how far the check can stand in
for the clients.

`--labels none` trains on the check's labels only; `--labels feedback` trains on the clients'
answers where they gave one (and the check elsewhere): the run is feedback-labelled, and its
report and recipe say so. Gold (`--labels gold`) does not exist for traffic.
"""

from __future__ import annotations

from collections import Counter

from selfcorrect.errors import ConfigError
from selfcorrect.improve.labels import label_items
from selfcorrect.tasks import Subset
from selfcorrect.train.cycle import measure_side, opened
from selfcorrect.verify.answers import vote_key


def is_traffic(task) -> bool:
    return hasattr(task, "referenced")


def check_labels(task, labels: str) -> None:
    """The label options that make sense for the task: gold is not traffic's, feedback only it."""
    if is_traffic(task) and labels == "gold":
        raise ConfigError(f"{task.name} is served traffic, which has no gold",
                          "use --labels none (the checks) or --labels feedback (the clients' answers too)")
    if not is_traffic(task) and labels == "feedback":
        raise ConfigError(f"--labels feedback labels by clients' feedback, and {task.name} is not served traffic",
                          "use --task served:STORE, or --labels none")


def scored(task) -> tuple[set[str] | None, set[str]]:
    """(the items a grade scores, None: all; the items a client's feedback answers)."""
    if not is_traffic(task):
        return None, set()
    return set(task.referenced()), {i.id for i in task.items() if i.meta.get("reference") == "feedback"}


async def prepare(run, report: dict | None, base) -> dict:
    """The measured sides' references (drawn once, kept in the report so a resumed run scores
    the same way), and the run's sides cut to the items that have one."""
    task, spec = run.task, run.spec
    measured = [*run.held_ids, *run.confirm_ids]
    record = (report or {}).get("traffic")
    if record is None:
        adopted, agreement = await _teacher_labels(run, base, measured) if task.kind == "math" else ({}, None)
        record = {"items": len(task.items()), "requests": sum(i.meta["requests"] for i in task.items()),
                  "skipped_requests": task.skipped, "adopted": adopted, "check_vs_feedback": agreement,
                  "feedback_labelled": spec.labels == "feedback"}
    task.adopt(record["adopted"])
    by_id = {i.id: i for i in task.items()}
    sides = {"heldout": run.held_ids, "confirmation": run.confirm_ids}
    record["references"] = {side: dict(Counter(task.reference(by_id[i])[1] or "none" for i in ids))
                            for side, ids in sides.items()}
    run.held_ids = task.referenced(set(run.held_ids))
    run.confirm_ids = task.referenced(set(run.confirm_ids))
    run.held_side = Subset(task, set(run.held_ids))
    return record


async def _teacher_labels(run, base, ids: list[str]) -> tuple[dict[str, str], dict | None]:
    """The teacher's labels (with the base) of the measured math items that have no check of
    their own, and how they compare with the clients' feedback where it answers the item."""
    task = run.task
    by_id = {i.id: i for i in task.items()}
    wanted = [i for i in ids if by_id[i].meta.get("reference") in (None, "feedback")]
    if not wanted:
        return {}, None
    from selfcorrect.store import Store

    teacher = run._teacher_spec()
    run.say(f"labelling {len(wanted)} measured items of the traffic with the base's {teacher}")
    async with opened(run._open, base) as engine:
        run_id, _ = await measure_side(run.settings, Subset(task, set(wanted)), [teacher], engine, run.spec.seed,
                                       run.spec.temperature, run.on_progress)
    store = Store(run.settings.store)
    try:
        found, _ = label_items(store, task=task.name, kind=task.kind, run_id=run_id, item_ids=wanted, labels="none",
                               agree=run.spec.agree, entry_points={})
    finally:
        store.close()
    adopted = {i: label.answer for i, label in found.items() if by_id[i].meta.get("reference") is None}
    answered = [i for i in wanted if by_id[i].meta.get("reference") == "feedback"]
    labelled = [i for i in answered if i in found]
    agreed = sum(found[i].answer == vote_key(by_id[i].answer) for i in labelled)
    agreement = {"feedback_items": len(answered), "check_labelled": len(labelled), "agreed": agreed,
                 "share": agreed / len(labelled) if labelled else None}
    return adopted, agreement
