"""Grading: the gold check of every attempt a strategy made, after the strategy is done, and
the one place a unit's result is built."""

from __future__ import annotations

from selfcorrect.sandbox import Sandbox
from selfcorrect.tasks import Item, Task
from selfcorrect.tasks.base import Check
from selfcorrect.trajectory import FinalGrade, Grade, Trajectory, UnitResult


class Grader:
    """Grades answers to a task's items by its gold check; the same answer to the same item
    is graded once per run."""

    def __init__(self, task: Task):
        self.task = task
        self.sandbox: Sandbox | None = None  # set once the run has opened one (code's hidden tests)
        self._grades: dict[tuple[str, str | None, str | None], Check] = {}

    async def grade(self, item: Item, answer: str | None, read: str | None = None) -> Check:
        """The gold check of an answer (`read`: why no answer was read, when none was)."""
        failure = read if answer is None else None
        key = (item.id, answer, failure)
        if key not in self._grades:
            self._grades[key] = await self.task.grade(item, answer, self.sandbox, failure)
        return self._grades[key]

    async def result(self, item: Item, spec: str, trajectory: Trajectory) -> UnitResult:
        """The result of a unit: its trajectory and the gold check of every attempt."""
        checks = [await self.grade(item, a.answer, a.read or None) for a in trajectory.attempts]
        final = checks[trajectory.final] if trajectory.final is not None else Check(
            False, True, None, None, "the strategy selected nothing", failure="nothing selected")
        return UnitResult(
            item=item.id, strategy=spec, question=item.view.question,
            expected=item.answer if item.answer is not None else f"{len(item.tests)} hidden tests",
            trajectory=trajectory, grades=[_grade(c) for c in checks],
            final=FinalGrade(**_grade(final).model_dump(), answer=final.answer))


def _grade(check: Check) -> Grade:
    return Grade(correct=check.correct, parse_failure=check.parse_failure, failure=check.failure,
                 detail=check.detail)
