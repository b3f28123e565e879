"""Strategies that draw independent samples and select among them, with no revision.

single                      one sample: the baseline (sample 0, the same draw every other
                            strategy's first sample is)
self-consistency            n samples, majority vote over answers; for code, over what the
                            programs return on the visible tests' inputs
universal-self-consistency  n samples, the model picks the most consistent one
best-of-n                   n samples ranked by a verifier: the visible tests (code), the
                            model's own judgement, or a critic model
adaptive-consistency        self-consistency's samples drawn in small batches, stopping as soon
                            as the vote is settled (Aggarwal et al., 2023; Li et al., 2024)
confidence-vote             n samples, each vote weighted by the model's own token confidence,
                            or only the most confident share voting (Fu et al., 2025: DeepConf)
"""

from __future__ import annotations

import math
import re

from selfcorrect.errors import ConfigError
from selfcorrect.strategies.selection import best_by, feedback_score, majority
from selfcorrect.strategies.session import Outcome, Session
from selfcorrect.strategies.strategy import Strategy, solve
from selfcorrect.trajectory import Attempt, Feedback
from selfcorrect.verify.learned import learned_scores, parse_learned
from selfcorrect.verify.steps import split_steps


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
        chosen, votes = vote(session, attempts, await session.kind.vote_keys(session, attempts))
        # A vote where no two answers agree picks the first sample: no signal (n=1 has no vote).
        return session.done(chosen or attempts[0], "voted" if chosen else "no answers",
                            signal=None if self.n == 1 else votes > 1,
                            no_signal="no answers" if chosen is None else "no two answers agree")


def vote(session: Session, attempts: list[Attempt], keys: list[str | None]) -> tuple[Attempt | None, int]:
    """The majority over `keys` (what each attempt votes for), recorded: the chosen attempt's
    share of the vote, and for code what each program did. Returns (chosen, its votes)."""
    if session.kind.votes_on_behaviour:  # kept, so that a vote over fewer samples can be replayed
        for attempt, key in zip(attempts, keys):
            session.give(attempt, Feedback(kind="intrinsic", source="behaviour", text=key or ""))
    chosen = majority(attempts, keys)
    votes = keys.count(keys[attempts.index(chosen)]) if chosen is not None else 0
    if chosen is not None:
        session.give(chosen, Feedback(kind="intrinsic", source="vote", score=votes / len(attempts),
                                      text=f"{votes} of {len(attempts)} samples agree"))
    return chosen, votes


class AdaptiveConsistency(Strategy):
    """Self-consistency that stops drawing once the vote is settled. Samples come in batches
    of `batch`, as sample indices 0, 1, 2, ... (the very draws self-consistency makes, so the
    two share the cache and sit on one compute curve), up to `n`. Settled:
        beta    the leading answer's share among the two leading answers is above one half
                with posterior probability ≥ `threshold` (a uniform prior: Beta(v1+1, v2+1))
        window  the last `window` samples all gave the leading answer"""

    name = "adaptive-consistency"
    options = {"n": 16, "batch": 2, "rule": "beta", "threshold": 0.95, "window": 3}
    bounds = {"n": (1, 256), "batch": (1, 64), "threshold": (0.5, 1.0), "window": (2, 64)}
    choices = {"rule": ("beta", "window")}

    async def run(self, session: Session) -> Outcome:
        attempts: list[Attempt] = []
        keys: list[str | None] = []
        settled = False
        while len(attempts) < self.n and not settled:
            batch = await solve(session, n=min(self.batch, self.n - len(attempts)), first=len(attempts))
            attempts += batch
            keys += await session.kind.vote_keys(session, batch)
            settled = self.settled(keys)
        chosen, votes = vote(session, attempts, keys)
        stop = (f"settled after {len(attempts)} of {self.n} samples" if settled
                else "no answers" if chosen is None else f"budget: {len(attempts)} samples")
        return session.done(chosen or attempts[0], stop, signal=None if self.n == 1 else votes > 1,
                            no_signal="no answers" if chosen is None else "no two answers agree")

    def settled(self, keys: list[str | None]) -> bool:
        counts = sorted((keys.count(k) for k in set(keys) if k is not None), reverse=True)
        if not counts:
            return False
        if self.rule == "window":
            last = keys[-self.window:]
            return len(last) == self.window and last[0] is not None and len(set(last)) == 1
        leader, second = counts[0], counts[1] if len(counts) > 1 else 0
        return leader_probability(leader, second) >= self.threshold


