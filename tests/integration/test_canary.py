"""`serve --recipe DIR --canary SHARE`: a new recipe is a candidate that answers a share of
requests in the shadow and is promoted or rolled back by the gate's evidence, under 32
concurrent clients, with scripted models whose accuracy is known: the incumbent is right on
even first numbers only, one candidate is always wrong, another always right. The server,
its store, the sandbox that runs each request's checker, and HTTP are real."""

import concurrent.futures
import contextlib
import json
import re
import time
from pathlib import Path

import httpx
import pytest

from selfcorrect.config import load_settings
from selfcorrect.models.lineage import Checkpoint
from selfcorrect.models.recipe import Measured, Recipe, read_recipe, write_recipe
from selfcorrect.models.scripted import ScriptedModel
from selfcorrect.serve.app import ServeConfig
from tests.serving import serving

pytestmark = pytest.mark.integration
CHECKER = "def check(answer):\n    a, b = {a}, {b}\n    return float(answer) == a + b\n"


def model(name: str, right) -> ScriptedModel:
    def reply(messages, params, k):
        a, b = map(int, re.findall(r"\d+", messages[-1]["content"])[:2])
        return f"The answer is {a + b if right(a) else a + b + 1}."
    return ScriptedModel(reply, identity=f"scripted:{name}")


MODELS = {0: model("incumbent", lambda a: a % 2 == 0), 1: model("worse", lambda a: False),
          2: model("better", lambda a: True), 3: model("worse-again", lambda a: False)}


def recipe(round_: int, folder) -> Recipe:
    measured = Measured(strategy="single", accuracy=0.5, interval=(0.4, 0.6), items=100, tokens_per_item=10.0)
    return Recipe(task="arithmetic", round=round_, checkpoint=Checkpoint(name=f"r{round_}", round=round_, path=str(folder)),
                  strategy="single", sampling={"temperature": 0.3}, labels="none", oracle=False, heldout=measured,
                  base_best=measured, measured_at=time.time())


