import asyncio

import pytest

from selfcorrect.errors import ConfigError
from selfcorrect.models.base import Model, SamplingParams
from selfcorrect.models.scripted import ScriptedModel


def generate(model, content, **params):
    return asyncio.run(model.generate([{"role": "user", "content": content}], SamplingParams(**params)))


def test_table_replies_follow_sample_indices_and_cycle():
    model = ScriptedModel({"q": ["a", "b"]})
    assert isinstance(model, Model)
    got = generate(model, "q", n=3)
    assert [(c.text, c.index) for c in got] == [("a", 0), ("b", 1), ("a", 2)]


def test_stop_strings_and_max_tokens_are_honoured():
    model = ScriptedModel({"q": "one two three. four five"})
    assert generate(model, "q", stop=["."])[0].text == "one two three"
    cut = generate(model, "q", max_tokens=2)[0]
    assert (cut.text, cut.finish_reason, cut.completion_tokens) == ("one two", "length", 2)


def test_a_missing_reply_is_an_error_unless_there_is_a_default():
    with pytest.raises(ConfigError, match="no reply for 'other'"):
        generate(ScriptedModel({"q": "a"}), "other")
    assert generate(ScriptedModel({"q": "a"}, default="?"), "other")[0].text == "?"
