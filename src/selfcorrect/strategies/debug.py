"""self-debug: run the visible tests, show the model what failed (the test, what came out,
the error), and let it fix its code; optionally the model first explains its code line by
line ("rubber duck", explain=true). External feedback.

Stops when the visible tests pass, when a fix changes nothing, or after `rounds` fixes.
Returns the attempt that passes most visible tests; a tie goes to the earlier attempt.
"""

from __future__ import annotations

from selfcorrect.strategies.selection import best_by, feedback_score, same_answer

from selfcorrect.strategies.session import Outcome, Session

from selfcorrect.strategies.strategy import Strategy, solve
from selfcorrect.strategies.refine import revise_messages
from selfcorrect.trajectory import Feedback


class SelfDebug(Strategy):
    name = "self-debug"
    kinds = frozenset({"code"})
    options = {"rounds": 3, "explain": False}
    bounds = {"rounds": (0, 10)}
    prompts = {
        "explain": ("Here is your code:\n```python\n{code}\n```\nExplain what it does, line by line, "
                    "in a few short sentences."),
        "fix": ("Your code was run on the tests:\n{feedback}\n\nFix the code. Write the whole "
                "corrected function in a ```python code block."),
        "fix_explained": ("Your code was run on the tests:\n{feedback}\n\nYou explained your code "
                          "like this:\n{explanation}\n\nFix the code. Write the whole corrected "
                          "function in a ```python code block."),
    }

    @property
    def needs(self) -> set[str]:
        return {"sandbox"}

    async def run(self, session: Session) -> Outcome:
        [current] = await solve(session)
        feedback = await session.visible_tests(current)
        if feedback is None:
            return session.done(current, "no visible tests", signal=False, no_signal="no visible tests")
        attempts, stop = [current], "budget"
        for round in range(1, self.rounds + 1):
            if feedback.passed:
                stop = "verified"
                break
            fields = {"feedback": feedback.text}
            template = self.prompts["fix"]
            if self.explain and current.answer is not None:
                fields["explanation"] = await self.explanation(session, current)
                template = self.prompts["fix_explained"]
            [fix] = await session.attempt(revise_messages(session, current, template, **fields),
                                          phase="revise", round=round, parent=current)
            attempts.append(fix)
            feedback = await session.visible_tests(fix)
            if same_answer(fix, current):
                stop = "unchanged"
                break
            current = fix
        else:
            if feedback.passed:
                stop = "verified"
        final = best_by(attempts, lambda a: feedback_score(a, "visible tests"))
        return session.done(final or attempts[0], stop, signal=True)

    async def explanation(self, session: Session, attempt) -> str:
        prompt = self.prompts["explain"].format(code=attempt.answer.strip())
        [reply] = await session.ask([{"role": "user", "content": prompt}], phase="feedback",
                                    purpose="explanation")
        session.give(attempt, Feedback(kind="intrinsic", source="explanation", text=reply.text))
        return reply.text