def test_a_worse_candidate_is_rolled_back_and_a_better_one_promoted_under_32_clients(tmp_path):
    out = tmp_path / "recipe"
    out.mkdir()
    write_recipe(recipe(0, out), out)
    settings = load_settings(store=tmp_path / "store.sqlite", sandbox_workers=2, model=f"recipe:{out}")
    config = ServeConfig(strategy="single", recipe=str(out), watch_seconds=0.05, canary=0.5)
    with serving(settings, config, engine=MODELS[0]) as (url, server):
        server.swaps.load = lambda s: MODELS[read_recipe(out).round]
        counter = iter(range(10**6))
        truth: dict[str, int] = {}  # completion id -> the right answer, for the clients' feedback

        def ask(checked: bool = True):
            a, b = next(counter) % 50, 7
            body = {"model": "default", "kind": "math", "messages": [{"role": "user", "content": f"What is {a} + {b}?"}]}
            if checked:
                body["checker"] = CHECKER.format(a=a, b=b)
            reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
            truth[reply.json()["id"]] = a + b
            return reply.status_code, reply.json()

        def until(decisions: int, checked: bool = True, feedback: bool = False, most: int = 640):
            """Requests from 32 clients until the `decisions`-th decision; what they were answered."""
            answered = []
            with concurrent.futures.ThreadPoolExecutor(32) as pool:
                while len(answered) < most:
                    batch = list(pool.map(lambda _: ask(checked), range(32)))
                    answered += batch
                    for _, body in batch if feedback else ():  # the client knows the answer, and says it
                        served = int(re.findall(r"\d+", body["choices"][0]["message"]["content"])[0])
                        right = truth[body["id"]]
                        assert httpx.post(f"{url}/v1/feedback", json={"completion_id": body["id"], "correct": served == right,
                                                                      "answer": str(right)}).status_code == 200
                    if len(httpx.get(f"{url}/health").json()["recipe"]["candidate"]["decisions"]) >= decisions:
                        return answered
            raise AssertionError(f"no decision in {most} requests: {httpx.get(f'{url}/health').json()}")

        def wait_for_candidate(identity: str):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                candidate = httpx.get(f"{url}/health").json()["recipe"]["candidate"]["candidate"]
                if candidate and candidate["identity"] == identity:
                    return
                time.sleep(0.05)
            raise AssertionError(f"{identity} never went on trial")

        # a worse candidate: on trial, never answering a client, rolled back
        write_recipe(recipe(1, out), out)
        wait_for_candidate("scripted:worse")
        answered = until(1)
        assert all(status == 200 for status, _ in answered)
        assert {body["selfcorrect"]["checkpoint"] for _, body in answered} == {"scripted:incumbent"}
        health = httpx.get(f"{url}/health").json()["recipe"]
        [rolled_back] = health["candidate"]["decisions"]
        assert rolled_back["decision"] == "rolled back" and rolled_back["candidate"]["identity"] == "scripted:worse"
        evidence = rolled_back["evidence"]
        assert evidence["hurt"] >= 5 and evidence["helped"] == 0 and evidence["status"] == "retired"
        assert evidence["pairs"] <= 0.5 * len(answered) + 32  # only the shadow share was ever tried
        assert health["incumbent"]["identity"] == "scripted:incumbent" and health["candidate"]["candidate"] is None

        # a better candidate: promoted, and from then on it answers
        write_recipe(recipe(2, out), out)
        wait_for_candidate("scripted:better")
        answered = until(2)
        health = httpx.get(f"{url}/health").json()["recipe"]
        promoted = health["candidate"]["decisions"][-1]
        assert promoted["decision"] == "promoted" and promoted["evidence"]["not_worse"] >= 20
        assert promoted["evidence"]["hurt"] == 0 and promoted["evidence"]["helped"] > 0
        assert all(status == 200 for status, _ in answered)  # the swap under 32 clients failed nothing
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/health").json()["model"] != "scripted:better" and time.monotonic() < deadline:
            time.sleep(0.05)
        status, after = ask()
        assert status == 200 and after["selfcorrect"]["checkpoint"] == "scripted:better"
        assert health["swaps"] == 1 and health["last_swap"]["evidence"]["decision"] == "promoted"

        # scored by the clients' feedback where the requests carry no check: a worse one again, rolled back
        write_recipe(recipe(3, out), out)
        wait_for_candidate("scripted:worse-again")
        answered = until(3, checked=False, feedback=True)
        last = httpx.get(f"{url}/health").json()["recipe"]["candidate"]["decisions"][-1]
        assert last["decision"] == "rolled back" and last["candidate"]["identity"] == "scripted:worse-again"
        assert {body["selfcorrect"]["checkpoint"] for _, body in answered} == {"scripted:better"}
        assert last["evidence"]["pairs"] > 0  # every trial scored by a client: the requests carried no check


def test_a_recipe_s_confirmation_pairs_against_the_incumbent_count_first(tmp_path):
    """improve's confirmation side on the same traffic, against the model now serving, starts the
    candidate's evidence: enough of it promotes before any shadow trial; measured against another
    model, or on a benchmark rather than traffic, it counts for nothing. The model serving is
    recognised by the tensors of the GGUF it runs, as improve's base written back to GGUF is
    another file of the embedded model's tensors than the server's."""
    from tests.unit.test_gguf_identity import TENSORS, write

    from selfcorrect.models.embedded.files import gguf_tensors_hash

    out = tmp_path / "recipe"
    out.mkdir()
    write_recipe(recipe(0, out), out)
    settings = load_settings(store=tmp_path / "store.sqlite", sandbox_workers=1, model=f"recipe:{out}")
    config = ServeConfig(strategy="single", recipe=str(out), watch_seconds=0.05, canary=0.2)
    pairs = {"items": 40, "wrong_to_right": 12, "right_to_wrong": 0}
    incumbent = model("incumbent", lambda a: a % 2 == 0)
    incumbent.path = write(tmp_path / "served.gguf", TENSORS, "the server's file")
    measured = write(tmp_path / "measured.gguf", TENSORS, "improve's base", order=list(TENSORS)[::-1])
    with serving(settings, config, engine=incumbent) as (url, server):
        server.swaps.load = lambda s: MODELS[read_recipe(out).round]

        def offered(round_: int, task: str, against: str) -> dict:
            write_recipe(recipe(round_, out).model_copy(update={"task": task, "evidence": {"against": [against], **pairs}}), out)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                health = httpx.get(f"{url}/health").json()["recipe"]
                candidate = health["candidate"]["candidate"]
                if health["candidate"]["decisions"] or (candidate and candidate["round"] == round_):
                    return health
                time.sleep(0.05)
            raise AssertionError("the recipe was never offered")

        for task, against in (("arithmetic", "incumbent"), ("served:store.sqlite", "another-model")):
            health = offered(1, task, against) if task == "arithmetic" else offered(3, task, against)
            assert not health["candidate"]["decisions"] and health["candidate"]["candidate"]["evidence"] is None
        health = offered(2, "served:store.sqlite", f"tensors:{gguf_tensors_hash(measured)}")
        [promoted] = health["candidate"]["decisions"]
        assert promoted["decision"] == "promoted" and promoted["evidence"]["pairs"] == 40
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/health").json()["model"] != "scripted:better" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"{url}/health").json()["model"] == "scripted:better"


