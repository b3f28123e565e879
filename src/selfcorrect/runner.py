"""The evaluation runner: every strategy on the same items, with shared draws, in parallel up
to the backend's capacity, resumable, and measured.

A run is a list of units, one per (strategy, item). Each unit runs its strategy on the
item's view, writing every event to the store as it happens; then the gold check grades
every attempt the strategy made (measurement, after the strategy is done, never inside it
unless the strategy is an oracle one), and the result is stored. An interrupted run resumes
with `--resume RUN_ID`: finished units are kept, unfinished ones run again, and their
model calls come back from the sample cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from typing import Literal

from pydantic import BaseModel, Field

from selfcorrect.config import Settings
from selfcorrect.errors import ConfigError, SelfcorrectError
from selfcorrect.measure.compute import vote_curve
from selfcorrect.memory import GuidelineBook, LessonBank, Recall, lessons_from, verified_outcome
from selfcorrect.memory.examples import ExampleBank
from selfcorrect.memory.gate import Gate
from selfcorrect.memory.online import informative, learn_examples, record_evidence
from selfcorrect.memory.embed import load_embedder
from selfcorrect.models.base import Model, SamplingParams
from selfcorrect.registry import parse_spec
from selfcorrect.resources import Resources, check_needs
from selfcorrect.sandbox import Sandbox
from selfcorrect.store import Run, Store
from selfcorrect.version import code_version
from selfcorrect.strategies import Context, Session, Strategy, parse_strategy
from selfcorrect.strategies.session import ModelHandle
from selfcorrect.strategies.sampling import SelfConsistency
from selfcorrect.tasks import Item, Task, parse_task, select
from selfcorrect.tasks.base import Check
from selfcorrect.tasks.kinds import KINDS
from selfcorrect.trajectory import FinalGrade, Grade, Trajectory, UnitResult

MAIN_JOB_STRATEGIES = ["single", "self-consistency:n=5", "self-refine:rounds=1", "program-aided:rounds=1"]
MAIN_JOB_LIMIT = 60
POOL_START = 8  # the reference pool's first size; it grows to the largest budget in the run
POOL_CAP = 32


@dataclass
class Progress:
    """How far a run is: items are done when every strategy has finished them."""

    units_total: int
    items_total: int
    units_done: int = 0
    items_done: int = 0
    fresh_tokens: int = 0  # completion tokens generated so far (not served from the cache)


class EvalSpec(BaseModel):
    """What to run: it is stored with the run, so that a resumed run is the same run."""

    task: str = "arithmetic"
    strategies: list[str] = Field(default_factory=lambda: list(MAIN_JOB_STRATEGIES))
    limit: int | None = None
    ids: str | None = None
    sample: int | None = None
    seed: int = 0
    # SmolLM2-135M's answers fall apart above 0.3: on 40 arithmetic items program-aided
    # answered 30 at 0.3, 25 at 0.5, 11 at 0.7 (docs/FINDINGS.md).
    temperature: float = 0.3
    top_p: float = 1.0
    top_k: int | None = None  # None: the backend's preference (40 on every built-in engine)
    max_tokens: int | None = None  # None: by the task's kind
    critic: str | None = None
    # Draw a reference pool of plain samples (self-consistency) large enough for voting to
    # reach every strategy's mean tokens, up to pool_cap samples per item.
    reference: bool = True
    pool_cap: int = POOL_CAP
    # The error memory (strategies with memory=on read it): its namespace (default: the
    # task's name) and how many lessons an item is shown.
    memory: str | None = None
    memory_k: int = Field(default=3, ge=1, le=20)
    memory_fixes: bool = True  # lessons show what passed instead, or only what went wrong
    # What memory shows (memory/gate.py): gated (the arm the evidence admitted, none until
    # then; online, the others tried in the shadow on `memory_explore` of the items), or one
    # arm always: all (lessons and guidelines, as before the gate), lessons, rules, examples.
    memory_show: Literal["gated", "all", "lessons", "rules", "examples"] = "gated"
    memory_explore: float = Field(default=0.2, ge=0.0, le=1.0)
    retriever: str = "bm25"  # or "embedding", "embedding:PATH" (memory/embed.py)
    # Online: items one after another, the memory learning from each finished item (its
    # memory=on strategies' verified feedback) before the next begins; each memory=on
    # strategy runs beside its twin without memory. The last `holdout` share of the items
    # only reads the memory (held-out accuracy after learning).
    online: bool = False
    holdout: float = Field(default=0.0, ge=0.0, lt=1.0)
    lesson_writer: Literal["template", "model"] = "template"
    distil_every: int = Field(default=10, ge=1)  # items between distillations of guidelines


class Evaluation:
    """One run: set up from a spec (or resumed from the store), then `await run()`."""

    def __init__(self, settings: Settings, spec: EvalSpec, resume: str | None = None,
                 on_progress: Callable[[Progress], None] | None = None,
                 task: Task | None = None, engine: Model | None = None,
                 critic_engine: Model | None = None, force: bool = False, pool_cap: int | None = None):
        """`task`, `engine` and `critic_engine` replace what the spec and settings name (tests,
        library use); engines given here stay open for their owner. `force` resumes a run
        made by another code version or with other prompts (the run then records both).
        `pool_cap` gives a resumed run's reference pool another cap (the run records it)."""
        self.settings = settings
        self.run_record: Run | None = None
        if resume:
            self.store = Store(settings.store)
            self.run_record = self.store.run(resume)
            spec = EvalSpec(**self.run_record.config["spec"])
            if pool_cap is not None:
                spec = spec.model_copy(update={"pool_cap": pool_cap})
        self.spec = spec
        self.force = force
        self.task = task or parse_task(spec.task, settings.data)
        self.engine, self.critic_engine = engine, critic_engine
        self.items = self._items()
        self.strategies = self._strategies()
        if not resume:  # opened once the spec holds: a refused run leaves nothing behind
            self.store = Store(settings.store)
        pool = self.run_record.config.get("pool") if self.run_record else None
        self.pool: Strategy | None = parse_strategy(pool) if pool else None
        self.on_progress = on_progress
        self.model: Model | None = None
        self.critic: Model | None = None
        self.sandbox: Sandbox | None = None
        self.bank: LessonBank | None = None
        self.guidelines: GuidelineBook | None = None
        self.examples: ExampleBank | None = None
        self.gate: Gate | None = None
        self.showing = "none"  # the memory arm memory=on strategies are shown now
        self._grades: dict[tuple[str, str | None, str | None], Check] = {}

    def _items(self) -> list[Item]:
        items = select(self.task.items(), ids=self.spec.ids, sample=self.spec.sample, seed=self.spec.seed)
        items = items[: self.spec.limit] if self.spec.limit else items
        if self.task.kind == "code":
            _refuse_visible_gold(items)
        return items

    def _strategies(self) -> list[Strategy]:
        strategies = [parse_strategy(s, self.settings.prompts) for s in self.spec.strategies]
        unfit = [s.spec for s in strategies if self.task.kind not in s.kinds]
        if unfit:
            raise ConfigError(f"{', '.join(unfit)} cannot run on {self.task.name} ({self.task.kind} items)",
                              "choose strategies for this kind of task: `selfcorrect strategies` lists them")
        specs = [s.spec for s in strategies]
        if len(set(specs)) != len(specs):
            raise ConfigError(f"a strategy is listed twice: {', '.join(specs)}", "list each once")
        for strategy in strategies:
            check_needs(strategy.needs - {"oracle"}, self.spec.critic, strategy.spec)
        if self.spec.online:
            if not any(s.memory for s in strategies):
                raise ConfigError("an online evaluation needs a strategy with memory=on",
                                  "e.g. --strategy self-debug:memory=on --online")
            twins = [parse_strategy(without_memory(s.spec), self.settings.prompts) for s in strategies if s.memory]
            strategies += [t for t in twins if t.spec not in specs]
        return strategies

    @property
    def namespace(self) -> str:
        return self.spec.memory or self.task.name

    @property
    def uses_memory(self) -> bool:
        return any(s.memory for s in self.strategies)

    @property
    def all_strategies(self) -> list[Strategy]:
        """The strategies asked for, and the reference pool when one was drawn."""
        return self.strategies + ([self.pool] if self.pool is not None else [])

    @property
    def oracle(self) -> bool:
        return any(s.oracle for s in self.strategies)

    def config(self) -> dict:
        return {"spec": self.spec.model_dump(), "task": self.task.name, "kind": self.task.kind,
                "items": len(self.items),
                "item_ids": [i.id for i in self.items],
                "model": self.model.identity if self.model else self.settings.model,
                "critic": self.critic.identity if self.critic else None,
                "params": self.params().draw_fields(), "strategies": [s.spec for s in self.all_strategies],
                "pool": self.pool.spec if self.pool else None,
                "prompt_reuse": self.model.capabilities.native_n if self.model else None,
                "custom_prompts": {s.spec: s.custom_prompts for s in self.strategies if s.custom_prompts}}

    def prompt_hashes(self) -> dict[str, str]:
        prompts = {s.spec: s.prompt_hash() for s in self.strategies}
        prompts["task"] = self.task.template_hash
        return prompts

    def params(self) -> SamplingParams:
        """The run's sampling parameters (the model must be loaded: it says its top_k)."""
        top_k = self.spec.top_k if self.spec.top_k is not None else self.model.capabilities.default_top_k
        return SamplingParams(temperature=self.spec.temperature, top_p=self.spec.top_p, top_k=top_k,
                              max_tokens=self.spec.max_tokens or KINDS[self.task.kind].max_tokens, seed=self.spec.seed)

    @property
    def needs(self) -> set[str]:
        """What the run's strategies and task need opened: a sandbox, a critic, the oracle."""
        needs = set().union(*(s.needs for s in self.all_strategies))
        if KINDS[self.task.kind].needs_sandbox:
            needs.add("sandbox")  # the gold check runs the hidden tests
        return needs - {"oracle"}  # the gold check is the runner's own

    async def run(self) -> Run:
        """Run every unit that has no result yet; return the finished run's record."""
        async with Resources(self.settings, self.store, needs=self.needs, critic=self.spec.critic,
                             engine=self.engine, critic_engine=self.critic_engine) as resources:
            self.model, self.critic, self.sandbox = resources.model, resources.critic, resources.sandbox
            resumed = self.run_record is not None
            if not resumed:
                self.run_record = self.store.create_run(self.config(), prompt_hashes=self.prompt_hashes(),
                                                        oracle=self.oracle)
            run_id = self.run_record.run_id
            self.store.claim_writer(run_id)  # before anything of the run is touched
            try:
                if resumed:
                    self._check_resume()
                    self._change_pool_cap()  # only once the resume is accepted: it may drop the pool
                if self.uses_memory:
                    self.bank = LessonBank(self.settings.store, embedder=load_embedder(self.spec.retriever))
                    self.guidelines = GuidelineBook(self.bank)
                    self.examples = ExampleBank(self.settings.store)
                    self.gate = Gate(self.settings.store, explore=self.spec.memory_explore)
                    self.showing = (self.gate.served(self.namespace) if self.spec.memory_show == "gated"
                                    else self.spec.memory_show)
                if self.spec.online:
                    await self._online()
                else:
                    await self._units(self.all_strategies)
                if self.spec.reference:
                    await self._grow_pool()
                self._record_config()
                self.store.finish_run(run_id)
            finally:
                self.store.release_writer(run_id)
                if self.bank is not None:
                    for closing in (self.bank, self.examples, self.gate):
                        closing.close()
            return self.store.run(run_id)

    async def _online(self) -> None:
        """Item by item: every strategy on the item (memory=on ones showing the arm the gate
        serves, and on some items a trial arm in the shadow), then the memory learns from it
        (unless the item is held out), so that no item sees a lesson from an item after it. A
        resumed run learns only from items it had not learned from."""
        online = self.run_record.config.get("online", {})
        learned, explored = online.get("learned", 0), online.get("explored", {})
        train = len(self.items) - round(self.spec.holdout * len(self.items))
        gated = self.spec.memory_show == "gated"
        for position, item in enumerate(self.items):
            learning = learned <= position < train
            self.showing = self.gate.served(self.namespace) if gated else self.spec.memory_show
            shadow = self.gate.explore(self.namespace, item.id, self.showing) if gated and learning else None
            shadow = None if shadow == "none" else shadow  # the twin without memory is that trial
            await self._units(self.strategies, [item])
            if gated:
                self.gate.count(self.namespace, self.showing, explored=False)
            if learning:
                shadows = {}
                if shadow is not None:
                    self.gate.count(self.namespace, shadow, explored=True)
                    handles = (ModelHandle(self.model), ModelHandle(self.critic) if self.critic is not None else None)
                    for strategy in (s for s in self.strategies if s.memory):
                        shadows[strategy.spec] = await self.unit(strategy, item, handles, show=shadow, keep=False)
                        explored[shadow] = explored.get(shadow, 0) + shadows[strategy.spec].tokens
                await self._learn(item, shadow, shadows)
                if (position + 1) % self.spec.distil_every == 0 or position + 1 == train:
                    self.guidelines.distil(self.namespace)
                config = {**self.run_record.config, "online": {
                    "learned": position + 1, "train_items": train, "explored": explored,
                    "gate": self.gate.report(self.namespace) if gated else None}}
                self.store.update_run_config(self.run_record.run_id, config)
                self.run_record = self.store.run(self.run_record.run_id)

    async def _learn(self, item: Item, shadow: str | None, shadows: dict[str, UnitResult]) -> None:
        """Lessons from the item's memory=on strategies (what they verified themselves) and the
        counters of what they were shown, against the twin without memory; with the gate,
        the paired evidence of the served and the shadow arm, and worked examples, both by the
        gold check of the item just answered (memory/online.py); lessons and examples from
        informative items only."""
        results = {r["strategy"]: UnitResult.model_validate(r)
                   for r in self.store.results(self.run_record.run_id, item_id=item.id)}
        writer = self._lesson_writer() if self.spec.lesson_writer == "model" else None
        for strategy in self.strategies:
            if not strategy.memory or strategy.spec not in results:
                continue
            result, twin = results[strategy.spec], results.get(without_memory(strategy.spec))
            group = [r for r in (twin, result, shadows.get(strategy.spec)) if r is not None]
            trajectory = result.trajectory
            provenance = {"run": self.run_record.run_id, "strategy": strategy.spec, "item": item.id}
            if self.spec.memory_show != "gated" or informative(group):
                for lesson in await lessons_from(trajectory, item.view.question, self.namespace, provenance, writer):
                    self.bank.add(lesson, oracle_run=trajectory.oracle)
            after = verified_outcome(trajectory)
            before = verified_outcome(twin.trajectory) if twin is not None else None
            shown = trajectory.memory or {}
            if after is not None and shown:
                self.bank.record_use(shown["lessons"], before, after)
                self.guidelines.record_use(self.namespace, shown["rules"], before, after)
            if self.spec.memory_show == "gated" and twin is not None:
                served = (self.showing, result) if self.showing != "none" else None
                record_evidence(self.gate, self.namespace, twin, served,
                                (shadow, shadows[strategy.spec]) if strategy.spec in shadows else None)
                learn_examples(self.examples, group, self.namespace, item.view.question, self.store.messages, provenance)

    def _lesson_writer(self):
        async def write(prompt: str) -> str:
            [reply] = await self.model.generate([{"role": "user", "content": prompt}],
                                                self.params().replace(max_tokens=80))
            return reply.text
        return write

    def _check_resume(self) -> None:
        """A resumed run goes on with the same model; with another code version or other
        prompts only when forced, and then the run lists both."""
        run, config = self.run_record, self.run_record.config
        for role, model in (("model", self.model), ("critic", self.critic)):
            had = config.get(role)
            if had and model is not None and had != model.identity:
                raise ConfigError(
                    f"run {run.run_id} was drawn from {role} {had}; this {role} is {model.identity}",
                    f"resume it with the same --{role}, or start a new run: one run holds one model's draws")
        version, prompts = code_version(), self.prompt_hashes()
        changed = []
        if version != run.code_version:
            changed.append(f"code version {run.code_version} (now {version})")
        differing = sorted(k for k in set(prompts) | set(run.prompt_hashes)
                           if prompts.get(k) != run.prompt_hashes.get(k))
        if differing:
            changed.append(f"other prompts for {', '.join(differing)}")
        if not changed:
            return
        if not self.force:
            raise ConfigError(f"run {run.run_id} was made with {'; '.join(changed)}",
                              "start a new run, or pass --force to go on (the run then records both)")
        config.setdefault("resumed_with", []).append(
            {"code_version": version, "prompt_hashes": prompts, "at": time.time()})
        self.store.update_run_config(run.run_id, config)

    def _change_pool_cap(self) -> None:
        """A resumed run given another pool cap records it; a pool larger than the new cap is
        dropped and grown again to the cap from the cached draws."""
        config = self.run_record.config
        recorded = config["spec"].get("pool_cap", POOL_CAP)
        if self.spec.pool_cap == recorded:
            return
        config["spec"]["pool_cap"] = self.spec.pool_cap
        config.setdefault("resumed_with", []).append(
            {"pool_cap": self.spec.pool_cap, "pool_cap_before": recorded, "at": time.time()})
        if self.pool is not None and self.pool.n > self.spec.pool_cap:
            self.store.delete_results(self.run_record.run_id, self.pool.spec)
            self.pool = None
        self._record_config()

    def _record_config(self) -> None:
        """The run's record, with what is known only once it ran: the pool, prompt reuse."""
        config = {**self.run_record.config, "strategies": [s.spec for s in self.all_strategies],
                  "pool": self.pool.spec if self.pool else None,
                  "prompt_reuse": self.model.capabilities.native_n}
        self.store.update_run_config(self.run_record.run_id, config)
        self.run_record = self.store.run(self.run_record.run_id)

    async def _grow_pool(self) -> None:
        """Draw plain samples until voting over them reaches every strategy's mean tokens
        per item, or the cap. Draws are sample-indexed, so growing a pool from 8 to 16
        samples draws only the 8 new ones; the outgrown pool's results are dropped."""
        for _ in range(4):
            results = results_by_strategy(self.store, self.store.run(self.run_record.run_id))
            ours = {s.spec for s in self.strategies}
            budget = max((_mean_tokens(rows) for spec, rows in results.items()
                          if spec in ours and rows), default=0.0)
            pools = [s for s in self.all_strategies if isinstance(s, SelfConsistency) and results.get(s.spec)]
            largest = max(pools, key=lambda s: s.n, default=None)
            if largest is None:
                size = POOL_START
            else:
                curve = vote_curve(results[largest.spec])
                if budget <= curve[-1]["tokens"] or largest.n >= self.spec.pool_cap:
                    return
                first, last = curve[0], curve[-1]
                per_sample = (last["tokens"] - first["tokens"]) / max(last["n"] - 1, 1) or first["tokens"]
                size = (math.ceil((budget - (first["tokens"] - per_sample)) / per_sample) if per_sample > 0
                        else self.spec.pool_cap)  # samples that cost nothing: only the cap bounds them
                size = max(size, largest.n + 1)
            size = min(max(size, 2), self.spec.pool_cap)
            if largest is not None and size <= largest.n:
                return
            outgrown, self.pool = self.pool, parse_strategy(f"self-consistency:n={size}")
            if outgrown is not None and outgrown.spec != self.pool.spec:
                self.store.delete_results(self.run_record.run_id, outgrown.spec)
            self._record_config()
            await self._units([self.pool])

    async def _units(self, strategies: list[Strategy], items: list[Item] | None = None) -> None:
        """Run the units of these strategies that have no result yet, on `items` (all by default)."""
        done = self.store.finished(self.run_record.run_id)
        pending = [(s, i) for i in self.items for s in strategies if (s.spec, i.id) not in done]
        todo = [(s, i) for s, i in pending if items is None or i in items]
        remaining = {i.id: 0 for i in self.items}  # units left per item: an item is done at 0
        for _, item in pending:
            remaining[item.id] += 1
        progress = Progress(units_total=len(self.items) * len(strategies), items_total=len(self.items),
                            units_done=len(self.items) * len(strategies) - len(pending),
                            items_done=sum(left == 0 for left in remaining.values()))
        self._report_progress(progress)
        limit = asyncio.Semaphore(max(2, 2 * self.model.capabilities.max_parallel))
        handles = (ModelHandle(self.model), ModelHandle(self.critic) if self.critic is not None else None)

        async def one(strategy: Strategy, item: Item) -> None:
            async with limit:
                await self.unit(strategy, item, handles)
            progress.units_done += 1
            remaining[item.id] -= 1
            progress.items_done += remaining[item.id] == 0
            self._report_progress(progress)

        tasks = [asyncio.ensure_future(one(s, i)) for s, i in todo]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def _report_progress(self, progress: Progress) -> None:
        if self.on_progress is not None:
            progress.fresh_tokens = getattr(getattr(self.model, "stats", None), "fresh_tokens", 0)
            self.on_progress(progress)

    async def unit(self, strategy: Strategy, item: Item, handles: tuple[ModelHandle, ModelHandle | None], *,
                   show: str | None = None, keep: bool = True) -> UnitResult:
        """One strategy on one item: run it, grade every attempt, store the result (unless not
        `keep`: a shadow trial of the memory gate, scored and never returned). `handles`: the
        model and critic as strategies hold them (made once per batch of units); `show`: the
        memory arm a memory=on strategy is shown (default: the one served now)."""
        run_id, spec = self.run_record.run_id, strategy.spec
        if keep:
            self.store.discard_partial(run_id, spec, item.id)
        model, critic = handles

        def record(event: dict) -> None:
            if event["type"] == "messages":  # a conversation is kept once, by its hash
                self.store.put_messages(event["messages"])
            elif keep:
                self.store.append_event(run_id, spec, item.id, event)

        async def oracle(reply: str) -> bool:
            return (await self.task.check(item, reply, self.sandbox)).correct

        show = show or self.showing
        recall = (Recall(self.bank, self.namespace, k=self.spec.memory_k, guidelines=self.guidelines,
                         fixes=self.spec.memory_fixes, show=show, examples=self.examples)
                  if strategy.memory and show != "none" else None)
        ctx = Context(model=model, params=self.params(), sandbox=self.sandbox, critic=critic,
                      oracle=oracle if strategy.oracle else None, record=record, memory=recall,
                      precision=self.settings.precision)
        session = Session(item.view, ctx, spec, oracle=strategy.oracle)
        started = time.perf_counter()
        outcome = await strategy.run(session)
        trajectory = session.trajectory
        trajectory.final = outcome.final.index if outcome.final is not None else None
        trajectory.stop = outcome.stop
        trajectory.signal, trajectory.no_signal = outcome.signal, outcome.no_signal
        result = await self.grade_result(item, spec, trajectory)
        result.seconds = time.perf_counter() - started
        if keep:
            self.store.put_result(run_id, spec, item.id, result.model_dump())
        return result

    async def grade_result(self, item: Item, spec: str, trajectory: Trajectory) -> UnitResult:
        """The result of a unit: its trajectory and the gold check of every attempt. The one
        place a result is built."""
        checks = [await self.grade(item, a.answer, a.read or None) for a in trajectory.attempts]
        final = checks[trajectory.final] if trajectory.final is not None else Check(
            False, True, None, None, "the strategy selected nothing", failure="nothing selected")
        return UnitResult(
            item=item.id, strategy=spec, question=item.view.question,
            expected=item.answer if item.answer is not None else f"{len(item.tests)} hidden tests",
            trajectory=trajectory, grades=[_grade(c) for c in checks],
            final=FinalGrade(**_grade(final).model_dump(), answer=final.answer))

    async def grade(self, item: Item, answer: str | None, read: str | None = None) -> Check:
        """The gold check of an answer; the same answer to the same item is graded once."""
        failure = read if answer is None else None
        key = (item.id, answer, failure)
        if key not in self._grades:
            self._grades[key] = await self.task.grade(item, answer, self.sandbox, failure)
        return self._grades[key]


