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


def test_serve_starts_from_the_command_line_with_a_key_made_by_serve_key(tmp_path):
    import subprocess
    import time

    import httpx
    import openai

    from tests.cli import EXE
    from tests.conftest import free_port

    made = selfcorrect("serve-key", "ci", cwd=tmp_path)
    key = made.stderr.split("(shown once): ")[1].split()[0]
    (tmp_path / "keys.txt").write_text(made.stdout)
    assert key not in made.stdout  # the file gets the hash, never the key
    port = free_port()
    server = subprocess.Popen([str(EXE), "--threads", "1", "serve", "--port", str(port), "--api-keys",
                               str(tmp_path / "keys.txt"), "--strategy", "self-consistency:n=2", "--alias", "smollm2"],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                assert server.poll() is None and time.monotonic() < deadline, server.stderr.read()
                time.sleep(0.3)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        reply = client.chat.completions.create(model="smollm2", max_tokens=12,
                                               messages=[{"role": "user", "content": "Say hi."}])
        assert reply.model_extra["selfcorrect"]["attempts"] == 2 and reply.usage.completion_tokens > 0
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="sc-guess", max_retries=0).models.list()
    finally:
        server.terminate()
        assert server.wait(timeout=30) == 0 or server.returncode in (-15, 143)
