"""`selfcorrect improve`: expert iteration that keeps only what helps, and hands the user a
recipe (the best accepted checkpoint and the strategy to serve it with).

    round 0   the base: every strategy measured on the held-out side (and the probe, a harder
              split never trained on)
    round r   the accepted model's best system (the teacher: program-aided; best-of-n by the
              visible tests) samples the train side in independent chains, and each student
              strategy samples it too; what the strongest check verifies (labels.py) becomes
              data in both formats, with earlier rounds' data kept; train from the base
              (ReST-EM) or from the accepted checkpoint; measure every strategy held out, paired
              against the accepted round and the base. A round significantly worse on any
              strategy is rejected and the loop goes on from the accepted one; the loop stops
              when no strategy gains significantly
              for `patience` rounds, or at the budget.

Curriculum: from round 2 on, each round adds the next `curriculum` task's items to the train
side (harder ones: more digits, more steps), labelled only by the checks. The diversity and
tail monitors steer: a collapse raises the next round's sampling temperature.

Resumable: the report is written after each finished round; a round that did not finish is
done again from nothing (its folder removed), never trusted.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from selfcorrect import interrupt
from selfcorrect.config import Settings
from selfcorrect.errors import ConfigError
from selfcorrect.improve.labels import extra_examples, label_items, student_examples, teacher_examples
from selfcorrect.improve.report import served_round, write as write_report
from selfcorrect.improve.traffic import check_labels, is_traffic, prepare, scored
from selfcorrect.stats import paired, wilson
from selfcorrect.models.lineage import Checkpoint, Lineage
from selfcorrect.models.recipe import (Confirmation, Measured, Recipe, checkpoint_identity, measured_against,
                                      write_recipe)
from selfcorrect.precision import describe, resolve
from selfcorrect.store import Store
from selfcorrect.strategies import parse_strategy
from selfcorrect.tasks import Subset, parse_task
from selfcorrect.train.cycle import (MEASURE_TEMPERATURE, Phases, Scaling, close_opener, decay_alarms,
                                     measure_side, open_base, opened, tokens_of,
                                     register_round, resumed_report, round_folder, split_items, start_of, versus)
from selfcorrect.train.data import (Example, SplitSpec, check_heldout, first_prompt, normalised, shuffled_labels,
                                    write_jsonl)
from selfcorrect.train.sft import SFTSettings, fit
from selfcorrect.verify.answers import vote_key

# the best system each kind has measured (docs/FINDINGS.md sections 1-2): programs run for math,
# samples chosen by the visible tests for code (self-debug repaired nothing there)
TEACHERS = {"math": "program-aided", "code": "best-of-n:n=5"}
HOTTER, HOTTEST = 0.2, 1.0  # what a collapse adds to the sampling temperature, and its ceiling


# what may change when a run is resumed: when to stop, never what a round does
STOPPING = ("rounds", "patience", "budget_minutes")


class ImproveSpec(SplitSpec, Scaling):
    """What `selfcorrect improve` runs; each description is its option's help."""

    LATER: ClassVar[dict[str, object]] = {**Scaling.LATER, "adaptive": False}

    rounds: int = Field(3, ge=1, le=20, description="the most training rounds after the base's")
    labels: Literal["none", "gold", "feedback"] = Field(
        "none", description="none (label-free: agreement of independent programs, visible tests), gold "
                            "(the task's gold check: an oracle run) or feedback (served traffic: the clients' "
                            "answers where they gave one: a feedback-labelled run)")
    teacher: str | None = Field(None, description="the system that labels and teaches (default: program-aided "
                                                  "for math, best-of-n:n=5 by the visible tests for code)")
    chains: int = Field(4, ge=1, le=16, description="the teacher's independent chains per train item")
    agree: int = Field(2, ge=1, description="math, labels none: the least chains that must print the same answer")
    adaptive: bool = Field(True, description="math: the teacher's first chains (as many as --agree, at least 2) run "
                                             "on every item, the rest only where those disagree")
    students: list[str] = Field(["single"], description="comma-separated cheaper strategies taught the "
                                                        "teacher's verified answers")
    student_samples: int = Field(4, ge=1, le=32, description="each student's own samples per train item")
    evaluate: list[str] = Field([], description="comma-separated strategies measured held out (default: the "
                                                "students and the teacher)")
    probe: str | None = Field(None, description="a harder task measured every round and never trained on, e.g. "
                                                "arithmetic:digits=3,n=100,seed=2")
    curriculum: list[str] = Field([], description="comma-separated harder tasks whose items join the train side "
                                                  "from round 2 on, one per round (labels by the checks only)")
    temperature: float = Field(0.5, ge=0, le=2, description="the train side's sampling temperature")
    per_item: int = Field(2, ge=1, description="the most examples per item in each format")
    restart: Literal["base", "continue"] = Field("base", description="each round trains from the base, or from "
                                                                     "the accepted checkpoint")
    lora: bool = Field(True, description="LoRA, or full fine-tuning (--full)")
    epochs: float = Field(1.0, gt=0, description="epochs per round")
    learning_rate: float = Field(2e-4, gt=0, description="2e-4 suits LoRA; full fine-tuning wants about 1e-5")
    batch_size: int = Field(8, ge=1, description="examples per step")
    patience: int = Field(1, ge=1, description="rounds without a significant held-out gain before stopping")
    alpha: float = Field(0.05, gt=0, lt=1, description="the paired test's level for accepting, rejecting, gaining")
    budget_minutes: float | None = Field(None, gt=0, description="start no round after this many minutes")
    extra_data: str | None = Field(None, description="a data.jsonl added to every round's data, e.g. the worked "
                                                     "examples of `selfcorrect memory export-training`")
    control: Literal["none", "shuffled"] = Field(
        "none", description="shuffled: round 1 also trains a control arm on the same examples with the replies "
                            "permuted across items (same format, wrong labels), measured on the same held-out items: "
                            "how much of the gain the labels gave, and how much the format alone")
    confirmation: float = Field(0.15, ge=0, lt=0.5, description="the share of the items set aside untouched: never "
                                                                "sampled, never used to accept, stop or choose; "
                                                                "measured once, for the served recipe, at the end")


