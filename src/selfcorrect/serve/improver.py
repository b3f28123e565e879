"""`serve --improve DIR`: a server that improves itself from its own traffic.

Every `every` answered requests (or every `minutes` with new traffic) the server starts a
cycle in the background: `selfcorrect improve --task served:STORE` on everything it has
answered so far, as a child process at a lower priority and with fewer threads than serving
(`nice`, `threads`), or under `launcher` on other machines' GPUs. Its run folder is
DIR/cycles/K, its store DIR/improve.sqlite (the server's store is only read). When a cycle
ends with a trained round accepted, its recipe is written to DIR/serving, the folder the
server watches: the canary (serve/canary.py) puts it on trial and promotes it only on
evidence. Nothing else changes what is served.

State is DIR/cycle.json, written whole after every change: a kill at any moment loses no
request or feedback (they are in the server's store before the reply), and a restart resumes
a cycle that was running (improve resumes its run folder) and counts from where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from selfcorrect.models.recipe import read_recipe, write_recipe

log = logging.getLogger(__name__)


@dataclass
class ImproveSchedule:
    folder: str
    every: int = 200  # answered requests between cycles
    minutes: float | None = None  # or this long, when there is new traffic
    threads: int = 1  # llama.cpp's and torch's in the cycle (the server keeps the rest)
    nice: int = 10
    args: str = ""  # more `improve` options, e.g. "--labels feedback --chains 4"
    task: str = ""  # default: served:STORE (with the server's memory namespace)
    launcher: str = ""  # improve --launcher, for training elsewhere
    command: str = ""  # a command run instead, with {out} {task} {store} {python} (a batch job that waits)

    @property
    def serving(self) -> Path:
        return Path(self.folder) / "serving"


class Improver:
    def __init__(self, server, schedule: ImproveSchedule):
        self.server, self.schedule = server, schedule
        self.folder = Path(schedule.folder).resolve()
        self.state_path = self.folder / "cycle.json"
        self.state = json.loads(self.state_path.read_text()) if self.state_path.is_file() else {"cycles": []}
        self.running: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task | None = None
        self._last_started = time.time()
        self._answered = 0  # as the loop last counted (each second): /health does not query the store

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        if self.running is not None and self.running.returncode is None:
            self.running.terminate()  # the cycle resumes from its folder on the next start
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.running.wait(), 30)

    def health(self) -> dict:
        cycles = self.state["cycles"]
        return {"folder": str(self.folder), "every": self.schedule.every, "minutes": self.schedule.minutes,
                "cycles": len(cycles), "running": bool(cycles and cycles[-1]["status"] == "running"),
                "last": cycles[-1] if cycles else None, "answered": self._answered}

    def answered(self) -> int:
        """Requests the server's store holds answers to."""
        db = sqlite3.connect(f"file:{self.server.settings.store}?mode=ro", uri=True)
        try:
            return db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
        finally:
            db.close()

    def due(self, answered: int) -> bool:
        cycles = self.state["cycles"]
        since = answered - (cycles[-1]["requests"] if cycles else 0)
        if since <= 0:
            return False
        late = self.schedule.minutes is not None and time.time() - self._last_started >= 60 * self.schedule.minutes
        return since >= self.schedule.every or late

    async def _loop(self) -> None:
        cycles = self.state["cycles"]
        while True:
            try:
                if cycles and cycles[-1]["status"] == "running":  # cut short (a kill): improve resumes its folder
                    await self._run(cycles[-1])
                await asyncio.sleep(1.0)
                answered = self._answered = await asyncio.to_thread(self.answered)
                if self.due(answered):
                    cycle = {"cycle": len(cycles) + 1, "requests": answered, "started": time.time(), "status": "running"}
                    cycles.append(cycle)
                    self._save()
                    await self._run(cycle)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a failed cycle is reported; serving goes on, and so do later cycles
                log.exception("improve cycle failed: %s", e)
                if cycles and cycles[-1]["status"] == "running":
                    cycles[-1].update(status="failed", error=f"{type(e).__name__}: {e}")
                    self._save()
                await asyncio.sleep(1.0)

    def command(self, out: Path, requests: int) -> list[str]:
        """The cycle's command: `improve` on every question of the first `requests` answered, the
        same traffic when it resumes."""
        s, config = self.schedule, self.server.config
        task = s.task or (f"served:{self.server.settings.store},until={requests}"
                          + (f",namespace={config.memory}" if config.memory else ""))
        if s.command:
            return shlex.split(s.command.format(out=out, task=task, store=self.folder / "improve.sqlite",
                                                python=sys.executable))
        command = [sys.executable, "-m", "selfcorrect.cli", "--store", str(self.folder / "improve.sqlite"),
                   "--threads", str(s.threads), "improve", "--task", task, "--rounds", "1", "--out", str(out),
                   "--limit", str(max(requests, 2)), *shlex.split(s.args)]
        if s.launcher:
            command += ["--launcher", s.launcher]
        return command

    async def _run(self, cycle: dict) -> None:
        self._last_started = time.time()
        out = self.folder / "cycles" / str(cycle["cycle"])
        out.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(self.schedule.threads),
               "MKL_NUM_THREADS": str(self.schedule.threads)}
        log.info("improve cycle %s on %s answered requests: %s", cycle["cycle"], cycle["requests"], out)
        with (out / "improve.log").open("ab") as output:
            self.running = await asyncio.create_subprocess_exec(
                *self.command(out, cycle["requests"]), stdout=output, stderr=asyncio.subprocess.STDOUT, env=env,
                preexec_fn=(lambda: os.nice(self.schedule.nice)) if self.schedule.nice else None)
            code = await self.running.wait()
        self.running = None
        cycle.update(finished=time.time(), seconds=round(time.time() - cycle["started"], 1))
        if code != 0:
            tail = (out / "improve.log").read_text(errors="replace").splitlines()[-5:]
            cycle.update(status="failed", error=f"exit {code}: " + " | ".join(tail))
            self.server.metrics.cycles.labels("failed").inc()
        else:
            self._offer(cycle, out)
        self._save()

    def _offer(self, cycle: dict, out: Path) -> None:
        """A trained round accepted: its recipe where the server watches, for the canary."""
        recipe = read_recipe(out)
        report = json.loads((out / "report.json").read_text())
        served = recipe.heldout
        cycle.update(status="offered" if recipe.round >= 1 else "nothing to offer", round=recipe.round,
                     heldout=served.accuracy, base=recipe.base_best.accuracy, stopped=report.get("stopped"),
                     feedback_labelled=recipe.feedback_labelled, traffic=report.get("traffic", {}).get("references"))
        self.server.metrics.cycles.labels(cycle["status"]).inc()
        if recipe.round >= 1:
            self.schedule.serving.mkdir(parents=True, exist_ok=True)
            write_recipe(recipe, self.schedule.serving)
            log.info("cycle %s offers round %s (%.1f%% held out, the base %.1f%%)", cycle["cycle"], recipe.round,
                     100 * served.accuracy, 100 * recipe.base_best.accuracy)

    def decided(self, decision: dict) -> None:
        """A canary decision, kept with the cycles (and in the report)."""
        self.state.setdefault("decisions", []).append(
            {k: decision[k] for k in ("at", "decision", "incumbent")} | {
                "candidate": decision["candidate"].get("identity"), "round": decision["candidate"].get("round"),
                "evidence": {k: decision["evidence"].get(k) for k in ("pairs", "helped", "hurt", "not_worse", "evidence")}})
        self._save()

    def _save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for path, text in ((self.state_path, json.dumps(self.state, indent=2)), (self.folder / "report.md", self.render())):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.replace(path)  # whole or not at all

    def render(self) -> str:
        """DIR/report.md: the cycles and the canary's decisions, for people."""
        lines = ["# serve --improve", "", f"A cycle every {self.schedule.every} answered requests"
                 + (f" or {self.schedule.minutes:g} minutes" if self.schedule.minutes else "") + ".", "",
                 "| cycle | on requests | outcome | round | held out (served / base) | seconds |", "|---|---|---|---|---|---|"]
        for c in self.state["cycles"]:
            measured = (f"{100 * c['heldout']:.1f}% / {100 * c['base']:.1f}%" if c.get("heldout") is not None else "—")
            lines.append(f"| {c['cycle']} | {c['requests']} | {c['status']}{': ' + c['error'] if c.get('error') else ''} "
                         f"| {c.get('round', '—')} | {measured} | {c.get('seconds', '—')} |")
        lines += ["", "Canary decisions (the candidate against the model serving):", ""]
        for d in self.state.get("decisions", []) or [{"decision": "none yet"}]:
            e = d.get("evidence") or {}
            lines.append(f"- {d['decision']}" + (f" {d['candidate']} (round {d['round']}): {e.get('pairs')} trials, "
                                                 f"{e.get('helped')} helped, {e.get('hurt')} hurt; not-worse e-value "
                                                 f"{e.get('not_worse')}" if "candidate" in d else ""))
        return "\n".join(lines) + "\n"