def test_serve_improve_runs_cycles_on_its_traffic_and_promotes_only_through_the_canary(tmp_path, monkeypatch):
    """Every 20 answered requests a cycle runs (a stand-in for `improve`, as a child process); its
    recipe goes on trial and is promoted by the evidence; the cycle's state, the promotion and
    the counters survive a restart, and a failed cycle changes nothing served."""
    import sys

    from selfcorrect.serve.improver import ImproveSchedule, Improver

    fail = {"on": False}
    monkeypatch.setattr(Improver, "command", lambda self, out, requests: [sys.executable, "tests/fake_improve.py", str(out)]
                        + (["--fail"] if fail["on"] else []))
    folder = tmp_path / "cycle"
    settings = load_settings(store=tmp_path / "store.sqlite", sandbox_workers=2)

    def config():
        return ServeConfig(strategy="single", watch_seconds=0.05, canary=0.5,
                           improve=ImproveSchedule(folder=str(folder), every=20, nice=0))

    def ask(url, n):
        a, b = n % 50, 7
        reply = httpx.post(f"{url}/v1/chat/completions", timeout=60, json={
            "model": "default", "kind": "math", "checker": CHECKER.format(a=a, b=b),
            "messages": [{"role": "user", "content": f"What is {a} + {b}?"}]})
        assert reply.status_code == 200
        return reply.json()["selfcorrect"]["checkpoint"]

    with serving(settings, config(), engine=MODELS[0]) as (url, server):
        server.swaps.load = lambda s: MODELS[2]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            served = list(pool.map(lambda n: ask(url, n), range(19)))
            time.sleep(1.5)
            assert httpx.get(f"{url}/health").json()["improve"]["cycles"] == 0  # 19 of 20: not yet
            n = 19
            deadline = time.monotonic() + 60
            while httpx.get(f"{url}/health").json()["model"] != "scripted:better":
                assert time.monotonic() < deadline, httpx.get(f"{url}/health").json()
                served += list(pool.map(lambda k: ask(url, k), range(n, n + 8)))
                n += 8
        health = httpx.get(f"{url}/health").json()
        cycle = json.loads((folder / "cycle.json").read_text())["cycles"][0]  # a second may have begun since
        assert cycle["cycle"] == 1 and cycle["status"] == "offered" and cycle["requests"] >= 20
        assert health["recipe"]["candidate"]["decisions"][-1]["decision"] == "promoted"
        assert set(served) <= {"scripted:incumbent", "scripted:better"} and served[0] == "scripted:incumbent"
        metrics = httpx.get(f"{url}/metrics").text
        assert re.search(r'selfcorrect_improve_cycles_total\{status="offered"\} [1-9]', metrics)  # a 2nd may be done
        assert 'selfcorrect_canary_decisions_total{decision="promoted"} 1.0' in metrics
    assert (folder / "incumbent" / "recipe.json").is_file()  # what a restart serves (the CLI loads it)
    report = (folder / "report.md").read_text()  # for people: the cycles and the decisions
    assert "| 1 | " in report and "offered" in report and "- promoted scripted:better (round 1)" in report
    state = json.loads((folder / "cycle.json").read_text())["cycles"]
    assert state[0]["status"] == "offered"

    # restarted: the state is read back, and counting goes on from it; a cycle the stop cut short
    # runs again from its folder; the next cycle fails, and nothing served changes
    cut = state[-1]["status"] == "running"
    calls = folder / "cycles" / str(len(state)) / "calls"  # a cycle cut as it began may not have counted its call
    before = int(calls.read_text()) if cut and calls.is_file() else 0
    fail["on"] = True
    with serving(settings, config(), engine=MODELS[2]) as (url, server):
        for k in range(0 if cut else 20):
            ask(url, k)
        deadline = time.monotonic() + 60
        while not any(c["status"] == "failed" for c in json.loads((folder / "cycle.json").read_text())["cycles"]):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        failed = next(c for c in json.loads((folder / "cycle.json").read_text())["cycles"] if c["status"] == "failed")
        assert failed["cycle"] == (len(state) if cut else len(state) + 1) and "no train item was verified" in failed["error"]
        assert (folder / "cycles" / str(failed["cycle"]) / "calls").read_text() == str(before + 1)
        assert ask(url, 99) == "scripted:better" and (folder / "cycles" / str(failed["cycle"]) / "improve.log").is_file()


