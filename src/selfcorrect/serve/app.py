"""The FastAPI application: any OpenAI client points at it and gets the selected answer of a
self-correction strategy, every internal call counted in `usage`.

    POST /v1/chat/completions                 a strategy run per request (streamed with stream=true)
    POST /v1/feedback                         a client's verdict on a completion: lessons and counters
    GET  /v1/selfcorrect/completions/{id}     a completion's trajectory
    GET  /v1/models, /health, /metrics

Requests never share settings: each gets its own strategy object, sampling parameters and
budget. Bad requests get OpenAI's error format and never touch other requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from pydantic import ValidationError

from selfcorrect.config import Settings
from selfcorrect.db import connect, transaction
from selfcorrect.errors import BackendUnavailableError, ConfigError, ModelRequestError, SelfcorrectError
from selfcorrect.memory import GuidelineBook, Lesson, LessonBank, Recall, template_lesson
from selfcorrect.memory.examples import ExampleBank
from selfcorrect.memory.arms import SHOWN
from selfcorrect.memory.gate import Gate
from selfcorrect.memory.embed import check_retriever, load_embedder
from selfcorrect.memory.learn import lessons_from, verdict
from selfcorrect.models.base import Model, SamplingParams
from selfcorrect.resources import Resources
from selfcorrect.serve.improver import ImproveSchedule, Improver
from selfcorrect.serve.keys import KeyRing
from selfcorrect.serve.metrics import Metrics
from selfcorrect.serve.protocol import ChatRequest, FeedbackRequest, chunk, completion, error
from selfcorrect.serve.memory import learn_from_feedback, shadow_verdict
from selfcorrect.serve.records import Completions
from selfcorrect.serve.run import Answer, answer, view_of
from selfcorrect.serve.swap import RecipeSwaps
from selfcorrect.store import Store
from selfcorrect.strategies import Strategy, parse_strategy
from selfcorrect.tasks.kinds import KINDS
from selfcorrect.version import code_version

log = logging.getLogger(__name__)
DEFAULT_TEMPERATURE = 0.3  # as `selfcorrect eval`: small models fall apart when sampled hotter


@dataclass
class ServeConfig:
    strategy: str = "single"  # for requests that name none
    temperature: float = DEFAULT_TEMPERATURE  # for requests that give none (a recipe's, as it was measured)
    memory: str | None = None  # the error memory's namespace; None: no memory
    memory_show: str = "gated"  # memory/gate.py: the admitted arm (none until then), or one arm always
    memory_explore: float = 0.2  # the share of requests that try an arm on trial in the shadow
    memory_k: int = 3
    retriever: str = "bm25"  # or "embedding", "embedding:PATH" (memory/embed.py)
    critic: str | None = None
    keys: dict[str, str] | None = None  # name -> SHA-256 of the key; None: no authentication
    rate_limit: float = 600.0  # requests per minute per key
    max_body: int = 1_000_000  # bytes
    body_timeout: float = 10.0  # seconds to receive a request body
    timeout: float = 600.0  # seconds a strategy may run before the best answer so far is returned
    cors: list[str] = field(default_factory=list)  # allowed origins; none: CORS off
    distil_every: int = 20  # lessons from feedback between distillations of the guidelines
    aliases: list[str] = field(default_factory=list)  # more model names requests may use (beside `default`)
    recipe: str | None = None  # a recipe folder watched: a new recipe.json is loaded and swapped in
    recipe_strategy: bool = False  # the default strategy and temperature are the recipe's (and follow a swap)
    watch_seconds: float = 2.0
    canary: float = 0.0  # serve/canary.py: the share of requests a new recipe answers in the shadow; 0: swap at once
    canary_margin: float = 0.02  # promoted when not worse than the incumbent by more than this (accuracy)
    canary_flip_cap: float = 0.15  # ... and at most this share of its trials turned right into wrong
    improve: ImproveSchedule | None = None  # serve/improver.py: improve on the traffic in the background
    open_metrics: bool = False  # /metrics without a key when keys are on (a scraper inside the network)


class _BodyLimit:
    """Refuse bodies over `max_body` bytes and bodies that arrive too slowly, before any
    route reads them (ASGI middleware: it sees every receive)."""

    def __init__(self, app, max_body: int, timeout: float):
        self.app, self.max_body, self.timeout = app, max_body, timeout

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            response = error(413, f"the request body is over {self.max_body} bytes", code="request_too_large")
            return await response(scope, receive, send)
        state = {"received": 0, "complete": False}

        async def limited():
            if state["complete"]:  # the body is in: what follows is waiting for a disconnect
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.timeout)
            except TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {self.timeout:g} s") from None
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                state["complete"] = not message.get("more_body", False)
                if state["received"] > self.max_body:
                    raise HTTPException(413, f"the request body is over {self.max_body} bytes")
            return message

        await self.app(scope, limited, send)


class Server:
    """What the application holds between requests."""

    def __init__(self, settings: Settings, config: ServeConfig, engine: Model | None = None,
                 critic_engine: Model | None = None):
        self.settings, self.config = settings, config
        self._given = (engine, critic_engine)
        self.metrics = Metrics()
        self.keys = KeyRing(config.keys, config.rate_limit) if config.keys else None
        self.started = time.time()
        self.feedback_lessons = 0
        self.swaps = RecipeSwaps(self)
        parse_strategy(config.strategy, settings.prompts)  # a bad default fails at start, not at a request
        check_retriever(config.retriever)

    async def open(self) -> None:
        self.store = Store(self.settings.store)
        needs = {"sandbox"} | ({"critic"} if self.config.critic else set())
        engine, critic_engine = self._given
        self.resources = Resources(self.settings, self.store, needs=needs, critic=self.config.critic,
                                   engine=engine, critic_engine=critic_engine)
        await self.resources.__aenter__()
        self.model_name = self.resources.model.identity
        self.code_version = code_version()  # asks git: once, not per request
        # one connection for the completions and the memory: a feedback is one transaction over them
        self.db = connect(self.settings.store, "")
        self.completions = Completions(self.settings.store, db=self.db)
        self.bank = self.guidelines = self.examples = self.gate = None
        if self.config.memory:
            self.bank = LessonBank(self.settings.store, embedder=load_embedder(self.config.retriever), db=self.db)
            self.guidelines = GuidelineBook(self.bank)
            self.examples = ExampleBank(self.settings.store, db=self.db)
            self.gate = Gate(self.settings.store, explore=self.config.memory_explore, db=self.db)
        self.improver = None
        if self.config.improve is not None:
            self.config.recipe = str(self.config.improve.serving)  # where each cycle's recipe is offered
        if self.config.recipe:
            self.swaps.start()
        if self.config.improve is not None:
            self.improver = Improver(self, self.config.improve)
            self.improver.start()

    async def close(self) -> None:
        if self.improver is not None:
            await self.improver.stop()
        await self.swaps.stop()
        await self.resources.__aexit__(None, None, None)
        self.completions.close()
        if self.bank is not None:
            for closing in (self.bank, self.examples, self.gate):
                closing.close()
        self.db.close()
        self.store.close()

    # -- a request -------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        """The model names requests may use: the model's identity, its spec (`embedded`,
        `recipe:DIR`...), `default` and the aliases the server was given."""
        spec = [self.settings.model] if self._given[0] is None else []  # an engine handed in has no spec
        return list(dict.fromkeys([self.model_name, *spec, "default", *self.config.aliases]))

    def requested(self, request: ChatRequest) -> str | None:
        """The strategy a model name's prefix asks for (`self-consistency:n=5/NAME`), or None;
        OpenAI's 404 `model_not_found` for a name that is none of `names`, a 400 with "did you
        mean" for a prefix that does not parse."""
        names = self.names
        if request.model in names:
            return None
        prefix, slash, rest = request.model.partition("/")
        if not slash or rest not in names:
            raise RequestError(f"The model `{request.model}` does not exist: this server serves "
                               f"{', '.join(repr(n) for n in names)}", "model",
                               "name one of them, or prefix one with a strategy (single/default)", status=404,
                               code="model_not_found")
        try:
            parse_strategy(prefix)
        except SelfcorrectError as e:
            raise RequestError(f"the strategy {prefix!r} in the model name does not parse: {e}", "model") from None
        return prefix

    def strategy_for(self, request: ChatRequest) -> Strategy:
        """The request's strategy: its `strategy` field, else the model name's prefix
        (`self-consistency:n=5/MODEL`), else the server's default; memory on when the server
        has a memory, unless the request turns it off."""
        prefix = self.requested(request)
        spec = request.strategy or prefix or self.config.strategy
        use_memory = request.memory if request.memory is not None else bool(self.config.memory)
        if use_memory and not self.config.memory:
            raise RequestError("this server has no error memory", "memory", "start it with --memory NAMESPACE")
        strategy = parse_strategy(_with_memory(spec, use_memory), self.settings.prompts)
        if strategy.oracle:
            raise RequestError(f"{strategy.name} needs the gold answer, which a server does not have", "strategy")
        if request.checker and request.kind == "code":
            raise RequestError("a code request is checked by its tests", "checker", "send them as `tests`")
        if request.tests and request.kind != "code":
            raise RequestError(f"tests run code, and a {request.kind} request's answer is not code", "tests",
                               "send kind=code, or check answers with a `checker`")
        if request.kind not in strategy.kinds:
            raise RequestError(f"{strategy.name} does not serve {request.kind} requests (it suits "
                               f"{', '.join(sorted(strategy.kinds))})", "kind")
        if "critic" in strategy.needs and self.resources.critic is None:
            raise RequestError(f"{strategy.name} needs a critic model", "strategy", "start the server with --critic")
        return strategy

    def params(self, request: ChatRequest) -> SamplingParams:
        caps = self.resources.model.capabilities
        return SamplingParams(
            temperature=request.temperature if request.temperature is not None else self.config.temperature,
            top_p=request.top_p if request.top_p is not None else 1.0, top_k=caps.default_top_k,
            max_tokens=request.max_completion_tokens or request.max_tokens or KINDS[request.kind].max_tokens,
            # a fresh seed per request unless the client fixes one: two asks are two draws
            seed=request.seed if request.seed is not None else random.randrange(2**31))

    async def run(self, request: ChatRequest, strategy: Strategy, completion_id: str, key: str | None,
                  record=None) -> tuple[Answer, dict]:
        async with self.swaps.holding() as model:  # it finishes on this model, whatever is swapped in meanwhile
            return await self._run(request, strategy, completion_id, key, record, model)

    async def _run(self, request: ChatRequest, strategy: Strategy, completion_id: str, key: str | None,
                   record, model: Model) -> tuple[Answer, dict]:
        view = view_of(request, completion_id)
        budget = request.budget
        show = shadow = None
        if strategy.memory:
            gated = self.config.memory_show == "gated"
            show = self.gate.served(self.config.memory) if gated else self.config.memory_show
            shadow = self.gate.explore(self.config.memory, completion_id, show) if gated else None

        def on_event(event: dict) -> None:
            if event["type"] == "messages":
                self.store.put_messages(event["messages"])
            elif record is not None:
                record(event)

        def run(arm: str | None, strategy: Strategy, record=None, model: Model = model):
            recall = (Recall(self.bank, self.config.memory, k=self.config.memory_k, guidelines=self.guidelines,
                             exclude_same_input=False, show=arm, examples=self.examples)
                      if arm not in (None, "none") else None)
            return answer(strategy, view, model, params,
                          budget=(budget.max_tokens, budget.max_calls) if budget else (None, None),
                          timeout=self.config.timeout, sandbox=self.resources.sandbox,
                          critic=self.resources.critic, recall=recall, record=record,
                          precision=self.settings.precision)

        started, params = time.perf_counter(), self.params(request)
        candidate = self.swaps.canary.shadowing(completion_id) if self.swaps.canary else None
        jobs = [run(show, strategy, on_event)]
        if shadow is not None:  # the trial arm beside the served one, with the same draws' seed; its answer is kept, not sent
            jobs.append(run(shadow, parse_strategy(strategy.spec, self.settings.prompts)))
        if candidate is not None:  # a candidate checkpoint on trial answers it too, in the shadow
            jobs.append(self.swaps.canary.shadow(candidate, run, show, strategy))
        result, *others = await asyncio.gather(*jobs)
        tried = others[0] if shadow is not None else None
        canary = await self.swaps.canary.trial(candidate, others[-1], view, request.kind, result) if candidate else None
        if strategy.memory:  # counted once answered: a request that failed served nothing
            self.gate.count(self.config.memory, show, explored=False)
            if shadow is not None:
                self.gate.count(self.config.memory, shadow, explored=True)
        trajectory = result.trajectory
        if self.bank is not None and strategy.memory:
            for lesson in await lessons_from(trajectory, view.question, self.config.memory,
                                             {"completion": completion_id, "api_key": key}):
                self.bank.add(lesson)  # what the request's own tests or checker showed
        costs = trajectory.cost.values()
        usage = {"prompt_tokens": sum(c.prompt_tokens for c in costs),
                 "completion_tokens": sum(c.completion_tokens for c in costs)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        calls = sum(c.calls for c in costs)
        rounds = max((a.round for a in trajectory.attempts), default=0)
        extension = {"strategy": strategy.spec, "checkpoint": model.identity, "stop": trajectory.stop, "internal_calls": calls, "rounds": rounds,
                     "attempts": len(trajectory.attempts), "memory": trajectory.memory, "memory_arm": show,
                     "memory_shadow": shadow}
        if request.return_trajectory:
            extension["trajectory"] = trajectory.model_dump()
        self.completions.put(completion_id, key, strategy.spec, {
            "model": request.model, "identity": model.identity,  # what answered: its weights' content hash
            "kind": request.kind, "question": view.question, "messages": list(view.messages),
            # what the request carried to check an answer by: `--task served:STORE` scores by it
            "tests": list(request.tests), "checker": request.checker, "numeric": request.numeric,
            "namespace": self.config.memory,
            "finish_reason": result.finish_reason, "usage": usage, "trajectory": trajectory.model_dump(),
            "answer": result.final.answer if result.final is not None else None,
            "text": result.final.text if result.final is not None else None, "memory_arm": show,
            "shadow": None if shadow is None else {
                "arm": shadow, "answer": tried.final.answer if tried.final is not None else None,
                "text": tried.final.text if tried.final is not None else None,
                "tokens": sum(c.prompt_tokens + c.completion_tokens for c in tried.trajectory.cost.values())},
            "canary": canary, "code_version": self.code_version})
        m = self.metrics
        m.latency.labels(strategy.name).observe(time.perf_counter() - started)
        m.tokens.labels("prompt").inc(usage["prompt_tokens"])
        m.tokens.labels("completion").inc(usage["completion_tokens"])
        m.calls.inc(calls)
        m.rounds.observe(rounds)
        for revision in trajectory.revisions:
            before, after = (verdict(trajectory.attempts[i], False) for i in (revision.before, revision.after))
            if before is not None and after is not None and before.passed != after.passed:
                m.flips.labels("wrong_to_right" if after.passed else "right_to_wrong").inc()
        if trajectory.memory and any(trajectory.memory.get(k) for k in SHOWN):
            m.memory_hits.inc()
        return result, {"usage": usage, "extension": extension}

    # -- feedback --------------------------------------------------------------------

    def feedback(self, request: FeedbackRequest, key: str | None) -> dict:
        """The lesson, the gate's pair, the worked example, the counters and the completion's
        mark, in one transaction: a crash part way leaves none of them, and the client's retry
        counts once."""
        try:
            with transaction(self.db):
                return self._feedback(request, key)
        except BaseException:
            if self.bank is not None:
                self.bank.forget_cached()  # it may hold what was rolled back
            raise

    def _feedback(self, request: FeedbackRequest, key: str | None) -> dict:
        found = self.completions.get(request.completion_id)
        if found is None or found[0] != key:
            raise RequestError(f"no completion {request.completion_id!r}", "completion_id", status=404)
        _, payload, earlier = found
        sent = request.model_dump()
        if earlier is not None:
            if earlier["correct"] != request.correct:
                raise RequestError(f"completion {request.completion_id} was already reported "
                                   f"{'right' if earlier['correct'] else 'wrong'}", "correct", status=409)
            if {k: earlier.get(k) for k in sent} == sent:
                return {"completion_id": request.completion_id, "recorded": False, "lesson": earlier.get("lesson")}
        self.metrics.feedback.labels("right" if request.correct else "wrong").inc()
        trajectory = payload["trajectory"]
        shown = trajectory.get("memory") or {}
        lesson_id, learned = None, {}
        if self.bank is not None:
            if earlier is None:  # counters move once per completion
                self.bank.record_use(shown.get("lessons", []), None, request.correct)
                self.guidelines.record_use(self.config.memory, shown.get("rules", []), None, request.correct)
            if earlier is not None and earlier.get("lesson"):
                self.bank.remove(earlier["lesson"])  # replaced by the updated one
            if not request.correct and trajectory.get("final") is not None:
                lesson_id = self._lesson(request, payload, key)
            if earlier is None and "memory_arm" in payload:
                learned = learn_from_feedback(self.gate, self.examples, self.config.memory, payload, request.correct,
                                              request.answer, {"completion": request.completion_id, "api_key": key})
        trial = payload.get("canary")
        if earlier is None and trial and not trial["recorded"] and self.swaps.canary is not None:
            right = shadow_verdict(payload["kind"], payload.get("answer"), trial["answer"], request.correct, request.answer)
            if right is not None:  # the client's verdict scores the candidate's shadow answer too
                self.swaps.canary.record(trial["identity"], right, request.correct)
        self.completions.set_feedback(request.completion_id, {**sent, "lesson": lesson_id, "at": time.time()})
        return {"completion_id": request.completion_id, "recorded": True, "lesson": lesson_id, **learned}

    def _lesson(self, request: FeedbackRequest, payload: dict, key: str | None) -> str:
        final = payload["trajectory"]["attempts"][payload["trajectory"]["final"]]
        said = request.comment or "A user reported this answer as wrong."
        if request.answer:
            said += f" The correct answer is: {request.answer}"
        lesson = Lesson(namespace=self.config.memory, input=payload["question"], wrong=final["text"], feedback=said,
                        feedback_kind="external", corrected=request.answer,
                        text=template_lesson(said, None),
                        provenance={"completion": request.completion_id, "api_key": key})
        lesson_id = self.bank.add(lesson)
        self.feedback_lessons += 1
        if self.feedback_lessons % self.config.distil_every == 0:
            self.guidelines.distil(self.config.memory)
        return lesson_id


class RequestError(Exception):
    def __init__(self, message: str, param: str | None = None, fix: str = "", status: int = 400,
                 code: str | None = None):
        super().__init__(message)
        self.message = message + (f": {fix}" if fix else "")
        self.param, self.status, self.code = param, status, code


def request_error_of(e: SelfcorrectError) -> RequestError:
    """What a strategy or an engine raised about a request, as the client's error: its message
    and fix, a 4xx (an OpenAI client retries a 5xx, and would send the same request again).
    An engine that cannot be reached is the server's trouble: 503."""
    if isinstance(e, BackendUnavailableError):
        return RequestError(str(e), None, status=503, code="engine_unavailable")
    return RequestError(str(e), "messages" if isinstance(e, (ConfigError, ModelRequestError)) else None)


def _with_memory(spec: str, on: bool) -> str:
    from selfcorrect.runner import without_memory

    spec = without_memory(spec)
    if not on:
        return spec
    return spec + ("," if ":" in spec else ":") + "memory=true"


def create_app(settings: Settings, config: ServeConfig | None = None, *, engine: Model | None = None,
               critic_engine: Model | None = None) -> FastAPI:
    config = config or ServeConfig()
    server = Server(settings, config, engine, critic_engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await server.open()
        try:
            yield
        finally:
            await server.close()

    app = FastAPI(title="selfcorrect", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = server
    app.add_middleware(_BodyLimit, max_body=config.max_body, timeout=config.body_timeout)
    if config.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=config.cors, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return error(exc.status_code, str(exc.detail), code={408: "timeout", 413: "request_too_large",
                                                              404: "not_found", 405: "method_not_allowed"}.get(exc.status_code))

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError):
        return error(exc.status, exc.message, param=exc.param, code=exc.code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("request failed")
        return error(500, f"the server failed on this request: {type(exc).__name__}", kind="server_error")

    def authorize(request: Request) -> str | None:
        """The key's name (None without authentication); 401 or 429 otherwise."""
        if server.keys is None:
            return None
        header = request.headers.get("authorization", "")
        scheme, _, presented = header.partition(" ")
        name = server.keys.identify(presented.strip()) if scheme.lower() == "bearer" else None
        if name is None:
            raise _Refused(error(401, "invalid or missing API key: send Authorization: Bearer KEY",
                                 kind="invalid_request_error", code="invalid_api_key"))
        if not server.keys.allow(name):
            raise _Refused(error(429, f"rate limit of {server.keys.rate:g} requests per minute reached",
                                 kind="rate_limit_exceeded", code="rate_limit_exceeded",
                                 headers={"Retry-After": "1"}))
        return name

    @app.exception_handler(_Refused)
    async def refused(request: Request, exc: _Refused):
        return exc.response

    async def body(request: Request, model):
        raw = await request.body()
        try:
            return model.model_validate_json(raw)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or None
            if first["type"] == "json_invalid":
                raise RequestError(f"the body is not valid JSON: {first['msg']}") from None
            raise RequestError(f"{where}: {first['msg']}" if where else first["msg"], where) from None

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        key = authorize(request)
        chat = await body(request, ChatRequest)
        try:
            strategy = server.strategy_for(chat)
        except SelfcorrectError as e:
            raise RequestError(str(e), "strategy") from None
        completion_id = "chatcmpl-sc-" + uuid.uuid4().hex
        if chat.stream:
            return StreamingResponse(_stream(server, chat, strategy, completion_id, key),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        try:
            result, extra = await server.run(chat, strategy, completion_id, key)
        except SelfcorrectError as e:
            server.metrics.requests.labels(strategy.name, "error").inc()
            raise request_error_of(e) from None
        except BaseException:
            server.metrics.requests.labels(strategy.name, "error").inc()
            raise
        server.metrics.requests.labels(strategy.name, result.finish_reason).inc()
        return JSONResponse(completion(completion_id, chat.model, result.final.text if result.final else "",
                                       result.finish_reason, extra["usage"], extra["extension"]))

    @app.post("/v1/feedback")
    async def feedback(request: Request):
        key = authorize(request)
        return server.feedback(await body(request, FeedbackRequest), key)

    @app.get("/v1/selfcorrect/completions/{completion_id}")
    async def trajectory(completion_id: str, request: Request):
        key = authorize(request)
        found = server.completions.get(completion_id)
        if found is None or found[0] != key:
            raise RequestError(f"no completion {completion_id!r}", "completion_id", status=404)
        return {"id": completion_id, **found[1], "feedback": found[2]}

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [{"id": name, "object": "model", "created": int(server.started),
                                            "owned_by": "selfcorrect"} for name in server.names]}

    @app.get("/health")
    async def health():
        recipe = server.swaps.health() if config.recipe else None
        return {"status": "ok", "model": server.model_name, "strategy": config.strategy, "memory": config.memory,
                "uptime_s": round(time.time() - server.started, 1), "recipe": recipe,
                "improve": server.improver.health() if server.improver else None}

    @app.get("/metrics")
    async def metrics(request: Request):
        if not config.open_metrics:
            authorize(request)  # request counts and latencies are the operator's, not every client's
        return PlainTextResponse(server.metrics.render(), media_type="text/plain; version=0.0.4")

    return app


class _Refused(Exception):
    def __init__(self, response: JSONResponse):
        self.response = response


async def _stream(server: Server, chat: ChatRequest, strategy: Strategy, completion_id: str, key: str | None):
    """Server-sent events: progress as SSE comments while the strategy works (OpenAI clients
    skip comments), then the answer as content chunks, the finish reason, usage when asked
    for, and [DONE]."""
    created, model = int(time.time()), chat.model
    events: asyncio.Queue = asyncio.Queue()
    task = asyncio.ensure_future(server.run(chat, strategy, completion_id, key, record=events.put_nowait))

    def data(payload: dict) -> str:
        return f"data: {json.dumps(payload)}\n\n"

    try:
        yield data(chunk(completion_id, model, created, {"role": "assistant", "content": ""}))
        while not task.done() or not events.empty():
            try:
                event = await asyncio.wait_for(events.get(), 5.0)
            except TimeoutError:
                yield ": working\n\n"  # keeps proxies from closing a quiet connection
                continue
            yield f": progress {json.dumps(_progress(event))}\n\n"
        try:
            result, extra = task.result()
        except Exception as e:
            server.metrics.requests.labels(strategy.name, "error").inc()
            if isinstance(e, SelfcorrectError):  # about the request: its message (the status went out already)
                refused = request_error_of(e)
                yield data({"error": {"message": refused.message, "type": "invalid_request_error",
                                      "param": refused.param, "code": refused.code}})
                return
            log.exception("streamed request failed")
            yield data({"error": {"message": f"the server failed on this request: {type(e).__name__}",
                                  "type": "server_error", "param": None, "code": None}})
            return
        server.metrics.requests.labels(strategy.name, result.finish_reason).inc()
        text = result.final.text if result.final else ""
        for start in range(0, len(text), 64):
            yield data(chunk(completion_id, model, created, {"content": text[start:start + 64]}))
        yield data(chunk(completion_id, model, created, {}, result.finish_reason, selfcorrect=extra["extension"]))
        if (chat.stream_options or {}).get("include_usage"):
            yield data({"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": model,
                        "choices": [], "usage": extra["usage"]})
        yield "data: [DONE]\n\n"
    finally:
        if not task.done():
            task.cancel()  # the client went away: stop spending on it
            with contextlib.suppress(BaseException):
                await task


def _progress(event: dict) -> dict:
    """A progress event: what happened, without the texts."""
    keep = ("type", "index", "phase", "round", "answer", "kind", "source", "passed", "before", "after", "purpose",
            "lessons", "rules")
    return {k: v for k, v in event.items() if k in keep}

