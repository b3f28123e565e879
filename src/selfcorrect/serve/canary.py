"""A new recipe on trial (`serve --recipe DIR --canary SHARE`): promoted only on evidence.

When the watched recipe changes, its checkpoint is loaded beside the incumbent as the
candidate. It answers nothing a client sees: on a share of requests (`share`, by a hash of
the completion id) it answers the same request in the shadow, with the same strategy, and
the two answers are a paired trial, scored

- at once, by the check the request carried (a code request's tests, a checker), or
- later, by the client's feedback on the served answer (serve/memory.py `shadow_verdict`:
  only where either side's loss could have been seen).

The trials are the memory gate's (memory/gate.py, namespace `checkpoint:INCUMBENT`, the
candidate's identity as its arm), with the non-inferiority rule: the candidate is promoted
once the e-value that it is not worse than the incumbent by more than `margin` reaches
1/alpha with at most `flip_cap` of its trials turned right into wrong, and rolled back once
the e-value of harm does. Both are valid however often they are looked at, so deciding after
every trial is safe. Until one of them, the incumbent serves: an undecided candidate never
answers a client, and a tie stays with the incumbent.

The margin (default 0.02, two points of accuracy) is what a user trades for a model that
improve already measured better on held-back traffic: the canary is there to catch a
regression the offline evidence missed, not to prove the gain again. A smaller margin needs
many more trials when the two are close (about 6d/margin^2, d the share of discordant
trials: 3,000 at d = 0.2), while a real gain of 10 points is promoted within about 100.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time

from selfcorrect.memory.gate import Gate
from selfcorrect.models.recipe import is_measured_against
from selfcorrect.sandbox import Sandbox
from selfcorrect.tasks.items import ItemView
from selfcorrect.tasks.served import run_request_check

log = logging.getLogger(__name__)


async def checked(sandbox: Sandbox | None, view: ItemView, kind: str, answer: str | None) -> bool | None:
    """The request's own check of an answer: its tests (code) or its checker; None without one."""
    check = view.visible_tests if kind == "code" else view.checker
    if not check or sandbox is None:
        return None
    if answer is None:
        return False
    return (await run_request_check(sandbox, kind, answer, view.visible_tests, view.checker)).passed


