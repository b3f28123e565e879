"""The memory gate (memory/gate.py) and the server's reading of feedback for it
(serve/memory.py): admission only on evidence valid however often it is looked at (shown by
seeded simulations of many streams), retirement on harm, a blind check never admitting,
exploration by hash, and feedback that records a pair only where both directions could be seen."""

import pytest

from selfcorrect.errors import ConfigError
from selfcorrect.memory.examples import ExampleBank
from selfcorrect.memory.gate import Gate
from selfcorrect.serve.memory import learn_from_feedback, shadow_verdict


@pytest.fixture
def gate(tmp_path):
    g = Gate(tmp_path / "store.sqlite", explore=0.3)
    yield g
    g.close()


def test_an_arm_is_admitted_once_its_evidence_of_gain_reaches_one_over_alpha(gate):
    for _ in range(6):
        gate.record("ns", "examples", True, False)
    assert gate.served("ns") == "none"  # six straight gains: an e-value of 18.1, short of 20
    gate.record("ns", "examples", True, False)
    assert gate.arms("ns")["examples"].evidence[0] == pytest.approx(31.875)
    assert gate.arms("ns")["examples"].status == "admitted" and gate.served("ns") == "examples"
    for _ in range(3):  # some harm: not yet evidence of harm, it stays
        gate.record("ns", "examples", False, True)
    assert gate.arms("ns")["examples"].status == "admitted"
    for _ in range(20):  # then harm, again and again: retired, and none is served again
        gate.record("ns", "examples", False, True)
    assert gate.arms("ns")["examples"].status == "retired" and gate.served("ns") == "none"


def test_harm_retires_and_a_blind_check_never_admits(gate):
    for _ in range(7):
        gate.record("ns", "lessons", False, True)
    assert gate.arms("ns")["lessons"].status == "retired"
    gate.record("ns", "lessons", True, False)
    assert gate.arms("ns")["lessons"].status == "retired"  # harm retires for good
    for _ in range(50):  # the check said the same of both sides every time: no evidence either way
        gate.record("ns", "rules", True, True)
    assert gate.arms("ns")["rules"].status == "trial" and gate.served("ns") == "none"
    explored = [gate.explore("ns", f"x{k}", "none") for k in range(200)]
    assert {"examples", "rules"} <= set(explored) and "lessons" not in explored  # a retired arm is never tried
    with pytest.raises(ConfigError, match="unknown arm"):
        gate.record("ns", "none", True, False)


def test_exploration_is_a_reported_share_chosen_by_hash(gate):
    picks = [gate.explore("ns", f"item-{k}", "none") for k in range(1000)]
    assert 0.25 < sum(p is not None for p in picks) / 1000 < 0.35
    assert picks == [gate.explore("ns", f"item-{k}", "none") for k in range(1000)]  # a rerun explores the same
    assert {p for p in picks if p} == {"examples", "rules", "lessons"}
    for arm in ("examples", "rules", "lessons"):
        for _ in range(7):
            gate.record("ns", arm, arm == "examples", arm != "examples")
    # beside an admitted arm with nothing left on trial, none itself is the shadow
    assert {gate.explore("ns", f"item-{k}", "examples") for k in range(100)} == {None, "none"}
    assert gate.report("ns")["served"] == "examples" and gate.report("ns")["explore"] == 0.3


def test_feedback_scores_the_shadow_and_writes_examples(tmp_path, gate):
    assert shadow_verdict("math", "41", "42", False, "42") is True  # against the correct answer
    assert shadow_verdict("math", "42", "42.0", True, None) is True  # the served value, which was right
    # another value, with a verdict alone: wrong if the served one was right, unknown if it was
    # wrong; only one direction could be seen, so neither is counted
    assert shadow_verdict("math", "42", "41", True, None) is None
    assert shadow_verdict("math", "40", "41", False, None) is None
    assert shadow_verdict("math", "40", None, False, None) is False  # no answer: wrong either way
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
    for _ in range(7):
        gate.record("ns", "examples", True, False)
    result = CliRunner().invoke(app, ["--store", str(store), "memory", "clear", "ns", "--yes"])
    assert result.exit_code == 0, result.output
    assert examples.examples("ns") == [] and len(examples.examples("other")) == 1
    assert gate.served("ns") == "none" and gate.arms("ns")["examples"].pairs == 0
    examples.close()
    gate.close()


def _streams(p: float, streams: int, pairs: int, seed: int):
    """Discordant pairs of `streams` seeded streams: 1 where the arm's side won (chance p)."""
    import numpy as np

    return (np.random.default_rng(seed).random((streams, pairs)) < p).cumsum(axis=1)


def _first_admitting_gains(pairs: int, alpha: float) -> list[int]:
    """For n = 1..pairs discordant pairs, the fewest gains whose evidence reaches 1/alpha."""
    from selfcorrect.stats import evidence_of_gain

    least, out = 0, []
    for n in range(1, pairs + 1):
        while least <= n and evidence_of_gain(least, n - least) < 1 / alpha:
            least += 1
        out.append(least)
        least = max(least - 1, 0)  # it rises by at most one per pair
    return out


