"""The answer reader and comparator, against cases a careful human grader has judged
(tests/data/answers.jsonl: one case a line; add more there)."""

import json
from pathlib import Path

import pytest

from selfcorrect.verify.answers import (
    answers_match,
    is_numeric,
    last_boxed,
    read_answer,
    read_printed_number,
)

CASES = [json.loads(line) for line in (Path(__file__).parent.parent / "data" / "answers.jsonl").open()
         if line.strip()]


def grade(case: dict) -> tuple[str, str]:
    reading = read_answer(case["reply"], numeric=is_numeric(case["gold"]),
                          finish_reason=case.get("finish", "stop"))
    if reading.answer is None:
        return ("truncated" if reading.how == "truncated" else "unanswered"), reading.how
    return ("right" if answers_match(reading.answer, case["gold"]) else "wrong"), reading.how


def test_the_case_file_is_large_and_covers_every_verdict():
    assert len(CASES) >= 60
    assert {c["verdict"] for c in CASES} == {"right", "wrong", "unanswered", "truncated"}


@pytest.mark.parametrize("case", CASES, ids=[c["note"] for c in CASES])
def test_the_reader_gives_the_human_verdict(case):
    verdict, how = grade(case)
    assert verdict == case["verdict"], f"read as {how}"
    if "reason" in case:
        assert how == case["reason"]


def test_a_tolerance_exists_only_where_a_task_sets_one():
    assert not answers_match("1000001", "1000000")
    assert answers_match("1000001", "1000000", tolerance=1e-6)
    assert not answers_match("1000002", "1000000", tolerance=1e-6)


def test_an_expression_never_matches_a_number():
    assert not answers_match("64 * 49", "3136")
    assert not answers_match("5-3", "2")


@pytest.mark.parametrize("stdout, answer", [
    ("3136\n", "3136"), ("  -7  \n", "-7"), ("1,234\n", "1234"), ("3136.0\n", "3136.0"),
    ("The numbers are 64 and 49\n3136\n", "3136"), ("The answer is 31.\n", "31"),
    ("The answer is: 1826\n", "1826"), ("64 * 49 = 3136\n", "3136"),
    ("64 * 49\n", None), ("3136\nDone\n", None), ("", None), ("Ben has 20 apples\n", None),
    ("64 49\n", None), ("The answer is 3136\nBen has 20 apples\n", None),
])
def test_a_program_answer_is_a_final_line_that_states_a_number(stdout, answer):
    assert read_printed_number(stdout).answer == answer


def test_last_boxed_balances_braces_and_rejects_unclosed():
    assert last_boxed("\\boxed{a{b}c}") == "a{b}c"
    assert last_boxed("\\boxed{open") is None
    assert last_boxed("nothing") is None


def test_matching_works_off_the_main_thread():
    """math-verify's own timeouts need the main thread; ours are switched off."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert pool.submit(answers_match, "\\frac{2}{4}", "\\frac{1}{2}").result() is True
