"""Verifiers learned from the model's own outputs: step labels from rollouts with a binary
search for the first wrong step, a PRM and an ORM trained on a tiny model that learn a toy
rule, and both as scorers of search and best-of-n (external kind, their reading charged)."""

import asyncio

import pytest

pytest.importorskip("trl")

from selfcorrect.models.base import SamplingParams  # noqa: E402
from selfcorrect.models.scripted import ScriptedModel  # noqa: E402
from selfcorrect.errors import ConfigError  # noqa: E402
from selfcorrect.strategies import parse_strategy  # noqa: E402
from selfcorrect.train.process import Labelled, label_solution  # noqa: E402
from tests.scripts import ListTask, Script, evaluate  # noqa: E402
from tests.tinymodel import make_tiny_model  # noqa: E402

TASK = ListTask([("What is 2 + 2?", "4")])
PARAMS = SamplingParams(temperature=0.7, max_tokens=32)


def finishes_what_it_started(messages, params, index):
    """Rollouts: a started solution recovers (reaches 4) while every equation in it holds."""
    equations = [e.strip().rstrip(".") for e in messages[-1]["content"].split(". ") if "=" in e]
    holds = all(eval(left) == int(right) for left, right in (e.split("=") for e in equations))
    return f"The answer is {4 if holds else 9}."


def label(text, k=3):
    model = ScriptedModel(finishes_what_it_started)
    [item] = TASK.items()
    record = asyncio.run(label_solution(model, TASK, item, text, k=k, params=PARAMS))
    return record, model


def test_a_right_solution_is_all_good_without_rollouts():
    record, model = label("2 + 2 = 4. The answer is 4.")
    assert record.correct and record.labels == [True, True] and record.rollouts == 0 and not model.calls


def test_the_first_wrong_step_is_found_by_binary_search():
    record, _ = label("2 + 2 = 5. The answer is 5.")
    assert record.labels == [False, False] and record.values == [0.0, 0.0]
    # right until the fourth step: the rollouts from steps 1-3 recover, from step 4 they cannot
    text = "1 + 1 = 2. 2 + 1 = 3. 3 + 1 = 4. 4 + 1 = 6. 6 - 2 = 4. 4 - 0 = 9. The answer is 9."
    record, model = label(text, k=2)
    assert record.steps[3] == "4 + 1 = 6. " and record.labels == [True, True, True, False, False, False, False]
    probed = [i for i, v in enumerate(record.values) if v is not None and i != len(record.steps) - 1]
    assert len(probed) <= 3 < len(record.steps) - 1 and record.rollouts == 2 * len(probed)
    assert all(c.messages[-1]["role"] == "assistant" for c in model.calls)  # rollouts continue the prefix


ROWS = [("2 + 2 = 4. ", True), ("2 + 2 = 5. ", False), ("3 + 1 = 4. ", True), ("3 + 1 = 7. ", False)]


def toy_records(count=24):
    """Solutions whose steps are good exactly when they say 4."""
    records = []
    for k in range(count):
        first, good = ROWS[k % 4]
        second, second_good = ROWS[(k // 4) % 4]
        correct = good and second_good
        records.append(Labelled(item_id=f"list/{k}", prompt=[{"role": "user", "content": "What is 2 + 2?"}],
                                steps=[first, second], labels=[good, good and second_good], values=[None, None],
                                correct=correct))
    return records


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from selfcorrect.train.classifier import VerifierSettings, train_verifier

    folder = tmp_path_factory.mktemp("verifiers")
    base = make_tiny_model(folder / "tiny")
    settings = VerifierSettings(epochs=30, learning_rate=3e-3, batch_size=8)
    out = {}
    for kind in ("prm", "orm"):
        metrics = train_verifier(base, kind, toy_records(), folder / kind, settings, progress=False)
        out[kind] = (folder / kind / "model", metrics)
    return out


def test_a_prm_learns_which_steps_are_good(trained):
    from selfcorrect.train.classifier import evaluate
    from selfcorrect.verify.learned import Verifier

    path, metrics = trained["prm"]
    assert metrics["labels"] == 48 and 0 < metrics["positive_share"] < 1 and metrics["log"][-1] < metrics["log"][0]
    verifier = Verifier.load(path, "prm")
    scores = verifier.step_scores([{"role": "user", "content": "What is 2 + 2?"}], ["2 + 2 = 4. ", "3 + 1 = 7. "])
    assert len(scores) == 2 and scores[0] > 0.5 > scores[1]
    measured = evaluate(verifier, toy_records())
    assert measured["step_accuracy"] >= 0.9 and measured["step_auc"] >= 0.9 and measured["auc"] >= 0.9
    with pytest.raises(ConfigError, match="is a trained prm, not a orm"):
        Verifier.load(path, "orm")


def test_an_orm_learns_which_solutions_are_right(trained):
    from selfcorrect.train.classifier import evaluate
    from selfcorrect.verify.learned import Verifier

    verifier = Verifier.load(trained["orm"][0], "orm")
    measured = evaluate(verifier, toy_records())
    assert measured["auc"] >= 0.9 and "step_accuracy" not in measured


def test_a_reading_is_charged_its_forward_pass_not_its_wait_for_the_model(trained):
    import threading
    import time

    from selfcorrect.verify.learned import Verifier

    verifier = Verifier.load(trained["prm"][0], "prm")
    record = toy_records()[0]
    with verifier._lock:  # another call holds the model for half a second
        waiter = threading.Thread(target=lambda: readings.append(verifier.score(record.prompt, record.steps)))
        readings, started = [], time.perf_counter()
        waiter.start()
        time.sleep(0.5)
    waiter.join()
    assert time.perf_counter() - started >= 0.5
    [reading] = readings
    assert 0 < reading.seconds < 0.5 and reading.tokens > 0 and len(reading.scores) == len(record.steps)


def test_learned_verifiers_score_search_and_best_of_n_as_external_feedback(tmp_path, trained):
    prm, orm = (str(trained[k][0]) for k in ("prm", "orm"))

    def reply(last, messages, k):
        if messages[-1]["role"] == "assistant":
            return f"The answer is {messages[-1]['content'].rsplit('= ', 1)[1].split('.')[0]}."
        said = ["5", "4", "5", "5"][k % 4]  # three of four say 5
        return f"2 + 2 = {said}. The answer is {said}."
    script = Script([(lambda last, m, k: True, reply)])
    specs = [f"beam-search:n=4,width=2,scorer=prm:{prm}", f"best-of-n:n=4,verifier=orm:{orm}", "self-consistency:n=4"]
    _, _, results = evaluate(tmp_path, script, specs, [("What is 2 + 2?", "4")])
    by = {spec: rows[0] for spec, rows in results.items()}
    assert not by["self-consistency:n=4"].final.correct  # three of four say 5
    for spec in specs[:2]:
        result = by[parse_strategy(spec).spec]
        assert result.final.correct, spec
        kinds = {f.kind for a in result.trajectory.attempts for f in a.feedback}
        assert kinds == {"external"}
        assert result.trajectory.cost["feedback"].calls > 0 and result.trajectory.cost["feedback"].prompt_tokens > 0
    with pytest.raises(ConfigError, match="no trained verifier"):
        evaluate(tmp_path / "x", script, [f"beam-search:scorer=prm:{tmp_path}"], [("What is 2 + 2?", "4")])
    with pytest.raises(ConfigError, match="unknown scorer"):
        parse_strategy("beam-search:scorer=judge")
