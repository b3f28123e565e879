import pytest

from selfcorrect.measure.compute import accuracy_at, pool_sizes, vote_curve
from selfcorrect.measure.flips import flip_matrices
from selfcorrect.measure.stats import mcnemar, wilson
from selfcorrect.trajectory import Attempt, FinalGrade, Grade, Revision, Trajectory, UnitResult


def test_wilson_interval_matches_known_values():
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_mcnemar_exact_p_values():
    assert mcnemar(0, 0) == 1.0
    assert mcnemar(10, 0) == pytest.approx(2 / 1024)
    assert mcnemar(3, 5) == pytest.approx(2 * (1 + 8 + 28 + 56) / 256)
    assert mcnemar(5, 3) == mcnemar(3, 5)


def result(item, answers, gold, revisions=(), prompt=10, completion=5):
    attempts = [Attempt(index=i, round=0, phase="generate", sample=i, text=a, answer=a,
                        prompt_tokens=prompt, completion_tokens=completion) for i, a in enumerate(answers)]
    for before, after in revisions:
        attempts[after].round, attempts[after].phase = 1, "revise"
    trajectory = Trajectory(strategy="s", item_id=item, attempts=attempts,
                            revisions=[Revision(round=1, before=b, after=a) for b, a in revisions])
    grades = [Grade(correct=a == gold, parse_failure=False) for a in answers]
    return UnitResult(item=item, strategy="s", question="?", expected=gold, trajectory=trajectory,
                      grades=grades, final=FinalGrade(**grades[-1].model_dump()))


def test_vote_curve_reads_the_first_n_samples():
    results = [result("a", ["5", "4", "4", "4"], "4"), result("b", ["7", "3", "7", "3"], "3")]
    curve = vote_curve(results)
    assert [p["n"] for p in curve] == [1, 2, 4] == pool_sizes(4)[:3]
    # n=1: 5 and 7, both wrong; n=2: ties go to the first seen (5, 7); n=4: 4 wins, 7 ties first
    assert [p["accuracy"] for p in curve] == [0.0, 0.0, 0.5]
    assert [p["tokens"] for p in curve] == [15, 20, 30]  # the prompt once, completions per sample


def test_accuracy_at_a_budget_interpolates_and_says_where():
    curve = [{"n": 1, "tokens": 100, "accuracy": 0.2}, {"n": 2, "tokens": 200, "accuracy": 0.4}]
    assert accuracy_at(curve, 150) == (pytest.approx(0.3), "within")
    assert accuracy_at(curve, 50) == (0.2, "below")
    assert accuracy_at(curve, 500) == (0.4, "beyond")
    assert accuracy_at([], 10) == (None, "no pool")


def test_flip_matrices_count_each_cell_and_change():
    results = [
        result("a", ["4", "4"], "4", revisions=[(0, 1)]),  # right -> right, unchanged
        result("b", ["4", "5"], "4", revisions=[(0, 1)]),  # right -> wrong, changed
        result("c", ["6", "4"], "4", revisions=[(0, 1)]),  # wrong -> right, changed
        result("d", ["6", "7"], "4", revisions=[(0, 1)]),  # wrong -> wrong, changed
        result("e", ["6", "6.0"], "4", revisions=[(0, 1)]),  # wrong -> wrong, the same number
    ]
    [matrix] = flip_matrices(results)
    assert matrix.counts == {
        "right_right": {"changed": 0, "unchanged": 1}, "right_wrong": {"changed": 1, "unchanged": 0},
        "wrong_right": {"changed": 1, "unchanged": 0}, "wrong_wrong": {"changed": 1, "unchanged": 1}}
    assert (matrix.n, matrix.confidence, matrix.critique, matrix.net) == (5, 0.5, pytest.approx(1 / 3), 0)
