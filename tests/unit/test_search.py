"""Step-level search on the scripted model: partial solutions grown by continuing the model's
own reply, scored per step, the best finished path returned, every call in its phase."""

import pytest

from selfcorrect.strategies import parse_strategy
from selfcorrect.errors import ConfigError
from tests.scripts import Script, evaluate

ONE = [("What is 2 + 2?", "4")]
FIRST_STEPS = {0: "2 + 2 = 4", 1: "2 + 2 = 5", 2: "2 + 2 = 6", 3: "2 + 2 = 5"}  # sample k of the first step


def model(judge: bool = False, right_rollouts: bool = True) -> Script:
    """First steps: one right in four. A started solution ends with its answer. The judge
    scores a step 9 when it is right, else 1. Rollouts finish the solution they are given."""
    def reply(last, messages, k):
        if messages[-1]["role"] == "assistant":  # continuing a partial solution
            started = messages[-1]["content"]
            result = started.split("= ")[1].split(".")[0]
            return f"The answer is {result}."
        if "Is the last step of it correct?" in last:
            right = "= 4" in last.split("Here is the start of a solution:")[1].split("Is the last step")[0]
            return f"Checking.\nScore: {9 if right else 1}"
        return FIRST_STEPS[k % 4] + ". The answer is " + FIRST_STEPS[k % 4].split("= ")[1] + "."
    return Script([(lambda last, m, k: True, reply)])


def only(results, spec):
    [result] = results[parse_strategy(spec).spec]
    return result


def test_beam_search_keeps_the_best_scored_steps_and_returns_the_best_finished_path(tmp_path):
    script = model()
    spec = "beam-search:n=4,width=2,scorer=self"
    _, _, results = evaluate(tmp_path, script, [spec, "self-consistency:n=4"], ONE)
    assert not only(results, "self-consistency:n=4").final.correct  # 5 wins the vote, 2 to 1
    result = only(results, spec)
    assert result.final.correct and result.trajectory.stop == "searched"
    attempts = result.trajectory.attempts
    # two beams kept (the right one and the best of the rest), each grown two ways: four finished paths
    assert len(attempts) == 4 and all(a.text.startswith("2 + 2 = ") and "The answer is" in a.text for a in attempts)
    assert sorted(a.answer for a in attempts) == ["4", "4", "5", "5"]
    [feedback] = attempts[result.trajectory.final].feedback
    assert feedback.kind == "intrinsic" and feedback.source == "step scores (self, last)" and feedback.score == 0.9
    continued = [c for c in script.model.calls if c.messages[-1]["role"] == "assistant"]
    assert continued and all(c.params.stop == (". ",) for c in continued)  # steps end at the delimiter
    assert {c.messages[-1]["content"] for c in continued} == {"2 + 2 = 4. ", "2 + 2 = 5. "}
    cost = result.trajectory.cost
    assert cost["generate"].calls == 3 and cost["feedback"].calls == 4 + 4  # first steps, then finished paths
    assert cost["rollout"].calls == 0


def test_a_path_the_model_ended_is_finished_not_continued(tmp_path):
    """A step that ends because the model ended its reply (not at the delimiter) finishes its
    path: continued, a small model repeats itself to the token cap."""
    def reply(last, messages, k):
        if messages[-1]["role"] == "assistant":
            return "The answer is 5."
        if "Is the last step of it correct?" in last:
            return "Score: 5"
        return ["2 + 2 = 4", "2 + 2 = 5. So"][k % 2]  # the first ends its reply; the second goes on
    script = Script([(lambda last, m, k: True, reply)])
    spec = "beam-search:n=2,width=1,scorer=self"
    _, _, results = evaluate(tmp_path, script, [spec], ONE)
    result = only(results, spec)
    assert sorted(a.text for a in result.trajectory.attempts) == ["2 + 2 = 4", "2 + 2 = 5. The answer is 5."]
    continued = [c.messages[-1]["content"] for c in script.model.calls if c.messages[-1]["role"] == "assistant"]
    assert continued == ["2 + 2 = 5. "]


def test_a_path_that_states_its_answer_is_finished_whatever_the_wording(tmp_path):
    def reply(last, messages, k):
        if "Is the last step of it correct?" in last:
            return "Score: 5"
        return ["4 is the answer. Yes", "The answer is 4. Yes"][k % 2]  # both cut at the delimiter
    script = Script([(lambda last, m, k: True, reply)])
    spec = "beam-search:n=2,width=1,scorer=self"
    _, _, results = evaluate(tmp_path, script, [spec], ONE)
    assert sorted(a.text for a in only(results, spec).trajectory.attempts) == ["4 is the answer", "The answer is 4"]
    assert not [c for c in script.model.calls if c.messages[-1]["role"] == "assistant"]  # nothing continued


def test_rollout_values_follow_the_vote_of_the_rollouts_and_are_intrinsic(tmp_path):
    script = model()
    spec = "beam-search:n=4,width=2,rollouts=3"
    _, _, results = evaluate(tmp_path, script, [spec], ONE)
    result = only(results, spec)
    # with no checker a rollout's answer counts when it is the item's most common one: 5 here
    assert result.final.answer == "5" and not result.final.correct
    assert result.trajectory.cost["rollout"].calls == 4 and result.trajectory.cost["feedback"].calls == 0
    assert all(f.kind == "intrinsic" for a in result.trajectory.attempts for f in a.feedback)


def test_dvts_grows_independent_subtrees_from_draws_of_their_own(tmp_path):
    script = model()
    spec = "dvts:n=4,width=2,scorer=self"
    _, _, results = evaluate(tmp_path, script, [spec], ONE)
    result = only(results, spec)
    first = [c for c in script.model.calls if c.messages[-1]["role"] == "user" and "Is the last" not in
             c.messages[-1]["content"]]
    assert sorted((c.first_index, c.params.n) for c in first) == [(0, 2), (2, 2)]  # samples 0-1 and 2-3
    assert result.final.correct


def test_mcts_backs_up_values_and_returns_the_path_it_valued_most(tmp_path):
    script = model()
    spec = "mcts:simulations=6,children=4,scorer=self"
    _, _, results = evaluate(tmp_path, script, [spec], ONE)
    result = only(results, spec)
    assert result.final.correct
    final = result.trajectory.attempts[result.trajectory.final]
    assert final.feedback[0].source == "step scores (self, mean backed-up value)"


def test_search_specs_are_checked():
    for spec in ("beam-search:n=6,width=4", "dvts:n=4,width=3"):
        with pytest.raises(ConfigError, match="must be a multiple of width"):
            parse_strategy(spec)
    with pytest.raises(ConfigError, match="no option 'aggregate'"):
        parse_strategy("mcts:aggregate=min")
    with pytest.raises(ConfigError):
        parse_strategy("beam-search:scorer=oracle")
