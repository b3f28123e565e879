"""The precision torch works in: chosen by what the CPU has, said once when it falls back, and
each precision forced on a tiny model trains, generates and scores."""

from __future__ import annotations

import asyncio
import logging

import pytest

from selfcorrect import precision
from selfcorrect.errors import ConfigError

XEON = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: fpu sse avx512f avx512_bf16 amx_bf16 amx_tile\n"
ZEN3 = "processor\t: 0\nmodel name\t: AMD EPYC 7763\nflags\t\t: fpu sse avx2 fma\n"


@pytest.fixture
def cpu(tmp_path, monkeypatch):
    """A fake /proc/cpuinfo, on a machine without a GPU."""
    def use(text: str) -> None:
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        monkeypatch.setattr(precision, "CPUINFO", path)
        precision._cpuinfo.cache_clear()
        precision._fallback_said.cache_clear()
    return use


def test_auto_is_bf16_where_the_cpu_has_bf16_units_and_fp32_elsewhere(cpu, caplog):
    cpu(XEON)
    assert precision.resolve("auto", gpu=False) == "bf16"
    assert precision.describe()["bf16_flags"] == ["amx_bf16", "avx512_bf16"]
    cpu(ZEN3)
    with caplog.at_level(logging.WARNING, logger="selfcorrect.precision"):
        assert precision.resolve("auto", gpu=False) == "fp32"
        assert precision.resolve("auto", gpu=False) == "fp32"
    said = [r.message for r in caplog.records if "no bf16 matrix units" in r.message]
    assert len(said) == 1, said  # once per process
    assert precision.resolve("bf16", gpu=False) == "bf16"  # asked for by name: emulated, not refused
    assert precision.resolve("fp32", gpu=False) == "fp32"
    with pytest.raises(ConfigError, match="unknown precision 'fp16'"):
        precision.resolve("fp16")


def test_the_setting_is_checked_and_reaches_the_cli(tmp_path):
    from selfcorrect.config import load_settings

    assert load_settings(store=tmp_path / "s.sqlite").precision == "auto"
    assert load_settings(store=tmp_path / "s.sqlite", precision="fp32").precision == "fp32"
    with pytest.raises(ConfigError, match="precision"):
        load_settings(store=tmp_path / "s.sqlite", precision="fp8")


@pytest.mark.parametrize("forced", ["fp32", "bf16"])
def test_each_precision_trains_and_generates_on_a_tiny_model(tmp_path, forced):
    pytest.importorskip("trl")
    import torch

    from selfcorrect.models.base import SamplingParams
    from selfcorrect.models.hf import HFModel
    from selfcorrect.train.data import Example, to_dataset
    from selfcorrect.train.sft import SFTSettings, load_policy, train_sft
    from tests.tinymodel import make_tiny_model

    base = make_tiny_model(tmp_path / "tiny")
    examples = [Example(prompt=[{"role": "user", "content": f"What is {a} + 1?"}], completion=f"The answer is {a + 1}.",
                        item_id=f"i{a}") for a in range(16)]
    settings = SFTSettings(lora=False, epochs=12, learning_rate=3e-3, save_steps=100, precision=forced)
    metrics = train_sft(base, to_dataset(examples), tmp_path / "full", settings, progress=False)
    assert metrics["precision"] == forced
    assert metrics["log"][-1] < metrics["log"][0] * 0.8, metrics["log"]  # it learned in this precision
    saved = (tmp_path / "full" / "model")
    from safetensors.torch import load_file

    weights = load_file(saved / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.float32}  # the master weights stay fp32

    # LoRA: the frozen base in the precision, the adapter (what is trained) in fp32
    _, model, _ = load_policy(base, lora=True, rank=4, precision=forced)
    assert model.dtype == (torch.bfloat16 if forced == "bf16" else torch.float32)
    lora = train_sft(base, to_dataset(examples), tmp_path / "lora",
                     SFTSettings(epochs=1, save_steps=100, precision=forced), progress=False)
    adapter = load_file(tmp_path / "lora" / "model" / "adapter_model.safetensors")
    assert lora["precision"] == forced and {t.dtype for t in adapter.values()} == {torch.float32}

    engine = HFModel(saved, tmp_path / "lora" / "model", batch=4, precision=forced)
    try:
        assert engine.model.dtype == (torch.bfloat16 if forced == "bf16" else torch.float32)
        assert ("+bf16" in engine.identity) == (forced == "bf16")  # its draws are cached apart
        [reply] = asyncio.run(engine.generate([{"role": "user", "content": "What is 3 + 1?"}],
                                              SamplingParams(temperature=0.0, max_tokens=8)))
        assert reply.completion_tokens > 0 and reply.finish_reason in ("stop", "length")
    finally:
        engine.close()


def test_a_merge_is_only_made_from_fp32(tmp_path):
    pytest.importorskip("trl")
    from selfcorrect.models.hf import HFModel
    from selfcorrect.train.data import Example, to_dataset
    from selfcorrect.train.sft import SFTSettings, train_sft
    from tests.tinymodel import make_tiny_model

    base = make_tiny_model(tmp_path / "tiny")
    examples = [Example(prompt=[{"role": "user", "content": "Hi"}], completion="Hello.", item_id="a")]
    train_sft(base, to_dataset(examples), tmp_path / "lora", SFTSettings(epochs=1, save_steps=100), progress=False)
    engine = HFModel(base, tmp_path / "lora" / "model", precision="bf16")
    try:
        with pytest.raises(ConfigError, match="merge from an fp32 model"):
            engine.merge_adapter(tmp_path / "merged")
    finally:
        engine.close()


@pytest.mark.parametrize("forced", ["fp32", "bf16"])
def test_a_verifier_scores_in_each_precision(tmp_path, forced):
    pytest.importorskip("transformers")
    import json

    import torch

    from selfcorrect.verify.learned import Verifier
    from tests.tinymodel import make_tiny_model

    folder = make_tiny_model(tmp_path / "tiny")
    (folder / "verifier.json").write_text(json.dumps({"kind": "prm"}))  # an untrained head: the numbers, not their sense
    verifier = Verifier.load(folder, "prm", forced)
    assert verifier.model.dtype == (torch.bfloat16 if forced == "bf16" else torch.float32)
    scored = verifier.score([{"role": "user", "content": "What is 2 + 2?"}], ["2 + 2 = 4. ", "The answer is 4."])
    assert len(scored.scores) == 2 and all(isinstance(s, float) and 0 <= s <= 1 for s in scored.scores)
    assert Verifier.load(folder, "prm", "fp32" if forced == "bf16" else "bf16") is not verifier  # one per precision
