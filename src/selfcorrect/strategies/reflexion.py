"""reflexion: after a failed attempt the model writes a lesson; lessons accumulate, and
each new attempt starts afresh from the question with every lesson so far.

"Failed" is what the strategy's evaluator says: the visible tests for code (external), the
model's own judgement for math or for code without visible tests (intrinsic). Stops when
the evaluator passes an attempt or after `trials` attempts; returns the attempt the
evaluator scores best (a tie goes to the earlier).
"""

from __future__ import annotations

from selfcorrect.strategies.selection import best_by, feedback_score

from selfcorrect.strategies.session import Outcome, Session

from selfcorrect.strategies.strategy import Strategy, solve
from selfcorrect.strategies.sampling import BestOfN, judge
from selfcorrect.trajectory import Attempt, Feedback


class Reflexion(Strategy):
    name = "reflexion"
    options = {"trials": 3}
    bounds = {"trials": (1, 10)}
    prompts = {
        "reflect": ("{question}\n\nYour earlier attempt:\n{answer}\n\nIt was judged wrong:\n{feedback}"
                    "\n\nIn one or two sentences, say what went wrong and what to do differently next time."),
        "retry": "{task}\n\nLessons from your earlier attempts:\n{lessons}",
        "judge": BestOfN.prompts["judge"],
    }

    async def run(self, session: Session) -> Outcome:
        [current] = await solve(session)
        verdict = await self.evaluate(session, current)
        attempts, lessons, stop = [current], [], "budget"
        for trial in range(1, self.trials):
            if verdict.passed:
                stop = "verified"
                break
            lessons.append(await self.reflect(session, current, verdict))
            task = session.view.messages[-1]["content"]
            retry = self.prompts["retry"].format(task=task, lessons="\n".join(f"- {x}" for x in lessons))
            [current] = await session.attempt([*session.view.messages[:-1], {"role": "user", "content": retry}],
                                              phase="revise", round=trial, parent=current)
            attempts.append(current)
            verdict = await self.evaluate(session, current)
        else:
            if verdict.passed:
                stop = "verified"
        final = best_by(attempts, lambda a: feedback_score(a, self.source(session)))
        return session.done(final or attempts[0], stop, signal=final is not None,
                            no_signal="no verdict was readable")

    def source(self, session: Session) -> str:
        return "visible tests" if session.kind.default_verifier(session.view) == "tests" else "self-judgement"

    async def evaluate(self, session: Session, attempt: Attempt) -> Feedback:
        if self.source(session) == "visible tests":
            return await session.visible_tests(attempt)
        return await judge(session, attempt, self.prompts["judge"])

    async def reflect(self, session: Session, attempt: Attempt, verdict: Feedback) -> str:
        prompt = self.prompts["reflect"].format(question=session.view.question,
                                                answer=attempt.text.strip(), feedback=verdict.text.strip())
        [reply] = await session.ask([{"role": "user", "content": prompt}], phase="feedback",
                                    purpose="reflection", max_tokens=96)
        session.give(attempt, Feedback(kind="intrinsic", source="reflection", text=reply.text))
        return " ".join(reply.text.split())
