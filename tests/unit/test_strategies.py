"""Every strategy on the scripted model: what it selects, when it stops, what it records."""

import asyncio

import pytest

from selfcorrect.errors import ConfigError
from selfcorrect.measure.flips import flip_matrices
from selfcorrect.strategies import parse_strategy
from selfcorrect.models.scripted import ScriptedModel
from tests.scripts import Script, asked, evaluate, sample

ONE = [("What is 2 + 2?", "4")]
INITIAL = "Solve it step by step"


def only(results, spec):
    [result] = results[parse_strategy(spec).spec]
    return result


def final_answer(result):
    return result.trajectory.attempts[result.trajectory.final].answer


def test_single_is_sample_zero(tmp_path):
    script = Script([(sample(0, INITIAL), "2 + 2 = 4. The answer is 4."), (asked(INITIAL), "The answer is 9.")])
    _, _, results = evaluate(tmp_path, script, ["single"], ONE)
    result = only(results, "single")
    assert final_answer(result) == "4" and result.final.correct
    assert result.trajectory.cost["generate"].calls == 1


@pytest.mark.parametrize("answers, chosen", [(["5", "4", "4", "7", "4"], "4"), (["5", "4", "5", "4", "3"], "5")])
def test_self_consistency_votes_and_ties_go_to_the_first_seen(tmp_path, answers, chosen):
    script = Script([(asked(INITIAL), lambda last, m, k: f"The answer is {answers[k]}.")])
    _, _, results = evaluate(tmp_path, script, ["self-consistency:n=5"], ONE)
    result = only(results, "self-consistency:n=5")
    assert final_answer(result) == chosen
    votes = [f for a in result.trajectory.attempts for f in a.feedback if f.source == "vote"]
    assert votes[0].kind == "intrinsic" and votes[0].score == answers.count(chosen) / 5


def test_strategies_share_draws(tmp_path):
    script = Script([(asked(INITIAL), lambda last, m, k: f"The answer is {k}."),
                     (asked("Check this answer"), "Score: 10/10")])
    evaluate(tmp_path, script, ["single", "self-consistency:n=4", "self-refine:rounds=1"], ONE)
    initial_calls = [c for c in script.model.calls if INITIAL in c.messages[-1]["content"]]
    assert [(c.first_index, c.params.n) for c in initial_calls] in ([(0, 4)], [(0, 1), (1, 3)])


@pytest.mark.parametrize("spec, answers, drawn, chosen, stop", [
    # four agreeing samples settle the beta rule (P = 0.97 ≥ 0.95): 12 samples never drawn
    ("adaptive-consistency", ["4"] * 16, 4, "4", "settled after 4 of 16 samples"),
    # a split vote keeps drawing until the leader is clear: 6 to 1 (P = 0.96) after 7 draws... in batches of 2: 8
    ("adaptive-consistency", ["4", "5"] + ["4"] * 14, 8, "4", "settled after 8 of 16 samples"),
    # never settled: the whole budget, then the plain vote (ties to the first seen)
    ("adaptive-consistency:n=6", ["4", "5", "6", "7", "5", "4"], 6, "4", "budget: 6 samples"),
    # window: the last three agree
    ("adaptive-consistency:rule=window,batch=1", ["4", "5", "5", "5", "9"], 4, "5", "settled after 4 of 16 samples"),
])
def test_adaptive_consistency_stops_when_the_vote_is_settled(tmp_path, spec, answers, drawn, chosen, stop):
    script = Script([(asked(INITIAL), lambda last, m, k: f"The answer is {answers[k]}.")])
    _, _, results = evaluate(tmp_path, script, [spec, "self-consistency:n=4"], ONE)
    result = only(results, spec)
    assert len(result.trajectory.attempts) == drawn and result.trajectory.stop == stop
    assert final_answer(result) == chosen
    assert [a.sample for a in result.trajectory.attempts] == list(range(drawn))  # self-consistency's draws
    drawn_by_model = sorted(k for c in script.model.calls for k in range(c.first_index, c.first_index + c.params.n))
    assert drawn_by_model == list(range(max(drawn, 4)))  # shared through the cache, none twice


