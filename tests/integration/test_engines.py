"""The same strategies on the same items through the embedded engine and through llama.cpp's
OpenAI-compatible server (the same GGUF file, started on 127.0.0.1): the same requests reach
both, and they answer alike.

Greedy decoding makes the comparison sharp: the two engines run the same llama.cpp on the same
weights, so they differ only where batching moves a float. A server that samples differently
(llama.cpp's server applies a repeat penalty of 1.1 unless told otherwise, which keeps the model
from copying a question's numbers into its program) fails here by tens of points."""

import asyncio
import json

import pytest

from selfcorrect.config import load_settings
from selfcorrect.models.base import messages_hash, sample_seed
from selfcorrect.models.openai_http import PLAIN_SAMPLING, OpenAICompatibleModel
from selfcorrect.runner import EvalSpec, Evaluation, results_by_strategy
from tests.httpstub import FaultProxy

pytestmark = pytest.mark.integration

STRATEGIES = ["single", "program-aided", "self-refine:rounds=1"]
ITEMS = 16


class Recording:
    """A model that passes every request on and keeps what it was asked."""

    def __init__(self, inner):
        self.inner, self.requests = inner, []

    identity = property(lambda self: self.inner.identity)
    capabilities = property(lambda self: self.inner.capabilities)

    async def describe(self):
        return await self.inner.describe()

    async def generate(self, messages, params, first_index=0):
        self.requests.append((list(messages), params, first_index))
        return await self.inner.generate(messages, params, first_index)

    async def aclose(self):
        pass  # the session's engine stays open for other tests


def evaluate(engine, folder):
    settings = load_settings(store=folder / "store.sqlite", sandbox_workers=1)
    spec = EvalSpec(task="arithmetic", strategies=STRATEGIES, limit=ITEMS, temperature=0.0, reference=False)
    evaluation = Evaluation(settings, spec, engine=engine)
    run = asyncio.run(evaluation.run())
    return {spec: {r.item: r for r in rows} for spec, rows in results_by_strategy(evaluation.store, run).items()}


def sampling(messages, temperature, top_p, top_k, max_tokens, stop):
    """What must reach every engine alike (n and the seed's form are the engine's own)."""
    return json.dumps([messages, temperature, top_p, top_k, max_tokens, list(stop or [])])


@pytest.fixture(scope="module")
def both(embedded, llama_server, tmp_path_factory):
    local = Recording(embedded)
    by_local = evaluate(local, tmp_path_factory.mktemp("embedded"))
    proxy = FaultProxy(llama_server, [])
    try:
        server = OpenAICompatibleModel("smollm2", proxy.url, concurrency=4)
        probed = asyncio.run(server.probe())
        proxy.seen.clear()
        by_server = evaluate(server, tmp_path_factory.mktemp("server"))
    finally:
        proxy.close()
    return local.requests, by_local, [s.body for s in proxy.seen if s.path.endswith("/chat/completions")], \
        by_server, probed


def test_llama_cpps_server_honours_seed_and_max_tokens(both):
    *_, probed = both
    assert probed == {"seed": True, "max_tokens": True, "ollama": False}


def test_every_request_reaches_the_server_as_it_reaches_the_embedded_engine(both):
    local, by_local, bodies, by_server, _ = both
    assert bodies and all(body[k] == v for body in bodies for k, v in PLAIN_SAMPLING.items())
    assert all(body["seed"] == sample_seed(0, 0) for body in bodies)  # greedy: one draw, sample 0
    sent_local = {sampling(m, p.temperature, p.top_p, p.top_k, p.max_tokens, p.stop) for m, p, _ in local}
    sent_server = {sampling(b["messages"], b["temperature"], b["top_p"], b.get("top_k"), b["max_tokens"], b.get("stop"))
                   for b in bodies}
    # Each strategy's first prompt holds no model text: the same on both. Later prompts quote
    # replies, which differ where a float moved.
    firsts = {r.trajectory.attempts[0].messages_hash for run in (by_local, by_server)
              for results in run.values() for r in results.values()}
    first = lambda requests: {r for r in requests if messages_hash(json.loads(r)[0]) in firsts}
    assert len(first(sent_local)) == 2 * ITEMS  # the task's prompt (single, self-refine) and program-aided's
    assert first(sent_local) == first(sent_server)
    settings = lambda requests: {json.dumps(json.loads(r)[1:]) for r in requests}
    assert settings(sent_local) == settings(sent_server)  # every strategy's stops, caps and sampler


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_the_engines_answer_alike(both, strategy):
    _, by_local, _, by_server, _ = both
    local, server = by_local[strategy], by_server[strategy]
    assert local.keys() == server.keys() and len(local) == ITEMS
    right = lambda results: sum(r.final.correct for r in results.values())
    agree = sum(local[i].final.answer == server[i].final.answer for i in local)
    assert abs(right(local) - right(server)) <= 2, (strategy, right(local), right(server))
    assert agree >= ITEMS * 3 // 4, (strategy, agree)
