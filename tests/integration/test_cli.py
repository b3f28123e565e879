import json

import pytest

from tests.cli import selfcorrect

pytestmark = pytest.mark.integration


def test_generate_then_replay_from_the_cache(tmp_path):
    args = ("--threads", "1", "generate", "What is 3 + 4?", "--max-tokens", "12", "-n", "2", "--json")
    first = selfcorrect(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    data = json.loads(first.stdout)
    assert data["model"].startswith("gguf:SmolLM2-135M-Instruct.Q8_0.gguf:")
    assert [c["index"] for c in data["completions"]] == [0, 1]
    assert not any(c["cached"] for c in data["completions"])
    assert (tmp_path / ".selfcorrect" / "store.sqlite").exists()

    again = json.loads(selfcorrect(*args, cwd=tmp_path).stdout)
    assert all(c["cached"] for c in again["completions"])
    assert [c["text"] for c in again["completions"]] == [c["text"] for c in data["completions"]]


def test_plain_output_and_speed_line(tmp_path):
    done = selfcorrect("--threads", "1", "--no-cache", "generate", "Name a fruit.",
                       "--max-tokens", "8", "--temperature", "0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert "tok/s" in done.stderr and "tokens" in done.stderr
    assert not (tmp_path / ".selfcorrect").exists()  # --no-cache touches no store


def test_models_checks_the_embedded_model_and_its_speed(tmp_path):
    done = selfcorrect("--threads", "1", "models", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "ok: SmolLM2-135M-Instruct.Q8_0.gguf" in done.stdout
    assert "tok/s" in done.stdout