def test_confidence_vote_weights_each_sample_by_the_models_token_confidence(tmp_path):
    answers = ["5", "4", "4", "5", "5"]
    sure = {"4": -0.05, "5": -2.0}  # the model is sure of 4, unsure of 5 (mean log-probability per token)
    script = Script([(asked(INITIAL), lambda last, m, k: f"The answer is {answers[k]}.")],
                    logprobs=lambda text, k: [sure[answers[k]]] * 4)
    _, _, results = evaluate(tmp_path, script, ["confidence-vote:n=5", "confidence-vote:n=5,keep=0.4",
                                                "self-consistency:n=5"], ONE)
    assert final_answer(only(results, "self-consistency:n=5")) == "5"  # three plain votes to two
    weighted = only(results, "confidence-vote:n=5")
    assert final_answer(weighted) == "4" and weighted.final.correct  # 2·e^-0.05 > 3·e^-2
    [vote] = [f for a in weighted.trajectory.attempts for f in a.feedback if f.source == "confidence vote"]
    assert vote.kind == "intrinsic" and vote.score == pytest.approx(2 * 0.9512 / (2 * 0.9512 + 3 * 0.1353), abs=1e-3)
    assert final_answer(only(results, "confidence-vote:n=5,keep=0.4")) == "4"  # the two most confident vote
    assert all(a.confidence == pytest.approx({"mean": sure[a.answer], "lowest_window": sure[a.answer]})
               for a in weighted.trajectory.attempts)  # float32 in the sample cache
    initial = [c for c in script.model.calls if INITIAL in c.messages[-1]["content"]]
    assert len(initial) == 1 and not initial[0].params.logprobs  # the same draws as self-consistency


def test_confidence_vote_needs_a_backend_that_gives_logprobs(tmp_path):
    script = Script([(asked(INITIAL), "The answer is 4.")])
    with pytest.raises(ConfigError, match="needs token log-probabilities"):
        evaluate(tmp_path, script, ["confidence-vote:n=3"], ONE)


def test_token_confidence_finds_the_least_sure_stretch():
    from selfcorrect.strategies.session import CONFIDENCE_WINDOW, token_confidence

    logprobs = [-0.1] * 40 + [-3.0] * CONFIDENCE_WINDOW + [-0.1] * 40
    confidence = token_confidence(logprobs)
    assert confidence["lowest_window"] == pytest.approx(-3.0)
    assert confidence["mean"] == pytest.approx((80 * -0.1 + CONFIDENCE_WINDOW * -3.0) / len(logprobs))
    assert token_confidence([-1.0, -2.0]) == {"mean": -1.5, "lowest_window": -1.5}  # shorter than the window
    assert token_confidence(None) is None and token_confidence(()) is None


def test_universal_self_consistency_follows_the_models_pick(tmp_path):
    script = Script([(asked(INITIAL), lambda last, m, k: f"The answer is {k + 1}."),
                     (asked("agrees most"), "Response 4")])
    _, _, results = evaluate(tmp_path, script, ["universal-self-consistency:n=5"], ONE)
    assert final_answer(only(results, "universal-self-consistency:n=5")) == "4"


def test_universal_self_consistency_falls_back_to_the_first_sample(tmp_path):
    script = Script([(asked(INITIAL), lambda last, m, k: f"The answer is {k + 1}."),
                     (asked("agrees most"), "I like them all")])
    _, _, results = evaluate(tmp_path, script, ["universal-self-consistency:n=3"], ONE)
    result = only(results, "universal-self-consistency:n=3")
    assert final_answer(result) == "1" and result.trajectory.stop.startswith("unreadable")


