"""The transformers backend on a tiny random model: batched draws seeded per sample index,
greedy decoding equal to transformers' own generate, stops, limits, adapters in the identity."""

import asyncio

import pytest

pytest.importorskip("transformers")

from selfcorrect.models.base import SamplingParams  # noqa: E402
from selfcorrect.models.hf import HFModel  # noqa: E402
from tests.tinymodel import make_tiny_model  # noqa: E402

ASK = [{"role": "user", "content": "What is 3 + 4?"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def model(tiny):
    engine = HFModel(tiny, batch=4)
    yield engine
    engine.close()


def run(coro):
    return asyncio.run(coro)


def test_draws_are_seeded_by_sample_index_whoever_asks(model):
    params = SamplingParams(temperature=1.0, top_k=40, max_tokens=12, seed=3)
    together = run(model.generate(ASK, params.replace(n=6)))  # more than a batch: split over two
    assert [c.index for c in together] == list(range(6))
    assert len({c.text for c in together}) > 1
    again = run(model.generate(ASK, params.replace(n=6)))
    assert [c.text for c in again] == [c.text for c in together]
    later = run(model.generate(ASK, params.replace(n=2), first_index=4))
    assert [c.text for c in later] == [c.text for c in together[4:]]
    assert all(c.token_ids and c.completion_tokens == len(c.token_ids) for c in together)


def test_a_final_assistant_message_is_continued(model):
    started = [*ASK, {"role": "assistant", "content": "3 + 4 ="}]
    text = model.tokenizer.decode(model.tokenize_chat(started))
    assert text.endswith("3 + 4 =") and text.startswith(model.tokenizer.decode(model.tokenize_chat(ASK)))
    [continued] = run(model.generate(started, SamplingParams(temperature=0, max_tokens=4)))
    assert continued.prompt_tokens == len(model.tokenize_chat(started))


def test_greedy_decoding_with_left_padding_matches_transformers_generate(model):
    import torch

    prompts = [ASK, [{"role": "system", "content": "Say hi."}, {"role": "user", "content": "What is 12 + 19? Say it."}]]
    params = SamplingParams(temperature=0.0, max_tokens=10)

    async def both():
        return await asyncio.gather(*(model.generate(p, params) for p in prompts))

    mine = run(both())  # decoded in one batch, the shorter prompt left-padded
    for messages, [completion] in zip(prompts, mine):
        ids = torch.tensor([model.tokenize_chat(messages)])
        reference = model.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=10, do_sample=False,
                                         eos_token_id=sorted(model._stops), pad_token_id=model._pad)
        tokens = [t for t in reference[0, ids.shape[1]:].tolist() if t not in model._stops]
        assert list(completion.token_ids) == tokens[: len(completion.token_ids)] and completion.token_ids


def test_stops_limits_and_logprobs(model):
    free = run(model.generate(ASK, SamplingParams(temperature=0.0, max_tokens=6, logprobs=True)))[0]
    assert free.finish_reason in ("length", "stop") and len(free.logprobs) == free.completion_tokens
    assert all(lp <= 0 for lp in free.logprobs)
    assert len(free.text) >= 3  # the tiny model's greedy reply (seeded weights) has text to stop in
    stop = free.text[1:3]
    cut = run(model.generate(ASK, SamplingParams(temperature=0.0, max_tokens=6, stop=(stop,))))[0]
    assert cut.finish_reason == "stop" and stop not in cut.text and free.text.startswith(cut.text)


def test_an_adapter_changes_the_identity_and_the_draws(model, tmp_path):
    from peft import LoraConfig, get_peft_model

    base_identity = model.identity
    params = SamplingParams(temperature=0.0, max_tokens=8)
    before = run(model.generate(ASK, params))[0].text
    peft = get_peft_model(model.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    model.model = peft.unload()  # back to the plain base (the test made the adapter out of it)
    model.load_adapter(tmp_path / "adapter")
    assert model.identity.startswith(base_identity + "+lora:")
    assert run(model.generate(ASK, params))[0].text != before
    model.unload_adapter()
    assert model.identity == base_identity and run(model.generate(ASK, params))[0].text == before