def without_memory(spec: str) -> str:
    """A strategy spec with memory=on taken out: an online evaluation's twin."""
    name, raw = parse_spec(spec, "strategy")
    raw.pop("memory", None)
    options = ",".join(f"{k}={v}" for k, v in raw.items())
    return name + (f":{options}" if options else "")


def _grade(check: Check) -> Grade:
    return Grade(correct=check.correct, parse_failure=check.parse_failure, failure=check.failure,
                 detail=check.detail)


def _mean_tokens(rows: list[UnitResult]) -> float:
    return sum(r.tokens for r in rows) / len(rows)


def _refuse_visible_gold(items: list[Item]) -> None:
    """A code item whose visible tests include all its hidden tests would let best-of-n and
    self-debug stop on the gold check itself: such a run is refused."""
    def norm(tests):
        return {" ".join(t.split()) for t in tests}

    exposed = [i.id for i in items if i.tests and norm(i.tests) <= norm(i.view.visible_tests)]
    if exposed:
        raise ConfigError(
            f"{len(exposed)} of {len(items)} items show all their hidden tests as visible tests "
            f"(first: {exposed[0]}); strategies that run visible tests would stop on the gold check",
            "show fewer visible tests (e.g. mbpp:visible=1), or give such JSONL items visible_tests "
            "that are not all of their tests")


def results_by_strategy(store: Store, run: Run) -> dict[str, list[UnitResult]]:
    """A run's results grouped by strategy, in the run's order, items in the run's order."""
    grouped: dict[str, list[UnitResult]] = {spec: [] for spec in run.config["strategies"]}
    for payload in store.results(run.run_id):
        result = UnitResult.model_validate(payload)
        grouped.setdefault(result.strategy, []).append(result)
    position = {item: i for i, item in enumerate(run.config.get("item_ids", []))}  # older runs: stored order
    for rows in grouped.values():
        rows.sort(key=lambda r: position.get(r.item, len(position)))
    return grouped


def check_complete(store: Store, run: Run) -> None:
    expected = run.config["items"] * len(run.config["strategies"])
    have = len(store.finished(run.run_id))
    if have < expected:
        raise SelfcorrectError(f"run {run.run_id} has {have} of {expected} results",
                               f"finish it with `selfcorrect eval --resume {run.run_id}`")