def test_best_of_n_ranks_by_the_self_judgement(tmp_path):
    script = Script([(asked(INITIAL), lambda last, m, k: f"The answer is {[5, 5, 4][k]}."),
                     (lambda last, m, k: "Is the proposed answer correct" in last and "is 4" in last, "Yes, it is."),
                     (asked("Is the proposed answer correct"), "No, it is not.")])
    _, _, results = evaluate(tmp_path, script, ["best-of-n:n=3"], ONE)
    result = only(results, "best-of-n:n=3")
    assert final_answer(result) == "4" and result.final.correct
    assert result.trajectory.cost["feedback"].calls == 3


def refine_script(initial: str, revised: str, scores: dict[str, int]) -> Script:
    return Script([
        (asked(INITIAL), f"The answer is {initial}."),
        (asked("Using the feedback"), f"Fixed it. The answer is {revised}."),
        (lambda last, m, k: "Check this answer" in last, lambda last, m, k: next(
            f"Looks fine.\nScore: {s}" for answer, s in scores.items() if f"The answer is {answer}." in last)),
    ])


def test_self_refine_repairs_a_wrong_answer_and_counts_the_flip(tmp_path):
    script = refine_script("5", "4", {"5": 2, "4": 9})
    _, _, results = evaluate(tmp_path, script, ["self-refine:rounds=2"], ONE)
    result = only(results, "self-refine:rounds=2")
    assert final_answer(result) == "4" and result.trajectory.stop == "verified"
    [matrix] = flip_matrices([result])
    assert matrix.counts["wrong_right"] == {"changed": 1, "unchanged": 0} and matrix.net == 1


def test_self_refine_can_break_a_right_answer_and_the_flip_is_counted(tmp_path):
    script = refine_script("4", "5", {"4": 5, "5": 8})
    _, _, results = evaluate(tmp_path, script, ["self-refine:rounds=1"], ONE)
    result = only(results, "self-refine:rounds=1")
    assert final_answer(result) == "5" and not result.final.correct
    [matrix] = flip_matrices([result])
    assert matrix.counts["right_wrong"]["changed"] == 1
    assert (matrix.confidence, matrix.critique, matrix.net) == (0.0, None, -1)


def test_self_refine_keeps_the_earlier_answer_when_scores_tie(tmp_path):
    script = refine_script("4", "5", {"4": 6, "5": 6})
    _, _, results = evaluate(tmp_path, script, ["self-refine:rounds=1"], ONE)
    assert final_answer(only(results, "self-refine:rounds=1")) == "4"


def test_self_refine_stops_when_the_answer_does_not_change(tmp_path):
    script = refine_script("5", "5", {"5": 3})
    _, _, results = evaluate(tmp_path, script, ["self-refine:rounds=3"], ONE)
    result = only(results, "self-refine:rounds=3")
    assert result.trajectory.stop == "unchanged" and len(result.trajectory.attempts) == 2
    [matrix] = flip_matrices([result])
    assert matrix.counts["wrong_wrong"] == {"changed": 0, "unchanged": 1}


@pytest.mark.parametrize("keep, chosen", [("first", "5"), ("last", "4")])
def test_self_correct_asks_for_a_review_without_a_verdict_and_counts_the_flip(tmp_path, keep, chosen):
    script = Script([(asked("There might be an error"), "2 + 2 = 4. The answer is 4."),
                     (asked(INITIAL), "The answer is 5.")])
    _, _, results = evaluate(tmp_path, script, [f"self-correct:keep={keep}"], ONE)
    result = only(results, f"self-correct:keep={keep}")
    review = script.model.calls[-1].messages
    assert review[-2] == {"role": "assistant", "content": "The answer is 5."}
    assert "wrong" not in review[-1]["content"] and "correct answer" not in review[-1]["content"]  # no verdict
    assert final_answer(result) == chosen and [a.answer for a in result.trajectory.attempts] == ["5", "4"]
    [matrix] = flip_matrices([result])
    assert matrix.counts["wrong_right"]["changed"] == 1  # counted whichever attempt is returned
    assert (result.trajectory.signal is False) is (keep == "first")


