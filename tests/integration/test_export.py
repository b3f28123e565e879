"""The embedded model exported as a transformers checkpoint: registered as round 0, loaded by
`--model round:0`, and predicting what llama.cpp predicts."""

import asyncio

import pytest

from selfcorrect.config import load_settings
from selfcorrect.models.base import SamplingParams
from selfcorrect.models.load import load_model
from selfcorrect.train.export import export_embedded
from selfcorrect.models.lineage import Checkpoint, Lineage

pytestmark = pytest.mark.integration


def test_the_exported_model_agrees_with_llama_cpp_and_is_round_zero(tmp_path, embedded):
    import torch

    folder = export_embedded(tmp_path / "base")
    lineage = Lineage(tmp_path / "store.sqlite")
    lineage.register(Checkpoint(name="base", round=0, path=str(folder)))
    with pytest.raises(Exception, match="parent 'nowhere' is not registered"):
        lineage.register(Checkpoint(name="orphan", round=1, path=str(folder), parent="nowhere"))
    lineage.close()
    model = load_model(load_settings(store=tmp_path / "store.sqlite", model="round:0"))
    try:
        assert model.identity.startswith("hf:base:")
        asks = [[{"role": "user", "content": q}] for q in
                ("What is 12 + 7? End with: The answer is N.", "Name three rivers in Europe.", "Write a haiku about rain.")]
        agree = total = 0
        for messages in asks:
            [reply] = asyncio.run(embedded.generate(messages, SamplingParams(temperature=0.0, max_tokens=24)))
            prompt = model.tokenize_chat(messages)
            tokens = list(reply.token_ids)
            with torch.no_grad():
                logits = model.model(input_ids=torch.tensor([prompt + tokens])).logits[0]
            predicted = logits[len(prompt) - 1: len(prompt) - 1 + len(tokens)].argmax(-1).tolist()
            agree += sum(p == t for p, t in zip(predicted, tokens))
            total += len(tokens)
        # llama.cpp runs the Q8_0 conversion of the Q4_1 file the export dequantised: near-ties may differ
        assert total > 30 and agree / total >= 0.9, (agree, total)
    finally:
        asyncio.run(model.aclose())


def test_a_checkpoint_goes_back_to_gguf_and_the_fast_engine_answers_as_before(tmp_path):
    from selfcorrect.models.embedded import EmbeddedModel
    from selfcorrect.train.to_gguf import checkpoint_to_gguf

    folder = export_embedded(tmp_path / "base")
    written = checkpoint_to_gguf(folder, tmp_path / "back.gguf")
    assert written["megabytes"] > 100
    asks = [[{"role": "user", "content": q}] for q in
            ("What is 12 + 7? End with: The answer is N.", "Name three rivers in Europe.", "Write a haiku about rain.")]
    params = SamplingParams(temperature=0.0, max_tokens=24)
    def greedy(path):  # a fresh engine each, one request at a time: draws that repeat exactly
        with EmbeddedModel(path, threads=1, parallel=1, n_ctx=2048, prefix_cache=0) as engine:
            return [asyncio.run(engine.generate(a, params))[0].token_ids for a in asks]

    again, before = greedy(tmp_path / "back.gguf"), greedy(None)
    # the same weights through transformers and back, in Q8_0 as the default engine's file
    same = sum(x == y for a, b in zip(again, before) for x, y in zip(a, b))
    assert same / sum(len(b) for b in before) >= 0.9, (again, before)


@pytest.mark.timeout(900)  # export, two evaluations, a training and a write-back: minutes on 2 cores
def test_a_self_training_round_of_the_embedded_model_from_the_command_line(tmp_path):
    """export, then one star round on arithmetic: sampled and measured on llama.cpp through
    the GGUF write-back, trained with TRL, the report in JSON, Markdown and HTML."""
    import json

    from tests.cli import selfcorrect

    store = str(tmp_path / "store.sqlite")
    done = selfcorrect("--store", store, "models", "export", cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    done = selfcorrect("--store", store, "train", "--task", "arithmetic", "--limit", "12", "--rounds", "1",
                       "--method", "star", "--sample", "self-consistency:n=2", "--epochs", "1",
                       "--out", str(tmp_path / "star"), cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "star" / "report.json").read_text())
    assert report["engine"] == "gguf" and [r["round"] for r in report["rounds"]] == [0, 1]
    assert set(report["rounds"][1]["phases"]) == {"label", "train", "export", "measure", "sample"}
    assert report["rounds"][1]["phases"]["export"]["seconds"] > 0  # the GGUF write-back
    held = set(report["rounds"][0]["heldout"]["correct"])
    data = [json.loads(line) for line in (tmp_path / "star" / "round-1" / "data.jsonl").read_text().splitlines()]
    assert data and not {d["item_id"] for d in data} & held
    rationales = [d for d in data if d["provenance"].get("source") == "rationalization"]
    assert all(d["oracle"] for d in rationales) and "Hint" not in json.dumps([d["prompt"] for d in data])
    assert "ORACLE-derived training data" in (tmp_path / "star" / "report.md").read_text()
    assert (tmp_path / "star" / "report.html").read_text().count("<svg") == 3
    lineage = Lineage(tmp_path / "store.sqlite")
    first = lineage.get("star/round-1")
    lineage.close()
    assert first.parent == "base" and first.method == "star" and first.gguf and first.gguf.endswith(".gguf")


@pytest.mark.timeout(900)
def test_two_attempt_rl_on_the_embedded_model_reports_both_attempts(tmp_path):
    """export, then one two-attempt RL round (a step of each stage) from the command line:
    rollouts by transformers, the held-out side measured on llama.cpp with self-correct."""
    import json

    from tests.cli import selfcorrect

    store = str(tmp_path / "store.sqlite")
    assert selfcorrect("--store", store, "models", "export", cwd=tmp_path, timeout=300).returncode == 0
    done = selfcorrect("--store", store, "train", "--task", "arithmetic", "--limit", "8", "--rounds", "1",
                       "--method", "score", "--sample", "self-consistency:n=2", "--evaluate", "self-correct:keep=last",
                       "--stage1-steps", "1", "--stage2-steps", "1", "--generations", "2",
                       "--out", str(tmp_path / "score"), cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "score" / "report.json").read_text())
    trained = report["rounds"][1]
    assert [s["stage"] for s in trained["signals"]] == [1, 2] and trained["training"]["review"].startswith("intrinsic")
    attempts = trained["heldout"]["attempts"]["self-correct:keep=last"]
    assert set(attempts["first"]) == set(attempts["second"]) == set(report["rounds"][0]["heldout"]["correct"])
    assert "| `self-correct:keep=last` | 1 |" in (tmp_path / "score" / "report.md").read_text()


def test_the_first_training_run_on_a_store_exports_the_base_itself(tmp_path):
    from selfcorrect.train.export import base_of

    said = []
    lineage = Lineage(tmp_path / "store.sqlite")
    try:
        base = base_of(tmp_path / "store.sqlite", lineage, "fp32", said.append)
        assert said == ["no round 0 in the store: exporting the embedded model as the base (`selfcorrect models export`)"]
        assert base.name == "base" and base.round == 0 and (tmp_path / "models" / "base" / "config.json").is_file()
        assert base_of(tmp_path / "store.sqlite", lineage, "fp32", said.append) == base and len(said) == 1  # once
    finally:
        lineage.close()
