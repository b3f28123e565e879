"""Strategies that revise an answer in the light of feedback, round after round.

self-refine    the model critiques its own answer (and scores it), then revises
critic-refine  a second model critiques, the first revises
oracle-refine  the gold check says right or wrong, the model revises: an upper bound, for
               studies only; every report marks it ORACLE
gated-refine   the model says how sure it is; only an unsure answer is revised

They stop when the feedback's verdict or score clears the threshold, when a revision gives
the same answer as before, or when the rounds are spent. Every attempt gets feedback, and
the attempt returned is the best by that feedback's score; a tie goes to the earlier
attempt (a revision must earn its place), so a run of noisy critiques cannot drift away
from an answer it could not fault.

Scores and confidences are read only from the final line the prompt asks for (`Score: N`,
`Confidence: N`; verify/scores.py). When no critique has a readable score, the selector has
no signal and returns the first attempt: reports count how often that happens.
"""

from __future__ import annotations

from selfcorrect.errors import ConfigError

from selfcorrect.strategies.selection import best_by, feedback_score, same_answer

from selfcorrect.strategies.session import Outcome, Session

from selfcorrect.strategies.strategy import Strategy, solve
from selfcorrect.trajectory import Attempt, Feedback
from selfcorrect.verify.scores import CONFIDENCE_LINE, SCORE_LINE, read_score

RATE = (f"Then give your rating on a last line of its own, in the form `{SCORE_LINE}`, where N is a "
        "whole number from 0 (wrong) to 10 (surely right).")
CRITIQUE = {
    "math": ("{question}\n\nProposed answer:\n{answer}\n\nCheck this answer step by step and point "
             "out any mistake. " + RATE),
    "code": ("{question}\n\nProposed code:\n{answer}\n\nReview this code: does it do what the task "
             "asks, for every input? Point out any bug. " + RATE),
    "chat": ("Request:\n{question}\n\nProposed reply:\n{answer}\n\nReview this reply: is it correct, "
             "complete and helpful? Point out what is wrong or missing. " + RATE),
}
REVISE = {
    "math": ("Here is feedback on your answer:\n{feedback}\n\nUsing the feedback, write an improved "
             "answer. End with: The answer is <number>."),
    "code": ("Here is feedback on your code:\n{feedback}\n\nUsing the feedback, write the whole "
             "improved function in a ```python code block."),
    "chat": "Here is feedback on your reply:\n{feedback}\n\nUsing the feedback, write an improved reply.",
}


def revise_messages(session: Session, attempt: Attempt, template: str, **fields: str) -> list:
    """The conversation so far, and a request to revise: the model sees its own answer.
    Model text only ever fills the template's fields (it may hold braces of its own)."""
    request = template.format(**{k: v.strip() for k, v in fields.items()})
    return [*session.view.messages, {"role": "assistant", "content": attempt.text},
            {"role": "user", "content": request}]


class Refine(Strategy):
    """The loop; subclasses say where feedback comes from and which source ranks attempts."""

    options = {"rounds": 2, "threshold": 0.9}
    bounds = {"rounds": (0, 10), "threshold": (0.0, 1.0)}
    source = ""

    async def feedback(self, session: Session, attempt: Attempt) -> Feedback:
        raise NotImplementedError

    def satisfied(self, feedback: Feedback) -> bool:
        if feedback.passed is not None:
            return feedback.passed
        return feedback.score is not None and feedback.score >= self.threshold

    async def run(self, session: Session) -> Outcome:
        [current] = await solve(session)
        attempts, stop = [current], "budget"
        feedback = await self.feedback(session, current)
        for round in range(1, self.rounds + 1):
            if self.satisfied(feedback):
                stop = "verified"
                break
            template = self.prompts[f"revise_{session.view.kind}"]
            [revision] = await session.attempt(
                revise_messages(session, current, template, feedback=feedback.text),
                phase="revise", round=round, parent=current)
            attempts.append(revision)
            if same_answer(revision, current):
                stop = "unchanged"
                break
            current = revision
            feedback = await self.feedback(session, current)
        else:
            if self.satisfied(feedback):
                stop = "verified"
        final = best_by(attempts, lambda a: feedback_score(a, self.source))
        return session.done(final or attempts[0], stop, signal=final is not None,
                            no_signal=f"no {self.source} had a readable score")


class SelfRefine(Refine):
    name = "self-refine"
    source = "self-critique"
    prompts = {f"{step}_{kind}": text for step, texts in (("critique", CRITIQUE), ("revise", REVISE))
               for kind, text in texts.items()}

    async def feedback(self, session: Session, attempt: Attempt) -> Feedback:
        return await critique(session, attempt, self.prompts[f"critique_{session.view.kind}"],
                              kind="intrinsic", source=self.source)


class CriticRefine(SelfRefine):
    name = "critic-refine"
    source = "critic"

    @property
    def needs(self) -> set[str]:
        return {"critic"}

    async def feedback(self, session: Session, attempt: Attempt) -> Feedback:
        return await critique(session, attempt, self.prompts[f"critique_{session.view.kind}"],
                              kind="critic", source=self.source, model=session.ctx.critic)