def test_gated_refine_revises_only_when_unsure(tmp_path):
    for sure, attempts in (("Confidence: 95", 1), ("Confidence: 20", 2), ("95", 2)):
        script = Script([(asked(INITIAL), "The answer is 5."), (asked("How sure"), sure),
                         (asked("Check this answer"), "Wrong.\nScore: 1"),
                         (asked("Using the feedback"), "The answer is 4.")])
        _, _, results = evaluate(tmp_path / sure.replace(":", ""), script, ["gated-refine"], ONE)
        assert len(only(results, "gated-refine").trajectory.attempts) == attempts


def test_reflexion_carries_its_lessons_into_the_next_attempt(tmp_path):
    script = Script([(asked("Lessons from your earlier attempts"), "The answer is 4."),
                     (asked(INITIAL), "The answer is 5."),
                     (asked("say what went wrong"), "I added wrong; count again."),
                     (lambda last, m, k: "Is the proposed answer correct" in last and "is 4" in last, "yes"),
                     (asked("Is the proposed answer correct"), "no")])
    _, _, results = evaluate(tmp_path, script, ["reflexion:trials=3"], ONE)
    result = only(results, "reflexion:trials=3")
    assert final_answer(result) == "4" and result.trajectory.stop == "verified"
    retry = [c for c in script.model.calls if "Lessons" in c.messages[-1]["content"]][0]
    assert "- I added wrong; count again." in retry.messages[-1]["content"]


def test_self_verify_prefers_the_answer_that_recovers_the_question(tmp_path):
    script = Script([
        (asked("value of X"), lambda last, m, k: "The answer is 2." if "is 4." in last else "The answer is 7."),
        (asked(INITIAL), lambda last, m, k: f"The answer is {[5, 5, 4][k]}."),
    ])
    _, _, results = evaluate(tmp_path, script, ["self-verify:n=3"], ONE)
    result = only(results, "self-verify:n=3")
    assert final_answer(result) == "4"  # the minority answer, verified backwards
    masked = [c for c in script.model.calls if "value of X" in c.messages[-1]["content"]][0]
    assert masked.messages[-1]["content"].startswith("What is X + 2?")


def test_oracle_refine_uses_the_gold_check_and_is_marked(tmp_path):
    script = Script([(asked("Your answer is wrong"), "The answer is 4."), (asked(INITIAL), "The answer is 5.")])
    evaluation, run, results = evaluate(tmp_path, script, ["oracle-refine"], ONE)
    result = only(results, "oracle-refine")
    assert run.oracle and result.trajectory.oracle
    assert final_answer(result) == "4"
    kinds = {f.kind for a in result.trajectory.attempts for f in a.feedback}
    assert kinds == {"oracle"}


def test_a_strategy_that_is_not_an_oracle_cannot_reach_the_gold(tmp_path):
    from selfcorrect.strategies.strategy import Strategy

    class Cheater(Strategy):
        name = "cheater"

        async def run(self, session):
            [attempt] = await session.attempt(session.view.messages)
            await session.oracle(attempt)

    assert not hasattr(ONE, "answer")
    script = Script([(asked(INITIAL), "The answer is 5.")])
    from selfcorrect.strategies import STRATEGIES

    STRATEGIES.register()(Cheater)
    try:
        with pytest.raises(ConfigError, match="not an oracle run"):
            evaluate(tmp_path, script, ["cheater"], ONE)
    finally:
        STRATEGIES.unregister("cheater")


def test_chains_vote_over_independent_chains(tmp_path):
    script = Script([(asked(INITIAL), lambda last, m, k: f"The answer is {[4, 5, 4][k]}."),
                     (asked("Check this answer"), "Score: 10/10")])
    _, _, results = evaluate(tmp_path, script, ["self-refine:chains=3,select=vote"], ONE)
    result = only(results, "self-refine:chains=3,select=vote")
    assert final_answer(result) == "4"
    assert sorted(a.chain for a in result.trajectory.attempts) == [0, 1, 2]