def leader_probability(leader: int, second: int) -> float:
    """P(p > 1/2) for p ~ Beta(leader + 1, second + 1): how sure the vote is that the leading
    answer is the more likely of the two. For whole counts, a binomial tail:
    P = P(Binomial(leader + second + 1, 1/2) ≤ leader)."""
    trials = leader + second + 1
    return sum(math.comb(trials, j) for j in range(leader + 1)) / 2 ** trials


class ConfidenceVote(Strategy):
    """n samples; each votes with the model's own confidence in it, from its token
    log-probabilities (intrinsic: the model's certainty, not a check). `measure`: the mean
    log-probability of the reply or its lowest window (strategies/session.py). `keep`: the most
    confident share of samples that vote at all (1.0: all, each weighted by exp(measure)).
    The draws are self-consistency's: where the backend keeps log-probabilities (the embedded
    engine and the transformers backend do), no sample is drawn twice."""

    name = "confidence-vote"
    options = {"n": 8, "measure": "lowest_window", "keep": 1.0}
    bounds = {"n": (2, 256), "keep": (0.05, 1.0)}
    choices = {"measure": ("mean", "lowest_window")}

    async def run(self, session: Session) -> Outcome:
        if not session.ctx.model.capabilities.logprobs:
            raise ConfigError(f"{self.spec} needs token log-probabilities, which this backend does not give",
                              "use the embedded model, the transformers backend or a server that returns logprobs")
        attempts = await solve(session, n=self.n)
        if any(a.confidence is None for a in attempts):  # a server that keeps them only when asked
            attempts = await solve(session, n=self.n, logprobs=True)
        keys = await session.kind.vote_keys(session, attempts)
        scored = sorted(((a.confidence[self.measure], a, k) for a, k in zip(attempts, keys)
                         if k is not None and a.confidence is not None), key=lambda t: -t[0])
        voters = scored[: max(1, math.ceil(self.keep * len(scored)))] if scored else []
        weights: dict[str, float] = {}
        first_seen: dict[str, int] = {}
        for confidence, attempt, key in voters:
            weights[key] = weights.get(key, 0.0) + (math.exp(confidence) if self.keep == 1.0 else 1.0)
            first_seen[key] = min(first_seen.get(key, attempt.index), attempt.index)
        if not weights:
            return session.done(attempts[0], "no answers", signal=False, no_signal="no answers")
        best = max(weights, key=lambda k: (weights[k], -first_seen[k]))  # a tie: the answer drawn first
        backers = [(confidence, attempt) for confidence, attempt, key in voters if key == best]
        chosen = max(backers, key=lambda t: (t[0], -t[1].index))[1]  # its most confident reply
        share = weights[best] / sum(weights.values())
        session.give(chosen, Feedback(kind="intrinsic", source="confidence vote", score=share,
                                      text=f"{share:.2f} of the confidence-weighted vote ({len(voters)} voters)"))
        return session.done(chosen, "voted", signal=len(backers) > 1, no_signal="no two voters agree")


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
    # auto: visible tests for code, self-judgement for math; orm:PATH / prm:PATH: a verifier
    # trained on the model's own samples (verify/learned.py)
    options = {"n": 8, "verifier": "auto"}
    bounds = {"n": (1, 256)}

    def __init__(self, **options):
        super().__init__(**options)
        if self.verifier not in ("auto", "tests", "self", "critic") and parse_learned(self.verifier) is None:
            raise ConfigError(f"best-of-n: unknown verifier {self.verifier!r}",
                              "use auto, tests, self, critic, orm:PATH or prm:PATH")
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
            source = verifier.partition(":")[0]
            for attempt in attempts:  # a PRM's verdict on the last step stands for the whole
                scores = await learned_scores(session, verifier, split_steps(attempt.text))
                session.give(attempt, Feedback(kind="external", source=source, score=scores[-1] if scores else None,
                                               text=", ".join(f"{s:.2f}" for s in scores)))
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
