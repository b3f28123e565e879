"""The gate: what the memory shows is admitted only by measured evidence, so that memory on is
never worse than memory off by more than chance allows.

Per namespace there are arms, one of which is shown on an input:

    none      nothing (always an arm, and the one served until another is admitted)
    examples  verified worked examples of similar solved inputs (dynamic few-shot from the
              model's own verified successes, and from answers clients gave as correct)
    rules     the guidelines, clipped to a token budget
    lessons   lessons from verified mistakes (what went wrong, and what passed instead)

Evidence is paired: the same input answered with an arm and without memory, both scored by
a check that can tell right from wrong (the gold answer where a task or a client gives it, the
tests). The gate looks after every pair, so its test must stay valid however often it looks:
over an arm's discordant pairs (one side right, the other wrong), an e-value that the arm's
side wins more than half of them (stats.py `evidence_of_gain`, a supermartingale under no
effect) admits the arm once it reaches 1/alpha, and the mirrored e-value, that it loses more
than half, retires it for good once that reaches 1/alpha. By Ville's inequality an arm with
no effect is admitted at most alpha of the time over a stream of any length (in the seeded
simulation of tests/unit/test_gate.py, 1.9-3.6% of streams of 20 to 400 pairs, where a
fixed-sample Wilson bound re-checked after every pair admitted it in 10-23%). An admitted arm stays admitted until the evidence
of harm retires it. A check that cannot tell (a program that merely printed a number) gives
no pair, so it can never admit anything.

The same gate decides between checkpoints (serve/canary.py): there "none" is the incumbent and
an arm is a candidate checkpoint, named by its identity. A candidate need not be better to be
promoted, only not worse by more than a margin the user sets (`margin`): its evidence is then
`evidence_not_worse`, the same kind of e-value (valid under continuous monitoring) with the
margin added to every pair's bet, and at most `flip_cap` of its pairs may have turned right
into wrong. At margin 0 the test is of gain, as for the memory's arms. Harm retires either.

The served arm is the admitted one with the most evidence of gain, else none. On a small share
of inputs (`explore`, reported) an arm still on trial is tried as well, in the shadow: its
answer is scored, never returned. So until an arm is admitted the answers are exactly those
without memory, and exploring costs tokens, not accuracy.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from pydantic import BaseModel

from selfcorrect.db import attach
from selfcorrect.errors import ConfigError
from selfcorrect.memory.arms import ARMS, SHOWN
from selfcorrect.stats import Paired, evidence_not_worse, evidence_of_gain, wilson

TABLE = """
CREATE TABLE IF NOT EXISTS memory_arms (
    namespace TEXT NOT NULL,
    arm TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (namespace, arm)
);
"""


class ArmEvidence(BaseModel):
    arm: str
    pairs: int = 0  # paired trials scored by a check that can tell
    helped: int = 0  # right with the arm, wrong without
    hurt: int = 0  # wrong with the arm, right without
    served: int = 0  # inputs it answered
    explored: int = 0  # shadow trials
    status: str = "trial"  # trial, admitted, retired

    def paired(self) -> Paired:
        """The arm against none over its trials (wrong→right: right with the arm only)."""
        return Paired.of_counts(self.pairs, self.helped, self.hurt)

    @property
    def bounds(self) -> tuple[float, float]:
        """Wilson bounds on the share of discordant pairs that went the arm's way: to read, not
        to decide by (they hold at one look, and the gate looks after every pair)."""
        return wilson(self.helped, self.helped + self.hurt)

    @property
    def evidence(self) -> tuple[float, float]:
        """(of gain, of harm): e-values valid however often they are looked at."""
        return evidence_of_gain(self.helped, self.hurt), evidence_of_gain(self.hurt, self.helped)


class Gate:
    """`arms`: the arms there are (the memory's), or None for any name (checkpoints)."""

    def __init__(self, path: str | Path, *, explore: float = 0.2, alpha: float = 0.05, db=None,
                 margin: float = 0.0, flip_cap: float = 1.0, arms: tuple[str, ...] | None = ARMS):
        if not 0 <= explore <= 1 or not 0 < alpha < 1 or not 0 <= margin < 1 or not 0 < flip_cap <= 1:
            raise ConfigError(f"invalid gate: explore={explore}, alpha={alpha}, margin={margin}, flip_cap={flip_cap}",
                              "explore is a share from 0 to 1; alpha between 0 and 1; the margin from 0 below 1; "
                              "the flip cap above 0, at most 1")
        self.explore_rate, self.alpha, self.margin, self.flip_cap, self.names = explore, alpha, margin, flip_cap, arms
        self._db, self._owns_db = attach(path, TABLE, db)  # db: shared, for one transaction across tables
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._owns_db:
            self._db.close()

    def arms(self, namespace: str) -> dict[str, ArmEvidence]:
        with self._lock:
            rows = dict(self._db.execute("SELECT arm, payload FROM memory_arms WHERE namespace = ?",
                                         (namespace,)).fetchall())
        names = self.names if self.names is not None else ("none", *sorted(set(rows) - {"none"}))
        return {arm: ArmEvidence.model_validate_json(rows[arm]) if arm in rows else ArmEvidence(arm=arm)
                for arm in names}

    def served(self, namespace: str) -> str:
        admitted = [e for e in self.arms(namespace).values() if e.status == "admitted"]
        return max(admitted, key=lambda e: e.evidence[0]).arm if admitted else "none"

    def explore(self, namespace: str, key: str, served: str) -> str | None:
        """The arm to try in the shadow of input `key` (None on most inputs): chosen by a hash
        of the key, so a rerun explores the same inputs; one of the arms on trial, or none
        itself beside an admitted arm, so that the evidence against none keeps coming."""
        if self.explore_rate == 0:
            return None
        digest = hashlib.sha256(f"{namespace}:{key}".encode()).digest()
        if int.from_bytes(digest[:8], "big") / 2**64 >= self.explore_rate:
            return None
        trial = [e for e in self.arms(namespace).values() if e.arm != "none" and e.status == "trial" and e.arm != served]
        if trial:  # by the hash too: a turn-taking order could keep step with a periodic stream
            return trial[int.from_bytes(digest[8:16], "big") % len(trial)].arm
        return "none" if served != "none" else None

    def count(self, namespace: str, arm: str, *, explored: bool) -> None:
        with self._lock:
            evidence = self._get(namespace, arm)
            evidence.explored += explored
            evidence.served += not explored
            self._put(namespace, evidence)

    def record(self, namespace: str, arm: str, shown_right: bool, none_right: bool) -> ArmEvidence:
        """A paired trial of `arm` against none on one input, both scored by a check that can tell."""
        if (arm not in SHOWN) if self.names is not None else arm == "none":
            raise ConfigError(f"unknown arm {arm!r}", f"use one of: {', '.join(SHOWN)}" if self.names is not None
                              else "name a candidate: the baseline is 'none'")
        with self._lock:
            evidence = self._get(namespace, arm)
            evidence.pairs += 1
            evidence.helped += shown_right and not none_right
            evidence.hurt += none_right and not shown_right
            self._decide(evidence)
            self._put(namespace, evidence)
            return evidence

    def seed(self, namespace: str, arm: str, pairs: int, helped: int, hurt: int) -> ArmEvidence:
        """Trials made elsewhere, before any here (a recipe's confirmation side), counted first:
        an arm that already has trials is left as it is."""
        with self._lock:
            evidence = self._get(namespace, arm)
            if evidence.pairs == 0:
                evidence.pairs, evidence.helped, evidence.hurt = pairs, helped, hurt
                self._decide(evidence)
                self._put(namespace, evidence)
            return evidence

    def _decide(self, evidence: ArmEvidence) -> None:
        if evidence.status != "retired" and evidence.evidence[1] >= 1 / self.alpha:
            evidence.status = "retired"
        elif evidence.status == "trial" and self.admits(evidence):
            evidence.status = "admitted"

    def admits(self, evidence: ArmEvidence) -> bool:
        """Gain (margin 0), or not worse by more than the margin with few right-to-wrong flips."""
        if self.margin == 0:
            return evidence.evidence[0] >= 1 / self.alpha
        return (evidence_not_worse(evidence.helped, evidence.hurt, evidence.pairs, self.margin) >= 1 / self.alpha
                and evidence.hurt <= self.flip_cap * evidence.pairs)

    def reset(self, namespace: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM memory_arms WHERE namespace = ?", (namespace,))

    def report(self, namespace: str) -> dict:
        return {"explore": self.explore_rate, "alpha": self.alpha, "margin": self.margin, "flip_cap": self.flip_cap,
                "served": self.served(namespace),
                "arms": {arm: {**e.model_dump(exclude={"arm"}), "bounds": [round(b, 3) for b in e.bounds],
                               "evidence": [round(v, 3) for v in e.evidence],
                               "not_worse": round(evidence_not_worse(e.helped, e.hurt, e.pairs, self.margin), 3),
                       "versus_none": e.paired().to_dict()}
                         for arm, e in self.arms(namespace).items() if arm != "none"}}

    def _get(self, namespace: str, arm: str) -> ArmEvidence:
        row = self._db.execute("SELECT payload FROM memory_arms WHERE namespace = ? AND arm = ?",
                               (namespace, arm)).fetchone()
        return ArmEvidence.model_validate_json(row[0]) if row else ArmEvidence(arm=arm)

    def _put(self, namespace: str, evidence: ArmEvidence) -> None:
        self._db.execute("INSERT OR REPLACE INTO memory_arms VALUES (?, ?, ?)",
                         (namespace, evidence.arm, evidence.model_dump_json()))
