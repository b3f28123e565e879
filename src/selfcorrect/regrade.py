"""Regrading a stored run: every attempt read again with today's readers and graded with
today's gold checks, without a model call (`selfcorrect regrade`)."""

from __future__ import annotations

import time

from selfcorrect.config import Settings
from selfcorrect.runner import EvalSpec, Evaluation
from selfcorrect.sandbox import Sandbox
from selfcorrect.store import Run
from selfcorrect.tasks import Task
from selfcorrect.trajectory import UnitResult
from selfcorrect.version import code_version


async def regrade(settings: Settings, run_id: str, task: Task | None = None) -> tuple[Run, dict]:
    """Re-read every stored attempt of a run with the current answer readers and grade it
    with the current gold checks: no model call. A program-aided attempt's answer is what
    its program prints, so its program runs again in the sandbox. Selections (which attempt
    a strategy returned) stay as they were made; re-running the strategy, free from the
    sample cache, replays them. Attempts recorded before finish reasons were kept count as
    cut off when they used the whole token budget. `task` replaces the one the run names
    (library use, tests)."""
    from selfcorrect.tasks.kinds import read
    from selfcorrect.verify.answers import read_printed_number
    from selfcorrect.verify.code import extract_code

    evaluation = Evaluation(settings, EvalSpec(), resume=run_id, task=task)
    run = evaluation.run_record
    evaluation.store.claim_writer(run_id)
    max_tokens = run.config["params"]["max_tokens"]
    items = {item.id: item for item in evaluation.items}
    changed = {"units": 0, "attempts": 0, "answers": 0, "grades": 0, "finals": 0}
    needs_sandbox = "sandbox" in evaluation.needs
    evaluation.sandbox = Sandbox(workers=settings.sandbox_workers, isolation=settings.sandbox) if needs_sandbox else None
    try:
        for payload in evaluation.store.results(run_id):
            old = UnitResult.model_validate(payload)
            item = items[old.item]
            trajectory = old.trajectory.model_copy(deep=True)
            for attempt in trajectory.attempts:
                before = attempt.answer
                if any(f.source == "sandbox" for f in attempt.feedback):  # program-aided
                    code = extract_code(attempt.text)
                    result = await evaluation.sandbox.arun(code, []) if code else None
                    reading = (read_printed_number(result.stdout) if result is not None and result.loaded
                               else None)
                    attempt.answer, attempt.read = (reading.answer, reading.how) if reading else (None, "no answer")
                else:
                    if "finish_reason" not in payload["trajectory"]["attempts"][attempt.index]:
                        attempt.finish_reason = "length" if attempt.completion_tokens >= max_tokens else "stop"
                    reading = read(item.view, attempt.text, attempt.finish_reason)
                    attempt.answer, attempt.read = reading.answer, reading.how
                changed["attempts"] += 1
                changed["answers"] += attempt.answer != before
            result = await evaluation.grade_result(item, old.strategy, trajectory)
            result.seconds = old.seconds
            changed["units"] += 1
            changed["grades"] += sum(a.correct != b.correct for a, b in zip(result.grades, old.grades))
            changed["finals"] += result.final.correct != old.final.correct
            evaluation.store.put_result(run_id, old.strategy, old.item, result.model_dump())
        config = {**run.config, "regraded": [*run.config.get("regraded", []),
                                             {"code_version": code_version(), "at": time.time(), **changed}]}
        evaluation.store.update_run_config(run_id, config)
    finally:
        evaluation.store.release_writer(run_id)
        if evaluation.sandbox is not None:
            evaluation.sandbox.close()
    return evaluation.store.run(run_id), changed
