"""The small parsers strategies lean on: scores, verdicts, test calls, hidden numbers."""

import pytest

from selfcorrect.sandbox import RunResult, TestOutcome
from selfcorrect.strategies.base import describe_run, majority, parse_score, vote_key
from selfcorrect.strategies.sampling import left_side, yes_or_no
from selfcorrect.strategies.self_verify import masked_questions
from selfcorrect.trajectory import Attempt


@pytest.mark.parametrize("text, score", [
    ("The answer is fine. Score: 7/10", 0.7), ("I'd give it 3 out of 10.", 0.3), ("Confidence: 80%", 0.8),
    ("score 9", 0.9), ("Score: 12/10", None), ("no score at all", None), ("Score: 7.5 / 10", 0.75),
])
def test_scores_are_read_as_fractions(text, score):
    assert parse_score(text) == (pytest.approx(score) if score is not None else None)


@pytest.mark.parametrize("text, verdict", [("Yes, it is right.", True), ("no.", False), ("**No** because", False),
                                           ("Maybe", None), ("The answer: yes", None)])
def test_a_verdict_is_the_first_word(text, verdict):
    assert yes_or_no(text) is verdict


def test_the_call_a_visible_test_makes():
    assert left_side("assert add(1, 2) == 3") == "add(1, 2)"
    assert left_side("assert set(f((1, 2))) == set((1,))") == "set(f((1, 2)))"
    assert left_side("assert f(1)") is None and left_side("not python (") is None


def test_hidden_numbers_for_backward_checks():
    assert masked_questions("Tom has 1,200 coins and 3 bags.", 2) == [
        ("Tom has X coins and 3 bags.", "1200"), ("Tom has 1,200 coins and X bags.", "3")]
    assert masked_questions("No numbers here.", 1) == []


def attempts(*answers):
    return [Attempt(index=i, round=0, phase="generate", text=str(a), answer=a) for i, a in enumerate(answers)]


def test_votes_count_equal_numbers_together_and_skip_missing_answers():
    assert vote_key("1,000") == vote_key("1000.0") == "1000"
    assert majority(attempts("3", None, "1000", "1,000")).answer == "1000"
    assert majority(attempts(None, None)) is None


def test_execution_feedback_reads_as_a_model_should():
    result = RunResult(loaded=True, tests=(
        TestOutcome("visible 1", True, 0.0),
        TestOutcome("visible 2", False, 0.0, error_type="AssertionError", message="f(2) returned 5, expected 4"),
        TestOutcome("visible 3", False, 1.0, timed_out=True, error_type="Timeout")))
    assert describe_run(result) == ("Passed: visible 1\nFailed: f(2) returned 5, expected 4\nTimed out: visible 3")
    assert describe_run(RunResult(loaded=False, tests=(), load_error="SyntaxError: bad")) == (
        "Your code did not load: SyntaxError: bad")
