import pytest

from selfcorrect.measure.compute import accuracy_at, budget_for, pool_sizes, vote_curve
from selfcorrect.measure.flips import flip_matrices
from selfcorrect.stats import mcnemar, wilson
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


def test_budget_for_an_accuracy_is_where_the_curve_first_reaches_it():
    curve = [{"n": 1, "tokens": 100, "accuracy": 0.2}, {"n": 2, "tokens": 200, "accuracy": 0.4},
             {"n": 4, "tokens": 400, "accuracy": 0.3}, {"n": 8, "tokens": 800, "accuracy": 0.6}]
    assert budget_for(curve, 0.3) == ({"tokens": pytest.approx(150), "samples": pytest.approx(1.5)}, "within")
    assert budget_for(curve, 0.1) == ({"tokens": 100, "samples": 1.0}, "within")  # one sample already does
    # the dip at n=4 does not count as reaching 0.5: the first crossing is between 4 and 8
    assert budget_for(curve, 0.5) == ({"tokens": pytest.approx(400 + 400 * 2 / 3),
                                       "samples": pytest.approx(4 + 4 * 2 / 3)}, "within")
    assert budget_for(curve, 0.7) == (None, "beyond")
    assert budget_for([], 0.5) == (None, "no pool")


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



def test_summary_compares_each_strategy_with_voting_both_ways_and_with_best_of_n():
    from selfcorrect.measure.summary import summarize
    from selfcorrect.trajectory import Feedback

    # voting over 3 samples (15, 20, 25 tokens): right on 1 item at n=1 and n=2 (a tie goes to
    # the answer seen first), on 2 at n=3
    vote = [result("i0", ["4", "4", "4"], "4"), result("i1", ["5", "4", "4"], "4"),
            result("i2", ["5", "6", "7"], "4"), result("i3", ["5", "6", "7"], "4")]
    # best-of-n by a "prm" source that ranks the right sample first on i0 and i1 only
    best = [result(f"i{k}", ["5", "4", "6"], "4") for k in range(4)]
    for k, r in enumerate(best):
        for attempt in r.trajectory.attempts:
            ranked_first = (attempt.answer == "4") == (k < 2)
            attempt.feedback.append(Feedback(kind="external", source="prm", score=0.9 if ranked_first else 0.1))
    search = [result(f"i{k}", ["4" if k < 3 else "5"], "4") for k in range(4)]  # 75%, at 20 tokens
    for r in search:
        r.trajectory.cost["generate"].prompt_tokens, r.trajectory.cost["generate"].completion_tokens = 10, 10
    summary = summarize({"self-consistency:n=3": vote, "best-of-n:n=3": best, "beam-search": search}, set(), "math")
    assert [p["accuracy"] for p in summary["curves"]["vote"]["points"]] == [0.25, 0.25, 0.5]
    assert [p["accuracy"] for p in summary["curves"]["best_of"]["points"]] == [0.0, 0.5, 0.5]
    matched = summary["strategies"]["beam-search"]["compute_matched"]
    assert (matched["sampling_accuracy"], matched["gain"], matched["budget"]) == (0.25, 0.5, "within")
    # voting never reaches 75% in its pool; it reaches the vote's own 50% at its third sample
    assert (matched["sampling_for_equal_accuracy"], matched["equal_accuracy_budget"]) == (None, "beyond")
    assert summary["strategies"]["self-consistency:n=3"]["compute_matched"]["sampling_for_equal_accuracy"] == \
        {"tokens": 25, "samples": 3}
    assert matched["best_of"] == {"strategy": "best-of-n:n=3", "verifier": "prm", "accuracy": 0.5,
                                  "gain": 0.25, "budget": "within"}
