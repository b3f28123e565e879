"""The memory of an evaluation: the banks memory=on strategies read, and online learning, item
by item, each item's verified feedback learned before the next item begins."""

from __future__ import annotations

from selfcorrect.memory import GuidelineBook, LessonBank, Recall, lessons_from, verified_outcome
from selfcorrect.memory.embed import load_embedder
from selfcorrect.memory.examples import ExampleBank
from selfcorrect.memory.gate import Gate
from selfcorrect.memory.online import informative, learn_examples, record_evidence
from selfcorrect.registry import parse_spec
from selfcorrect.strategies.session import ModelHandle
from selfcorrect.tasks import Item
from selfcorrect.trajectory import UnitResult


def without_memory(spec: str) -> str:
    """A strategy spec with memory=on taken out: an online evaluation's twin."""
    name, raw = parse_spec(spec, "strategy")
    raw.pop("memory", None)
    options = ",".join(f"{k}={v}" for k, v in raw.items())
    return name + (f":{options}" if options else "")


class Memory:
    """The lesson bank, guidelines, worked examples and gate of one namespace, opened for a
    run; which arm memory=on strategies are shown now; and online learning."""

    def __init__(self, evaluation):
        """`evaluation`: the run it serves (runner.Evaluation), whose units it runs online."""
        spec, store = evaluation.spec, evaluation.settings.store
        self.evaluation, self.spec = evaluation, spec
        self.namespace = spec.memory or evaluation.task.name
        self.bank = LessonBank(store, embedder=load_embedder(spec.retriever))
        self.guidelines = GuidelineBook(self.bank)
        self.examples = ExampleBank(store)
        self.gate = Gate(store, explore=spec.memory_explore)
        self.gated = spec.memory_show == "gated"
        self.showing = self.gate.served(self.namespace) if self.gated else spec.memory_show

    def close(self) -> None:
        for closing in (self.bank, self.examples, self.gate):
            closing.close()

    def recall(self, show: str) -> Recall | None:
        """What a memory=on strategy reads when shown the arm `show` (None: nothing)."""
        if show == "none":
            return None
        return Recall(self.bank, self.namespace, k=self.spec.memory_k, guidelines=self.guidelines,
                      fixes=self.spec.memory_fixes, show=show, examples=self.examples)

    async def run_online(self) -> None:
        """Item by item: every strategy on the item (memory=on ones showing the arm the gate
        serves, and on some items a trial arm in the shadow), then the memory learns from it
        (unless the item is held out), so that no item sees a lesson from an item after it. A
        resumed run learns only from items it had not learned from."""
        evaluation, spec = self.evaluation, self.spec
        online = evaluation.run_record.config.get("online", {})
        learned, explored = online.get("learned", 0), online.get("explored", {})
        train = len(evaluation.items) - round(spec.holdout * len(evaluation.items))
        for position, item in enumerate(evaluation.items):
            learning = learned <= position < train
            self.showing = self.gate.served(self.namespace) if self.gated else spec.memory_show
            shadow = self.gate.explore(self.namespace, item.id, self.showing) if self.gated and learning else None
            shadow = None if shadow == "none" else shadow  # the twin without memory is that trial
            await evaluation.run_units(evaluation.strategies, [item])
            if self.gated:
                self.gate.count(self.namespace, self.showing, explored=False)
            if not learning:
                continue
            shadows = {}
            if shadow is not None:
                self.gate.count(self.namespace, shadow, explored=True)
                handles = (ModelHandle(evaluation.model),
                           ModelHandle(evaluation.critic) if evaluation.critic is not None else None)
                for strategy in (s for s in evaluation.strategies if s.memory):
                    shadows[strategy.spec] = await evaluation.unit(strategy, item, handles, show=shadow, keep=False)
                    explored[shadow] = explored.get(shadow, 0) + shadows[strategy.spec].tokens
            await self._learn(item, shadow, shadows)
            if (position + 1) % spec.distil_every == 0 or position + 1 == train:
                self.guidelines.distil(self.namespace)
            evaluation.update_config(online={
                "learned": position + 1, "train_items": train, "explored": explored,
                "gate": self.gate.report(self.namespace) if self.gated else None})

    async def _learn(self, item: Item, shadow: str | None, shadows: dict[str, UnitResult]) -> None:
        """Lessons from the item's memory=on strategies (what they verified themselves) and the
        counters of what they were shown, against the twin without memory; with the gate,
        the paired evidence of the served and the shadow arm, and worked examples, both by the
        gold check of the item just answered (memory/online.py); lessons and examples from
        informative items only."""
        evaluation = self.evaluation
        run_id = evaluation.run_record.run_id
        results = {r["strategy"]: UnitResult.model_validate(r) for r in evaluation.store.results(run_id, item_id=item.id)}
        writer = self._lesson_writer() if self.spec.lesson_writer == "model" else None
        for strategy in evaluation.strategies:
            if not strategy.memory or strategy.spec not in results:
                continue
            result, twin = results[strategy.spec], results.get(without_memory(strategy.spec))
            group = [r for r in (twin, result, shadows.get(strategy.spec)) if r is not None]
            trajectory = result.trajectory
            provenance = {"run": run_id, "strategy": strategy.spec, "item": item.id}
            if not self.gated or informative(group):
                for lesson in await lessons_from(trajectory, item.view.question, self.namespace, provenance, writer):
                    self.bank.add(lesson, oracle_run=trajectory.oracle)
            after = verified_outcome(trajectory)
            before = verified_outcome(twin.trajectory) if twin is not None else None
            shown = trajectory.memory or {}
            if after is not None and shown:
                self.bank.record_use(shown["lessons"], before, after)
                self.guidelines.record_use(self.namespace, shown["rules"], before, after)
            if self.gated and twin is not None:
                served = (self.showing, result) if self.showing != "none" else None
                record_evidence(self.gate, self.namespace, twin, served,
                                (shadow, shadows[strategy.spec]) if strategy.spec in shadows else None)
                learn_examples(self.examples, group, self.namespace, item.view.question,
                               evaluation.store.messages, provenance)

    def _lesson_writer(self):
        evaluation = self.evaluation

        async def write(prompt: str) -> str:
            [reply] = await evaluation.model.generate([{"role": "user", "content": prompt}],
                                                      evaluation.params().replace(max_tokens=80))
            return reply.text
        return write
