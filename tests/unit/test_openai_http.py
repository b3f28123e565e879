"""The OpenAI-compatible backend against real HTTP servers on 127.0.0.1 (scripted stubs)."""

import asyncio
import logging
import threading
import time

import pytest

from selfcorrect.errors import BackendUnavailableError, ConfigError, ModelRequestError
from selfcorrect.models.base import SamplingParams, sample_seed
from selfcorrect.models.openai_http import OpenAICompatibleModel
from tests.conftest import free_port
from tests.httpstub import FaultProxy, HTTPStub, chat_reply, json_reply

MESSAGES = [{"role": "user", "content": "hello"}]


def fast(url, **kw):
    """A client with short waits, so that retry tests take milliseconds."""
    kw.setdefault("backoff", 0.01)
    kw.setdefault("max_backoff", 0.05)
    kw.setdefault("timeout", 2.0)
    return OpenAICompatibleModel("m", url, **kw)


@pytest.fixture
def stubs():
    made = []

    def make(respond, **kw):
        stub = HTTPStub(respond, **kw)
        made.append(stub)
        return stub

    yield make
    for stub in made:
        stub.close()


def honours_n(seen):
    n = seen.body["n"]
    return chat_reply([f"s{seen.body['seed']}-{k}" for k in range(n)])


def ignores_n(seen):
    return chat_reply([f"seed {seen.body['seed']}"])


def test_native_n_is_one_request(stubs):
    stub = stubs(honours_n)
    model = fast(stub.url)
    got = asyncio.run(model.generate(MESSAGES, SamplingParams(n=3, seed=5)))
    assert len(stub.seen) == 1 and stub.seen[0].body["n"] == 3
    assert [c.index for c in got] == [0, 1, 2]
    assert model.capabilities.native_n is True


def test_a_server_that_ignores_n_gets_one_request_per_sample_seeded_by_index(stubs):
    stub = stubs(ignores_n)
    model = fast(stub.url)
    got = asyncio.run(model.generate(MESSAGES, SamplingParams(n=3, seed=5), first_index=10))
    assert [c.text for c in got] == [f"seed {sample_seed(5, i)}" for i in (10, 11, 12)]
    assert model.capabilities.native_n is False
    asyncio.run(model.generate(MESSAGES, SamplingParams(n=2, seed=5)))
    assert [s.body["n"] for s in stub.seen] == [3, 1, 1, 1, 1]


def test_request_body_carries_the_sampling_parameters(stubs):
    stub = stubs(lambda seen: json_reply({
        "choices": [{"message": {"content": "x y"}, "finish_reason": "length",
                     "logprobs": {"content": [{"logprob": -0.5}, {"logprob": -1.0}]}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2}}))
    model = fast(stub.url)
    plain = asyncio.run(model.generate(MESSAGES, SamplingParams(temperature=0.3, max_tokens=9)))[0]
    body = stub.seen[0].body
    assert (body["model"], body["temperature"], body["max_tokens"], body["messages"]) == ("m", 0.3, 9, MESSAGES)
    assert "top_k" not in body and "stop" not in body and "logprobs" not in body
    assert body["max_completion_tokens"] == 9
    # servers' own samplers off: llama.cpp's server would apply repeat penalty 1.1 and min_p 0.05
    assert (body["min_p"], body["repeat_penalty"], body["repetition_penalty"]) == (0.0, 1.0, 1.0)
    rich = asyncio.run(model.generate(MESSAGES, SamplingParams(top_k=40, stop=["\n"], logprobs=True)))[0]
    body = stub.seen[1].body
    assert (body["top_k"], body["stop"], body["logprobs"]) == (40, ["\n"], True)
    assert (plain.finish_reason, plain.prompt_tokens, plain.completion_tokens) == ("length", 7, 2)
    assert rich.logprobs == (-0.5, -1.0)
    assert "continue_final_message" not in body
    started = [*MESSAGES, {"role": "assistant", "content": "Step 1:"}]
    asyncio.run(model.generate(started, SamplingParams()))
    body = stub.seen[2].body  # vLLM and SGLang continue the assistant's message only when told
    assert (body["messages"], body["continue_final_message"], body["add_generation_prompt"]) == (started, True, False)


def test_transient_failures_are_retried_until_an_answer_comes(stubs):
    upstream = stubs(honours_n)
    schedule = ["500", "429", "garbage", "no-choices", "drop", "503", "hang"]
    proxy = FaultProxy(upstream.url, schedule, hang_seconds=1.5)
    try:
        model = fast(proxy.url, timeout=0.5, retries=len(schedule))
        got = asyncio.run(model.generate(MESSAGES, SamplingParams(n=2, seed=1)))
        assert [c.text for c in got] == [f"s{sample_seed(1, 0)}-0", f"s{sample_seed(1, 0)}-1"]
        assert proxy.faults_served == schedule and proxy.forwarded == 1
    finally:
        proxy.close()


def test_retry_after_is_honoured(stubs):
    schedule = iter([(429, {"retry-after": "0.4"}, b"wait")])
    stub = stubs(lambda seen: next(schedule, None) or chat_reply(["ok"]))
    model = fast(stub.url, retries=1)
    started = time.perf_counter()
    assert asyncio.run(model.generate(MESSAGES, SamplingParams()))[0].text == "ok"
    assert time.perf_counter() - started >= 0.4


def test_exhausted_retries_say_what_failed(stubs):
    stub = stubs(lambda seen: (500, {}, b"model crashed"))
    with pytest.raises(BackendUnavailableError, match=r"kept failing: .*500 model crashed \(3 attempts\)"):
        asyncio.run(fast(stub.url, retries=2).generate(MESSAGES, SamplingParams()))
    assert len(stub.seen) == 3


def test_an_unreachable_server_is_a_clear_error():
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(BackendUnavailableError) as e:
        asyncio.run(fast(url, retries=1).generate(MESSAGES, SamplingParams()))
    assert "cannot reach the model server" in str(e.value) and "--base-url" in e.value.fix


def test_client_errors_are_not_retried_and_name_the_fix(stubs):
    stub = stubs(lambda seen: json_reply({"error": {"message": "bad key"}}, status=401))
    with pytest.raises(ModelRequestError) as e:
        asyncio.run(fast(stub.url, api_key_env="MY_KEY").generate(MESSAGES, SamplingParams()))
    assert "401" in str(e.value) and "$MY_KEY" in e.value.fix
    assert len(stub.seen) == 1


def test_the_api_key_is_sent_but_never_logged_or_shown(stubs, monkeypatch, caplog):
    secret = "sk-test-0123456789-secret"
    monkeypatch.setenv("MY_KEY", secret)
    stub = stubs(lambda seen: (500, {}, b"nope"))
    model = fast(stub.url, api_key_env="MY_KEY", retries=2)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BackendUnavailableError) as e:
        asyncio.run(model.generate(MESSAGES, SamplingParams()))
    assert stub.seen[0].headers["Authorization"] == f"Bearer {secret}"
    assert secret not in caplog.text and secret not in str(e.value) and secret not in repr(model)
    assert "retrying" in caplog.text  # the retries were logged, without the key


