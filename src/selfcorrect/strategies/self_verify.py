"""self-verify: draw candidates, then check each distinct answer backwards: hide a number
of the question, state the candidate as the answer, and ask the model for the hidden
number. An answer that lets the model recover the question's numbers scores higher
(Weng et al., 2023). Ties go to the answer more samples gave, then to the earlier one.
Intrinsic feedback.
"""

from __future__ import annotations

import re

from selfcorrect.strategies.session import Outcome, Session

from selfcorrect.strategies.strategy import Strategy, solve

from selfcorrect.verify.answers import vote_key
from selfcorrect.trajectory import Feedback
from selfcorrect.verify.answers import NUMBER, answers_match, read_answer


class SelfVerify(Strategy):
    name = "self-verify"
    kinds = frozenset({"math"})
    options = {"n": 5, "masks": 1, "checks": 2}
    bounds = {"n": (1, 64), "masks": (1, 5), "checks": (1, 16)}
    prompts = {
        "verify": ("{question}\nThe answer to this question is {answer}. What is the value of X? "
                   "End with: The answer is <number>."),
    }

    async def run(self, session: Session) -> Outcome:
        attempts = await solve(session, n=self.n)
        groups: dict[str, list] = {}
        for attempt in attempts:
            if (key := vote_key(attempt.answer)) is not None:
                groups.setdefault(key, []).append(attempt)
        if not groups:
            return session.done(attempts[0], "no answers", signal=False, no_signal="no answers")
        masked = masked_questions(session.view.question, self.masks)
        if not masked:
            best = max(groups.values(), key=lambda g: (len(g), -g[0].index))
            return session.done(best[0], "no number to hide: voted", signal=False,
                                no_signal="no number in the question to hide")
        ranked = []
        for group in groups.values():
            score = await self.verify(session, group[0], masked)
            ranked.append((score, len(group), -group[0].index, group[0]))
        score, _, _, chosen = max(ranked, key=lambda r: r[:3])
        return session.done(chosen, "verified backwards", signal=len({r[0] for r in ranked}) > 1,
                            no_signal="every answer checked back equally")

    async def verify(self, session: Session, attempt, masked: list[tuple[str, str]]) -> float:
        hits, total = 0, 0
        for question, hidden in masked:
            prompt = self.prompts["verify"].format(question=question, answer=attempt.answer)
            replies = await session.ask([{"role": "user", "content": prompt}], phase="feedback",
                                        n=self.checks, purpose="backward check")
            for reply in replies:
                found = read_answer(reply.text, finish_reason=reply.finish_reason)
                hits += bool(found.answer is not None and answers_match(found.answer, hidden))
                total += 1
        score = hits / total
        session.give(attempt, Feedback(kind="intrinsic", source="backward verification", score=score,
                                       text=f"recovered {hits} of {total} hidden numbers"))
        return score


def masked_questions(question: str, masks: int) -> list[tuple[str, str]]:
    """The question with one of its numbers replaced by X, for its first `masks` numbers."""
    found = list(re.finditer(NUMBER, question))
    return [(question[: m.start()] + "X" + question[m.end():], m.group().replace(",", ""))
            for m in found[:masks]]
