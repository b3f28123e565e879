"""`hf:PATH[+ADAPTER]`: a Hugging Face transformers causal LM in-process, the model that can
learn (issue 10's slow path trains it; `selfcorrect models export` makes the embedded model
one).

Requests are decoded together in batches of up to `batch` sequences on a worker thread, with
one KV cache for the batch (prompts left-padded, positions counted from each prompt's first
token). Sample k of a request draws with its own torch generator seeded by
`sample_seed(seed, k)`, and samples as the embedded engine does: top-k, then top-p, then the
temperature, then a draw. The identity hashes the weights (and the adapter's), so the sample
cache never serves one model's draws to another. Needs the `train` extra.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import time
from collections import deque
from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from pathlib import Path

from selfcorrect.errors import ConfigError, SelfcorrectError
from selfcorrect.models.base import (
    Capabilities,
    Completion,
    Message,
    SamplingParams,
    check_messages,
    continues,
    count_sent,
    sample_seed,
)
from selfcorrect.models.lineage import weights_hash
from selfcorrect.models.worker import WorkerEngine
from selfcorrect.precision import Precision, dtype, resolve


@dataclass
class _Row:
    prompt: list[int]
    params: SamplingParams
    index: int
    request: _Request
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""
    finish: str | None = None
    model_ended: bool = False  # an end-of-sequence token, not a stop string or the cap, ended it


@dataclass
class _Request:
    prompt: list[int]
    params: SamplingParams
    first_index: int
    future: concurrent.futures.Future
    results: dict[int, Completion] = field(default_factory=dict)
    pending: int = 0


class HFModel(WorkerEngine):
    """All of the model's torch work (loading, decoding, adapters) happens on one worker
    thread: torch's OpenMP threads belong to the thread that starts them, and decoding on
    another thread than the one that loaded the model ran at 70% of the speed here."""

    engine_name = "the hf model"

    def __init__(self, path: str | Path, adapter: str | Path | None = None, *, batch: int = 8,
                 threads: int | None = None, precision: Precision = "fp32"):
        try:
            import torch
            from transformers import AutoTokenizer
        except ImportError:
            raise ConfigError("the hf backend needs torch and transformers",
                              "pip install torch==2.13.0 'selfcorrect[train]'") from None
        self.path = Path(path).expanduser()
        if not (self.path / "config.json").is_file():
            raise ConfigError(f"no transformers model at {self.path}",
                              "give a folder with config.json and weights (`selfcorrect models export` makes one)")
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.batch = batch
        # fp32 by default: a merge saved from here is a master copy. bf16 draws differ from
        # fp32 ones, so the identity (the sample cache's key) says which
        self.precision = resolve(precision)
        self._base_identity = (f"hf:{self.path.name}:{weights_hash(self.path)}"
                               + ("+bf16" if self.precision == "bf16" else ""))
        self.adapter: Path | None = None
        self._waiting: deque[_Request] = deque()
        self._jobs: deque = deque()
        self._start_worker("selfcorrect-hf")
        try:
            self._on_worker(lambda: self._load(threads))
            if adapter is not None:
                self.load_adapter(adapter)
        except BaseException:
            self.close()
            raise
        self._stops = self._eos_ids()
        self._pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self._stops)

    def _load(self, threads: int | None) -> None:
        from transformers import AutoModelForCausalLM

        if threads:
            self._torch.set_num_threads(threads)
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype(self.precision))
        self.model.eval()
        # transformers renamed past_key_values to cache (5.2x); take whichever this version has
        # (a PEFT wrapper passes either through)
        forward = inspect.signature(type(self.model).forward).parameters
        self._cache_argument = "cache" if "cache" in forward else "past_key_values"

    def _on_worker(self, job):
        """Run `job` on the worker thread, between batches; return what it returns."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._enqueue(self._jobs, (job, future))
        return future.result()

    # -- adapters ----------------------------------------------------------------------

    def load_adapter(self, adapter: str | Path) -> None:
        """Put a LoRA adapter on the base weights (replacing any other)."""
        adapter = Path(adapter).expanduser()
        if not (adapter / "adapter_config.json").is_file():
            raise ConfigError(f"no LoRA adapter at {adapter}", "give a folder with adapter_config.json")

        def swap() -> None:
            from peft import PeftModel

            if self.adapter is not None:
                self.model = self.model.unload()
            self.model = PeftModel.from_pretrained(self.model, adapter)
            self.model.eval()
            self.adapter, self._adapter_hash = adapter, weights_hash(adapter)

        self._on_worker(swap)

    def unload_adapter(self) -> None:
        def unload() -> None:
            if self.adapter is not None:
                self.model, self.adapter = self.model.unload(), None

        self._on_worker(unload)

    def merge_adapter(self, out: str | Path) -> Path:
        """Save the base with the adapter merged in as a plain checkpoint."""
        if self.adapter is None:
            raise ConfigError("no adapter to merge", "load one first")
        if self.precision != "fp32":
            raise ConfigError("a merged checkpoint is a master copy: merge from an fp32 model",
                              "open it with precision fp32 to merge")
        out = Path(out)

        def merge() -> None:
            self.model, self.adapter = self.model.merge_and_unload(), None
            self.model.save_pretrained(out)

        self._on_worker(merge)
        self.tokenizer.save_pretrained(out)
        return out

    # -- the protocol ------------------------------------------------------------------

    @property
    def identity(self) -> str:
        return self._base_identity + (f"+lora:{self._adapter_hash}" if self.adapter is not None else "")

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(native_n=True, logprobs=True,
                            context_length=getattr(self.model.config, "max_position_embeddings", 2048),
                            max_parallel=self.batch, default_top_k=40)

    async def describe(self) -> dict:
        return {"backend": "hf", "path": str(self.path), "adapter": str(self.adapter) if self.adapter else None,
                "parameters": sum(p.numel() for p in self.model.parameters()), "batch": self.batch}

    def tokenize_chat(self, messages: Seq[Message]) -> list[int]:
        messages = check_messages(messages)
        open_end = continues(messages)  # a final assistant message is continued
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=not open_end,
                                                  continue_final_message=open_end, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    async def generate(self, messages: Seq[Message], params: SamplingParams, first_index: int = 0) -> list[Completion]:
        prompt = self.tokenize_chat(messages)
        limit = self.capabilities.context_length
        if len(prompt) + params.max_tokens > limit:
            raise ConfigError(f"the prompt has {len(prompt)} tokens and may grow by {params.max_tokens}; "
                              f"the model holds {limit}", "shorten the prompt or lower max_tokens")
        request = _Request(prompt, params, first_index, concurrent.futures.Future(), pending=params.n)
        self._enqueue(self._waiting, request)
        completions = await asyncio.wrap_future(request.future)
        count_sent(completions)
        return completions

    # -- the worker --------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._closed and not self._waiting and not self._jobs:
                    self._cv.wait()
                if self._closed:
                    for request in self._waiting:
                        request.future.set_exception(SelfcorrectError("the hf model was closed"))
                    for _, future in self._jobs:
                        future.set_exception(SelfcorrectError("the hf model was closed"))
                    return
                job = self._jobs.popleft() if self._jobs else None
                rows = self._take() if job is None else []
            if job is not None:
                work, future = job
                try:
                    future.set_result(work())
                except BaseException as e:  # the caller gets it; the worker goes on
                    future.set_exception(e)
                continue
            try:
                self._decode(rows)
            except Exception as e:  # a failed batch fails its requests, not the engine
                for request in {id(r.request): r.request for r in rows}.values():
                    if not request.future.done():
                        request.future.set_exception(e)

    def _take(self) -> list[_Row]:
        """Up to `batch` sequences from the waiting requests, in order; a request larger than
        the batch leaves its remaining samples at the head of the queue."""
        rows: list[_Row] = []
        while self._waiting and len(rows) < self.batch:
            request = self._waiting[0]
            take = min(request.pending, self.batch - len(rows))
            start = request.first_index + request.params.n - request.pending
            rows += [_Row(request.prompt, request.params, start + k, request) for k in range(take)]
            request.pending -= take
            if request.pending == 0:
                self._waiting.popleft()
        return rows

    def _decode(self, rows: list[_Row]) -> None:
        torch = self._torch
        started = time.perf_counter()
        width = max(len(r.prompt) for r in rows)
        ids = torch.full((len(rows), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, width - len(row.prompt):] = torch.tensor(row.prompt)
            mask[i, width - len(row.prompt):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        generators = [torch.Generator().manual_seed(sample_seed(r.params.seed, r.index)) for r in rows]
        with torch.no_grad():
            # logits of the last position only: the prompt's others are never read
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                             logits_to_keep=1)
            past, logits = _cache_of(out), out.logits[:, -1, :].float()
            following = positions[:, -1:] + 1
            for _ in range(max(r.params.max_tokens for r in rows)):
                live = [i for i, row in enumerate(rows) if row.finish is None]
                step = torch.full((len(rows),), self._pad, dtype=torch.long)
                step[live] = self._sample(logits, live, rows, generators)
                logprobs = (torch.log_softmax(logits, dim=-1) if any(rows[i].params.logprobs for i in live) else None)
                for i in live:
                    token = int(step[i])
                    self._accept(rows[i], token, float(logprobs[i, token]) if logprobs is not None else None)
                if all(r.finish is not None for r in rows):
                    break
                mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=torch.long)], dim=1)
                out = self.model(input_ids=step[:, None], attention_mask=mask, position_ids=following,
                                 use_cache=True, **{self._cache_argument: past})
                past, logits = _cache_of(out), out.logits[:, -1, :].float()
                following = following + 1
        seconds = (time.perf_counter() - started) / len(rows)
        for row in rows:
            self._finish(row, seconds)

    def _sample(self, logits, live: list[int], rows: list[_Row], generators) -> object:
        """The next token of each live row, rows with the same sampling settings together:
        top-k, then top-p, then the temperature, then a draw by inverse CDF from one uniform
        number of the row's own generator (so a row's draw does not depend on its batch)."""
        torch = self._torch
        tokens = torch.empty(len(live), dtype=torch.long)
        groups: dict[tuple, list[int]] = {}
        for position, i in enumerate(live):
            p = rows[i].params
            groups.setdefault((p.greedy, p.top_k, p.top_p, p.temperature), []).append(position)
        for (greedy, top_k, top_p, temperature), positions in groups.items():
            chosen = logits[[live[k] for k in positions]]
            if greedy:
                tokens[positions] = torch.argmax(chosen, dim=-1)
                continue
            values, order = torch.topk(chosen, top_k or chosen.shape[-1])
            if top_p < 1.0:
                probs = torch.softmax(values, dim=-1)
                values = values.masked_fill((probs.cumsum(-1) - probs) >= top_p, float("-inf"))
            cdf = torch.softmax(values / temperature, dim=-1).cumsum(-1)
            draws = torch.cat([torch.rand(1, generator=generators[live[k]]) for k in positions])[:, None]
            picked = torch.searchsorted(cdf, draws).clamp(max=cdf.shape[-1] - 1)
            tokens[positions] = order.gather(-1, picked).squeeze(-1)
        return tokens

    def _accept(self, row: _Row, token: int, logprob: float | None) -> None:
        if token in self._stops:
            row.finish, row.model_ended = "stop", True
            return
        row.tokens.append(token)
        if row.params.logprobs:
            row.logprobs.append(logprob)
        if row.params.stop:  # decoded as it grows only when a stop string is to be found
            row.text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
            for stop in row.params.stop:
                cut = row.text.find(stop)
                if cut >= 0:
                    row.text, row.finish = row.text[:cut], "stop"
                    return
        if len(row.tokens) >= row.params.max_tokens:
            row.finish = "length"

    def _finish(self, row: _Row, seconds: float) -> None:
        request = row.request
        if not row.params.stop:
            row.text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        request.results[row.index] = Completion(
            text=row.text, finish_reason=row.finish or "length", model_ended=row.model_ended, prompt_tokens=len(row.prompt),
            completion_tokens=len(row.tokens), seconds=seconds, index=row.index,
            logprobs=tuple(row.logprobs) if row.params.logprobs else None, token_ids=tuple(row.tokens))
        if len(request.results) == request.params.n and not request.future.done():
            request.future.set_result([request.results[k] for k in sorted(request.results)])

    def _eos_ids(self) -> set[int]:
        ids = set()
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        if configured is not None:
            ids |= set(configured if isinstance(configured, list) else [configured])
        if self.tokenizer.eos_token_id is not None:
            ids.add(self.tokenizer.eos_token_id)
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(end, int) and end != self.tokenizer.unk_token_id:
            ids.add(end)
        if not ids:
            raise ConfigError(f"{self.path} names no end-of-sequence token", "set eos_token_id in its config")
        return ids


def _cache_of(out):
    return getattr(out, "cache", None) or out.past_key_values
