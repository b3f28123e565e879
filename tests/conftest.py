"""Shared fixtures. Integration fixtures start real things: the embedded model (1 thread,
as tests share the machine), and llama.cpp's OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from selfcorrect.models.served import free_port  # noqa: F401  (tests import it from here)
from selfcorrect.store import Store

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path: Path):
    with Store(tmp_path / "store.sqlite") as s:
        yield s


@pytest.fixture(scope="session")
def embedded():
    from selfcorrect.models.embedded import EmbeddedModel

    with EmbeddedModel(threads=1, parallel=8, n_ctx=4096) as model:
        yield model




@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """`python -m llama_cpp.server` on the embedded model, served as 'smollm2'."""
    from selfcorrect.models.embedded import default_model_path

    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "selfcorrect.models.llama_server", "--model", str(default_model_path()),
             "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
             "--n_threads", "1", "--n_ctx", "2048", "--verbose", "false"],
            stdout=sink, stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(url + "/models", timeout=2).read()
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"llama_cpp.server did not start:\n{log.read_text()[-2000:]}")
            time.sleep(0.3)
    yield url
    process.terminate()
    process.wait(timeout=20)
