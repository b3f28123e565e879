"""The OpenAI-compatible server on 127.0.0.1, driven by the official `openai` client: a
scripted backend for what must hold exactly, the embedded model for the real thing."""

import json
import socket
import time

import httpx
import openai
import pytest

from selfcorrect.config import load_settings
from selfcorrect.memory import LessonBank
from selfcorrect.memory.gate import Gate
from selfcorrect.memory.recall import HEADER
from selfcorrect.models.scripted import ScriptedModel
from selfcorrect.serve.app import ServeConfig
from selfcorrect.tasks import parse_task
from selfcorrect.serve.keys import hash_key
from tests.serving import serving

pytestmark = pytest.mark.integration

QUESTION = "What is 17 + 25? End with: The answer is N."


def reply(messages, params, k):
    last = messages[-1]["content"]
    if "Check this answer" in last or "Review this reply" in last:
        return "It is wrong.\nScore: 2"
    if "Using the feedback" in last or "Improve" in last:
        return "Fixed. The answer is 42."
    if HEADER in messages[0]["content"]:
        return "I remember this one. The answer is 42."
    return ["The answer is 41.", "The answer is 42.", "The answer is 42.", "The answer is 40.", "The answer is 42."][k % 5]


@pytest.fixture
def scripted():
    return ScriptedModel(reply)


@pytest.fixture
def server(tmp_path, scripted):
    settings = load_settings(store=tmp_path / "store.sqlite", sandbox_workers=1)
    with serving(settings, ServeConfig(memory="help", memory_show="all", max_body=20_000, body_timeout=1.0), engine=scripted) as (url, srv):
        yield url, srv


def client(url, key="none"):
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=30)


def ask(c, model="scripted", **kw):
    return c.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}], **kw)


def test_a_strategy_answers_through_the_openai_client_and_usage_counts_every_call(server, scripted):
    url, _ = server
    c = client(url)
    plain = ask(c, extra_body={"memory": False})
    assert plain.choices[0].message.content == "The answer is 41." and plain.choices[0].finish_reason == "stop"
    assert plain.model_extra["selfcorrect"]["strategy"] == "single" and plain.model_extra["selfcorrect"]["internal_calls"] == 1
    # the strategy chosen through the model name, as inference-proxy users do
    voted = ask(c, model="self-consistency:n=5/scripted", extra_body={"memory": False})
    assert voted.choices[0].message.content == "The answer is 42."
    extension = voted.model_extra["selfcorrect"]
    assert extension["strategy"] == "self-consistency:n=5" and extension["attempts"] == 5
    assert voted.usage.completion_tokens > plain.usage.completion_tokens  # five samples, all counted
    assert voted.usage.total_tokens == voted.usage.prompt_tokens + voted.usage.completion_tokens
    # per-request settings never leak: the next request is the server's default again
    again = ask(c, extra_body={"memory": False})
    assert again.model_extra["selfcorrect"]["strategy"] == "single"
    # the trajectory comes back when asked, and is always found by completion id
    refined = ask(c, extra_body={"strategy": "self-refine:rounds=1", "kind": "math", "memory": False,
                                 "return_trajectory": True})
    trajectory = refined.model_extra["selfcorrect"]["trajectory"]
    assert [a["answer"] for a in trajectory["attempts"]] == ["41", "42"]
    stored = httpx.get(f"{url}/v1/selfcorrect/completions/{refined.id}").json()
    # both scored 2 by the critique: the earlier stands (the best attempt, never simply the last)
    assert stored["trajectory"] == trajectory and stored["answer"] == "41"
    assert [m.id for m in c.models.list().data] == ["scripted", "default"]


