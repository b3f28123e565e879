"""The embedded backend on the real SmolLM2-135M model (1 thread, short generations)."""

import asyncio

import pytest

from selfcorrect.errors import ConfigError
from selfcorrect.models.base import SamplingParams
from selfcorrect.models.embedded import EmbeddedModel

pytestmark = pytest.mark.integration

QUESTION = [{"role": "user", "content": "What is 2 + 2?"}]


@pytest.fixture(scope="module")
def exact():
    """An engine whose sequential draws repeat exactly (no prefix cache)."""
    with EmbeddedModel(threads=1, parallel=2, n_ctx=1024, prefix_cache=0) as model:
        yield model


def generate(model, messages, **params):
    return asyncio.run(model.generate(messages, SamplingParams(**params)))


def test_the_chat_template_comes_from_the_gguf(embedded):
    prompt = embedded.format_chat(QUESTION)
    assert prompt.startswith("<|im_start|>system\n")  # SmolLM2's template adds its system line
    assert prompt.endswith("<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n")


def test_a_final_assistant_message_is_continued_not_answered(exact):
    started = [*QUESTION, {"role": "assistant", "content": "2 + 2 ="}]
    prompt = exact.format_chat(started)
    assert prompt == exact.format_chat(QUESTION) + "2 + 2 ="  # left open: no end-of-turn after it
    [cont] = generate(exact, started, temperature=0, max_tokens=12)
    assert cont.prompt_tokens == len(exact.tokenize(prompt))
    assert cont.text.lstrip().startswith("4"), cont.text  # it goes on from "=", not a fresh reply


def test_a_short_greedy_generation(embedded):
    [c] = generate(embedded, QUESTION, temperature=0, max_tokens=24)
    assert c.text.strip() and c.finish_reason in ("stop", "length")
    assert 0 < c.completion_tokens <= 24 and c.prompt_tokens == len(embedded.tokenize_chat(QUESTION))
    assert c.seconds > 0


def test_without_the_prefix_cache_one_request_at_a_time_repeats_exactly(exact):
    questions = [[{"role": "user", "content": q}] for q in
                 ("What is 2 + 2?", "List three fruits.", "Write a haiku about snow.")]
    runs = [[generate(exact, q, temperature=0, max_tokens=32)[0].text for q in questions]
            for _ in range(2)]
    assert runs[0] == runs[1]


def test_max_tokens_ends_with_length(embedded):
    [c] = generate(embedded, [{"role": "user", "content": "Tell me a long story."}],
                   temperature=0, max_tokens=5)
    assert (c.finish_reason, c.completion_tokens, c.model_ended) == ("length", 5, False)


def test_stop_strings_end_the_text_before_them(exact):
    ask = [{"role": "user", "content": "List three fruits, one per line."}]
    [free] = generate(exact, ask, temperature=0, max_tokens=48)
    assert "\n" in free.text.strip()  # the greedy answer has several lines...
    [cut] = generate(exact, ask, temperature=0, max_tokens=48, stop=["\n"])
    assert cut.finish_reason == "stop" and "\n" not in cut.text
    assert free.text.startswith(cut.text)  # ...and the stop cuts it at the first
    assert (free.finish_reason, free.model_ended, cut.model_ended) == ("stop", True, False)  # its end token, the stop


def test_n_samples_share_one_prompt_evaluation_and_differ(embedded):
    before = embedded.stats.prompt_evals
    samples = generate(embedded, [{"role": "user", "content": "Name an animal."}],
                       temperature=1.0, max_tokens=12, n=8, seed=3)
    assert embedded.stats.prompt_evals == before + 1
    assert [c.index for c in samples] == list(range(8))
    assert len({c.text for c in samples}) >= 3


def test_seeded_draws_repeat_in_a_fresh_engine_and_seeds_matter():
    def draw(seed):
        with EmbeddedModel(threads=1, parallel=4, n_ctx=1024) as model:
            return [c.text for c in generate(model, QUESTION, temperature=1.0, max_tokens=16, n=4, seed=seed)]

    first = draw(11)
    assert draw(11) == first
    assert draw(12) != first