def _tokens(rows: list) -> float:
    return sum(r.tokens for r in rows) / len(rows) if rows else 0.0


def _measured(results: dict[str, list]) -> dict:
    out = {}
    for name, rows in results.items():
        right = sum(r.final.correct for r in rows)
        out[name] = {"accuracy": right / len(rows) if rows else 0.0, "interval": list(wilson(right, len(rows))),
                     "items": len(rows), "tokens_per_item": round(_tokens(rows), 1),
                     "correct": {r.item: r.final.correct for r in rows}}
    return out


def _paired(now: dict, before: dict) -> dict:
    """Each strategy measured in both rounds, paired item by item (train/cycle.py `versus`)."""
    return versus({s: m["correct"] for s, m in now.items()}, {s: m["correct"] for s, m in before.items()})


def best_system(measured: dict) -> str:
    """The most accurate strategy, the cheaper one on a tie."""
    return max(measured, key=lambda s: (measured[s]["accuracy"], -measured[s]["tokens_per_item"]))


def verdict(versus: dict, alpha: float) -> tuple[bool, bool, str]:
    """(accepted, gained, why) from the paired tests against the accepted round."""
    worse = [s for s, v in versus.items() if v["right_to_wrong"] > v["wrong_to_right"] and v["p_value"] < alpha]
    better = [s for s, v in versus.items() if v["wrong_to_right"] > v["right_to_wrong"] and v["p_value"] < alpha]
    if worse:
        return False, False, "significantly worse than the accepted round on " + ", ".join(
            f"{s} ({100 * versus[s]['difference']:+.1f} points, p={versus[s]['p_value']:.2g})" for s in worse)
    if better:
        return True, True, "significantly better on " + ", ".join(
            f"{s} ({100 * versus[s]['difference']:+.1f} points, p={versus[s]['p_value']:.2g})" for s in better)
    return True, False, "no strategy significantly better or worse than the accepted round"


def _diversity(rows: list) -> float:
    """Distinct answers per item among a student's samples."""
    distinct = [len(Counter(vote_key(a.answer) for a in r.trajectory.attempts if a.answer is not None)) for r in rows]
    return sum(distinct) / len(distinct) if distinct else 0.0