class Canary:
    """The candidate checkpoint, its trials, and the decisions made."""

    def __init__(self, server, share: float, margin: float, flip_cap: float, alpha: float = 0.05):
        self.server, self.share = server, share
        self.gate = Gate(server.settings.store, explore=0.0, alpha=alpha, db=server.db, margin=margin,
                         flip_cap=flip_cap, arms=None)
        self.candidate: dict | None = None  # model, identity, described, namespace, since
        self.decisions: list[dict] = []

    def close(self) -> None:
        self.gate.close()

    def offer(self, model, recipe, described: dict) -> None:
        """A candidate beside the incumbent (one at a time: a newer recipe replaces an undecided one)."""
        if model.identity == self.server.model_name:
            return  # the incumbent itself (its recipe written again)
        if self.candidate is not None:
            asyncio.ensure_future(self.server.swaps.drop(self.candidate["model"]))
        self.server.resources.adopt(model)
        self.candidate = {"model": model, "recipe": recipe, "identity": model.identity, "described": described,
                          "namespace": f"checkpoint:{self.server.model_name}", "since": time.time()}
        log.info("candidate %s on trial against %s on %.0f%% of requests", model.identity,
                 self.server.model_name, 100 * self.share)
        known = self.gate.arms(self.candidate["namespace"]).get(model.identity)
        if known is not None and known.pairs:  # offered again (a restart): decided or on trial as it was
            if known.status != "trial":
                self._decided(known.status)
            return
        seeded = self._seed(recipe)
        if seeded is not None and seeded.status != "trial":
            self._decided(seeded.status)

    def _seed(self, recipe):
        """The recipe's confirmation pairs, where they were measured against the incumbent on its
        own traffic: items drawn as the shadow's are, so one e-process runs over both."""
        evidence, candidate = recipe.evidence, self.candidate
        if not evidence or not recipe.task.startswith("served:"):
            return None
        if not is_measured_against(evidence["against"], self.server.resources.model):
            return None  # measured against another model than the one serving
        return self.gate.seed(candidate["namespace"], candidate["identity"], evidence["items"],
                              evidence["wrong_to_right"], evidence["right_to_wrong"])

    def shadowing(self, completion_id: str):
        """The candidate model to answer this request in the shadow, or None."""
        if self.candidate is None or self.share == 0:
            return None
        digest = hashlib.sha256(f"canary:{completion_id}".encode()).digest()
        if int.from_bytes(digest[:8], "big") / 2**64 >= self.share:
            return None
        self.server.metrics.shadowed.inc()
        return self.candidate["model"]

    async def shadow(self, candidate, run, arm, strategy):
        """The candidate's shadow answer to a request (`run`: the server's, on another model); its
        failure fails nothing a client sees."""
        from selfcorrect.strategies import parse_strategy

        try:
            async with self.server.swaps.holding(candidate):
                return await run(arm, parse_strategy(strategy.spec, self.server.settings.prompts), None, candidate)
        except Exception as e:  # noqa: BLE001
            log.warning("the candidate %s failed a shadow request: %s", candidate.identity, e)
            return None

    async def trial(self, candidate, tried, view: ItemView, kind: str, served) -> dict | None:
        """The candidate's shadow answer as the completion keeps it, paired with the served one at
        once where the request carried a check (else by the client's feedback, later)."""
        if tried is None:
            return None
        sandbox = self.server.resources.sandbox
        served_ok, candidate_ok = (await checked(sandbox, view, kind, _answer(served)),
                                   await checked(sandbox, view, kind, _answer(tried)))
        recorded = served_ok is not None and candidate_ok is not None
        if recorded:
            self.record(candidate.identity, candidate_ok, served_ok)
        return {"identity": candidate.identity, "answer": _answer(tried), "recorded": recorded,
                "text": tried.final.text if tried.final is not None else None}

    def record(self, identity: str, candidate_right: bool, incumbent_right: bool) -> dict | None:
        """A trial of the candidate named `identity` (one since replaced or decided is ignored), and
        the decision it led to: a promotion or a rollback, carried out on the event loop."""
        candidate = self.candidate
        if candidate is None or candidate["identity"] != identity:
            return None
        evidence = self.gate.record(candidate["namespace"], identity, candidate_right, incumbent_right)
        return None if evidence.status == "trial" else self._decided(evidence.status)

    def _decided(self, status: str) -> dict:
        """Promote (status admitted) or roll back (retired) the candidate."""
        candidate, identity = self.candidate, self.candidate["identity"]
        decision = {"at": time.time(), "decision": "promoted" if status == "admitted" else "rolled back",
                    "candidate": candidate["described"], "incumbent": self.server.model_name,
                    "evidence": self.gate.report(candidate["namespace"])["arms"][identity]}
        self.decisions.append(decision)
        self.server.metrics.canary.labels(decision["decision"]).inc()
        if getattr(self.server, "improver", None) is not None:
            self.server.improver.decided(decision)
        self.candidate = None
        log.info("candidate %s %s: %s", identity, decision["decision"], decision["evidence"])
        if status == "admitted":
            asyncio.ensure_future(self.server.swaps.promote(candidate["model"], candidate["recipe"], candidate["described"],
                                                            decision))
        else:
            asyncio.ensure_future(self.server.swaps.drop(candidate["model"]))
        return decision

    def health(self) -> dict:
        candidate = self.candidate
        out = {"share": self.share, "margin": self.gate.margin, "flip_cap": self.gate.flip_cap, "alpha": self.gate.alpha,
               "candidate": None, "decisions": self.decisions[-5:]}
        if candidate is not None:
            arm = self.gate.report(candidate["namespace"])["arms"].get(candidate["identity"])
            out["candidate"] = {**candidate["described"], "since": candidate["since"], "evidence": arm}
        return out


def _answer(answered) -> str | None:
    return answered.final.answer if answered.final is not None else None