@pytest.mark.parametrize("answers, chains, chosen", [
    ([4, 4, 5, 5], [0, 1], "4"),  # the first two agree: the others are never drawn
    ([4, 5, 5, 7], [0, 1, 2, 3], "5"),  # they differ: all four, then the vote
    ([4, 5, 4, 5], [0, 1, 2, 3], "4"),  # a tie goes to the earliest chain, as without adaptive
])
def test_adaptive_chains_go_on_only_where_the_first_disagree(tmp_path, answers, chains, chosen):
    script = Script([(asked(INITIAL), lambda last, m, k: f"The answer is {answers[k]}.")])
    spec = "single:chains=4,adaptive=2"
    _, _, results = evaluate(tmp_path, script, [spec], ONE)
    result = only(results, spec)
    assert final_answer(result) == chosen and sorted(a.chain for a in result.trajectory.attempts) == chains
    assert len(script.model.calls) == len(chains)


def test_specs_are_checked():
    assert parse_strategy("self-debug:explain=true").spec == "self-debug:explain=true"
    assert parse_strategy("self-refine:rounds=2").spec == "self-refine"  # defaults are not spelled out
    for bad, message in (("nope", "unknown strategy"), ("single:n=3", "has no option 'n'"),
                         ("self-refine:round=2", "did you mean 'rounds'"), ("self-refin", "did you mean 'self-refine'"),
                         ("self-refine:rounds=many", "not a int"), ("single:greedy", "has no value"),
                         ("single:chains=2,select=best", "unknown selection"),
                         ("single:chains=4,adaptive=4", "2 <= k < chains"), ("single:adaptive=2", "goes with chains"),
                         ("single:chains=4,select=tests,adaptive=2", "it goes with select=vote")):
        with pytest.raises(ConfigError, match=message):
            parse_strategy(bad)


def test_a_list_of_specs_keeps_each_specs_own_options_together():
    from selfcorrect.registry import split_specs

    assert split_specs("single,beam-search:n=4,width=2,self-debug:explain=true,dvts") == [
        "single", "beam-search:n=4,width=2", "self-debug:explain=true", "dvts"]
    assert split_specs(" single , ,self-consistency:n=5 ") == ["single", "self-consistency:n=5"]
    assert split_specs("items.jsonl:visible=2,tolerance=0.01") == ["items.jsonl:visible=2,tolerance=0.01"]
    assert [parse_strategy(s).spec for s in split_specs("adaptive-consistency:rule=window,batch=1,single")] == [
        "adaptive-consistency:batch=1,rule=window", "single"]


def test_composition_needs_at_least_two_chains():
    from selfcorrect.strategies.compose import Chains

    with pytest.raises(ConfigError, match="at least 2"):
        Chains(parse_strategy("single"), 1)


def test_strategies_that_do_not_fit_the_task_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="self-debug cannot run on list"):
        evaluate(tmp_path, Script([]), ["self-debug"], ONE)


def test_critic_refine_with_the_same_model_shares_its_draws(tmp_path):
    script = refine_script("5", "4", {"5": 2, "4": 9})
    _, _, results = evaluate(tmp_path, script, ["self-refine", "critic-refine"], ONE, critic="same")
    own, critic = only(results, "self-refine"), only(results, "critic-refine")
    texts = lambda r, kind: [f.text for a in r.trajectory.attempts for f in a.feedback if f.kind == kind]
    assert texts(critic, "critic") == texts(own, "intrinsic") != []
    critiques = [c for c in script.model.calls if "Check this answer" in c.messages[-1]["content"]]
    assert len(critiques) == 2  # one per attempt, drawn once for both strategies


def test_critic_refine_takes_its_critique_from_the_second_model(tmp_path):
    script = Script([(asked(INITIAL), "The answer is 5."),
                     (asked("Using the feedback"), "Fixed it. The answer is 4."),
                     (asked("Check this answer"), "Score: 10/10")])  # the model would not fault itself
    critic = ScriptedModel(lambda messages, params, index: (
        "Wrong.\nScore: 1" if "The answer is 5." in messages[-1]["content"] else "Right.\nScore: 9"),
        identity="scripted-critic")
    _, run, results = evaluate(tmp_path, script, ["critic-refine"], ONE, critic="scripted-critic",
                               critic_engine=critic)
    result = only(results, "critic-refine")
    feedback = [f for a in result.trajectory.attempts for f in a.feedback]
    assert [(f.kind, f.text) for f in feedback] == [("critic", "Wrong.\nScore: 1"),
                                                          ("critic", "Right.\nScore: 9")]
    assert final_answer(result) == "4" and result.final.correct
    assert not any("Check this answer" in c.messages[-1]["content"] for c in script.model.calls)
    assert run.config["critic"] == "scripted-critic"