def test_streaming_sends_progress_then_the_answer_then_done(server):
    url, _ = server
    c = client(url)
    chunks = list(ask(c, stream=True, stream_options={"include_usage": True},
                      extra_body={"strategy": "self-consistency:n=5", "memory": False}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "The answer is 42."
    finals = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert [f.choices[0].finish_reason for f in finals] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    with httpx.stream("POST", f"{url}/v1/chat/completions", json={
            "model": "scripted", "stream": True, "strategy": "self-refine:rounds=1", "memory": False,
            "messages": [{"role": "user", "content": QUESTION}]}) as response:
        lines = [line for line in response.iter_lines() if line]
    progress = [json.loads(line.split(" ", 2)[2]) for line in lines if line.startswith(": progress")]
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: {") and '"content": "The' in line)
    assert {"attempt", "feedback", "revision"} <= {p["type"] for p in progress}
    assert max(i for i, line in enumerate(lines) if line.startswith(": progress")) < first_data  # progress first
    assert lines[-1] == "data: [DONE]"


def test_feedback_writes_a_lesson_that_the_next_similar_request_is_shown(server, scripted, tmp_path):
    url, srv = server
    c = client(url)
    first = ask(c)
    assert first.choices[0].message.content == "The answer is 41."
    assert first.model_extra["selfcorrect"]["memory"]["lessons"] == []
    sent = {"completion_id": first.id, "correct": False, "answer": "42", "comment": "17 + 25 is 42."}
    recorded = httpx.post(f"{url}/v1/feedback", json=sent).json()
    assert recorded["recorded"] is True and recorded["lesson"]
    assert httpx.post(f"{url}/v1/feedback", json=sent).json()["recorded"] is False  # idempotent
    conflict = httpx.post(f"{url}/v1/feedback", json={**sent, "correct": True})
    assert conflict.status_code == 409 and "already reported wrong" in conflict.json()["error"]["message"]
    [lesson] = LessonBank(tmp_path / "store.sqlite").lessons("help")
    assert lesson.provenance["completion"] == first.id and lesson.corrected == "42"
    assert lesson.feedback_kind == "external" and "17 + 25 is 42." in lesson.feedback

    second = c.chat.completions.create(model="scripted", messages=[
        {"role": "user", "content": "What is 17 + 26? End with: The answer is N."}])
    assert second.model_extra["selfcorrect"]["memory"]["lessons"] == [lesson.id]
    assert second.choices[0].message.content == "I remember this one. The answer is 42."
    shown = [call for call in scripted.calls if HEADER in call.messages[0]["content"]]
    assert "17 + 25 is 42." in shown[-1].messages[0]["content"]
    httpx.post(f"{url}/v1/feedback", json={"completion_id": second.id, "correct": True})
    [counted] = LessonBank(tmp_path / "store.sqlite").lessons("help")
    assert (counted.uses, counted.ended_right, counted.ended_wrong) == (1, 1, 0)
    metrics = httpx.get(f"{url}/metrics").text
    assert 'selfcorrect_feedback_total{verdict="wrong"} 1.0' in metrics
    assert "selfcorrect_memory_hits_total 1.0" in metrics
    assert 'selfcorrect_requests_total{status="stop",strategy="single"} 2.0' in metrics


def test_a_budget_returns_the_best_answer_so_far_and_says_why(server):
    url, _ = server
    c = client(url)
    cut = ask(c, extra_body={"strategy": "self-refine:rounds=3", "memory": False, "budget": {"max_calls": 1}})
    assert cut.choices[0].finish_reason == "budget" and cut.choices[0].message.content == "The answer is 41."
    assert cut.model_extra["selfcorrect"]["internal_calls"] == 1 and cut.model_extra["selfcorrect"]["stop"] == "budget"


def test_api_keys_are_required_checked_and_rate_limited(tmp_path, scripted):
    settings = load_settings(store=tmp_path / "store.sqlite", sandbox_workers=1)
    config = ServeConfig(keys={"alice": hash_key("sc-alice-secret"), "bob": hash_key("sc-bob-secret")}, rate_limit=3)
    with serving(settings, config, engine=scripted) as (url, _):
        with pytest.raises(openai.AuthenticationError):
            ask(client(url, "sc-wrong"))
        missing = httpx.get(f"{url}/v1/models")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
        alice = client(url, "sc-alice-secret")
        answered = ask(alice)
        assert answered.choices[0].message.content
        # another key's completion is not found with that key
        assert httpx.get(f"{url}/v1/selfcorrect/completions/{answered.id}",
                         headers={"Authorization": "Bearer sc-bob-secret"}).status_code == 404
        alice.models.list()
        ask(alice)
        with pytest.raises(openai.RateLimitError):  # three a minute: the fourth is refused
            ask(alice)
        assert ask(client(url, "sc-bob-secret")).choices[0].message.content  # per key
        assert httpx.get(f"{url}/health").json()["status"] == "ok"  # health needs no key


def test_malformed_requests_get_openai_errors_and_never_hurt_other_requests(server):
    url, _ = server
    good = {"model": "scripted", "messages": [{"role": "user", "content": QUESTION}], "memory": False}
    battery = [
        (b"{not json", 400, "not valid JSON"),
        (json.dumps({"model": "scripted", "messages": "hi"}).encode(), 400, "messages"),
        (json.dumps({"model": "scripted"}).encode(), 400, "messages"),
        (json.dumps({**good, "temperature": "hot"}).encode(), 400, "temperature"),
        (json.dumps({**good, "n": 3}).encode(), 400, "n"),
        (json.dumps({**good, "strategy": "self-refien"}).encode(), 400, "did you mean 'self-refine'"),
        (json.dumps({**good, "strategy": "oracle-refine"}).encode(), 400, "needs the gold answer"),
        (json.dumps({**good, "strategy": "self-debug"}).encode(), 400, "does not serve chat"),
        (json.dumps({**good, "budget": {"max_calls": -1}}).encode(), 400, "budget.max_calls"),
        (json.dumps({**good, "messages": [{"role": "wizard", "content": "x"}]}).encode(), 400, "role"),
        (json.dumps({**good, "padding": "x" * 30_000}).encode(), 413, "over 20000 bytes"),
        (json.dumps({"completion_id": "nope", "correct": False}).encode(), 404, "no completion"),
    ]
    for body, status, words in battery:
        path = "/v1/feedback" if b"completion_id" in body else "/v1/chat/completions"
        response = httpx.post(url + path, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == status, (body[:60], response.text)
        error = response.json()["error"]
        assert words in error["message"] and error["type"], (body[:60], error)
    # a client that sends half a body and stalls is cut off; others are served meanwhile
    host, port = url.removeprefix("http://").split(":")
    slow = socket.create_connection((host, int(port)))
    slow.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 500\r\n\r\n{\"model\": ")
    started = time.monotonic()
    assert httpx.post(url + "/v1/chat/completions", json=good).status_code == 200
    slow.settimeout(10)
    answer = slow.recv(4096).decode()
    slow.close()
    assert " 408 " in answer.splitlines()[0] and time.monotonic() - started < 10
    assert httpx.post(url + "/v1/chat/completions", json=good).status_code == 200


def test_the_embedded_model_serves_through_the_server(tmp_path):
    settings = load_settings(store=tmp_path / "store.sqlite", sandbox_workers=1, llama={"threads": 1, "n_ctx": 2048})
    with serving(settings, ServeConfig(strategy="self-consistency:n=3", aliases=["smollm2"])) as (url, _):
        c = client(url)
        response = c.chat.completions.create(model="smollm2", max_tokens=48, messages=[
            {"role": "user", "content": "What is 2 + 3? End with: The answer is N."}])
        extension = response.model_extra["selfcorrect"]
        assert response.choices[0].message.content and extension["attempts"] == 3
        assert response.usage.completion_tokens >= 3 and response.usage.prompt_tokens > 0
        chunks = list(c.chat.completions.create(model="single/smollm2", max_tokens=24, stream=True,
                                                messages=[{"role": "user", "content": "Say hello."}]))
        assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices).strip()
        with pytest.raises(openai.BadRequestError, match="the context holds 2048"):  # the engine's own check: a 400
            c.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "many words " * 1500}])
    from selfcorrect.serve.records import Completions

    records = Completions(tmp_path / "store.sqlite")
    _, payload, _ = records.get(response.id)
    records.close()
    assert payload["identity"].startswith("gguf:") and len(payload["identity"].split(":")[-1]) == 16  # its weights


