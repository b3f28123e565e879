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
(cache.py) is what makes draws shared and stable within a project.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import os
import time
from collections import deque
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path

from selfcorrect.errors import BackendUnavailableError, ConfigError, ModelNotFoundError, SelfcorrectError
from selfcorrect.models.base import Capabilities, Completion, Message, SamplingParams, count_sent
from selfcorrect.models.embedded.chat import ChatTemplate
from selfcorrect.models.embedded.files import EMBEDDED_QUANTS, embedded_model_path, file_fingerprint
from selfcorrect.models.embedded.llama import import_llama_cpp, route_llama_logs
from selfcorrect.models.embedded.sampling import sampler_chain, token_logprob
from selfcorrect.models.embedded.scheduler import Chunk, KVScheduler, Request, Sequence
from selfcorrect.models.llama_server import cpu_has_amx
from selfcorrect.models.worker import WorkerEngine

log = logging.getLogger(__name__)


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



class EmbeddedModel(WorkerEngine):
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

    engine_name = "the embedded model"

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
        self._llama = llama_cpp = import_llama_cpp()
        route_llama_logs(llama_cpp)
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
        self._template = ChatTemplate(llama_cpp, self._model, self._vocab, self.path.name)
        memory = self._memory
        self._scheduler = KVScheduler(
            self.n_ctx, parallel, prefix_cache,
            copy=lambda src, dst, end: llama_cpp.llama_memory_seq_cp(memory, src, dst, 0 if end >= 0 else -1, end),
            drop=lambda seq: llama_cpp.llama_memory_seq_rm(memory, seq, -1, -1))
        self._waiting, self._running = self._scheduler.waiting, self._scheduler.running
        self.stats = EngineStats()
        self._start_worker("selfcorrect-llama")

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
        self, messages: Seq[Message], params: SamplingParams, first_index: int = 0
    ) -> list[Completion]:
        future = self.submit(messages, params, first_index)
        completions = await asyncio.wrap_future(future)
        count_sent(completions)
        return completions

    def submit(
        self, messages: Seq[Message], params: SamplingParams, first_index: int = 0
    ) -> concurrent.futures.Future:
        """Queue a request; the future resolves to its completions in index order."""
        prompt = self.tokenize_chat(messages)
        if len(prompt) >= self.n_ctx:
            raise ConfigError(
                f"the prompt has {len(prompt)} tokens; the context holds {self.n_ctx}",
                "shorten the prompt or raise n_ctx",
            )
        request = Request(
            prompt=prompt,
            params=params,
            pending=deque(range(first_index, first_index + params.n)),
            future=concurrent.futures.Future(),
        )
        self._enqueue(self._waiting, request)
        self.stats.requests += 1
        return request.future

    def _release(self) -> None:
        llama_cpp = self._llama
        llama_cpp.llama_batch_free(self._batch)
        llama_cpp.llama_free(self._ctx)
        llama_cpp.llama_model_free(self._model)

    # -- prompts -----------------------------------------------------------------------

    def format_chat(self, messages: Seq[Message]) -> str:
        """The prompt text that the model's chat template makes of these messages."""
        return self._template.format(messages)

    def tokenize(self, text: str) -> list[int]:
        return self._template.tokenize(text)

    def tokenize_chat(self, messages: Seq[Message]) -> list[int]:
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
                admitted = self._scheduler.admit()
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

    def _start_chunk(self, request: Request, indices: list[int], slots: list[int]) -> None:
        llama_cpp, prompt = self._llama, request.prompt
        started = time.perf_counter()
        first = slots[0]
        reused = self._scheduler.reuse_prefix(prompt, first)
        row = self._decode_prompt(prompt[reused:], reused, first)
        for slot in slots[1:]:
            llama_cpp.llama_memory_seq_cp(self._memory, first, slot, -1, -1)
        self._scheduler.remember_prompt(prompt, first)
        self.stats.prompt_evals += 1
        self.stats.prompt_tokens_evaluated += len(prompt) - reused
        self.stats.prompt_tokens_reused += reused

        budget = self._scheduler.budget(request)
        chunk = Chunk(prompt_cells=len(prompt), live=len(slots))
        share = (time.perf_counter() - started) / len(slots)
        for index, slot in zip(indices, slots):
            seq = Sequence(
                request=request,
                chunk=chunk,
                index=index,
                seq_id=slot,
                sampler=sampler_chain(llama_cpp, request.params, index),
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

    def _accept(self, seq: Sequence, token: int, row: int) -> None:
        llama_cpp = self._llama
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            seq.finish, seq.model_ended = "stop", True
            return
        n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece, 256, 0, False)
        seq.text += self._piece.raw[:n]
        seq.token_ids.append(token)
        seq.generated += 1
        seq.last_token = token
        self.stats.generated_tokens += 1
        if seq.logprobs is not None:
            seq.logprobs.append(token_logprob(llama_cpp, self._ctx, row, token, self.n_vocab))
        if seq.request.params.stop and self._hit_stop(seq):
            seq.finish = "stop"
        elif seq.generated >= seq.budget:
            seq.finish = "length"

    def _hit_stop(self, seq: Sequence) -> bool:
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

    def _retire(self, seq: Sequence) -> None:
        """Free a finished sequence's slot, sampler and cells; resolve its request if complete."""
        self._scheduler.release(seq)
        self._llama.llama_sampler_free(seq.sampler)
        request = seq.request
        if seq.finish == "cancelled":
            return
        request.results[seq.index] = Completion(
            text=seq.text.decode("utf-8", "ignore"),
            finish_reason=seq.finish,
            model_ended=seq.model_ended,
            prompt_tokens=len(request.prompt),
            completion_tokens=seq.generated,
            seconds=seq.seconds,
            index=seq.index,
            logprobs=tuple(seq.logprobs) if seq.logprobs is not None else None,
            token_ids=tuple(seq.token_ids) if self.record_tokens else None,
        )
        if not request.pending and len(request.results) == request.params.n:
            _resolve(request.future, [request.results[i] for i in sorted(request.results)])

    def _fail_all(self, error: BaseException, admitted: list[Request]) -> None:
        """Fail every request in flight and return the engine to empty."""
        failed = admitted + [seq.request for seq in self._running] + list(self._waiting)
        for seq in self._running:
            self._llama.llama_sampler_free(seq.sampler)
        for request in failed:
            _resolve(request.future, error=error)
        self._scheduler.clear()
        self._llama.llama_memory_clear(self._memory, True)


def _resolve(future: concurrent.futures.Future, result=None, error=None) -> None:
    """Settle a future that its asyncio waiter may have cancelled meanwhile."""
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except concurrent.futures.InvalidStateError:
        pass  # cancelled by its waiter: nobody wants the result

