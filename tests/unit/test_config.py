from pathlib import Path

import pytest

from selfcorrect.config import load_settings
from selfcorrect.errors import ConfigError


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_without_a_file(in_tmp):
    settings = load_settings()
    assert settings.model == "embedded" and settings.cache is True
    assert settings.store == Path(".selfcorrect/store.sqlite")


def test_the_project_file_is_read_and_flags_override_it(in_tmp):
    (in_tmp / "selfcorrect.toml").write_text(
        'model = "openai:m"\nbase_url = "http://h:1/v1"\nthreads = 3\nretries = 2\n')
    settings = load_settings()
    assert settings.model == "openai:m"
    assert settings.http.base_url == ["http://h:1/v1"]  # one address or a list
    assert (settings.llama.threads, settings.http.retries) == (3, 2)
    overridden = load_settings(threads=1, model=None)
    assert overridden.llama.threads == 1 and overridden.model == "openai:m"


def test_an_explicit_config_path_wins_and_must_exist(in_tmp):
    other = in_tmp / "elsewhere.toml"
    other.write_text("parallel = 4\n")
    (in_tmp / "selfcorrect.toml").write_text("parallel = 2\n")
    assert load_settings(other).llama.parallel == 4
    with pytest.raises(ConfigError, match="config file not found"):
        load_settings(in_tmp / "missing.toml")


def test_an_unknown_key_names_the_file_and_the_likely_key(in_tmp):
    (in_tmp / "selfcorrect.toml").write_text('modle = "embedded"\n')
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert "selfcorrect.toml: unknown key 'modle'" in str(e.value)
    assert "did you mean 'model'" in e.value.fix


def test_a_bad_value_names_its_source(in_tmp):
    (in_tmp / "selfcorrect.toml").write_text('threads = "two"\n')
    with pytest.raises(ConfigError, match=r"selfcorrect.toml: \[llama\] threads: .*integer"):
        load_settings()
    (in_tmp / "selfcorrect.toml").unlink()
    with pytest.raises(ConfigError, match=r"--parallel: .*greater than or equal to 1"):
        load_settings(parallel=0)


def test_broken_toml_is_reported_with_its_place(in_tmp):
    (in_tmp / "selfcorrect.toml").write_text('model = "embedded\n')
    with pytest.raises(ConfigError, match=r"not valid TOML.*line 1"):
        load_settings()


def test_each_backend_has_its_own_section(in_tmp):
    (in_tmp / "selfcorrect.toml").write_text(
        'model = "openai:m"\n[llama]\nthreads = 2\nn_ctx = 4096\n[http]\nbase_url = ["http://a:1/v1", "http://b:1/v1"]\n'
        'concurrency = 16\n')
    settings = load_settings()
    assert (settings.llama.threads, settings.llama.n_ctx) == (2, 4096)
    assert settings.http.base_url == ["http://a:1/v1", "http://b:1/v1"] and settings.http.concurrency == 16


def test_the_old_flat_keys_still_work_with_a_warning(in_tmp, caplog):
    (in_tmp / "selfcorrect.toml").write_text('threads = 3\nconcurrency = 4\n[llama]\nn_ctx = 2048\n')
    settings = load_settings()
    assert (settings.llama.threads, settings.llama.n_ctx, settings.http.concurrency) == (3, 2048, 4)
    assert "'threads' belongs in the [llama] section" in caplog.text
    assert "'concurrency' belongs in the [http] section" in caplog.text


def test_a_section_key_is_checked_with_a_hint(in_tmp):
    (in_tmp / "selfcorrect.toml").write_text('[llama]\ntreads = 2\n')
    with pytest.raises(ConfigError) as e:
        load_settings()
    assert "unknown key '[llama] treads'" in str(e.value) and "did you mean 'threads'" in e.value.fix
    (in_tmp / "selfcorrect.toml").write_text('[http]\ntimeout = -1\n')
    with pytest.raises(ConfigError, match=r"\[http\] timeout: .*greater than 0"):
        load_settings()