def test_a_users_checker_verifies_answers_and_what_it_rejects_becomes_lessons(server, tmp_path):
    url, _ = server
    checker = "def check(answer):\n    return answer.strip().endswith('42.')\n"
    picked = ask(client(url), extra_body={"strategy": "best-of-n:n=3", "checker": checker, "return_trajectory": True})
    assert picked.choices[0].message.content == "The answer is 42."  # 41 was rejected by the checker
    attempts = picked.model_extra["selfcorrect"]["trajectory"]["attempts"]
    verdicts = [(a["feedback"][0]["kind"], a["feedback"][0]["passed"]) for a in attempts]
    assert verdicts == [("external", False), ("external", True), ("external", True)]
    [lesson] = LessonBank(tmp_path / "store.sqlite").lessons("help")  # the rejected one, learned at once
    assert lesson.wrong == "The answer is 41." and lesson.corrected is None
    assert lesson.provenance["completion"] == picked.id and "checker rejected" in lesson.feedback
    wrong_place = httpx.post(f"{url}/v1/chat/completions", json={
        "model": "default", "messages": [{"role": "user", "content": "hi"}], "tests": ["assert f() == 1"]})
    assert wrong_place.status_code == 400 and "send kind=code" in wrong_place.json()["error"]["message"]
    # what the request carried to check its answer is recorded: its traffic is a task scored by it
    ask(client(url), extra_body={"kind": "math", "checker": checker})
    [item] = parse_task(f"served:{tmp_path / 'store.sqlite'},kind=math").items()
    assert item.view.checker == checker and item.meta["reference"] == "checker"


