"""The HTTP backend against llama.cpp's real OpenAI-compatible server on 127.0.0.1, with and
without a proxy that injects failures."""

import asyncio

import pytest

from selfcorrect.errors import BackendUnavailableError
from selfcorrect.models.base import SamplingParams
from selfcorrect.cache import CachedModel
from selfcorrect.models.openai_http import OpenAICompatibleModel
from tests.httpstub import FaultProxy

pytestmark = pytest.mark.integration

PARAMS = SamplingParams(temperature=0.8, top_k=40, max_tokens=12, seed=2)


def client(url, **kw):
    kw.setdefault("backoff", 0.02)
    kw.setdefault("max_backoff", 0.1)
    return OpenAICompatibleModel("smollm2", url, **kw)


def questions(k):
    return [[{"role": "user", "content": f"Say the number {i} in words."}] for i in range(k)]


def test_samples_from_a_real_server(llama_server):
    model = client(llama_server)
    assert asyncio.run(model.describe())["serves"] == ["smollm2"]
    samples = asyncio.run(model.generate(questions(1)[0], PARAMS.replace(n=3)))
    assert [c.index for c in samples] == [0, 1, 2]
    assert all(c.text and c.completion_tokens > 0 and c.prompt_tokens > 0 for c in samples)
    # llama_cpp.server returns one choice whatever n is: the backend learned to draw one by one
    assert model.capabilities.native_n is False


def test_injected_failures_are_retried_and_nothing_is_lost(llama_server, store):
    faults = ["500", "429", "garbage", "hang", "drop", "503", "no-choices"]
    proxy = FaultProxy(llama_server, faults, hang_seconds=7)  # past the client's timeout, with room for a loaded machine
    try:
        model = CachedModel(client(proxy.url, timeout=5, retries=len(faults), concurrency=2), store)

        async def four():
            return await asyncio.gather(*(model.generate(q, PARAMS) for q in questions(4)))

        answers = asyncio.run(four())
        assert proxy.faults_served == faults
        assert proxy.forwarded == 4 and all(a[0].text for a in answers)
        assert store.sample_count() == 4
    finally:
        proxy.close()

    # The server now fails every request: the run is replayed from the store, untouched.
    broken = FaultProxy(llama_server, ["500"] * 100)
    try:
        replay = CachedModel(client(broken.url, retries=0), store)

        async def again():
            return await asyncio.gather(*(replay.generate(q, PARAMS) for q in questions(4)))

        assert [a[0].text for a in asyncio.run(again())] == [a[0].text for a in answers]
        assert broken.faults_served == [] and replay.stats.model_calls == 0
        with pytest.raises(BackendUnavailableError, match="500"):
            asyncio.run(replay.generate(questions(5)[4], PARAMS))
    finally:
        broken.close()


def test_an_interrupted_batch_keeps_what_finished(llama_server, store):
    model = CachedModel(client(llama_server, concurrency=1), store)

    async def interrupted():
        tasks = [asyncio.create_task(model.generate(q, PARAMS)) for q in questions(6)]
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(interrupted())
    kept = store.sample_count()
    assert 1 <= kept < 6

    resumed = CachedModel(client(llama_server), store)

    async def rest():
        return await asyncio.gather(*(resumed.generate(q, PARAMS) for q in questions(6)))

    assert len(asyncio.run(rest())) == 6
    assert resumed.stats.hits >= kept and resumed.stats.model_calls <= 6 - kept
