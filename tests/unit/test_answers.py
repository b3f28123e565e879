import pytest

from selfcorrect.verify.answers import answers_match, extract_answer, last_boxed


@pytest.mark.parametrize("reply, answer, how", [
    ("She makes 9 * 2 = $18 every day.\n#### 18", "18", "####"),
    ("#### 1,234\n", "1234", "####"),
    ("So x = 4, and \\boxed{\\frac{1}{2}}.", "\\frac{1}{2}", "boxed"),
    ("The answer is \\boxed{12}.", "12", "boxed"),
    ("Nested: \\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}", "boxed"),
    ("The answer is 18.", "18", "answer is"),
    ("Therefore the final answer is: 7 apples. Then I checked 8.", "7", "answer is"),
    ("**Answer:** $3.50", "3.50", "answer is"),
    ("answer = -12", "-12", "answer is"),
    ("I counted 3 cats, then 1,200 apples", "1200", "last number"),
    ("It costs .5 dollars", ".5", "last number"),
])
def test_extraction_prefers_explicit_markers(reply, answer, how):
    found = extract_answer(reply)
    assert (found.answer, found.how) == (answer, how)


def test_a_reply_without_an_answer_is_a_parse_failure():
    assert extract_answer("I am not sure how to solve this.") is None
    assert extract_answer("") is None


def test_the_last_marker_wins():
    assert extract_answer("The answer is 3. Wait, no. The answer is 5.").answer == "5"
    assert extract_answer("\\boxed{1} ... \\boxed{2}").answer == "2"


def test_last_boxed_balances_braces_and_rejects_unclosed():
    assert last_boxed("\\boxed{a{b}c}") == "a{b}c"
    assert last_boxed("\\boxed{open") is None
    assert last_boxed("nothing") is None


@pytest.mark.parametrize("predicted, gold, equal", [
    ("18", "18", True), ("18.0", "18", True), ("1200", "1,200", True), ("0.5", "1/2", True),
    ("17", "18", False), ("-3", "3", False), ("3.50", "3.5", True),
    ("0.5", "\\frac{1}{2}", True), ("2\\sqrt{2}", "\\sqrt{8}", True), ("\\frac{1}{3}", "0.5", False),
])
def test_answers_match_exactly_on_numbers_and_symbolically_otherwise(predicted, gold, equal):
    assert answers_match(predicted, gold) is equal


def test_matching_works_off_the_main_thread():
    """math-verify's own timeouts need the main thread; ours are switched off."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert pool.submit(answers_match, "\\frac{2}{4}", "\\frac{1}{2}").result() is True
