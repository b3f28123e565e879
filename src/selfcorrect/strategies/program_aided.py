"""program-aided: for math, the model writes a Python program that computes the answer;
the sandbox runs it, and the answer is its last line of output when that line is a number
or states one ("The answer is 31."); a number among other text, or an expression, is no
answer. An error, or a
program that prints no number, goes back to the model to fix (external feedback). Returns
the first attempt whose program ran and printed a number.
"""

from __future__ import annotations

from selfcorrect.strategies.selection import best_by, feedback_score

from selfcorrect.strategies.session import Outcome, Session, reproducible

from selfcorrect.strategies.strategy import Strategy

from selfcorrect.tasks.kinds import CODE_STOP
from selfcorrect.trajectory import Attempt, Feedback
from selfcorrect.verify.answers import read_printed_number
from selfcorrect.verify.code import extract_code


class ProgramAided(Strategy):
    name = "program-aided"
    kinds = frozenset({"math"})
    options = {"rounds": 2}
    bounds = {"rounds": (0, 10)}
    prompts = {
        "program": ("Write a short Python program that computes the answer to this problem and "
                    "prints it.\nProblem: {question}\nReply with only a ```python code block."),
        "fix": ("Running your program gave:\n{feedback}\n\nFix the program so that it prints the "
                "answer. Reply with only a ```python code block."),
    }

    @property
    def needs(self) -> set[str]:
        return {"sandbox"}

    async def run(self, session: Session) -> Outcome:
        messages = [{"role": "user", "content": self.prompts["program"].format(question=session.view.question)}]
        [current] = await session.attempt(messages, answers=False, stop=CODE_STOP)
        feedback = await self.execute(session, current)
        attempts = [current]
        for round in range(1, self.rounds + 1):
            if feedback.passed:
                break
            messages = [*messages, {"role": "assistant", "content": current.text},
                        {"role": "user", "content": self.prompts["fix"].format(feedback=feedback.text)}]
            [current] = await session.attempt(messages, phase="revise", round=round, parent=current,
                                              answers=False, stop=CODE_STOP)
            attempts.append(current)
            feedback = await self.execute(session, current)
        final = best_by(attempts, lambda a: feedback_score(a, "sandbox"))
        return session.done(final or attempts[0], "executed" if feedback.passed else "budget", signal=True)

    async def execute(self, session: Session, attempt: Attempt) -> Feedback:
        code = extract_code(attempt.text)
        if code is None:
            attempt.read = "no answer"
            return session.give(attempt, Feedback(kind="external", source="sandbox", passed=False, score=0.0,
                                                  text="Your reply contained no program."))
        result = await session.run(code)
        if not result.loaded:
            text = reproducible(result.error or result.load_error or "the program failed")
            attempt.read = "program failed"
        else:
            reading = read_printed_number(result.stdout)
            attempt.answer, attempt.read = reading.answer, reading.how
            text = reproducible(result.stdout.strip()[-500:]) or "(the program printed nothing)"
            if attempt.answer is None:
                text += "\nThe program's last line of output does not state a number."
        passed = attempt.answer is not None
        return session.give(attempt, Feedback(kind="external", source="sandbox", passed=passed,
                                              score=float(passed), text=text))
