"""Bad input gets one clear line on stderr, a non-zero exit code, and no traceback."""

import pytest

from tests.cli import selfcorrect
from tests.conftest import free_port


def assert_one_line_error(done, *phrases):
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert "Traceback" not in done.stderr
    for phrase in phrases:
        assert phrase in lines[0]


def test_missing_model_file(tmp_path):
    done = selfcorrect("--model", "gguf:/no/such/model.gguf", "generate", "hi", cwd=tmp_path)
    assert_one_line_error(done, "model file not found: /no/such/model.gguf", "check the path")


def test_unknown_model_spec(tmp_path):
    done = selfcorrect("--model", "gpt5", "generate", "hi", cwd=tmp_path)
    assert_one_line_error(done, "unknown model 'gpt5'", "embedded, gguf:PATH, openai:NAME")


def test_bad_config_key(tmp_path):
    (tmp_path / "selfcorrect.toml").write_text('treads = 2\n')
    done = selfcorrect("generate", "hi", cwd=tmp_path)
    assert_one_line_error(done, "unknown key 'treads'", "did you mean 'threads'")


def test_unreachable_server(tmp_path):
    (tmp_path / "selfcorrect.toml").write_text("retries = 1\n")
    url = f"http://127.0.0.1:{free_port()}/v1"
    done = selfcorrect("--model", "openai:m", "--base-url", url, "generate", "hi", cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: cannot reach the model server")


def test_openai_model_without_an_address(tmp_path):
    done = selfcorrect("--model", "openai:m", "generate", "hi", cwd=tmp_path)
    assert_one_line_error(done, "needs a server address", "--base-url")


def test_invalid_sampling_parameter(tmp_path):
    done = selfcorrect("--model", "gguf:/x.gguf", "generate", "hi", "--temperature", "9", cwd=tmp_path)
    assert_one_line_error(done, "temperature 9.0 is outside [0, 5]")


@pytest.mark.parametrize("args", [["--model", "gguf:/no/such.gguf", "--debug", "generate", "hi"]])
def test_debug_shows_the_traceback(tmp_path, args):
    done = selfcorrect(*args, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_nothing_is_written_when_the_command_fails(tmp_path):
    selfcorrect("--model", "gguf:/no/such.gguf", "generate", "hi", cwd=tmp_path)
    assert not (tmp_path / ".selfcorrect").exists()