def test_requests_spread_over_replicas_and_avoid_a_dead_one(stubs):
    def slow(seen):
        time.sleep(0.05)
        return chat_reply(["ok"])

    a, b = stubs(slow), stubs(slow)
    dead = f"http://127.0.0.1:{free_port()}/v1"
    model = fast([a.url, dead, b.url], concurrency=4)

    async def many():
        return await asyncio.gather(*(model.generate(MESSAGES, SamplingParams(seed=i)) for i in range(24)))

    assert len(asyncio.run(many())) == 24
    assert len(a.seen) >= 8 and len(b.seen) >= 8
    assert len(a.seen) + len(b.seen) == 24


def test_concurrency_per_replica_is_bounded(stubs):
    lock, state = threading.Lock(), {"now": 0, "peak": 0}

    def counting(seen):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return chat_reply(["ok"])

    stub = stubs(counting)
    model = fast(stub.url, concurrency=3)

    async def many():
        await asyncio.gather(*(model.generate(MESSAGES, SamplingParams(seed=i)) for i in range(12)))

    asyncio.run(many())
    assert state["peak"] == 3


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="needs a server address"):
        OpenAICompatibleModel("m", [])
    with pytest.raises(ConfigError, match="not an http"):
        OpenAICompatibleModel("m", "127.0.0.1:8000")


def test_cost_counts_every_prompt_a_server_that_ignores_n_was_sent(stubs, tmp_path):
    """llama.cpp's server returns one choice whatever n asks: each sample is then a request
    of its own, and the cost of a vote counts each request's prompt."""
    from tests.scripts import ListTask

    from selfcorrect.config import load_settings
    from selfcorrect.runner import EvalSpec, Evaluation, results_by_strategy

    stub = stubs(lambda seen: chat_reply(["The answer is 4."], prompt_tokens=30))
    settings = load_settings(store=tmp_path / "store.sqlite")
    evaluation = Evaluation(settings, EvalSpec(strategies=["self-consistency:n=5"], reference=False),
                            task=ListTask([("What is 2 + 2?", "4")]), engine=fast(stub.url))
    run = asyncio.run(evaluation.run())
    [result] = results_by_strategy(evaluation.store, run)["self-consistency:n=5"]
    assert len(stub.seen) == 5  # one request per sample
    assert result.trajectory.cost["generate"].prompt_tokens == 5 * 30
    assert [a.prompt_billed for a in result.trajectory.attempts] == [30] * 5
    assert run.config["prompt_reuse"] is False


def test_a_failed_request_leaves_no_unretrieved_task(stubs, caplog):
    """With n=3 drawn one by one, a failure of one request is raised once, after the others
    finished: asyncio has nothing left to complain about."""
    import gc

    stub = stubs(lambda seen: (500, {}, b"down") if seen.body["seed"] == sample_seed(0, 1)
                 else chat_reply(["one"]))
    model = fast(stub.url, retries=0)
    model._native_n = False
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        with pytest.raises(BackendUnavailableError):
            asyncio.run(model.generate(MESSAGES, SamplingParams(n=3)))
        gc.collect()
    assert "never retrieved" not in caplog.text


