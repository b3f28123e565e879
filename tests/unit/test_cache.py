"""The sample-indexed cache, on the scripted model: every assertion counts real calls."""

import asyncio
import time

import pytest

from selfcorrect.models.base import SamplingParams
from selfcorrect.cache import CachedModel
from selfcorrect.models.scripted import ScriptedModel
from selfcorrect.store import Store

MESSAGES = [{"role": "user", "content": "pick"}]
SAMPLED = SamplingParams(temperature=0.7, max_tokens=32)


def numbered(messages, params, index):
    return f"draw {index} of {messages[-1]['content']}"


def test_sample_k_is_the_same_draw_for_every_caller(store):
    inner = ScriptedModel(numbered)
    model = CachedModel(inner, store)
    eight = asyncio.run(model.generate(MESSAGES, SAMPLED.replace(n=8)))
    four = asyncio.run(model.generate(MESSAGES, SAMPLED.replace(n=4)))
    assert [c.text for c in four] == [c.text for c in eight[:4]]
    assert [c.index for c in eight] == list(range(8))
    assert all(c.cached for c in four) and not any(c.cached for c in eight)
    assert len(inner.calls) == 1


def test_asking_for_more_samples_draws_only_the_new_indices(store):
    inner = ScriptedModel(numbered)
    model = CachedModel(inner, store)
    asyncio.run(model.generate(MESSAGES, SAMPLED.replace(n=4)))
    eight = asyncio.run(model.generate(MESSAGES, SAMPLED.replace(n=8)))
    assert [c.text for c in eight] == [f"draw {i} of pick" for i in range(8)]
    assert [(c.first_index, c.params.n) for c in inner.calls] == [(0, 4), (4, 4)]


def test_a_window_of_indices_draws_the_gaps_in_contiguous_runs(store):
    inner = ScriptedModel(numbered)
    model = CachedModel(inner, store)
    asyncio.run(model.generate(MESSAGES, SAMPLED.replace(n=1), first_index=2))
    asyncio.run(model.generate(MESSAGES, SAMPLED.replace(n=2), first_index=5))
    got = asyncio.run(model.generate(MESSAGES, SAMPLED.replace(n=8)))
    assert [c.index for c in got] == list(range(8))
    assert sorted((c.first_index, c.params.n) for c in inner.calls[2:]) == [(0, 2), (3, 2), (7, 1)]


def test_greedy_requests_make_one_draw_whatever_the_index(store):
    inner = ScriptedModel(numbered)
    model = CachedModel(inner, store)
    got = asyncio.run(model.generate(MESSAGES, SAMPLED.replace(temperature=0.0, n=3)))
    assert [c.text for c in got] == ["draw 0 of pick"] * 3
    assert [c.index for c in got] == [0, 1, 2]
    assert len(inner.calls) == 1 and inner.calls[0].params.n == 1


def test_different_parameters_or_models_never_share_draws(store):
    inner = ScriptedModel(numbered)
    asyncio.run(CachedModel(inner, store).generate(MESSAGES, SAMPLED))
    asyncio.run(CachedModel(inner, store).generate(MESSAGES, SAMPLED.replace(seed=1)))
    other = ScriptedModel(numbered, identity="another-model")
    asyncio.run(CachedModel(other, store).generate(MESSAGES, SAMPLED))
    assert len(inner.calls) == 2 and len(other.calls) == 1


def test_concurrent_callers_share_one_model_call(store):
    inner = ScriptedModel(numbered, latency=0.05)
    model = CachedModel(inner, store)

    async def both():
        return await asyncio.gather(
            model.generate(MESSAGES, SAMPLED.replace(n=4)),
            model.generate(MESSAGES, SAMPLED.replace(n=4)),
        )

    first, second = asyncio.run(both())
    assert [c.text for c in first] == [c.text for c in second]
    assert len(inner.calls) == 1
    assert model.stats.shared == 4