def test_a_kill_9_in_a_cycle_loses_no_request_or_feedback_and_the_restart_resumes_it(tmp_path):
    """`selfcorrect serve --improve` on the embedded model, killed with SIGKILL (its whole process
    group, the cycle's child too) while a cycle runs: every answered request and every feedback
    is in the store after, and the restarted server runs the cut cycle again from its folder."""
    import os
    import signal
    import sqlite3
    import subprocess

    from tests.cli import EXE
    from tests.conftest import free_port

    folder, store = tmp_path / "cycle", tmp_path / "store.sqlite"
    root = Path(__file__).parents[2]

    def start(port: int) -> subprocess.Popen:
        process = subprocess.Popen(
            [str(EXE), "--store", str(store), "--threads", "1", "serve", "--port", str(port), "--strategy", "single",
             "--improve", str(folder), "--improve-every", "6",
             "--improve-command", f"{{python}} {root / 'tests' / 'fake_improve.py'} {{out}} --sleep 8"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return process
            assert process.poll() is None, "the server exited"
            time.sleep(0.2)
        raise AssertionError("the server did not start")

    port = free_port()
    server = start(port)
    url = f"http://127.0.0.1:{port}"
    ids = []
    for k in range(8):
        reply = httpx.post(f"{url}/v1/chat/completions", timeout=120, json={
            "model": "default", "kind": "math", "max_tokens": 16, "messages": [{"role": "user", "content": f"What is {k} + 1?"}]})
        assert reply.status_code == 200
        ids.append(reply.json()["id"])
        if k % 3 == 0:
            assert httpx.post(f"{url}/v1/feedback", json={"completion_id": ids[-1], "correct": False,
                                                          "answer": str(k + 1)}).status_code == 200
    deadline = time.monotonic() + 30
    while not (folder / "cycles" / "1" / "calls").is_file():  # the cycle's child is at work
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert json.loads((folder / "cycle.json").read_text())["cycles"][-1]["status"] == "running"
    os.killpg(server.pid, signal.SIGKILL)  # the server and the cycle it started
    server.wait()

    db = sqlite3.connect(store)
    assert db.execute("SELECT COUNT(*), SUM(feedback IS NOT NULL) FROM completions").fetchone() == (8, 3)
    db.close()
    server = start(port)
    try:
        deadline = time.monotonic() + 60
        while json.loads((folder / "cycle.json").read_text())["cycles"][0]["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        cycles = json.loads((folder / "cycle.json").read_text())["cycles"]
        assert len(cycles) == 1 and cycles[0]["status"] == "offered" and cycles[0]["requests"] == 8
        assert (folder / "cycles" / "1" / "calls").read_text() == "2"  # run again from its folder
        assert httpx.get(f"{url}/health").json()["improve"]["cycles"] == 1
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)


def test_a_cycle_improves_on_all_the_traffic_it_began_with_and_no_more(tmp_path):
    """improve's default --limit (400 items) would keep a cycle to the oldest questions, and a
    resumed cycle would find more traffic than it began with: the command fixes both."""
    from types import SimpleNamespace

    from selfcorrect.serve.improver import ImproveSchedule, Improver

    server = SimpleNamespace(settings=SimpleNamespace(store=tmp_path / "s.sqlite"), config=SimpleNamespace(memory="help"))
    improver = Improver(server, ImproveSchedule(folder=str(tmp_path / "c"), args="--labels feedback"))
    command = improver.command(tmp_path / "c" / "cycles" / "3", 900)
    assert command[command.index("--task") + 1] == f"served:{tmp_path / 's.sqlite'},until=900,namespace=help"
    assert command[command.index("--limit") + 1] == "900" and command[-2:] == ["--labels", "feedback"]
