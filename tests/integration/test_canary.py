"""`serve --recipe DIR --canary SHARE`: a new recipe is a candidate that answers a share of
requests in the shadow and is promoted or rolled back by the gate's evidence, under 32
concurrent clients, with scripted models whose accuracy is known: the incumbent is right on
even first numbers only, one candidate is always wrong, another always right. The server,
its store, the sandbox that runs each request's checker, and HTTP are real."""

import concurrent.futures
import re
import time

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
    model, or on a benchmark rather than traffic, it counts for nothing."""
    out = tmp_path / "recipe"
    out.mkdir()
    write_recipe(recipe(0, out), out)
    settings = load_settings(store=tmp_path / "store.sqlite", sandbox_workers=1, model=f"recipe:{out}")
    config = ServeConfig(strategy="single", recipe=str(out), watch_seconds=0.05, canary=0.2)
    pairs = {"items": 40, "wrong_to_right": 12, "right_to_wrong": 0}
    with serving(settings, config, engine=MODELS[0]) as (url, server):
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
        health = offered(2, "served:store.sqlite", "incumbent")
        [promoted] = health["candidate"]["decisions"]
        assert promoted["decision"] == "promoted" and promoted["evidence"]["pairs"] == 40
        deadline = time.monotonic() + 10
        while httpx.get(f"{url}/health").json()["model"] != "scripted:better" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.get(f"{url}/health").json()["model"] == "scripted:better"