def test_a_caller_that_gives_up_does_not_cancel_a_shared_draw(store):
    inner = ScriptedModel(numbered, latency=0.1)
    model = CachedModel(inner, store)

    async def scenario():
        impatient = asyncio.create_task(model.generate(MESSAGES, SAMPLED))
        patient = asyncio.create_task(model.generate(MESSAGES, SAMPLED))
        await asyncio.sleep(0.02)
        impatient.cancel()
        return await patient

    assert asyncio.run(scenario())[0].text == "draw 0 of pick"
    assert store.sample_count() == 1


def test_a_failed_draw_is_not_stored_and_is_retried_next_time(store):
    attempts = []

    def flaky(messages, params, index):
        attempts.append(index)
        if len(attempts) == 1:
            raise RuntimeError("engine fell over")
        return "fine"

    model = CachedModel(ScriptedModel(flaky), store)
    with pytest.raises(RuntimeError):
        asyncio.run(model.generate(MESSAGES, SAMPLED))
    assert store.sample_count() == 0
    assert asyncio.run(model.generate(MESSAGES, SAMPLED))[0].text == "fine"


def test_draws_survive_the_process_and_a_rerun_makes_no_call(tmp_path):
    path = tmp_path / "store.sqlite"
    with Store(path) as store:
        asyncio.run(CachedModel(ScriptedModel(numbered), store).generate(MESSAGES, SAMPLED.replace(n=3)))
    inner = ScriptedModel(numbered)
    with Store(path) as store:
        again = asyncio.run(CachedModel(inner, store).generate(MESSAGES, SAMPLED.replace(n=3)))
    assert inner.calls == []
    assert [c.text for c in again] == [f"draw {i} of pick" for i in range(3)]


def test_cache_keeps_token_counts_seconds_and_finish(store):
    inner = ScriptedModel({"pick": "one two three four"}, latency=0.01)
    model = CachedModel(inner, store)
    fresh = asyncio.run(model.generate(MESSAGES, SAMPLED.replace(max_tokens=2)))[0]
    cached = asyncio.run(model.generate(MESSAGES, SAMPLED.replace(max_tokens=2)))[0]
    assert (fresh.text, fresh.finish_reason, fresh.completion_tokens) == ("one two", "length", 2)
    assert cached.cached and not fresh.cached
    assert (cached.text, cached.finish_reason, cached.completion_tokens, cached.prompt_tokens) == (
        fresh.text, fresh.finish_reason, fresh.completion_tokens, fresh.prompt_tokens)
    assert cached.seconds == pytest.approx(fresh.seconds)


def test_a_thousand_cached_requests_take_well_under_two_seconds(store):
    """A correctness guard with a loose bound; bench/cache_rerun.py measures the target."""
    requests = [[{"role": "user", "content": f"q{i}"}] for i in range(1000)]

    async def run_all(model):
        return await asyncio.gather(*(model.generate(m, SAMPLED) for m in requests))

    asyncio.run(run_all(CachedModel(ScriptedModel(numbered), store)))
    replay = CachedModel(ScriptedModel(numbered), store)
    started = time.perf_counter()
    asyncio.run(run_all(replay))
    assert replay.stats.model_calls == 0 and replay.stats.hits == 1000
    assert time.perf_counter() - started < 2.0


def test_two_caches_on_one_store_agree_on_every_draw(tmp_path):
    """The first draw stored is the draw, even when another cache drew the same sample."""
    counter = iter(range(100))
    shared = ScriptedModel(lambda m, p, i: f"draw number {next(counter)}")
    with Store(tmp_path / "s.sqlite") as store:
        first, second = CachedModel(shared, store), CachedModel(shared, store)

        async def both():
            return await asyncio.gather(first.generate(MESSAGES, SAMPLED), second.generate(MESSAGES, SAMPLED))

        a, b = asyncio.run(both())
    assert len(shared.calls) == 2  # both drew (they do not share in-flight draws)...
    assert a[0].text == b[0].text  # ...and both answer with the one that was stored
