"""Self-training runs compared on the same held-out items: rows, flips, paired tests, and
refusal when the runs measured different items or started from different bases."""

import json

import pytest
from typer.testing import CliRunner

from selfcorrect.cli import app
from selfcorrect.errors import ConfigError
from selfcorrect.train.compare import compare, load, render, write

ITEMS = [f"arithmetic/{i}" for i in range(10)]


def heldout(final: list[int], first: list[int] | None = None, extra: dict | None = None) -> dict:
    """A round's held-out record: `final` lists the items the revising strategy returns right,
    `first` those right at its attempt 1."""
    verdicts = {i: k in final for k, i in enumerate(ITEMS)}
    out = {"correct": verdicts, "by_strategy": {"self-correct:keep=last": verdicts, **(extra or {})}, "attempts": {}}
    if first is not None:
        before = {i: k in first for k, i in enumerate(ITEMS)}
        out["attempts"]["self-correct:keep=last"] = {
            "attempt_1": sum(before.values()) / 10, "attempt_2": sum(verdicts.values()) / 10,
            "wrong_to_right": sum(not before[i] and verdicts[i] for i in ITEMS),
            "right_to_wrong": sum(before[i] and not verdicts[i] for i in ITEMS), "first": before, "second": verdicts}
    return out


def report(method: str, trained: dict, base: str = "base") -> dict:
    single = {i: k < 2 for k, i in enumerate(ITEMS)}
    return {"spec": {"method": method, "labels": "gold", "traces": "pairs", "rounds": 1,
                     "evaluate": ["self-correct:keep=last", "single"]}, "base": base,
            "rounds": [{"round": 0, "heldout": heldout([0, 1], [0, 1, 2], {"single": single})},
                       {"round": 1, "heldout": trained}]}


def test_runs_side_by_side_with_flips_and_paired_tests(tmp_path):
    score = report("score", heldout([0, 1, 3, 4, 5, 6], [0, 1, 3]))  # attempt 2 fixes 4, 5, 6
    sft = report("correction", heldout([0], [0, 1]))  # learned to break a right answer
    comparison = compare({"train-score": score, "train-correction": sft})
    assert comparison["strategy"] == "self-correct:keep=last" and comparison["items"] == 10
    models = [(r["model"], r["strategy"]) for r in comparison["rows"]]
    assert models == [("base", "self-correct:keep=last"), ("base", "single"),
                      ("train-score (score)", "self-correct:keep=last"),
                      ("train-correction (correction)", "self-correct:keep=last")]
    trained = comparison["rows"][2]
    assert trained["accuracy"] == 0.6 and trained["attempts"]["wrong_to_right"] == 3
    assert trained["attempts"]["right_to_wrong"] == 0 and "first" not in trained["attempts"]
    pairs = {(p["from"], p["to"]): p for p in comparison["pairs"]}
    assert len(pairs) == 3  # base, score, correction: every pair once
    score_vs_sft = pairs[("train-score (score)", "train-correction (correction)")]
    assert (score_vs_sft["wrong_to_right"], score_vs_sft["right_to_wrong"]) == (0, 5)
    assert score_vs_sft["difference"] == -0.5 and score_vs_sft["p_value"] == pytest.approx(0.0625)
    markdown = render(comparison)
    assert "| train-score (score) | 1 | `self-correct:keep=last` | 60.0 (" in markdown
    assert "| 30.0 (10.8–60.3) | 60.0 (31.3–83.2) | +30.0 (0.25) | 3 | 0 |" in markdown  # attempts, Δ (p), flips
    assert trained["attempts"]["p_value"] == pytest.approx(0.25)  # 3 flips up, none down
    write(comparison, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "compare.json").read_text())["strategy"] == "self-correct:keep=last"
    assert (tmp_path / "out" / "compare.html").read_text().count("<svg") == 1


def test_runs_on_other_items_or_bases_or_without_verdicts_are_refused(tmp_path):
    score = report("score", heldout([0, 1], [0]))
    other = report("correction", heldout([0], [0]))
    other["rounds"][0]["heldout"]["correct"] = {"arithmetic/99": True}
    with pytest.raises(ConfigError, match="other held-out items"):
        compare({"a": score, "b": other})
    with pytest.raises(ConfigError, match="different bases"):
        compare({"a": score, "b": report("grpo", heldout([0], [0]), base="round:x")})
    with pytest.raises(ConfigError, match="no strategy measured by every run called best-of-n"):
        compare({"a": score, "b": report("grpo", heldout([0], [0]))}, strategy="best-of-n")
    (tmp_path / "old").mkdir()
    old = report("rft", heldout([0]))
    del old["rounds"][0]["heldout"]["by_strategy"]
    (tmp_path / "old" / "report.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="keeps no verdict per item"):
        load(tmp_path / "old")
    with pytest.raises(ConfigError, match="no training report"):
        load(tmp_path / "missing")


def test_the_command_writes_the_comparison(tmp_path):
    for name, final in (("train-score", [0, 1, 2]), ("train-grpo", [0])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "report.json").write_text(json.dumps(report(name.removeprefix("train-"), heldout(final, [0]))))
    result = CliRunner().invoke(app, ["train-compare", str(tmp_path / "train-score"), str(tmp_path / "train-grpo"),
                                      "--out", str(tmp_path / "compare")])
    assert result.exit_code == 0, result.output
    assert "| train-score (score) | train-grpo (grpo) | 0 | 2 | -20.0 |" in (tmp_path / "compare" / "compare.md").read_text()
    result = CliRunner().invoke(app, ["train-compare", str(tmp_path / "train-score")])
    assert result.exit_code == 1 and "comparing needs two training reports" in str(result.exception)
