"""What an evaluation runs: EvalSpec, stored with the run, so that a resumed run is the same run."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator

from selfcorrect.errors import ConfigError
from selfcorrect.memory.arms import CHOICES
from selfcorrect.memory.embed import check_retriever

MAIN_JOB_STRATEGIES = ["single", "self-consistency:n=5", "self-refine:rounds=1", "program-aided:rounds=1"]
MAIN_JOB_LIMIT = 60
POOL_CAP = 32


class EvalSpec(BaseModel):
    """What to run: it is stored with the run, so that a resumed run is the same run. Each
    description is its `selfcorrect eval` option's help (cli/evaluate.py makes the options from
    these fields), and every bound is checked here, so a library caller meets the same checks
    as the command line, with the same errors."""

    task: str = Field("arithmetic", description="task[:key=value,...], e.g. arithmetic:digits=1 or mbpp")
    strategies: list[str] = Field(default_factory=lambda: list(MAIN_JOB_STRATEGIES),
                                  description="comma-separated strategy specs")
    limit: int | None = Field(None, description="the first K items")
    ids: str | None = Field(None, description="item positions, e.g. 0-199")
    sample: int | None = Field(None, description="a seeded random sample of N items")
    seed: int = Field(0, description="draws and sampling")
    # SmolLM2-135M's answers fall apart above 0.3: on 40 arithmetic items program-aided
    # answered 30 at 0.3, 25 at 0.5, 11 at 0.7 (docs/FINDINGS.md).
    temperature: float = Field(0.3, description="sampling temperature for every strategy")
    top_p: float = Field(1.0, description="nucleus sampling's share")
    top_k: int | None = Field(None, description="default: 40 (every built-in engine)")
    max_tokens: int | None = Field(None, description="default: 192 for math, 384 for code")
    critic: str | None = Field(None, description="a critic model spec (critic-refine), or \"same\"")
    # Draw a reference pool of plain samples (self-consistency) large enough for voting to
    # reach every strategy's mean tokens, up to pool_cap samples per item.
    reference: bool = Field(True, description="draw a reference pool of plain samples (--no-reference: none)")
    pool_cap: int = Field(POOL_CAP, description="the most samples per item the reference pool may grow to")
    # The error memory (strategies with memory=on read it): its namespace (default: the
    # task's name) and how many lessons an item is shown.
    memory: str | None = Field(None, description="the error memory's namespace (default: the task's name)")
    memory_k: int = Field(3, description="lessons shown per item")
    memory_fixes: bool = Field(True, description="lessons show what passed instead (--no-memory-fixes: only "
                                                 "what went wrong)")
    # What memory shows (memory/gate.py): gated (the arm the evidence admitted, none until
    # then; online, the others tried in the shadow on `memory_explore` of the items), or one
    # arm always: all (lessons and guidelines, as before the gate), lessons, rules, examples.
    memory_show: str = Field("gated", description="gated (the arm paired evidence admitted; none until then), or "
                                                  "one arm always: all, lessons, rules, examples (docs/memory.md)")
    memory_explore: float = Field(0.2, description="gated: the share of items that also try an arm on trial in "
                                                   "the shadow (scored, never returned)")
    retriever: str = Field("bm25", description="how lessons are found: bm25, embedding, embedding:PATH")
    # Online: items one after another, the memory learning from each finished item (its
    # memory=on strategies' verified feedback) before the next begins; each memory=on
    # strategy runs beside its twin without memory. The last `holdout` share of the items
    # only reads the memory (held-out accuracy after learning).
    online: bool = Field(False, description="items in order, the memory learning from each before the next; "
                                            "memory=on strategies run beside twins without")
    holdout: float = Field(0.0, description="online: the last share of items only reads the memory")
    lesson_writer: str = Field("template", description="online: lessons written by \"template\" or the \"model\"")
    distil_every: int = Field(10, description="online: items between distillations of guidelines")

    @model_validator(mode="after")
    def _bounds(self):
        """Every bound, as a ConfigError that names the flag and its fix (it passes through
        pydantic unwrapped)."""
        for flag, value, low, high in (("--limit", self.limit, 1, None), ("--sample", self.sample, 1, None),
                                       ("--pool-cap", self.pool_cap, 1, 256), ("--max-tokens", self.max_tokens, 1, None),
                                       ("--memory-k", self.memory_k, 1, 20), ("--top-k", self.top_k, 0, None),
                                       ("--distil-every", self.distil_every, 1, None)):
            if value is not None and (value < low or (high is not None and value > high)):
                raise ConfigError(f"{flag} {value} is out of range",
                                  f"use a number from {low}" + (f" to {high}" if high else " up") +
                                  (", or omit it to run every item" if flag in ("--limit", "--sample") else ""))
        for flag, value, closed in (("--holdout", self.holdout, False), ("--memory-explore", self.memory_explore, True),
                                    ("--top-p", self.top_p, True)):
            if not (0 <= value <= 1 if closed else 0 <= value < 1):
                raise ConfigError(f"{flag} {value} is out of range", "give a share from 0 to 1" if closed else
                                  "give a share from 0 up to (not including) 1, e.g. 0.3")
        if not 0 <= self.temperature <= 2:
            raise ConfigError(f"--temperature {self.temperature} is out of range", "give a temperature from 0 to 2")
        if self.lesson_writer not in ("template", "model"):
            raise ConfigError(f"--lesson-writer {self.lesson_writer!r} is not a writer", "use template or model")
        if self.memory_show not in CHOICES:
            raise ConfigError(f"--memory-show {self.memory_show!r} is not an arm", f"use one of: {', '.join(CHOICES)}")
        check_retriever(self.retriever)
        return self
