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

import time
from collections.abc import Callable

from selfcorrect.config import Settings
from selfcorrect.errors import ConfigError, SelfcorrectError
from selfcorrect.models.base import Model, SamplingParams
from selfcorrect.resources import Resources, check_needs
from selfcorrect.runner.grading import Grader
from selfcorrect.runner.online import Memory, without_memory
from selfcorrect.runner.pool import next_pool_size
from selfcorrect.runner.resume import check_resume, record_pool_cap
from selfcorrect.runner.spec import MAIN_JOB_LIMIT, MAIN_JOB_STRATEGIES, POOL_CAP, EvalSpec
from selfcorrect.runner.units import Progress, run_units
from selfcorrect.sandbox import Sandbox
from selfcorrect.store import Run, Store
from selfcorrect.strategies import Context, Session, Strategy, parse_strategy
from selfcorrect.strategies.session import ModelHandle
from selfcorrect.strategies.sampling import SelfConsistency
from selfcorrect.tasks import Item, Task, parse_task, select
from selfcorrect.tasks.base import Check
from selfcorrect.tasks.kinds import KINDS
from selfcorrect.trajectory import Trajectory, UnitResult
from selfcorrect.version import code_version

__all__ = ["EvalSpec", "Evaluation", "MAIN_JOB_LIMIT", "MAIN_JOB_STRATEGIES", "POOL_CAP", "Progress", "check_complete",
           "results_by_strategy", "without_memory"]


class Evaluation:
    """One run: set up from a spec (or resumed from the store), then `await run()`. It composes
    the pieces that do one job each: running units (units.py), grading them (grading.py), the
    reference pool's size (pool.py), resume checks (resume.py) and the memory with online
    learning (online.py)."""

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
        # served traffic evaluated by itself: only the questions something can score (improve hands
        # its sides over as `task`, the unscored train side included)
        self._scored_only = task is None and hasattr(self.task, "referenced")
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
        self.grader = Grader(self.task)
        self.memory: Memory | None = None

    def _items(self) -> list[Item]:
        items = self.task.items()
        if self._scored_only:
            scored = set(self.task.referenced())
            items = [i for i in items if i.id in scored]
        items = select(items, ids=self.spec.ids, sample=self.spec.sample, seed=self.spec.seed)
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
    def sandbox(self) -> Sandbox | None:
        return self.grader.sandbox

    @sandbox.setter
    def sandbox(self, sandbox: Sandbox | None) -> None:
        self.grader.sandbox = sandbox

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
                    check_resume(self.store, self.run_record, {"model": self.model, "critic": self.critic},
                                 code_version(), self.prompt_hashes(), self.force)
                    self._change_pool_cap()  # only once the resume is accepted: it may drop the pool
                if any(s.memory for s in self.strategies):
                    self.memory = Memory(self)
                if self.spec.online:
                    await self.memory.run_online()
                else:
                    await self.run_units(self.all_strategies)
                if self.spec.reference:
                    await self._grow_pool()
                self.update_config()
                self.store.finish_run(run_id)
            finally:
                self.store.release_writer(run_id)
                if self.memory is not None:
                    self.memory.close()
            return self.store.run(run_id)

    def _change_pool_cap(self) -> None:
        """A resumed run given another pool cap records it; a pool larger than the new cap is
        dropped and grown again to the cap from the cached draws."""
        config = self.run_record.config
        recorded = config["spec"].get("pool_cap", POOL_CAP)
        if self.spec.pool_cap == recorded:
            return
        record_pool_cap(config, self.spec.pool_cap, recorded)
        if self.pool is not None and self.pool.n > self.spec.pool_cap:
            self.store.delete_results(self.run_record.run_id, self.pool.spec)
            self.pool = None
        self.update_config()

    def update_config(self, **more) -> None:
        """The run's record, with what is known only once it ran (the pool, prompt reuse) and
        `more` (online learning's progress)."""
        config = {**self.run_record.config, "strategies": [s.spec for s in self.all_strategies],
                  "pool": self.pool.spec if self.pool else None,
                  "prompt_reuse": self.model.capabilities.native_n, **more}
        self.store.update_run_config(self.run_record.run_id, config)
        self.run_record = self.store.run(self.run_record.run_id)

    async def _grow_pool(self) -> None:
        """Draw plain samples until voting over them reaches every strategy's mean tokens
        per item, or the cap (pool.py). Draws are sample-indexed, so growing a pool from 8 to
        16 samples draws only the 8 new ones; the outgrown pool's results are dropped."""
        for _ in range(4):
            results = results_by_strategy(self.store, self.store.run(self.run_record.run_id))
            pools = [s for s in self.all_strategies if isinstance(s, SelfConsistency)]
            size = next_pool_size(results, {s.spec for s in self.strategies}, pools, self.spec.pool_cap)
            if size is None:
                return
            outgrown, self.pool = self.pool, parse_strategy(f"self-consistency:n={size}")
            if outgrown is not None and outgrown.spec != self.pool.spec:
                self.store.delete_results(self.run_record.run_id, outgrown.spec)
            self.update_config()
            await self.run_units([self.pool])

    async def run_units(self, strategies: list[Strategy], items: list[Item] | None = None) -> None:
        """Run the units of these strategies that have no result yet, on `items` (all by default)."""
        await run_units(self.store, self.run_record.run_id, self.items, strategies, items, self.unit, self.model,
                        self.critic, self._report_progress)

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

        recall = None
        if strategy.memory and self.memory is not None:
            recall = self.memory.recall(show or self.memory.showing)
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
        """The result of a unit: its trajectory and the gold check of every attempt (grading.py)."""
        return await self.grader.result(item, spec, trajectory)

    async def grade(self, item: Item, answer: str | None, read: str | None = None) -> Check:
        """The gold check of an answer; the same answer to the same item is graded once."""
        return await self.grader.grade(item, answer, read)


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