class Improvement:
    """One `improve` run: set up from a spec and an output folder, then `await run()`."""

    def __init__(self, settings: Settings, spec: ImproveSpec, out: Path, *, on_stage: Callable[[str], None] | None = None,
                 on_progress: Callable | None = None, engine_factory=None, trainer=None):
        # absolute: the recipe's paths must hold from wherever it is loaded
        self.settings, self.spec, self.out = settings, spec, Path(out).resolve()
        self.say = on_stage or (lambda text: None)
        self.on_progress = on_progress
        self.task = parse_task(spec.task, settings.data)
        self.teacher = spec.teacher or TEACHERS.get(self.task.kind)
        if self.teacher is None:
            raise ConfigError(f"{spec.task} is a {self.task.kind} task with no default teacher", "name one: --teacher")
        if self.task.kind == "math" and spec.labels == "none" and spec.agree > spec.chains:
            # code's label is the visible tests, so agreement between chains only binds math
            raise ConfigError(f"--agree {spec.agree} needs at least as many chains (--chains {spec.chains})",
                              "lower --agree or raise --chains")
        check_labels(self.task, spec.labels)
        self.evaluated = spec.evaluate or list(dict.fromkeys([*spec.students, self.teacher]))
        for name in {self.teacher, *spec.students, *self.evaluated}:
            parse_strategy(name, settings.prompts)  # an unknown strategy fails before anything runs
        items, split = split_items(self.task, spec, spec.confirmation)
        self.held_ids, self.confirm_ids = split.held_ids, split.confirm_ids
        self.held_side = Subset(self.task, set(self.held_ids))
        self.probe = parse_task(spec.probe, settings.data) if spec.probe else None
        probe_items = self.probe.items() if self.probe else []
        # a question asked on a measured side (held-out, confirmation, probe) never enters training,
        # whatever its id
        self.measured_prompts = split.measured_prompts | {first_prompt(i.view.messages) for i in probe_items}
        self.measured_ids = set(self.held_ids) | set(self.confirm_ids) | {i.id for i in probe_items}
        by_id = {i.id: i for i in items}
        self.train_ids = [i for i in split.train_ids if first_prompt(by_id[i].view.messages) not in self.measured_prompts]
        if set(self.train_ids) & self.measured_ids:
            raise ConfigError(f"the probe {spec.probe} shares item ids with the train side",
                              "give the probe its own seed, e.g. ...,seed=2")
        self.split = {**split.record(), "train": len(self.train_ids), "probe": len(probe_items),
                      "dropped_for_a_probe_prompt": len(split.train_ids) - len(self.train_ids),
                      "curriculum": [], "curriculum_dropped": []}
        self.sides = [(self.task, list(self.train_ids))]
        taken = set(self.train_ids)
        for stage in spec.curriculum:
            harder = parse_task(stage, settings.data)
            offered = harder.items()
            ids = [i.id for i in offered if first_prompt(i.view.messages) not in self.measured_prompts
                   and i.id not in self.measured_ids]
            if taken & set(ids):
                raise ConfigError(f"the curriculum task {stage} shares item ids with an earlier train side",
                                  "give each curriculum task its own seed, e.g. arithmetic:digits=3,seed=1")
            taken |= set(ids)
            self.sides.append((harder, ids))
            self.split["curriculum"].append(len(ids))
            self.split["curriculum_dropped"].append(len(offered) - len(ids))
        measured = {normalised(by_id[i].view.question) for i in [*self.held_ids, *self.confirm_ids]} | {
            normalised(i.view.question) for i in probe_items}
        self.extra = extra_examples(spec.extra_data, measured, spec.labels) if spec.extra_data else []
        self.engine_factory, self.trainer = engine_factory, trainer or self._train
        self.phases = Phases()  # the round's, afresh each round

    def _open(self, checkpoint: Checkpoint):
        return self.phases.opener(self.open_model)(checkpoint)

    def _train(self, start: Path, examples: list[Example], folder: Path) -> dict:
        spec = self.spec
        return fit(start, examples, folder, SFTSettings(
            lora=spec.lora, epochs=spec.epochs, learning_rate=spec.learning_rate, batch_size=spec.batch_size,
            seed=spec.seed, precision=self.settings.precision), launcher=spec.launcher)

    async def run(self) -> dict:
        spec, out = self.spec, self.out
        lineage, store = Lineage(self.settings.store), Store(self.settings.store)
        try:
            base, engine, self.open_model = open_base(self.settings, lineage, spec.engine, self.engine_factory,
                                                      self.say, serving=spec.serving(), out=out, lora=spec.lora)
            out.mkdir(parents=True, exist_ok=True)
            report = resumed_report(out, spec, STOPPING, self.say, "improve")
            traffic = await prepare(self, report, base) if is_traffic(self.task) else None
            report = report or self._new_report(base, engine)
            if traffic is not None:
                report.update(traffic=traffic, heldout_items=len(self.held_ids))
            started = time.perf_counter() - report["seconds"]
            while not report["stopped"]:
                number = len(report["rounds"])
                report["stopped"] = self._stop(report, started)
                if report["stopped"]:
                    break
                folder = round_folder(out, number, self.say)
                t0 = time.perf_counter()
                entry = await (self._base_round(base) if number == 0 else
                               self._round(number, report, lineage, store, base, folder))
                entry["seconds"] = round(time.perf_counter() - t0, 1)
                report["rounds"].append(entry)
                report["seconds"] = round(time.perf_counter() - started, 1)
                self._write_recipe(report, lineage)
                write_report(report, out)
            if self.confirm_ids:
                await self._confirm(report, lineage)
                self._write_recipe(report, lineage)
        finally:
            await close_opener(getattr(self, "open_model", None))
            lineage.close()
            store.close()
        report["seconds"] = round(time.perf_counter() - started, 1)
        write_report(report, out)
        return report

    async def _confirm(self, report: dict, lineage: Lineage) -> None:
        """When the run ends: the served recipe, and the base's best strategy, measured once on
        the confirmation side, which nothing was sampled, accepted, stopped or chosen on. A
        finished run read again measures nothing; one that went on to serve another recipe
        measures that one."""
        served, base = served_round(report["rounds"]), report["rounds"][0]
        if served is None:
            return
        key = {"round": served["round"], "strategy": served["best"]}
        if {k: (report.get("confirmation") or {}).get(k) for k in key} == key:
            return
        side = Subset(self.task, set(self.confirm_ids))
        figures = {}
        for name, entry in (("served", served), ("base", base)):
            async with opened(self._open, lineage.get(entry["checkpoint"])) as engine:
                self.say(f"confirmation: {name} round {entry['round']} with {entry['best']} on "
                         f"{len(self.confirm_ids)} items set aside")
                _, results = await measure_side(self.settings, side, [entry["best"]], engine, self.spec.seed,
                                                MEASURE_TEMPERATURE, self.on_progress)
            figures[name] = {"strategy": entry["best"], **_measured(results)[entry["best"]]}
        heldout = served["heldout"][served["best"]]
        accuracy = figures["served"]["accuracy"]
        report["confirmation"] = {**key, **figures["served"], "base": figures["base"],
                                  "inside_heldout_interval": heldout["interval"][0] <= accuracy <= heldout["interval"][1],
                                  "versus_base": paired(figures["base"]["correct"], figures["served"]["correct"]).to_dict()}

    def _new_report(self, base: Checkpoint, engine: str) -> dict:
        spec = self.spec
        return {"spec": spec.model_dump(), "task": self.task.name, "kind": self.task.kind, "teacher": self.teacher,
                "evaluated": self.evaluated, "oracle": spec.labels == "gold",
                "feedback_labelled": spec.labels == "feedback", "engine": engine,
                "precision": resolve(self.settings.precision), "machine": describe(),
                "train_items": len(self.train_ids), "heldout_items": len(self.held_ids), "split": self.split,
                "probe_items": len(self.probe.items()) if self.probe else 0,
                "curriculum_items": [len(ids) for _, ids in self.sides[1:]], "base": base.name, "rounds": [],
                "stopped": None, "seconds": 0.0}

    def _stop(self, report: dict, started: float) -> str | None:
        rounds, spec = report["rounds"], self.spec
        if len(rounds) > spec.rounds:
            return f"all {spec.rounds} rounds done"
        if rounds and rounds[-1].get("nothing_to_train"):
            return f"round {rounds[-1]['round']}: {rounds[-1]['nothing_to_train']}"
        # a rejected round is not a plateau: the loop goes on from the accepted checkpoint
        last = rounds[1:][-spec.patience:]
        if len(last) == spec.patience and all(r["accepted"] and not r["gained"] for r in last):
            return (f"plateau: no strategy gained significantly (p < {spec.alpha}) in the last "
                    f"{spec.patience} accepted round{'s' if spec.patience > 1 else ''}")
        if rounds and spec.budget_minutes and time.perf_counter() - started > 60 * spec.budget_minutes:
            return f"budget: {spec.budget_minutes} minutes spent"
        return None

    async def _measure(self, model_name: str, checkpoint: Checkpoint,
                       with_probe: bool = True) -> tuple[dict, dict | None]:
        """Every evaluated strategy on the held-out side (and the probe) with this checkpoint."""
        async with opened(self._open, checkpoint) as engine:
            self.say(f"{model_name}: measuring {', '.join(self.evaluated)} on {len(self.held_ids)} held-out items")
            with self.phases("measure"):
                _, held = await measure_side(self.settings, self.held_side, self.evaluated, engine, self.spec.seed,
                                             MEASURE_TEMPERATURE, self.on_progress)
            self.phases.made("measure", tokens_of(held))
            probe = None
            if self.probe is not None and with_probe:
                self.say(f"{model_name}: measuring the probe {self.spec.probe}")
                with self.phases("measure"):
                    _, probed = await measure_side(self.settings, self.probe, self.evaluated, engine,
                                                   self.spec.seed, MEASURE_TEMPERATURE, self.on_progress)
                self.phases.made("measure", tokens_of(probed))
                probe = _measured(probed)
        return _measured(held), probe

    async def _base_round(self, base: Checkpoint) -> dict:
        self.phases = Phases()
        held, probe = await self._measure("the base", base)
        return {"round": 0, "checkpoint": base.name, "accepted": True, "gained": False, "heldout": held,
                "probe": probe, "best": best_system(held), "why": "the base", "phases": self.phases.record()}

    def _accepted(self, report: dict) -> dict:
        return next(r for r in reversed(report["rounds"]) if r["accepted"])

    async def _sample(self, number: int, checkpoint: Checkpoint, temperature: float,
                      store: Store) -> tuple[dict, dict]:
        """The teacher's and the students' runs on every train side joined so far, and the
        students' diversity. Adaptive on math: a student's first sample on every item, the rest
        only where it missed the teacher's label (its diversity: among the items sampled in
        full)."""
        runs: dict = {"teacher": [], "students": {s: [] for s in self.spec.students}}
        diversity: dict[str, list[float]] = {s: [] for s in self.spec.students}
        teacher = self._teacher_spec()
        async with opened(self._open, checkpoint) as engine:
            for stage, (task, ids) in enumerate(self.sides[: number]):  # stage k joins in round k + 1
                side = Subset(task, set(ids))
                self.say(f"round {number}: {teacher} samples {len(ids)} train items of {task.name}"
                         + (f" (curriculum stage {stage})" if stage else ""))
                with self.phases("sample"):
                    run_id, drawn = await measure_side(self.settings, side, [teacher], engine,
                                                       self.spec.seed + number, temperature, self.on_progress)
                self.phases.made("sample", tokens_of(drawn))
                runs["teacher"].append((stage, run_id, teacher))
                early = self.spec.adaptive and task.kind == "math" and self.spec.student_samples > 1
                labels = self._stage_labels(store, stage, run_id)[0] if early else None
                for student in self.spec.students:
                    student_runs, rows = await self._sample_student(number, student, task, ids, engine, temperature,
                                                                    labels)
                    runs["students"][student].append((stage, student_runs))
                    if rows:
                        diversity[student].append(_diversity(rows))
        # None: every item reached its label at the first sample, none was sampled in full
        return runs, {s: sum(v) / len(v) if v else None for s, v in diversity.items()}

    async def _sample_student(self, number: int, student: str, task, ids: list[str], engine, temperature: float,
                              labels: dict | None) -> tuple[list[str], list]:
        """A student's runs on a stage's items, and the rows of the items it sampled in full.
        With `labels` (adaptive): sample 0 of every item first (`single` draws what the others'
        sample 0 is), and the rest only where it missed the item's label."""
        sampler = student
        if student == "single":  # its own samples; code's are run against the visible tests
            sampler = (f"best-of-n:n={self.spec.student_samples}" if task.kind == "code"
                       else f"self-consistency:n={self.spec.student_samples}")
        runs, todo = [], set(ids)
        if labels is not None and student == "single":
            self.say(f"round {number}: the student single samples them once")
            with self.phases("sample"):
                run_id, first = await measure_side(self.settings, Subset(task, todo), ["single"], engine,
                                                   self.spec.seed + number, temperature, self.on_progress)
            self.phases.made("sample", tokens_of(first))
            runs.append(run_id)
            todo -= {r.item for r in first["single"] if r.item in labels and r.final.answer is not None
                     and vote_key(r.final.answer) == labels[r.item].answer}
        if not todo:
            return runs, []
        self.say(f"round {number}: the student {student} samples {len(todo)} items ({sampler})")
        with self.phases("sample"):
            run_id, rows = await measure_side(self.settings, Subset(task, todo), [sampler], engine,
                                              self.spec.seed + number, temperature, self.on_progress)
        self.phases.made("sample", tokens_of(rows))
        return [*runs, run_id], rows[sampler]

    def _teacher_spec(self) -> str:
        """The teacher in its chains; adaptive on math: the first chains (enough to agree) on
        every item, the rest where they differ (strategies/compose.py)."""
        spec = self.spec
        if spec.chains == 1:
            return self.teacher
        first = max(2, spec.agree)
        adaptive = spec.adaptive and self.task.kind == "math" and first < spec.chains
        separator = "," if ":" in self.teacher else ":"
        return f"{self.teacher}{separator}chains={spec.chains}" + (f",adaptive={first}" if adaptive else "")

    def _stage_labels(self, store: Store, stage: int, run_id: str) -> tuple[dict, int, dict]:
        """A curriculum stage's labels from the teacher's run, the programs refused as hard-coded,
        and the stage's items' views."""
        task, ids = self.sides[stage]
        wanted = set(ids)
        views = {i.id: i.view for i in task.items() if i.id in wanted}
        scores, answered = scored(task)
        found, refused = label_items(store, task=task.name, kind=task.kind, run_id=run_id, item_ids=ids,
                                     labels=self.spec.labels, agree=self.spec.agree,
                                     entry_points={i: v.entry_point for i, v in views.items()},
                                     scored=scores, feedback=answered)
        return found, refused, views

    def _label(self, store: Store, runs: dict) -> tuple[list[Example], dict]:
        """The examples the checks verify in the teacher's and each student's format, and the
        train side's record: items labelled, how often the labels were right (by gold,
        afterwards), hard-coded programs refused, replies written in the task's format."""
        spec = self.spec
        label_kind = "gold" if spec.labels == "gold" else ("tests" if self.task.kind == "code" else "programs")
        examples, written, hard_coded, found_all = [], 0, 0, {}
        for stage, run_id, _ in runs["teacher"]:
            task, _ids = self.sides[stage]
            found, refused, views = self._stage_labels(store, stage, run_id)
            entry_points = {i: v.entry_point for i, v in views.items()}
            found_all.update(found)
            hard_coded += refused
            examples += teacher_examples(found, teacher=self.teacher, label_kind=label_kind, per_item=spec.per_item)
            questions = {i: views[i].question for i in found}
            for student, student_runs in runs["students"].items():
                made, wrote = student_examples(store, found, task=task, questions=questions,
                                               entry_points=entry_points, student=student,
                                               run_ids=next(r for s, r in student_runs if s == stage),
                                               label_kind=label_kind, per_item=spec.per_item)
                examples += made
                written += wrote
        checked = [f.right for f in found_all.values() if f.right is not None]  # traffic: where something scores it
        right = sum(checked) / len(checked) if checked else None
        return examples, {"labelled": len(found_all), "labels_right": right, "hard_coded": hard_coded,
                          "written": written}

    async def _round(self, number: int, report: dict, lineage: Lineage, store: Store, base: Checkpoint,
                     folder: Path) -> dict:
        spec = self.spec
        accepted = self._accepted(report)
        accepted_checkpoint = lineage.get(accepted["checkpoint"])
        temperature = report["rounds"][-1].get("next_temperature", spec.temperature)
        self.phases = Phases()
        runs, diversity = await self._sample(number, accepted_checkpoint, temperature, store)
        with self.phases("label"):
            examples, labels = self._label(store, runs)
        examples = self._with_earlier(examples, report, folder.parent) + self.extra
        check_heldout(examples, self.measured_ids, self.measured_prompts)
        pool = sum(len(ids) for _, ids in self.sides[:number])
        entry = {"round": number, "sampled_by": accepted_checkpoint.name, "temperature": temperature,
                 "train": {"items": pool, "labelled": labels["labelled"],
                           "unlabelled_share": 1 - labels["labelled"] / pool if pool else 0.0,
                           "labels_right": labels["labels_right"], "hard_coded": labels["hard_coded"],
                           "diversity": diversity, "stages": min(number, len(self.sides))},
                 "examples": len(examples), "written": labels["written"],
                 "formats": dict(Counter(e.provenance.get("format", "earlier") for e in examples))}
        if not examples:
            entry.update(accepted=False, gained=False, nothing_to_train="no train item was verified, nothing to train on",
                         why="nothing to train on", checkpoint=None, phases=self.phases.record())
            return entry
        write_jsonl(examples, folder / "data.jsonl")
        start_path = start_of(base if spec.restart == "base" else accepted_checkpoint, folder)
        self.say(f"round {number}: training on {len(examples)} examples ({entry['formats']})")
        metrics = self._trained(start_path, examples, folder)
        checkpoint = register_round(lineage, self.out, number, parent=accepted_checkpoint.name, method="improve",
                                    start_path=start_path, folder=folder, lora=spec.lora, examples=examples,
                                    metrics=metrics)
        held, probe = await self._measure(f"round {number}", checkpoint)
        versus_accepted = _paired(held, accepted["heldout"])
        ok, gained, why = verdict(versus_accepted, spec.alpha)
        entry.update(checkpoint=checkpoint.name, accepted=ok, gained=gained, why=why, heldout=held, probe=probe,
                     best=best_system(held), versus_accepted=versus_accepted,
                     versus_base=_paired(held, report["rounds"][0]["heldout"]),
                     probe_versus_base=_paired(probe, report["rounds"][0]["probe"]) if probe else None,
                     data_hash=checkpoint.data_hash, loss=metrics.get("loss"))
        if number == 1 and spec.control == "shuffled":
            entry["control"] = await self._control(examples, start_path, folder, lineage, accepted_checkpoint, held)
        entry["alarms"], entry["next_temperature"] = self._steer(entry, report, temperature)
        entry["phases"] = self.phases.record()
        self.say(f"round {number}: {'accepted' if ok else 'REJECTED'}: {why}")
        return entry

    def _trained(self, start: Path, examples: list[Example], folder: Path) -> dict:
        with self.phases("train"):
            metrics = self.trainer(start, examples, folder)
        self.phases.made("train", metrics.get("tokens") or 0)
        self.phases.note("train", cpu_share=metrics.get("cpu_share"))
        return metrics

    async def _control(self, examples: list[Example], start_path: Path, folder: Path, lineage: Lineage,
                       parent: Checkpoint, held: dict) -> dict:
        """Round 1's control arm: trained from the same start on the same examples with their
        replies permuted across items, measured on the same held-out items. It only measures:
        it decides nothing. `real_minus_control` pairs the real round against it."""
        shuffled, left_out = shuffled_labels(examples, self.spec.seed)
        self.say(f"round 1: the control arm trains on {len(shuffled)} examples with their replies shuffled across items")
        write_jsonl(shuffled, folder / "control" / "data.jsonl")
        metrics = self._trained(start_path, shuffled, folder / "control")
        checkpoint = register_round(lineage, self.out, 1, parent=parent.name, method="control", start_path=start_path,
                                    folder=folder / "control", lora=self.spec.lora, examples=shuffled,
                                    metrics=metrics, arm="control")
        control_held, _ = await self._measure("round 1's control", checkpoint, with_probe=False)
        return {"kind": "shuffled", "checkpoint": checkpoint.name, "examples": len(shuffled), "left_out": left_out,
                "heldout": control_held, "real_minus_control": _paired(held, control_held)}

    def _with_earlier(self, examples: list[Example], report: dict, out: Path) -> list[Example]:
        """This round's examples, and the accepted rounds' examples of items it did not verify
        this time (the tail it reached once is not forgotten)."""
        from selfcorrect.train.data import read_jsonl

        # the extra data is added once, after this
        covered = {(e.item_id, e.provenance.get("format")) for e in examples + self.extra}
        kept = list(examples)
        for r in reversed(report["rounds"][1:]):
            path = out / f"round-{r['round']}" / "data.jsonl"
            if not r["accepted"] or not path.is_file():
                continue
            earlier: dict[tuple, list] = {}
            for e in read_jsonl(path):
                key = (e.item_id, e.provenance.get("format"))
                if key not in covered:
                    earlier.setdefault(key, []).append(e)
            for key, group in earlier.items():
                covered.add(key)
                kept += group
        return kept

    def _steer(self, entry: dict, report: dict, temperature: float) -> tuple[list[str], float]:
        """The decay alarms against round 1 (the first trained round), and the next round's
        temperature: a collapse raises it."""
        first = next((r for r in report["rounds"][1:] if "train" in r), entry)
        now, then = entry["train"], first["train"]
        alarms = decay_alarms([(f"{student} gives ", d, then["diversity"].get(student) or 0.0)
                               for student, d in now["diversity"].items() if d is not None],
                              (now["unlabelled_share"], then["unlabelled_share"]), against="in round 1",
                              unsolved_what="the train items unlabelled")
        hotter = min(HOTTEST, temperature + HOTTER) if alarms else temperature
        if hotter != temperature:
            alarms.append(f"steered: the next round samples at temperature {hotter:.1f} (was {temperature:.1f})")
        return alarms, hotter

    def _write_recipe(self, report: dict, lineage: Lineage) -> None:
        accepted, base = served_round(report["rounds"]), report["rounds"][0]
        served, base_best = accepted["best"], base["best"]
        checkpoint = lineage.get(accepted["checkpoint"])

        def measured(m: dict, strategy: str) -> Measured:
            return Measured(strategy=strategy, accuracy=m["accuracy"], interval=tuple(m["interval"]), items=m["items"],
                            tokens_per_item=m["tokens_per_item"])

        confirmed = report.get("confirmation")
        confirmation = evidence = None
        if confirmed and (confirmed["round"], confirmed["strategy"]) == (accepted["round"], served):
            confirmation = Confirmation(**measured(confirmed, served).model_dump(),
                                        base=measured(confirmed["base"], confirmed["base"]["strategy"]))
            pairs = confirmed["versus_base"]
            evidence = {"against": measured_against(lineage.get(base["checkpoint"])),
                        **{k: pairs[k] for k in ("items", "wrong_to_right", "right_to_wrong")}}
        weights, gguf = checkpoint_identity(checkpoint)
        write_recipe(Recipe(task=self.task.name if not self.spec.limit else self.spec.task, round=accepted["round"],
                            checkpoint=checkpoint, strategy=served,
                            sampling={"temperature": MEASURE_TEMPERATURE, "top_k": 40}, labels=self.spec.labels,
                            oracle=self.spec.labels == "gold", feedback_labelled=self.spec.labels == "feedback",
                            heldout=measured(accepted["heldout"][served], served),
                            base_best=measured(base["heldout"][base_best], base_best), measured_at=time.time(),
                            weights=weights, gguf=gguf, confirmation=confirmation, evidence=evidence), self.out)


def run(settings: Settings, spec: ImproveSpec, out: Path, on_stage=None, on_progress=None) -> dict:
    return interrupt.run(Improvement(settings, spec, out, on_stage=on_stage, on_progress=on_progress).run())
