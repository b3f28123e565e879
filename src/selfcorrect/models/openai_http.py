"""A backend for any OpenAI-compatible chat server: vLLM, SGLang, llama.cpp's server,
Ollama, OpenAI itself.

- Async, with at most `concurrency` requests in flight per replica.
- Several base URLs (replicas of one model) share the load: each request goes to the
  healthy replica with the fewest requests in flight; a replica that failed to answer
  is passed over for a while.
- Retries with exponential backoff and full jitter (tenacity) on 429, 5xx, connection
  errors, timeouts and malformed replies; a Retry-After header is honoured.
- Native `n` is used where the server honours it; a server that returns fewer choices
  than asked is remembered, and the rest come from separate requests, each seeded with
  its own sample index.
- The API key is read from the environment variable named by `api_key_env` and sent as
  a bearer token; it never appears in logs, errors or repr.
- A draw means what it means on the embedded engine: temperature, top_p and top_k alone.
  Servers' own extra samplers are turned off in every request (llama.cpp's server applies
  a repeat penalty of 1.1 and min_p 0.05 unless told otherwise: the penalty keeps a model
  from copying a question's numbers into its program). A server that rejects these fields
  (OpenAI itself) is sent requests without them, and the log says so once.
- Where a server ignores parts of a request, selfcorrect notices and says so once: `n`
  (the rest are drawn one by one), stop strings (replies are cut at the first one here),
  `max_tokens` (sent also as `max_completion_tokens`), `seed` (found by `probe`: two
  requests with one seed that draw different text).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import httpx
import tenacity

from selfcorrect.errors import BackendUnavailableError, ConfigError, ModelRequestError
from selfcorrect.models.base import (
    Capabilities,
    Completion,
    Message,
    SamplingParams,
    check_messages,
    continues,
    count_sent,
    sample_seed,
    sending,
)

log = logging.getLogger(__name__)

MAX_RETRY_AFTER = 60.0
# Sampler fields outside OpenAI's own API, set so that servers sample as the embedded engine
# does: llama.cpp's names, then vLLM's and SGLang's (each server ignores the others' names)
PLAIN_SAMPLING = {"min_p": 0.0, "repeat_penalty": 1.0, "repetition_penalty": 1.0}
EXTENSIONS = ("top_k", *PLAIN_SAMPLING)
REPLICA_COOLDOWN = 5.0  # seconds a replica that failed to answer is passed over


class _Retryable(Exception):
    """A failure that another attempt may not meet."""

    def __init__(self, reason: str, *, unreachable: bool = False, retry_after: float | None = None):
        super().__init__(reason)
        self.unreachable = unreachable
        self.retry_after = retry_after


@dataclass
class _Replica:
    url: str
    in_flight: int = 0
    passed_over_until: float = 0.0
    semaphore: asyncio.Semaphore | None = None


class OpenAICompatibleModel:
    """model: the name the server knows the model by. base_urls: one or more replicas,
    each ending in /v1 (e.g. http://127.0.0.1:8000/v1). context_length: 0 when unknown."""

    def __init__(
        self,
        model: str,
        base_urls: str | Sequence[str],
        *,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout: float = 120.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 20.0,
        context_length: int = 0,
        identity: str | None = None,
        probe: bool = False,
    ):
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not model:
            raise ConfigError("no model name for the OpenAI-compatible backend", "use --model openai:NAME")
        if not urls:
            raise ConfigError(
                f"--model openai:{model} needs a server address",
                "pass --base-url http://HOST:PORT/v1 (or set base_url in selfcorrect.toml)",
            )
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(
                    f"base URL {url!r} is not an http(s) address",
                    "write it like http://127.0.0.1:8000/v1",
                )
        if concurrency < 1 or retries < 0 or timeout <= 0:
            raise ConfigError(
                f"invalid HTTP settings (concurrency={concurrency}, retries={retries}, "
                f"timeout={timeout})",
                "use concurrency >= 1, retries >= 0 and timeout > 0",
            )
        self.model = model
        self.replicas = [_Replica(url.rstrip("/")) for url in urls]
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._context_length = context_length
        # Draws made before plain sampling (with a server's own penalties) must not serve these
        self._identity = identity or f"openai:{model}+plain-sampling"
        self._native_n: bool | None = None  # unknown until a server answers an n > 1 request
        self._extensions = True  # until a server rejects the fields outside OpenAI's API
        self._told: set[str] = set()  # what the log has said once
        self._probe_pending = probe
        self._probing: asyncio.Task | None = None
        self._turns = itertools.count()  # breaks ties between equally loaded replicas
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        urls = ", ".join(r.url for r in self.replicas)
        return f"OpenAICompatibleModel(model={self.model!r}, base_urls=[{urls}])"

    @property
    def identity(self) -> str:
        return self._identity

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(
            native_n=self._native_n is not False,
            logprobs=True,
            context_length=self._context_length,
            max_parallel=self.concurrency * len(self.replicas),
            default_top_k=40,  # as the local engines: the same draws everywhere
        )

    async def generate(
        self, messages: Sequence[Message], params: SamplingParams, first_index: int = 0
    ) -> list[Completion]:
        messages = check_messages(messages)
        await self._probed()
        drawn: list[Completion] = []
        if params.n > 1 and self._native_n is not False:
            drawn = await self._request(messages, params, params.n, first_index)
            honoured = len(drawn) >= params.n
            if not honoured and self._native_n is None:
                log.info("%s returned %d of %d choices: drawing samples one by one",
                         self.replicas[0].url, len(drawn), params.n)
            self._native_n = honoured
            drawn = drawn[: params.n]
        rest = range(first_index + len(drawn), first_index + params.n)
        singles = await gather_all(*(self._request(messages, params, 1, i) for i in rest))
        drawn += [choices[0] for choices in singles]
        return [replace(c, index=first_index + k) for k, c in enumerate(drawn)]

    async def describe(self) -> dict:
        """The servers, and the model names the first one serves (so: whether it answers)."""
        data = await self._send("GET", "/models", None)
        return {"backend": "openai", "model": self.model, "servers": [r.url for r in self.replicas],
                "serves": [m.get("id", "") for m in data.get("data", [])]}

    async def aclose(self) -> None:
        if self._client is not None and self._client_loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None

    # -- one request, with retries ------------------------------------------------------

    async def _request(
        self, messages: list[Message], params: SamplingParams, n: int, first_index: int
    ) -> list[Completion]:
        body: dict = {
            "model": self.model,
            "messages": messages,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
            "max_completion_tokens": params.max_tokens,  # OpenAI's newer name; some servers read only it
            "seed": sample_seed(params.seed, first_index),
            "n": n,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        if params.logprobs:
            body["logprobs"] = True
        if continues(messages):
            # vLLM and SGLang continue the final assistant message when told to; llama.cpp's
            # server does it by itself and ignores the fields
            body["continue_final_message"], body["add_generation_prompt"] = True, False
        if self._extensions:
            try:
                return await self._chat({**body, **self._sampling(params)}, params)
            except ModelRequestError as e:
                rejected = [field for field in EXTENSIONS if field in e.what]
                if not rejected:
                    raise
                self._extensions = False
                self._tell("extensions", "%s rejected %s: sending OpenAI's own sampling fields only, so "
                           "draws follow this server's defaults beyond temperature, top_p and seed",
                           self.replicas[0].url, ", ".join(rejected))
        return await self._chat(body, params)

    @staticmethod
    def _sampling(params: SamplingParams) -> dict:
        return {**({"top_k": params.top_k} if params.top_k else {}), **PLAIN_SAMPLING}

    async def _chat(self, body: dict, params: SamplingParams) -> list[Completion]:
        completions = await self._send("POST", "/chat/completions", body, _completions)
        count_sent(completions)
        if params.stop and any(stop in c.text for c in completions for stop in params.stop):
            self._tell("stop", "%s returned text past a stop string: replies are cut at the first one here",
                       self.replicas[0].url)
            completions = [cut_at_stop(c, params.stop) for c in completions]
        if len(completions) == 1 and completions[0].completion_tokens > params.max_tokens:
            self._tell("max_tokens", "%s does not honour max_tokens (a reply ran to %d tokens, past %d): token "
                       "counts are as the server reports them", self.replicas[0].url,
                       completions[0].completion_tokens, params.max_tokens)
        return completions

    def _tell(self, what: str, message: str, *args) -> None:
        """Log a server's shortfall once per backend."""
        if what not in self._told:
            self._told.add(what)
            log.warning(message, *args)

    # -- what the server honours ---------------------------------------------------------

    async def _probed(self) -> None:
        """Run the probe once, before the first request (callers that come meanwhile wait)."""
        if self._probe_pending:
            self._probe_pending = False
            self._probing = asyncio.ensure_future(self.probe())
        probing = self._probing
        if probing is not None:
            try:
                await asyncio.shield(probing)
            finally:
                if probing.done():
                    self._probing = None  # a finished task belongs to its event loop

    async def probe(self) -> dict:
        """Ask the server three small things, outside any strategy's cost: does one seed draw
        one text, is a reply cut at max_tokens, and is it Ollama (whose OpenAI endpoint takes
        none of top_k, min_p or repeat penalties). Says once what it ignores and returns the
        findings. Backends made by `--model openai:NAME` probe before their first request."""
        with sending():  # not a strategy's cost
            words = [{"role": "user", "content": "Write ten random words."}]
            seeded = SamplingParams(temperature=1.0, max_tokens=16, seed=7)
            first, second = await gather_all(self._request(words, seeded, 1, 0), self._request(words, seeded, 1, 0))
            count = [{"role": "user", "content": "Count from 1 to 30, separated by commas."}]
            capped = await self._request(count, SamplingParams(temperature=0.0, max_tokens=4), 1, 0)
            models = await self._send("GET", "/models", None)
        found = {"seed": first[0].text == second[0].text,
                 "max_tokens": capped[0].completion_tokens <= 4,  # an overrun is told by _chat
                 "ollama": any(m.get("owned_by") in ("library", "ollama") for m in models.get("data", []))}
        if not found["seed"]:
            self._tell("seed", "%s does not honour seed (one seed drew two texts): runs are reproducible "
                       "through the sample cache only", self.replicas[0].url)
        if found["ollama"]:
            self._tell("ollama", "%s is Ollama: its OpenAI endpoint ignores top_k, min_p and repeat "
                       "penalties; for draws like the embedded engine's, set PARAMETER repeat_penalty 1 and "
                       "PARAMETER top_k 40 in the model's Modelfile", self.replicas[0].url)
        return found

    async def _send(self, method: str, path: str, body: dict | None, decode=None):
        """Send with retries; `decode(data, seconds)` runs inside each attempt, so that a
        reply that cannot be decoded is retried like any other failure."""
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(_Retryable),
            before_sleep=lambda state: log.warning(
                "model server attempt %d failed (%s); retrying in %.1fs",
                state.attempt_number, state.outcome.exception(), state.next_action.sleep,
            ),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    started = time.perf_counter()
                    data = await self._send_once(method, path, body)
                    return decode(data, time.perf_counter() - started) if decode else data
        except _Retryable as e:
            attempts = self.retries + 1
            if e.unreachable:
                raise BackendUnavailableError(
                    f"cannot reach the model server: {e} ({attempts} attempts)",
                    "start the server, or correct --base-url",
                ) from None
            raise BackendUnavailableError(
                f"the model server kept failing: {e} ({attempts} attempts)",
                "check the server's log (it may be crashing or overloaded), lower concurrency, "
                "or raise retries",
            ) from None
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _wait(self, state: tenacity.RetryCallState) -> float:
        """Full jitter on an exponential ceiling; a Retry-After header sets a floor."""
        ceiling = min(self.max_backoff, self.backoff * 2 ** (state.attempt_number - 1))
        delay = random.uniform(0, ceiling)
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _Retryable) and error.retry_after is not None:
            delay = max(delay, min(error.retry_after, MAX_RETRY_AFTER))
        return delay

    def _pick(self) -> _Replica:
        now = time.monotonic()
        healthy = [r for r in self.replicas if r.passed_over_until <= now] or self.replicas
        turn = next(self._turns) % len(healthy)
        order = healthy[turn:] + healthy[:turn]  # rotate, so that ties take turns
        return min(order, key=lambda r: r.in_flight)

    def _http(self) -> httpx.AsyncClient:
        """One client per event loop (asyncio.run in a loop makes a new loop each time)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            size = self.concurrency * len(self.replicas)
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
            )
            self._client_loop = loop
            for replica in self.replicas:
                replica.semaphore = asyncio.Semaphore(self.concurrency)
        return self._client

    async def _send_once(self, method: str, path: str, body: dict | None) -> dict:
        client = self._http()
        replica = self._pick()
        headers = {}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        replica.in_flight += 1
        try:
            async with replica.semaphore:
                response = await client.request(method, replica.url + path, json=body, headers=headers)
        except httpx.TimeoutException:
            replica.passed_over_until = time.monotonic() + REPLICA_COOLDOWN
            raise _Retryable(f"{replica.url} did not answer within {self.timeout:g}s") from None
        except httpx.ConnectError as e:
            replica.passed_over_until = time.monotonic() + REPLICA_COOLDOWN
            raise _Retryable(f"{replica.url}: {e or 'connection refused'}", unreachable=True) from None
        except httpx.TransportError as e:  # it accepted the connection, then dropped it
            replica.passed_over_until = time.monotonic() + REPLICA_COOLDOWN
            raise _Retryable(
                f"{replica.url} accepted the connection but closed it without a reply "
                f"({type(e).__name__}{': ' + str(e) if str(e) else ''})") from None
        finally:
            replica.in_flight -= 1
        return _parse(response, replica.url, self.api_key_env)


async def gather_all(*awaitables):
    """Like asyncio.gather, but every awaitable is finished (its exception retrieved) before
    the first exception is raised: no "Task exception was never retrieved" after a failure."""
    results = await asyncio.gather(*awaitables, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def _parse(response: httpx.Response, url: str, api_key_env: str) -> dict:
    status = response.status_code
    if status == 429 or status >= 500:
        raise _Retryable(
            f"{url} answered {status} {_snippet(response.text)}",
            retry_after=_retry_after(response.headers.get("retry-after")),
        )
    if status >= 400:
        fix = {
            401: f"check the API key in ${api_key_env}",
            403: f"check the API key in ${api_key_env} and its permissions",
            404: "check the model name, and that the base URL ends in /v1",
        }.get(status, "check the request parameters against what this server supports")
        raise ModelRequestError(f"{url} rejected the request: {status} {_snippet(response.text)}", fix)
    try:
        data = response.json()
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except ValueError:
        raise _Retryable(f"{url} sent a malformed reply: {_snippet(response.text)}") from None
    return data


def _completions(data: dict, seconds: float) -> list[Completion]:
    try:
        choices = data["choices"]
        texts = [choice["message"]["content"] or "" for choice in choices]
        if not texts:
            raise ValueError("no choices")
    except (KeyError, TypeError, ValueError):
        raise _Retryable(f"the server sent a reply without choices: {_snippet(str(data))}") from None
    usage = data.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    total = int(usage.get("completion_tokens") or 0)
    logprobs = [_logprobs(choice) for choice in choices]
    chars = sum(len(t) for t in texts) or 1
    completions = []
    for choice, text, lp in zip(choices, texts, logprobs):
        if lp is not None:
            tokens = len(lp)
        elif len(choices) == 1:
            tokens = total
        else:  # usage counts all choices together: share it out by length
            tokens = round(total * len(text) / chars)
        completions.append(
            Completion(
                text=text,
                finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
                model_ended=model_ended(choice),
                prompt_tokens=prompt_tokens,
                completion_tokens=tokens,
                seconds=seconds / len(choices),
                logprobs=lp,
            )
        )
    return completions


def cut_at_stop(completion: Completion, stops: Sequence[str]) -> Completion:
    """A reply cut where its first stop string begins, as a server that honours stops cuts it."""
    ends = [i for stop in stops if (i := completion.text.find(stop)) >= 0]
    if not ends:
        return completion
    return replace(completion, text=completion.text[:min(ends)], finish_reason="stop", model_ended=False,
                   logprobs=None)


def model_ended(choice: dict) -> bool | None:
    """Whether the model ended this choice itself, where the server says: vLLM's
    `stop_reason` and SGLang's `matched_stop` name the stop string that matched (None, or
    a stop token's id, when the model ended with its own end token). Other servers: None."""
    if choice.get("finish_reason") == "length":
        return False
    for field in ("stop_reason", "matched_stop"):
        if field in choice:
            return not isinstance(choice[field], str)
    return None


def _logprobs(choice: dict) -> tuple[float, ...] | None:
    content = (choice.get("logprobs") or {}).get("content")
    if not content:
        return None
    return tuple(float(token["logprob"]) for token in content)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff


def _snippet(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
