"""Training methods as a registry, and `selfcorrect train`'s options made from TrainSpec."""

from __future__ import annotations

import pytest
import typer
from pydantic import ValidationError
from typer.testing import CliRunner

from selfcorrect.cli import app
from selfcorrect.errors import ConfigError
from selfcorrect.improve.loop import ImproveSpec
from selfcorrect.train.methods import METHODS, RFT, Method, RoundData, register
from selfcorrect.train.rounds import TrainSpec
from selfcorrect.train.verifier import VerifierSpec


def options_of(command: str) -> set[str]:
    return {p.name for p in typer.main.get_command(app).commands[command].params}


def test_every_spec_field_is_an_option_and_nothing_else():
    assert options_of("train") == set(TrainSpec.model_fields) | {"folder", "export"}
    assert options_of("train-verifier") == set(VerifierSpec.model_fields) | {"folder", "base"}
    assert options_of("improve") == set(ImproveSpec.model_fields) | {"folder"}


def test_the_options_reach_the_spec(monkeypatch, tmp_path):
    seen = {}

    def run(settings, spec, out, on_stage=None, on_progress=None):
        seen["spec"], seen["out"] = spec, out
        return {"spec": spec.model_dump(), "rounds": [], "stopped": "test"}

    monkeypatch.setattr("selfcorrect.train.rounds.run", run)
    monkeypatch.setattr("selfcorrect.train.report.render", lambda report: "rendered")
    result = CliRunner().invoke(app, ["--store", str(tmp_path / "s.sqlite"), "train", "--method", "grpo", "--full",
                                      "--evaluate", "single,self-refine:rounds=1", "--limit", "10",
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    spec = seen["spec"]
    assert (spec.method, spec.lora, spec.limit) == ("grpo", False, 10)
    assert spec.evaluate == ["single", "self-refine:rounds=1"]
    assert seen["out"] == tmp_path / "out"


def test_a_refused_option_is_named_by_its_flag(tmp_path):
    result = CliRunner().invoke(app, ["--store", str(tmp_path / "s.sqlite"), "train", "--limit", "1"])
    assert isinstance(result.exception, ConfigError)
    assert "--limit" in str(result.exception)
    result = CliRunner().invoke(app, ["--store", str(tmp_path / "s.sqlite"), "train", "--traces", "pairs"])
    assert "--traces pairs goes with --method correction" in str(result.exception)


def test_a_registered_method_can_be_named_and_states_its_labels():
    @register
    class Halves(RFT):
        """every other accepted sample"""

        name = "halves"
        labels = ("gold",)

        def data(self, run, runs, carried, previous):
            examples = super().data(run, runs, carried, previous).examples
            return RoundData(examples[::2])

    try:
        assert "halves" in METHODS.names()
        assert TrainSpec(method="halves").method == "halves"
        with pytest.raises(ValidationError, match="halves is rewarded by the task's check: use labels gold"):
            TrainSpec(method="halves", labels="vote")
        with pytest.raises(ConfigError, match="did you mean 'halves'"):
            TrainSpec(method="halve")
    finally:
        METHODS.unregister("halves")
    with pytest.raises(ConfigError, match="unknown training method 'halves'"):
        TrainSpec(method="halves")


def test_each_built_in_method_is_registered_with_the_protocol():
    assert METHODS.names()[:6] == ["rft", "star", "correction", "dpo", "grpo", "score"]
    for entry in METHODS.entries():
        method = entry.factory()
        assert isinstance(method, Method) and method.name == entry.name and entry.about
        assert method.labels and "gold" in method.labels
