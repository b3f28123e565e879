"""The memory gate (memory/gate.py) and the server's reading of feedback for it
(serve/memory.py): admission only when the bound excludes harm, retirement on harm, a blind
check never admitting, exploration by hash."""

import pytest

from selfcorrect.errors import ConfigError
from selfcorrect.memory.examples import ExampleBank
from selfcorrect.memory.gate import Gate
from selfcorrect.serve.memory import learn_from_feedback, shadow_verdict


@pytest.fixture
def gate(tmp_path):
    g = Gate(tmp_path / "store.sqlite", explore=0.3, min_pairs=5)
    yield g
    g.close()


def test_an_arm_is_admitted_only_when_its_bound_excludes_harm(gate):
    for _ in range(4):
        gate.record("ns", "examples", True, False)
    assert gate.served("ns") == "none"  # four pairs are not enough
    gate.record("ns", "examples", True, False)
    assert gate.arms("ns")["examples"].status == "admitted" and gate.served("ns") == "examples"
    for _ in range(3):  # harm comes in: the bound no longer excludes it, back on trial
        gate.record("ns", "examples", False, True)
    assert gate.arms("ns")["examples"].status == "trial" and gate.served("ns") == "none"


def test_harm_retires_and_a_blind_check_never_admits(gate):
    for _ in range(5):
        gate.record("ns", "lessons", False, True)
    assert gate.arms("ns")["lessons"].status == "retired"
    gate.record("ns", "lessons", True, False)
    assert gate.arms("ns")["lessons"].status == "retired"  # harm retires for good
    for _ in range(50):  # the check said the same of both sides every time: no evidence either way
        gate.record("ns", "rules", True, True)
    assert gate.arms("ns")["rules"].status == "trial" and gate.served("ns") == "none"
    assert gate.explore("ns", "x", "none") in (None, "examples", "rules")  # a retired arm is never tried
    with pytest.raises(ConfigError, match="unknown memory arm"):
        gate.record("ns", "none", True, False)


def test_exploration_is_a_reported_share_chosen_by_hash(gate):
    picks = [gate.explore("ns", f"item-{k}", "none") for k in range(1000)]
    assert 0.25 < sum(p is not None for p in picks) / 1000 < 0.35
    assert picks == [gate.explore("ns", f"item-{k}", "none") for k in range(1000)]  # a rerun explores the same
    assert {p for p in picks if p} == {"examples", "rules", "lessons"}
    for arm in ("examples", "rules", "lessons"):
        for _ in range(5):
            gate.record("ns", arm, arm == "examples", arm != "examples")
    # beside an admitted arm with nothing left on trial, none itself is the shadow
    assert {gate.explore("ns", f"item-{k}", "examples") for k in range(100)} == {None, "none"}
    assert gate.report("ns")["served"] == "examples" and gate.report("ns")["explore"] == 0.3


def test_feedback_scores_the_shadow_and_writes_examples(tmp_path, gate):
    assert shadow_verdict("math", "41", "42", False, "42") is True  # against the correct answer
    assert shadow_verdict("math", "42", "42.0", True, None) is True  # the served value, which was right
    assert shadow_verdict("math", "42", "41", True, None) is False  # another value than the right one
    assert shadow_verdict("math", "40", "41", False, None) is None  # both wrong, or not: cannot tell
    assert shadow_verdict("code", "a", "b", True, "x") is None
    examples = ExampleBank(tmp_path / "store.sqlite")
    payload = {"kind": "math", "question": "What is 40 + 2?", "answer": "41", "text": "The answer is 41.",
               "messages": [{"role": "user", "content": "What is 40 + 2?"}], "memory_arm": "none",
               "shadow": {"arm": "examples", "answer": "42", "text": "The answer is 42."}}
    learned = learn_from_feedback(gate, examples, "ns", payload, False, "42", {})
    assert learned["pair"] == {"arm": "examples", "shown_right": True, "none_right": False}
    [example] = examples.examples("ns")
    assert example.reply == "The answer is 42." and example.check == "user"
    assert examples.search("ns", "what is 40 + 2") and examples.training_data("ns")[0]["completion"] == example.reply
    examples.close()


def test_clearing_a_namespace_forgets_its_examples_and_the_gate_s_evidence(tmp_path):
    from typer.testing import CliRunner

    from selfcorrect.cli import app
    from selfcorrect.memory.examples import WorkedExample

    store = tmp_path / "store.sqlite"
    examples, gate = ExampleBank(store), Gate(store)
    examples.add(WorkedExample(namespace="ns", input="What is 1 + 1?", reply="The answer is 2.", check="gold"))
    examples.add(WorkedExample(namespace="other", input="What is 1 + 1?", reply="The answer is 2.", check="gold"))
    for _ in range(5):
        gate.record("ns", "examples", True, False)
    result = CliRunner().invoke(app, ["--store", str(store), "memory", "clear", "ns", "--yes"])
    assert result.exit_code == 0, result.output
    assert examples.examples("ns") == [] and len(examples.examples("other")) == 1
    assert gate.served("ns") == "none" and gate.arms("ns")["examples"].pairs == 0
    examples.close()
    gate.close()