def test_critic_refine_needs_a_critic(tmp_path):
    with pytest.raises(ConfigError, match="needs a second model"):
        evaluate(tmp_path, Script([]), ["critic-refine"], ONE)


def test_prompts_can_be_replaced_from_the_settings_and_reports_say_so(tmp_path):
    from selfcorrect.config import load_settings
    from selfcorrect.report import write_reports
    from selfcorrect.runner import EvalSpec, Evaluation
    from tests.scripts import ListTask

    (tmp_path / "selfcorrect.toml").write_text(
        '[prompts.self-refine]\ncritique_math = """Grade this: {answer}\nEnd with Score: N."""\n')
    settings = load_settings(tmp_path / "selfcorrect.toml", store=tmp_path / "store.sqlite")
    script = Script([(asked(INITIAL), "The answer is 4."), (asked("Grade this"), "Fine.\nScore: 10")])
    evaluation = Evaluation(settings, EvalSpec(strategies=["self-refine"], reference=False), task=ListTask(ONE),
                            engine=script.model)
    run = asyncio.run(evaluation.run())
    assert any(c.messages[-1]["content"].startswith("Grade this: The answer is 4.") for c in script.model.calls)
    assert run.config["custom_prompts"] == {"self-refine": ["critique_math"]}
    assert run.prompt_hashes["self-refine"] != parse_strategy("self-refine").prompt_hash()
    assert "self-refine [custom prompts]" in write_reports(evaluation.store, run, "math", tmp_path / "r")["md"].read_text()


def test_a_prompt_file_in_the_spec_and_its_checks(tmp_path):
    good = tmp_path / "p.toml"
    good.write_text('judge = """{question} -> {answer}? yes or no."""\n')
    strategy = parse_strategy(f"best-of-n:n=2,prompts={good}")
    assert strategy.prompts["judge"].startswith("{question} -> {answer}?") and strategy.custom_prompts == ["judge"]
    (tmp_path / "bad.toml").write_text('jugde = "x"\n')
    with pytest.raises(ConfigError, match="has no prompt 'jugde'"):
        parse_strategy(f"best-of-n:prompts={tmp_path / 'bad.toml'}")
    (tmp_path / "field.toml").write_text('judge = "{secret}"\n')
    with pytest.raises(ConfigError, match="uses secret, which it is not given"):
        parse_strategy(f"best-of-n:prompts={tmp_path / 'field.toml'}")


def test_a_chat_item_has_no_extractor_its_answer_is_the_reply():
    """Free-form requests: the kind owns reading and voting, and strategies ask the kind."""
    from selfcorrect.models.base import SamplingParams
    from selfcorrect.models.scripted import ScriptedModel
    from selfcorrect.strategies.session import Context, ModelHandle, Session
    from selfcorrect.tasks.items import ItemView
    from selfcorrect.tasks.kinds import KINDS

    view = ItemView(id="chat/0", task="chat", kind="chat", question="Name a river in France.",
                    messages=({"role": "user", "content": "Name a river in France."},))
    replies = {"Name a river in France.": ["The Loire.", "the  loire.", "The Seine."],
               }
    model = ScriptedModel(lambda messages, params, k: (
        replies[messages[-1]["content"]][k % 3] if messages[-1]["content"] in replies
        else "Complete.\nScore: 9" if "Review this reply" in messages[-1]["content"] else "1"))
    ctx = Context(model=ModelHandle(model), params=SamplingParams(temperature=0.3, max_tokens=KINDS["chat"].max_tokens))

    vote = parse_strategy("self-consistency:n=3")
    outcome = asyncio.run(vote.run(Session(view, ctx, vote.spec)))
    assert outcome.final.answer == "The Loire." and outcome.signal is True  # "the  loire." votes with it
    refine = parse_strategy("self-refine:rounds=1")
    session = Session(view, ctx, refine.spec)
    outcome = asyncio.run(refine.run(session))
    assert outcome.stop == "verified" and outcome.final.answer == "The Loire."
    critique = [c for c in model.calls if "Review this reply" in c.messages[-1]["content"]]
    assert critique and "Proposed reply:\nThe Loire." in critique[0].messages[-1]["content"]
    assert "chat" not in parse_strategy("oracle-refine").kinds and "chat" not in parse_strategy("self-debug").kinds


