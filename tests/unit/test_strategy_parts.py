"""The small parsers strategies lean on: scores, verdicts, choices, test calls, hidden
numbers. Scores have their own case file (tests/data/scores.jsonl)."""

import json
from pathlib import Path

import pytest

from selfcorrect.sandbox import RunResult, TestOutcome
from selfcorrect.strategies.selection import majority
from selfcorrect.strategies.session import describe_run
from selfcorrect.verify.answers import vote_key
from selfcorrect.strategies.refine import CRITIQUE, GatedRefine
from selfcorrect.strategies.sampling import read_choice, yes_or_no
from selfcorrect.tasks.kinds import left_side
from selfcorrect.strategies.self_verify import masked_questions
from selfcorrect.trajectory import Attempt
from selfcorrect.verify.scores import read_score

SCORES = [json.loads(line) for line in (Path(__file__).parent.parent / "data" / "scores.jsonl").open()
          if line.strip()]


@pytest.mark.parametrize("case", SCORES, ids=[c["note"] for c in SCORES])
def test_a_score_is_read_from_the_final_line_only(case):
    score = read_score(case["reply"], case["label"], case["scale"])
    assert score == (pytest.approx(case["score"]) if case["score"] is not None else None)


def test_the_score_case_file_is_large_and_has_placeholders():
    assert len(SCORES) >= 25
    assert sum("placeholder" in c["note"] for c in SCORES) >= 3


@pytest.mark.parametrize("prompt", [*CRITIQUE.values(), GatedRefine.prompts["confidence"]])
def test_no_prompt_can_be_echoed_into_a_score(prompt):
    """Whatever line of its prompt a model echoes back, none parses as a score."""
    for line in prompt.splitlines():
        for fragment in (line, line.split(". ")[-1], line.replace("`", "")):
            assert read_score(fragment) is None and read_score(fragment, "Confidence", 100) is None


@pytest.mark.parametrize("text, choice", [("3", 3), ("Response 2 agrees most.", 2), ("**4**", 4),
                                          ("All 5 responses agree.", None), ("I think 3", None), ("", None)])
def test_a_choice_is_the_response_a_reply_starts_by_naming(text, choice):
    assert read_choice(text) == choice


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


def test_votes_use_the_answer_grading_reads():
    """An equation and a marker stating the same number vote together, as they grade."""
    from selfcorrect.tasks.arithmetic import Arithmetic
    from selfcorrect.tasks.kinds import read

    view = Arithmetic(n=1).items()[0].view
    replies = ["37 + 75 = 112", "The answer is 112.", "The answer is 37 + 75."]
    keys = [vote_key(read(view, r).answer) for r in replies]
    assert keys == ["112", "112", None]


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


def test_feedback_masks_memory_addresses_so_replays_come_from_the_cache():
    from selfcorrect.strategies.session import reproducible

    assert reproducible("<function add_42 at 0x7f3c2a1b9d30>\n7") == "<function add_42 at 0x…>\n7"
    assert reproducible("0x10 and 255") == "0x10 and 255"  # short hex literals are values, kept