def test_concurrent_requests_are_decoded_together(embedded):
    before = (embedded.stats.decode_steps, embedded.stats.generated_tokens)

    async def four():
        return await asyncio.gather(*(
            embedded.generate([{"role": "user", "content": f"Count from {i} to {i + 20}."}],
                              SamplingParams(temperature=0, max_tokens=16))
            for i in range(4)))

    results = asyncio.run(four())
    steps = embedded.stats.decode_steps - before[0]
    tokens = embedded.stats.generated_tokens - before[1]
    assert len(results) == 4 and tokens >= 4 * 8
    assert steps <= tokens / 2  # one step serves several sequences


def test_a_conversation_that_extends_a_prompt_reuses_its_cells(embedded):
    first = [{"role": "user", "content": "Write one sentence about the sea."}]
    [reply] = generate(embedded, first, temperature=0, max_tokens=16)
    reused_before = embedded.stats.prompt_tokens_reused
    follow = first + [{"role": "assistant", "content": reply.text},
                      {"role": "user", "content": "Now make it shorter."}]
    generate(embedded, follow, temperature=0, max_tokens=8)
    assert embedded.stats.prompt_tokens_reused - reused_before >= len(embedded.tokenize_chat(first)) - 1


def test_logprobs_are_one_per_token_and_negative(embedded):
    [c] = generate(embedded, QUESTION, temperature=0.5, max_tokens=10, logprobs=True)
    assert len(c.logprobs) == c.completion_tokens
    assert all(lp <= 0 for lp in c.logprobs)


def test_a_cancelled_request_frees_the_engine(embedded):
    async def scenario():
        long = asyncio.create_task(embedded.generate(
            [{"role": "user", "content": "Write a very long essay."}],
            SamplingParams(temperature=0.8, max_tokens=2000, n=8)))
        await asyncio.sleep(0.3)
        long.cancel()
        with pytest.raises(asyncio.CancelledError):
            await long
        return await asyncio.wait_for(
            embedded.generate(QUESTION, SamplingParams(temperature=0, max_tokens=4)), 20)

    [c] = asyncio.run(scenario())
    assert c.completion_tokens > 0


def test_a_prompt_longer_than_the_context_is_refused(embedded):
    with pytest.raises(ConfigError, match="the context holds 4096"):
        generate(embedded, [{"role": "user", "content": "word " * 5000}], max_tokens=4)


def test_the_default_is_a_q8_0_conversion_made_once_and_checked_by_hash(tmp_path, monkeypatch):
    import shutil

    from selfcorrect.models.embedded import files as module

    shipped = tmp_path / "pkg" / module.DEFAULT_MODEL_FILE
    shipped.parent.mkdir()
    shutil.copy(module.default_model_path(), shipped)
    monkeypatch.setattr(module, "default_model_path", lambda: shipped)
    converted = module.embedded_model_path("q8_0")
    assert converted == shipped.parent / "SmolLM2-135M-Instruct.Q8_0.gguf" and converted.is_file()
    assert module.embedded_model_path("q8_0") == converted  # made once: found, not converted again
    stamp = converted.stat().st_mtime_ns
    assert module.embedded_model_path("q8_0").stat().st_mtime_ns == stamp
    with open(converted, "r+b") as f:  # a damaged conversion fails its hash and is made again
        f.seek(-16, 2)
        f.write(b"\0" * 16)
    assert module.embedded_model_path("q8_0").stat().st_mtime_ns != stamp
    assert module.embedded_model_path("q4_1") == shipped
    with EmbeddedModel(quant="q8_0", threads=1, parallel=1, n_ctx=512) as q8, \
            EmbeddedModel(quant="q4_1", threads=1, parallel=1, n_ctx=512) as q4:
        assert "Q8_0" in q8.identity and "Q4_1" in q4.identity and q8.identity != q4.identity
        [answer] = generate(q8, QUESTION, temperature=0, max_tokens=8)
        assert answer.text.strip()
    with pytest.raises(ConfigError, match="unknown embedded quantization"):
        module.embedded_model_path("q2_k")