def test_a_server_that_drops_connections_is_not_called_unreachable(stubs):
    stub = stubs(lambda seen: "drop")
    with pytest.raises(BackendUnavailableError) as caught:
        asyncio.run(fast(stub.url, retries=1).generate(MESSAGES, SamplingParams()))
    assert "closed it without a reply" in str(caught.value)
    assert "cannot reach" not in str(caught.value)


def test_whether_the_model_ended_its_reply_is_read_where_the_server_says():
    from selfcorrect.models.openai_http import model_ended

    assert model_ended({"finish_reason": "stop", "stop_reason": None}) is True  # vLLM: its end token
    assert model_ended({"finish_reason": "stop", "stop_reason": ". "}) is False  # vLLM: a stop string
    assert model_ended({"finish_reason": "stop", "matched_stop": 2}) is True  # SGLang: the end token's id
    assert model_ended({"finish_reason": "stop", "matched_stop": "\n\n"}) is False
    assert model_ended({"finish_reason": "length", "stop_reason": None}) is False  # the cap
    assert model_ended({"finish_reason": "stop"}) is None  # a server that does not say


def test_a_server_that_rejects_fields_outside_openais_api_is_sent_without_them(stubs, caplog):
    def strict(seen):  # as OpenAI answers an unknown argument
        unknown = [f for f in ("min_p", "top_k", "repeat_penalty", "repetition_penalty") if f in seen.body]
        if unknown:
            return json_reply({"error": {"message": f"Unrecognized request argument supplied: {unknown[0]}"}}, 400)
        return chat_reply(["fine"])

    stub = stubs(strict)
    model = fast(stub.url)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            assert asyncio.run(model.generate(MESSAGES, SamplingParams(top_k=40)))[0].text == "fine"
    assert len(stub.seen) == 3  # rejected once, then never sent again
    assert "top_k" not in stub.seen[-1].body and "min_p" not in stub.seen[-1].body
    assert sum("OpenAI's own sampling fields only" in r.message for r in caplog.records) == 1


def test_other_rejections_are_not_retried_without_the_fields(stubs):
    stub = stubs(lambda seen: json_reply({"error": {"message": "messages too long"}}, 400))
    with pytest.raises(ModelRequestError, match="messages too long"):
        asyncio.run(fast(stub.url).generate(MESSAGES, SamplingParams()))
    assert len(stub.seen) == 1


def test_replies_are_cut_at_a_stop_string_the_server_ignored(stubs, caplog):
    stub = stubs(lambda seen: chat_reply(["print(3)\n```\nThe program prints 3.", "no stop here"]))
    with caplog.at_level(logging.WARNING):
        got = asyncio.run(fast(stub.url).generate(MESSAGES, SamplingParams(n=2, stop=["\n```\n"])))
    assert [c.text for c in got] == ["print(3)", "no stop here"]
    assert got[0].finish_reason == "stop" and got[0].model_ended is False
    assert sum("past a stop string" in r.message for r in caplog.records) == 1


def probe_stub(seed_honoured: bool, owned_by: str = "vllm", overrun: bool = False):
    draws = iter(range(100))

    def respond(seen):
        if seen.path.endswith("/models"):
            return json_reply({"data": [{"id": "m", "owned_by": owned_by}]})
        body = seen.body
        if "random words" in body["messages"][-1]["content"]:
            text = f"words {body['seed']}" if seed_honoured else f"words {next(draws)}"
            return chat_reply([text])
        tokens = 30 if overrun else body["max_tokens"]
        return json_reply({"choices": [{"message": {"content": "1, 2"}, "finish_reason": "length"}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": tokens}})
    return respond


@pytest.mark.parametrize("seed_honoured, owned_by, overrun, said", [
    (True, "vllm", False, []),
    (False, "vllm", False, ["does not honour seed"]),
    (True, "library", False, ["is Ollama"]),
    (True, "sglang", True, ["does not honour max_tokens"]),
])
def test_the_probe_says_once_what_a_server_ignores(stubs, caplog, seed_honoured, owned_by, overrun, said):
    stub = stubs(probe_stub(seed_honoured, owned_by, overrun))
    model = fast(stub.url, probe=True)
    with caplog.at_level(logging.WARNING):
        async def three():
            return await asyncio.gather(*(model.generate(MESSAGES, SamplingParams()) for _ in range(3)))
        asyncio.run(three())
        asyncio.run(model.generate(MESSAGES, SamplingParams()))
    probes = [s for s in stub.seen if s.body is None or s.body["messages"] != MESSAGES]
    assert len(probes) == 4  # two seeded draws, a capped one, the model list: once, before the first request
    warnings = [r.message for r in caplog.records if r.levelno >= logging.WARNING]
    assert [w for w in warnings if any(s in w for s in said)] == [w for w in warnings] and len(warnings) == len(said)
