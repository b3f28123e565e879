"""The embedded model exported as a transformers checkpoint: registered as round 0, loaded by
`--model round:0`, and predicting what llama.cpp predicts."""

import asyncio

import pytest

from selfcorrect.config import load_settings
from selfcorrect.models.base import SamplingParams
from selfcorrect.models.load import load_model
from selfcorrect.train.export import export_embedded
from selfcorrect.train.lineage import Checkpoint, Lineage

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
