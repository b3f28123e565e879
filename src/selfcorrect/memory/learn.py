"""What a finished trajectory teaches: its lessons, and its verified outcome.

Only feedback a strategy could trust writes a lesson: external (tests, execution) or a
critic's, and the gold check only in an oracle run. An attempt such feedback failed becomes
a lesson, with the attempt that later passed the same feedback on the same chain of
revisions as its correction, when there is one. The model's judgement of itself never
writes one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from selfcorrect.memory.lessons import Lesson, template_lesson
from selfcorrect.trajectory import Attempt, Feedback, Trajectory

WRITERS = ("template", "model")
LESSON_PROMPT = (
    "A solution to this problem was wrong.\nProblem: {question}\n\nWrong solution:\n{wrong}\n\n"
    "What showed it was wrong:\n{feedback}\n{corrected}"
    "In one sentence, say what the mistake was and how to avoid it next time.")
# A model writes the lesson: (prompt) -> its reply.
LessonModel = Callable[[str], Awaitable[str]]


def verdict(attempt: Attempt, oracle_run: bool) -> Feedback | None:
    """The last verified verdict on an attempt: external or critic feedback that says passed
    or failed (the gold check's only in an oracle run)."""
    kinds = ("external", "critic", "oracle") if oracle_run else ("external", "critic")
    verdicts = [f for f in attempt.feedback if f.kind in kinds and f.passed is not None]
    return verdicts[-1] if verdicts else None


def verified_outcome(trajectory: Trajectory) -> bool | None:
    """Whether the returned attempt was verified right (None: nothing verified it)."""
    if trajectory.final is None:
        return None
    found = verdict(trajectory.attempts[trajectory.final], trajectory.oracle)
    return found.passed if found is not None else None


async def lessons_from(trajectory: Trajectory, question: str, namespace: str, provenance: dict,
                       writer: LessonModel | None = None) -> list[Lesson]:
    """The lessons of one trajectory, written by `writer` (the model) or by the template.
    A reply the model writes empty falls back to the template, and says so."""
    children: dict[int, list[Attempt]] = {}
    for attempt in trajectory.attempts:
        if attempt.parent is not None:
            children.setdefault(attempt.parent, []).append(attempt)
    lessons = []
    for attempt in trajectory.attempts:
        failed = verdict(attempt, trajectory.oracle)
        if failed is None or failed.passed:
            continue
        fix = _first_passing(attempt, children, trajectory.oracle)
        text = template_lesson(failed.text, (fix.answer or fix.text) if fix is not None else None)
        written_by = "template"
        if writer is not None:
            corrected = f"\nA solution that passed:\n{fix.text}\n\n" if fix is not None else "\n"
            reply = (await writer(LESSON_PROMPT.format(question=question, wrong=attempt.text,
                                                       feedback=failed.text, corrected=corrected))).strip()
            if reply:
                text, written_by = " ".join(reply.split())[:300], "model"
        lessons.append(Lesson(
            namespace=namespace, input=question, wrong=attempt.text, feedback=failed.text,
            feedback_kind=failed.kind, corrected=fix.text if fix is not None else None, text=text,
            written_by=written_by, oracle=failed.kind == "oracle",
            provenance={**provenance, "attempt": attempt.index,
                        "corrected_attempt": fix.index if fix is not None else None}))
    return lessons


def _first_passing(attempt: Attempt, children: dict[int, list[Attempt]], oracle_run: bool) -> Attempt | None:
    """The first revision descending from `attempt` that verified feedback passed."""
    queue = list(children.get(attempt.index, ()))
    while queue:
        candidate = queue.pop(0)
        found = verdict(candidate, oracle_run)
        if found is not None and found.passed:
            return candidate
        queue += children.get(candidate.index, ())
    return None
