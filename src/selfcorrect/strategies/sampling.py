"""Strategies that draw independent samples and select among them, with no revision.

single                      one sample: the baseline (sample 0, the same draw every other
                            strategy's first sample is)
self-consistency            n samples, majority vote over answers; for code, over what the
                            programs return on the visible tests' inputs
universal-self-consistency  n samples, the model picks the most consistent one
best-of-n                   n samples ranked by a verifier: the visible tests (code), the
                            model's own judgement, or a critic model
"""

from __future__ import annotations

import re

from selfcorrect.errors import ConfigError
from selfcorrect.strategies.base import (
    Outcome,
    Session,
    Strategy,
    best_by,
    feedback_score,
    majority,
    solve,
)
from selfcorrect.trajectory import Attempt, Feedback


class Single(Strategy):
    name = "single"
    options = {"greedy": False}

    async def run(self, session: Session) -> Outcome:
        [attempt] = await solve(session, **({"temperature": 0.0} if self.greedy else {}))
        return session.done(attempt, "one sample")


class SelfConsistency(Strategy):
    name = "self-consistency"
    options = {"n": 8}
    bounds = {"n": (1, 256)}

    async def run(self, session: Session) -> Outcome:
        attempts = await solve(session, n=self.n)
        keys = await session.kind.vote_keys(session, attempts)
        if session.kind.votes_on_behaviour:  # kept, so that a vote over fewer samples can be replayed
            for attempt, key in zip(attempts, keys):
                session.give(attempt, Feedback(kind="intrinsic", source="behaviour", text=key or ""))
        chosen = majority(attempts, keys)
        votes = keys.count(keys[attempts.index(chosen)]) if chosen is not None else 0
        if chosen is not None:
            session.give(chosen, Feedback(kind="intrinsic", source="vote", score=votes / len(attempts),
                                          text=f"{votes} of {len(attempts)} samples agree"))
        # A vote where no two answers agree picks the first sample: no signal (n=1 has no vote).
        return session.done(chosen or attempts[0], "voted" if chosen else "no answers",
                            signal=None if self.n == 1 else votes > 1,
                            no_signal="no answers" if chosen is None else "no two answers agree")


class UniversalSelfConsistency(Strategy):
    name = "universal-self-consistency"
    options = {"n": 5}
    bounds = {"n": (2, 16)}  # every response goes into one prompt
    prompts = {
        "select": ("{question}\n\nHere are {n} responses to this question.\n\n{responses}\n\nWhich "
                   "response agrees most with the others? Reply with its number only."),
    }

    async def run(self, session: Session) -> Outcome:
        attempts = await solve(session, n=self.n)
        listing = "\n\n".join(f"Response {i + 1}:\n{a.text.strip()}" for i, a in enumerate(attempts))
        prompt = self.prompts["select"].format(question=session.view.question, n=self.n, responses=listing)
        [reply] = await session.ask([{"role": "user", "content": prompt}], phase="feedback",
                                    purpose="select", temperature=0.0, max_tokens=8, stop=("\n",))
        choice = read_choice(reply.text)
        if choice is not None and 1 <= choice <= len(attempts):
            chosen = attempts[choice - 1]
            session.give(chosen, Feedback(kind="intrinsic", source="selection", score=1.0, text=reply.text))
            return session.done(chosen, "selected", signal=True)
        return session.done(attempts[0], "unreadable selection: first sample", signal=False,
                            no_signal="the selection named no response")


class BestOfN(Strategy):
    name = "best-of-n"
    options = {"n": 8, "verifier": "auto"}  # auto: visible tests for code, self-judgement for math
    bounds = {"n": (1, 256)}
    choices = {"verifier": ("auto", "tests", "self", "critic")}
    prompts = {
        "judge": ("{question}\n\nProposed answer:\n{answer}\n\nIs the proposed answer correct? "
                  "Reply with yes or no, then one sentence why."),
    }

    @property
    def needs(self) -> set[str]:
        return {"critic"} if self.verifier == "critic" else set()

    async def run(self, session: Session) -> Outcome:
        attempts = await solve(session, n=self.n)
        verifier = self.verifier
        if verifier == "auto":
            verifier = session.kind.default_verifier(session.view)
        if verifier == "tests":
            for attempt in attempts:
                await session.visible_tests(attempt)
            source = "visible tests"
        elif verifier in ("self", "critic"):
            for attempt in attempts:
                await judge(session, attempt, self.prompts["judge"], critic=verifier == "critic")
            source = "critic" if verifier == "critic" else "self-judgement"
        else:
            raise ConfigError(f"unknown verifier {verifier!r} for best-of-n", "use tests, self or critic")
        chosen = best_by(attempts, lambda a: feedback_score(a, source))
        scores = {feedback_score(a, source) for a in attempts} - {None}
        return session.done(chosen or attempts[0], "ranked" if chosen else "nothing scored",
                            signal=len(scores) > 1,
                            no_signal="no verdict was readable" if not scores else "every verdict was the same")


def read_choice(text: str) -> int | None:
    """The response a selector names, when its reply starts by naming one ("3", "Response 3")."""
    match = re.match(r"\W*(?:response\s*#?\s*)?(\d+)\b", text, re.IGNORECASE)
    return int(match.group(1)) if match else None


async def judge(session: Session, attempt: Attempt, template: str, critic: bool = False,
                votes: int = 3) -> Feedback:
    """The model's (or the critic's) yes/no verdict on an attempt, drawn `votes` times; the
    score is the share of yes."""
    prompt = template.format(question=session.view.question, answer=attempt.text.strip())
    model = session.ctx.critic if critic else None
    if critic and model is None:
        raise ConfigError("this strategy needs a critic model", "pass --critic MODEL")
    replies = await session.ask([{"role": "user", "content": prompt}], phase="feedback", n=votes,
                                purpose="judge", model=model, stop=("\n",))
    verdicts = [yes_or_no(r.text) for r in replies]
    counted = [v for v in verdicts if v is not None]
    score = sum(counted) / len(counted) if counted else None
    return session.give(attempt, Feedback(
        kind="critic" if critic else "intrinsic", source="critic" if critic else "self-judgement",
        passed=None if score is None else score > 0.5, score=score, text=replies[0].text))


def yes_or_no(text: str) -> bool | None:
    """The verdict a judge was asked to give first: its first word, yes or no."""
    match = re.match(r"\W*(yes|no)\b", text, re.IGNORECASE)
    return match.group(1).lower() == "yes" if match else None