def test_gold_feedback_on_a_recurring_stream_admits_worked_examples_and_they_help(tmp_path):
    """A help desk: questions recur, reworded. The model answers 0 unless it is shown a solved
    example with the same numbers, which it copies. Feedback gives the correct answer; the gate
    admits the examples arm from shadow trials, and the served answers then beat memory off."""
    import re

    from selfcorrect.memory.examples import HEADER as EXAMPLES

    def copying(messages, params, k):
        content = messages[-1]["content"]
        numbers = re.findall(r"\d+", content.split("\n\n")[-1])
        if EXAMPLES in content:
            for problem, solution in re.findall(r"Problem: (.*)\n   Solution: (.*)", content):
                if re.findall(r"\d+", problem) == numbers:
                    return solution
        return "The answer is 0."

    forms = ["What is {a} + {b}?", "Compute {a} plus {b}.", "Please add {a} and {b}."]
    pairs = [(11 + 3 * i, 40 + 7 * i) for i in range(8)]
    stream = [(forms[(n // len(pairs)) % 3].format(a=a, b=b), str(a + b)) for n, (a, b) in
              enumerate(pairs * 8)]
    settings = load_settings(store=tmp_path / "store.sqlite", sandbox_workers=1)
    # every request tries an arm on trial: which one goes by the random completion id, and at 0.5
    # the examples arm drew fewer than its 5 pairs in about one run of four
    config = ServeConfig(memory="desk", memory_explore=1.0)
    right = {True: 0, False: 0}
    shown_examples = []  # whether each request served with the admitted examples arm was right
    with serving(settings, config, engine=ScriptedModel(copying)) as (url, _):
        c = client(url)
        for question, gold in stream:
            for memory in (True, False):
                reply = c.chat.completions.create(model="scripted", messages=[{"role": "user", "content": question}],
                                                  extra_body={"memory": memory, "kind": "math"})
                said = reply.choices[0].message.content
                correct = said.strip() == f"The answer is {gold}."
                right[memory] += correct
                if memory and reply.model_extra["selfcorrect"]["memory_arm"] == "examples":
                    shown_examples.append(correct)
                if memory:
                    done = httpx.post(url + "/v1/feedback", json={"completion_id": reply.id, "correct": correct,
                                                                  "answer": gold}).json()
                    assert done["recorded"]
        arms = httpx.get(url + "/health").json()
    gate = Gate(tmp_path / "store.sqlite")
    report = gate.report("desk")
    gate.close()
    assert report["served"] == "examples" and report["arms"]["examples"]["status"] == "admitted"
    assert report["arms"]["examples"]["hurt"] == 0 and report["arms"]["examples"]["explored"] > 0
    # once admitted (when, the random completion ids decide: which arm each shadow trial tries),
    # what it serves is right where memory off never is
    assert right[False] == 0 and len(shown_examples) >= 3, (right, report)
    assert sum(shown_examples) >= 0.8 * len(shown_examples), (shown_examples, report)
    assert arms["status"] == "ok"


def test_the_api_answers_what_the_request_got_wrong_exactly(tmp_path):
    """A prompt over the context: a 400 with the reason (not a 500 the client would retry); a
    model name the server does not serve: OpenAI's 404 model_not_found; a strategy prefix that
    does not parse: a 400 with "did you mean"; /metrics behind the key when keys are on."""
    settings = load_settings(store=tmp_path / "store.sqlite", sandbox_workers=1)
    keys = {"alice": hash_key("sc-alice")}
    from selfcorrect.errors import ModelRequestError

    def refusing(messages, params, k):  # as the OpenAI backend raises what vLLM refuses with a 400
        if len(messages[-1]["content"]) > 1000:
            raise ModelRequestError("the model server refused the request (400): this model's maximum context "
                                    "length is 64 tokens", "shorten the messages")
        return reply(messages, params, k)

    with serving(settings, ServeConfig(keys=keys, aliases=["helpdesk"]), engine=ScriptedModel(refusing)) as (url, _):
        c = client(url, "sc-alice")
        with pytest.raises(openai.BadRequestError) as too_long:
            c.chat.completions.create(model="default", messages=[{"role": "user", "content": "many words " * 200}])
        assert "maximum context length is 64 tokens" in too_long.value.body["message"]
        assert "shorten the messages" in too_long.value.body["message"]
        with pytest.raises(openai.NotFoundError) as unknown:
            c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])
        assert unknown.value.body["code"] == "model_not_found" and "'helpdesk'" in unknown.value.body["message"]
        for name, phrase in (("self-consistensy:n=3/default", "did you mean 'self-consistency'"),
                             ("self-consistency:n=1000/helpdesk", "n=1000")):
            with pytest.raises(openai.BadRequestError, match=phrase) as bad:
                c.chat.completions.create(model=name, messages=[{"role": "user", "content": QUESTION}])
            assert bad.value.body["param"] == "model"
        for name in ("default", "helpdesk", "scripted", "single/helpdesk"):  # what it serves, with or without a strategy
            answered = c.chat.completions.create(model=name, messages=[{"role": "user", "content": QUESTION}])
            assert answered.model == name and answered.choices[0].message.content
        assert httpx.get(url + "/metrics").status_code == 401
        metrics = httpx.get(url + "/metrics", headers={"Authorization": "Bearer sc-alice"})
        assert metrics.status_code == 200 and 'status="error"' in metrics.text  # the refused long prompt
    with serving(settings, ServeConfig(keys=keys, open_metrics=True), engine=ScriptedModel(reply)) as (url, _):
        assert httpx.get(url + "/metrics").status_code == 200  # --open-metrics: for a scraper


def test_the_gate_counts_a_request_served_only_once_it_was_answered(tmp_path):
    from selfcorrect.errors import ModelRequestError

    def flaky(messages, params, k):
        if "refuse me" in messages[-1]["content"]:
            raise ModelRequestError("the model server refused the request (400)", "send less")
        return reply(messages, params, k)

    settings = load_settings(store=tmp_path / "store.sqlite", sandbox_workers=1)
    with serving(settings, ServeConfig(memory="help", memory_explore=0.0), engine=ScriptedModel(flaky)) as (url, _):
        c = client(url)
        with pytest.raises(openai.BadRequestError):
            c.chat.completions.create(model="default", messages=[{"role": "user", "content": "refuse me"}])
        gate = Gate(settings.store)
        assert sum(e.served for e in gate.arms("help").values()) == 0  # the refused request served nothing
        c.chat.completions.create(model="default", messages=[{"role": "user", "content": QUESTION}])
        assert sum(e.served for e in gate.arms("help").values()) == 1
        gate.close()


def test_a_feedback_is_one_transaction_and_a_retry_after_a_crash_counts_once(tmp_path):
    """The server dies after the lesson, the gate's pair and the worked example were written but
    before the completion was marked: nothing of it stays, and the client's retry records each
    once (the pair is the gate's evidence: counted twice it would admit an arm on half the
    evidence)."""
    settings = load_settings(store=tmp_path / "store.sqlite", sandbox_workers=1)
    config = ServeConfig(memory="desk", memory_explore=1.0)  # every request tries an arm in the shadow
    with serving(settings, config, engine=ScriptedModel(lambda m, p, k: "The answer is 0.")) as (url, server):
        c = client(url)
        reply = c.chat.completions.create(model="default", messages=[{"role": "user", "content": "What is 2 + 3?"}],
                                          extra_body={"kind": "math"})
        sent = {"completion_id": reply.id, "correct": False, "answer": "5"}
        mark = server.completions.set_feedback

        def crash(*args, **kwargs):
            raise RuntimeError("killed between the writes and the mark")

        server.completions.set_feedback = crash
        assert httpx.post(url + "/v1/feedback", json=sent).status_code == 500
        server.completions.set_feedback = mark
        assert server.bank.lessons("desk") == [] and server.examples.examples("desk") == []
        assert sum(e.pairs for e in server.gate.arms("desk").values()) == 0  # rolled back, all of it
        done = httpx.post(url + "/v1/feedback", json=sent).json()
        assert done["recorded"] and done["lesson"] and done["pair"] is not None and done["example"]
        assert httpx.post(url + "/v1/feedback", json=sent).json()["recorded"] is False  # the same again: once
        assert len(server.bank.lessons("desk")) == 1 and len(server.examples.examples("desk")) == 1
        assert sum(e.pairs for e in server.gate.arms("desk").values()) == 1
