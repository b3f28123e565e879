"""The scheduler: which waiting requests start, in which sequence slots, and which evaluated
prompts stay cached for reuse, within a fixed budget of KV cells.

It knows nothing of llama.cpp: an engine hands it two operations on its KV memory,
`copy(src, dst, end)` (give sequence `dst` the cells of `src` up to position `end`, -1 for
all) and `drop(seq)`, so another in-process engine with a paged KV cache could use it too.
A request is admitted when its prompt and every admitted sample's whole budget fit; alone
in the engine a request always fits, since its budget stops at the end of the context.
"""

from __future__ import annotations

import concurrent.futures
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from selfcorrect.models.base import Completion, SamplingParams


@dataclass
class Request:
    prompt: list[int]
    params: SamplingParams
    pending: deque[int]  # sample indices not yet started
    future: concurrent.futures.Future
    results: dict[int, Completion] = field(default_factory=dict)


@dataclass
class Chunk:
    """Samples of one request that started together from one prompt evaluation; the
    prompt's KV cells stay reserved until the last of them ends."""

    prompt_cells: int
    live: int


@dataclass
class Sequence:
    request: Request
    chunk: Chunk
    index: int
    seq_id: int
    sampler: object
    budget: int  # most tokens this sample may generate
    pos: int  # position of the next token to feed
    last_token: int = -1
    generated: int = 0
    text: bytearray = field(default_factory=bytearray)
    scanned: int = 0  # characters of text already searched for stop strings
    logprobs: list[float] | None = None
    token_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0
    finish: str | None = None
    model_ended: bool = False  # an end-of-sequence token, not a stop string or the cap, ended it


@dataclass
class PrefixEntry:
    seq_id: int
    tokens: list[int]
    used: float = 0.0


class KVScheduler:
    def __init__(self, n_ctx: int, parallel: int, prefix_cache: int,
                 copy: Callable[[int, int, int], None], drop: Callable[[int], None]):
        self.n_ctx = n_ctx
        self.parallel, self.prefix_cache = parallel, prefix_cache
        self._copy, self._drop = copy, drop
        self.waiting: deque[Request] = deque()
        self.running: list[Sequence] = []
        self.clear()

    def clear(self) -> None:
        """Back to empty (after a failure: the engine clears its memory too)."""
        self.waiting.clear()
        self.running.clear()
        self.free_slots = list(range(self.parallel))
        self.prefix_entries: list[PrefixEntry] = []
        self.free_prefix_slots = list(range(self.parallel, self.parallel + self.prefix_cache))
        self.reserved = 0  # KV cells promised to running chunks and prefix entries

    def budget(self, request: Request) -> int:
        return min(request.params.max_tokens, self.n_ctx - len(request.prompt))

    def admit(self) -> list[tuple[Request, list[int], list[int]]]:
        """Take waiting requests into free sequence slots, as far as KV cells allow:
        (request, sample indices, slots) for each chunk to start."""
        admitted = []
        while self.waiting and self.free_slots:
            request = self.waiting[0]
            if request.future.cancelled():
                self.waiting.popleft()
                continue
            prompt_cells, budget = len(request.prompt), self.budget(request)
            if not self.cells_available(prompt_cells + budget):
                break  # wait for running samples to free their cells
            room = 1 + (self.cells_free() - prompt_cells - budget) // budget
            count = min(len(request.pending), len(self.free_slots), room)
            indices = [request.pending.popleft() for _ in range(count)]
            slots = [self.free_slots.pop() for _ in range(count)]
            self.reserved += prompt_cells + count * budget
            if not request.pending:
                self.waiting.popleft()
            admitted.append((request, indices, slots))
        return admitted

    def cells_free(self) -> int:
        return self.n_ctx - self.reserved

    def cells_available(self, cells: int) -> bool:
        """Whether `cells` fit, evicting cached prompts (oldest first) to make room."""
        while self.cells_free() < cells and self.prefix_entries:
            self.evict(min(self.prefix_entries, key=lambda e: e.used))
        return self.cells_free() >= cells

    def evict(self, entry: PrefixEntry) -> None:
        self._drop(entry.seq_id)
        self.prefix_entries.remove(entry)
        self.free_prefix_slots.append(entry.seq_id)
        self.reserved -= len(entry.tokens)

    def reuse_prefix(self, prompt: list[int], seq_id: int) -> int:
        """Give `seq_id` the cells of the longest cached prefix of `prompt` (one token is
        always left to evaluate, for its logits); return how many tokens it saves."""
        best, best_entry = 0, None
        for entry in self.prefix_entries:
            limit = min(len(entry.tokens), len(prompt) - 1)
            n = 0
            while n < limit and entry.tokens[n] == prompt[n]:
                n += 1
            if n > best:
                best, best_entry = n, entry
        if best_entry is not None:
            self._copy(best_entry.seq_id, seq_id, best)
            best_entry.used = time.monotonic()
        return best

    def remember_prompt(self, prompt: list[int], seq_id: int) -> None:
        """Keep this prompt's cells in a cache sequence, replacing an entry it extends."""
        for entry in self.prefix_entries:
            if prompt[: len(entry.tokens)] == entry.tokens:
                self.evict(entry)
                break
        if not self.free_prefix_slots:
            if not self.prefix_entries:
                return  # prefix caching is off
            self.evict(min(self.prefix_entries, key=lambda e: e.used))
        if not self.cells_available(len(prompt)):
            return
        slot = self.free_prefix_slots.pop()
        self._copy(seq_id, slot, len(prompt))
        self.prefix_entries.append(PrefixEntry(slot, list(prompt), time.monotonic()))
        self.reserved += len(prompt)

    def release(self, seq: Sequence) -> None:
        """A sequence ended: its slot and cells (and its chunk's prompt, with the last) go back."""
        self.running.remove(seq)
        self._drop(seq.seq_id)
        self.free_slots.append(seq.seq_id)
        self.reserved -= seq.budget
        seq.chunk.live -= 1
        if seq.chunk.live == 0:
            self.reserved -= seq.chunk.prompt_cells