def test_an_arm_with_no_effect_is_admitted_at_most_alpha_of_the_time_however_long_the_stream():
    import numpy as np

    from selfcorrect.stats import wilson

    alpha, pairs = 0.05, 400
    gains = _streams(0.5, 4000, pairs, seed=1)
    least = np.array(_first_admitting_gains(pairs, alpha))
    admitted = (gains >= least).any(axis=1).mean()
    assert admitted <= alpha, admitted
    # the rule it replaces, a Wilson bound re-checked after every pair from the fifth, fails it
    n = np.arange(1, pairs + 1)
    lows = np.array([[wilson(int(g), int(k))[0] for g, k in zip(row, n)] for row in gains[:500]])
    wilson_admitted = ((lows > 0.5) & (n >= 5)).any(axis=1).mean()
    assert wilson_admitted > 2 * alpha, wilson_admitted


def test_an_arm_that_helps_is_admitted_within_a_hundred_pairs():
    import numpy as np

    gains = _streams(0.8, 1000, 100, seed=2)
    least = np.array(_first_admitting_gains(100, 0.05))
    assert (gains >= least).any(axis=1).mean() >= 0.95


def test_verdict_only_feedback_records_no_pair_seen_in_one_direction_only(tmp_path, gate):
    """Arm and none equally good, feedback a verdict alone: the old reading credited the served
    arm with every win and never charged it with a loss."""
    examples = ExampleBank(tmp_path / "store.sqlite")
    payload = {"kind": "math", "question": "q", "text": "t", "messages": [], "memory_arm": "examples"}
    for served, shadow, correct in (("4", "5", True), ("4", "5", False), ("4", "4", True), ("4", "4", False)) * 10:
        learn_from_feedback(gate, examples, "ns", {**payload, "answer": served,
                                                   "shadow": {"arm": "none", "answer": shadow, "text": shadow}},
                            correct, None, {})
    arm = gate.arms("ns")["examples"]
    assert (arm.helped, arm.hurt, arm.pairs) == (0, 0, 20)  # the same values: both verdicts known
    for served, shadow, correct, answer in (("4", "5", True, "4"), ("4", "5", False, "5")):
        learn_from_feedback(gate, examples, "ns", {**payload, "answer": served,
                                                   "shadow": {"arm": "none", "answer": shadow, "text": shadow}},
                            correct, answer, {})
    arm = gate.arms("ns")["examples"]
    assert (arm.helped, arm.hurt) == (1, 1)  # with the correct answer, both directions count
    examples.close()


def _not_worse_streams(helped: float, hurt: float, streams: int, pairs: int, seed: int, margin: float):
    """Whether each seeded stream of paired trials ever reaches 1/0.05 on `evidence_not_worse`
    (checked after every trial), and at which trial it first did (pairs + 1: never)."""
    import numpy as np

    from selfcorrect.stats import _BETS

    draws = np.random.default_rng(seed).random((streams, pairs))
    h, l = (draws < helped).cumsum(axis=1), ((draws >= helped) & (draws < helped + hurt)).cumsum(axis=1)
    t = np.arange(1, pairs + 1) - h - l
    wealth = np.zeros((streams, pairs))
    for share in _BETS:
        stake = share / (1 - margin)
        wealth += np.exp(h * np.log1p(stake * (1 + margin)) + l * np.log1p(-stake * (1 - margin))
                         + t * np.log1p(stake * margin))
    reached = wealth / len(_BETS) >= 20
    return np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, pairs + 1)


def test_a_candidate_worse_by_the_margin_is_promoted_at_most_alpha_of_the_time_however_long_the_stream():
    """At the null's edge (the candidate 2 points worse, 20% of trials discordant), 2,000 streams
    of 1,000 trials, looked at after every trial."""
    first = _not_worse_streams(0.09, 0.11, 2000, 1000, seed=3, margin=0.02)
    assert (first <= 1000).mean() <= 0.05


def test_a_candidate_ten_points_better_is_promoted_within_a_few_hundred_trials():
    first = _not_worse_streams(0.15, 0.05, 1000, 300, seed=4, margin=0.02)
    assert (first <= 300).mean() >= 0.95


def test_the_gate_promotes_a_checkpoint_only_past_the_margin_and_the_flip_cap(tmp_path):
    from selfcorrect.stats import evidence_not_worse

    gate = Gate(tmp_path / "s.sqlite", explore=0.0, margin=0.02, flip_cap=0.15, arms=None)
    for k in range(30):  # a tie on every trial: not worse, by the margin's bet alone
        evidence = gate.record("checkpoint:a", "gguf:b", True, True)
    assert evidence.status == "trial"  # 30 ties: e = 1.26, short of 20
    while gate.arms("checkpoint:a")["gguf:b"].status == "trial":
        gate.record("checkpoint:a", "gguf:b", True, True)
    admitted = gate.arms("checkpoint:a")["gguf:b"]
    assert admitted.status == "admitted" and admitted.helped == admitted.hurt == 0
    assert evidence_not_worse(0, 0, admitted.pairs, 0.02) >= 20 > evidence_not_worse(0, 0, admitted.pairs - 1, 0.02)
    capped = Gate(tmp_path / "s.sqlite", explore=0.0, margin=0.5, flip_cap=0.1, arms=None)
    for k in range(40):  # as often better as worse, far inside a 50-point margin, but a fifth of its trials
        capped.record("checkpoint:a", "gguf:c", k % 5 != 0, k % 5 != 1)  # flipped right to wrong
    assert evidence_not_worse(8, 8, 40, 0.5) >= 20 and capped.arms("checkpoint:a")["gguf:c"].status == "trial"
    with pytest.raises(ConfigError, match="baseline"):
        gate.record("checkpoint:a", "none", True, False)
    gate.close()
    capped.close()