def test_sent_cost_counts_what_reached_the_backend_and_notional_cost_what_was_asked(tmp_path):
    script = Script([(asked(INITIAL), lambda last, m, k: f"The answer is {k}.")])
    specs = ["single", "self-consistency:n=4"]
    _, _, first = evaluate(tmp_path, script, specs, ONE)
    calls = list(script.model.calls)
    costs = [only(first, s).trajectory.cost["generate"] for s in specs]
    # the four draws were made once and shared: each request is billed to the strategy that sent it
    assert sum(c.sent_requests for c in costs) == len(calls)
    assert sum(c.sent_completion_tokens for c in costs) == 4 * len("The answer is 0.".split())
    assert sum(c.completion_tokens for c in costs) == 5 * len("The answer is 0.".split())  # notional: 1 + 4 draws
    _, _, again = evaluate(tmp_path, script, specs, ONE)  # the same store: every draw from the cache
    assert len(script.model.calls) == len(calls)
    for spec, before in zip(specs, costs):
        cost = only(again, spec).trajectory.cost["generate"]
        assert (cost.sent_requests, cost.sent_prompt_tokens, cost.sent_completion_tokens) == (0, 0, 0)
        assert (cost.calls, cost.prompt_tokens, cost.completion_tokens) == (before.calls, before.prompt_tokens,
                                                                              before.completion_tokens)


def test_a_server_that_ignores_n_is_billed_a_request_per_sample(tmp_path):
    from selfcorrect.config import load_settings
    from selfcorrect.models.openai_http import OpenAICompatibleModel
    from selfcorrect.runner import EvalSpec, Evaluation, results_by_strategy
    from tests.httpstub import HTTPStub, chat_reply
    from tests.scripts import ListTask

    stub = HTTPStub(lambda seen: chat_reply([f"The answer is {seen.body['seed'] % 7}."], prompt_tokens=30))
    try:
        engine = OpenAICompatibleModel("m", stub.url)
        evaluation = Evaluation(load_settings(store=tmp_path / "s.sqlite"),
                                EvalSpec(strategies=["self-consistency:n=5"], reference=False),
                                task=ListTask(ONE), engine=engine)
        run = asyncio.run(evaluation.run())
        [result] = results_by_strategy(evaluation.store, run)["self-consistency:n=5"]
    finally:
        stub.close()
    cost = result.trajectory.cost["generate"]
    posts = [s for s in stub.seen if s.path.endswith("/chat/completions")]
    # the n=5 request came back with one choice (sample 0), then four requests of one: one call, five requests
    assert cost.calls == 1 and cost.sent_requests == len(posts) == 5
    assert cost.sent_prompt_tokens == 5 * 30 and result.sent_requests == 5


def test_results_stored_before_sent_cost_was_counted_say_so():
    from selfcorrect.report.markdown import sent_cell
    from selfcorrect.trajectory import Cost

    old = Cost.model_validate({"calls": 2, "prompt_tokens": 40, "completion_tokens": 9})
    assert old.sent_requests is None and Cost().sent_requests == 0
    assert sent_cell({"sent_per_item": {"requests": None, "tokens": None}}).startswith("not counted")
    assert sent_cell({"sent_per_item": {"requests": 1.5, "tokens": 412.0}}) == "1.5 requests, 412 tokens"