class OracleRefine(Refine):
    name = "oracle-refine"
    kinds = frozenset({"math", "code"})  # a chat request has no gold to consult
    oracle = True
    source = "gold check"
    options = {"rounds": 3}
    prompts = {
        "revise_math": "{feedback} Try again, checking each step. End with: The answer is <number>.",
        "revise_code": "{feedback} Write the whole corrected function in a ```python code block.",
    }

    async def feedback(self, session: Session, attempt: Attempt) -> Feedback:
        return await session.oracle(attempt)


async def critique(session: Session, attempt: Attempt, template: str, *, kind: str, source: str,
                   model=None) -> Feedback:
    prompt = template.format(question=session.view.question, answer=attempt.text.strip())
    [reply] = await session.ask([{"role": "user", "content": prompt}], phase="feedback",
                                purpose=source, model=model)
    score = read_score(reply.text)
    return session.give(attempt, Feedback(kind=kind, source=source, score=score, text=reply.text))


class GatedRefine(Strategy):
    name = "gated-refine"
    options = {"threshold": 0.7}
    bounds = {"threshold": (0.0, 1.0)}
    prompts = {
        "confidence": ("{question}\n\nAnswer:\n{answer}\n\nHow sure are you that this answer is "
                       f"correct? Reply with one line in the form `{CONFIDENCE_LINE}`, where N is a "
                       "whole number from 0 to 100."),
        **SelfRefine.prompts,
    }

    async def run(self, session: Session) -> Outcome:
        [first] = await solve(session)
        sure = await self.confidence(session, first)
        if sure.score is not None and sure.score >= self.threshold:
            return session.done(first, "confident", signal=True)
        kind = session.view.kind
        critic = await critique(session, first, self.prompts[f"critique_{kind}"],
                                kind="intrinsic", source="self-critique")
        [revision] = await session.attempt(
            revise_messages(session, first, self.prompts[f"revise_{kind}"], feedback=critic.text),
            phase="revise", round=1, parent=first)
        await self.confidence(session, revision)
        final = best_by([first, revision], lambda a: feedback_score(a, "confidence"))
        # Without a readable first confidence the gate itself had nothing to go on.
        return session.done(final or first, "revised", signal=sure.score is not None and final is not None,
                            no_signal="no readable confidence")

    async def confidence(self, session: Session, attempt: Attempt) -> Feedback:
        prompt = self.prompts["confidence"].format(question=session.view.question,
                                                   answer=attempt.text.strip())
        [reply] = await session.ask([{"role": "user", "content": prompt}], phase="feedback",
                                    purpose="confidence", max_tokens=24, stop=("\n\n",))
        score = read_score(reply.text, "Confidence", 100)
        return session.give(attempt, Feedback(kind="intrinsic", source="confidence", score=score,
                                              text=reply.text))


class SelfCorrect(Strategy):
    """SCoRe's two-turn inference: an attempt, then a request to review and correct it, then
    the revision. `feedback=none`: the request says nothing about whether the attempt was
    right (intrinsic); `feedback=tests` (code): it shows what the visible tests gave
    (external). Without a signal the first attempt stands (keep=first); keep=last returns the
    revision, the use of a model trained to correct itself (train --method score). The flips
    between the attempts are counted either way."""

    name = "self-correct"
    kinds = frozenset({"math", "chat", "code"})
    options = {"keep": "first", "feedback": "none"}
    choices = {"keep": ("first", "last"), "feedback": ("none", "tests")}
    prompts = {
        "review_math": ("There might be an error in the solution above because of lack of understanding of the "
                        "question. Please correct the error, if any, and rewrite the solution. End with: The "
                        "answer is <number>."),
        "review_chat": ("There might be an error in the reply above because of lack of understanding of the "
                        "request. Please correct the error, if any, and rewrite the reply."),
        "review_code": ("There might be an error in the code above because of lack of understanding of the "
                        "task. Please correct the error, if any, and rewrite the whole function in a ```python "
                        "code block."),
        "review_tests": ("Your code was run on the tests:\n{feedback}\n\nThere might be an error in the code "
                         "above. Please correct the error, if any, and rewrite the whole function in a ```python "
                         "code block."),
    }

    @property
    def needs(self) -> set[str]:
        return {"sandbox"} if self.feedback == "tests" else set()

    async def run(self, session: Session) -> Outcome:
        [first] = await solve(session)
        if self.feedback == "tests":
            if session.kind.name != "code":
                raise ConfigError(f"{self.spec} shows visible tests' results: it needs a code task",
                                  "use feedback=none for math and chat tasks")
            shown = await session.visible_tests(first)
            if shown is None:
                return session.done(first, "no visible tests", signal=False, no_signal="no visible tests")
            request = revise_messages(session, first, self.prompts["review_tests"], feedback=shown.text)
        else:
            request = revise_messages(session, first, self.prompts[f"review_{session.view.kind}"])
        [second] = await session.attempt(request, phase="revise", round=1, parent=first)
        if self.keep == "last":
            return session.done(second, "revised")
        return session.done(first, "revised", signal=False, no_signal="nothing says which attempt is right")
