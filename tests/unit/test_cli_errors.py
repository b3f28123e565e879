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
    assert_one_line_error(done, "unknown model 'gpt5'", "embedded, embedded:QUANT, gguf:PATH, openai:NAME")


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


def test_a_missing_or_broken_recipe_is_named_with_its_fix(tmp_path):
    done = selfcorrect("--model", "recipe:" + str(tmp_path / "nowhere"), "eval", "--limit", "2", cwd=tmp_path)
    assert_one_line_error(done, "no recipe at", "selfcorrect improve")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "recipe.json").write_text('{"task": "arithmetic"}')
    done = selfcorrect("serve", "--recipe", str(tmp_path / "run"), cwd=tmp_path, timeout=60)
    assert_one_line_error(done, "is not a recipe", "rewrites recipe.json")
    done = selfcorrect("improve", "--chains", "2", "--agree", "3", cwd=tmp_path)
    assert_one_line_error(done, "--agree 3")


def test_a_memory_arm_that_does_not_exist_is_named(tmp_path):
    done = selfcorrect("eval", "--memory-show", "everything", cwd=tmp_path)
    assert_one_line_error(done, "--memory-show 'everything' is not an arm", "gated, all, lessons, rules, examples")
    done = selfcorrect("serve", "--memory-explore", "1.5", cwd=tmp_path, timeout=60)
    assert_one_line_error(done, "--memory-explore 1.5 is out of range")


@pytest.mark.parametrize("args", [["--model", "gguf:/no/such.gguf", "--debug", "generate", "hi"]])
def test_debug_shows_the_traceback(tmp_path, args):
    done = selfcorrect(*args, cwd=tmp_path)
    assert done.returncode != 0 and "Traceback" in done.stderr


def test_nothing_is_written_when_the_command_fails(tmp_path):
    selfcorrect("--model", "gguf:/no/such.gguf", "generate", "hi", cwd=tmp_path)
    assert not (tmp_path / ".selfcorrect").exists()


@pytest.mark.parametrize("args, phrases", [
    (["--limit", "0"], ["--limit 0 is out of range"]),
    (["--limit", "-1"], ["--limit -1 is out of range"]),
    (["--ids", "5-2"], ["item range 5-2 is reversed", "2-5"]),
    (["--strategy", "self-consistency:n=-1"], ["self-consistency:n=-1 is outside 1 to 256"]),
    (["--strategy", "self-consistency:n=0"], ["self-consistency:n=0 is outside"]),
    (["--strategy", "best-of-n:n=100000"], ["best-of-n:n=100000 is outside 1 to 256"]),
    (["--strategy", "best-of-n:verifier=bogus"], ["unknown verifier 'bogus'", "tests, self, critic, orm:PATH or prm:PATH"]),
    (["--strategy", "self-consistency:chains=abc"], ["chains='abc'", "not a int"]),
    (["--pool-cap", "0"], ["--pool-cap 0 is out of range"]),
    (["--online"], ["an online evaluation needs a strategy with memory=on"]),
    (["--online", "--holdout", "1.5", "--strategy", "single:memory=on"], ["--holdout 1.5 is out of range"]),
    (["--strategy", "single:memory=maybe"], ["memory='maybe'", "not a bool"]),
    (["--retriever", "magic"], ["unknown retriever 'magic'", "bm25, embedding"]),
    (["--retriever", "embedding:/no/such/folder"], ["no model folder at /no/such/folder"]),
    (["--lesson-writer", "poet"], ["--lesson-writer 'poet' is not a writer"]),
])
def test_bad_eval_options_are_refused_before_anything_is_stored(tmp_path, args, phrases):
    done = selfcorrect("--model", "gguf:/no/such.gguf", "eval", "--task", "arithmetic", *args, cwd=tmp_path)
    assert_one_line_error(done, *phrases)
    assert not (tmp_path / ".selfcorrect").exists()


def test_a_jsonl_file_with_bytes_that_are_not_utf8(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_bytes(b'{"question": "What is 1 + 1?", "answer": "2"}\n{"question": "caf\xe9", "answer": "1"}\n')
    for command in (["tasks", str(path)], ["eval", "--task", str(path)]):
        done = selfcorrect("--model", "gguf:/no/such.gguf", *command, cwd=tmp_path)
        assert_one_line_error(done, "line 2: not UTF-8 (byte 0xe9 at column 18)")


def test_an_over_long_item_is_rejected_at_load_with_its_line(tmp_path):
    path = tmp_path / "items.jsonl"
    path.write_text('{"question": "What is 1 + 1?", "answer": "2"}\n'
                    + '{"question": "' + "x" * 200_000 + '", "answer": "1"}\n')
    done = selfcorrect("tasks", str(path), cwd=tmp_path, timeout=30)
    assert_one_line_error(done, "line 2: 200,", "over the limit of 100,000", "max_chars=N")
    done = selfcorrect("tasks", f"{path}:max_chars=300000", cwd=tmp_path, timeout=30)
    assert done.returncode == 0 and len(done.stdout) < 5_000  # the preview is cut short


def test_a_store_whose_folder_cannot_be_made(tmp_path):
    (tmp_path / "file").write_text("")
    done = selfcorrect("--store", str(tmp_path / "file" / "sub" / "store.sqlite"), "--model", "openai:m",
                       "--base-url", "http://127.0.0.1:9/v1", "eval", cwd=tmp_path)
    assert_one_line_error(done, "cannot create the store's folder", "--store")


def test_a_damaged_store(tmp_path):
    from selfcorrect.store import Store

    path = tmp_path / "store.sqlite"
    with Store(path) as store:
        store.create_run({"task": "t", "items": 1, "strategies": []}, prompt_hashes={})
    data = bytearray(path.read_bytes())
    data[4096:8192] = b"\xff" * 4096  # a garbled page
    path.write_bytes(data)
    done = selfcorrect("--store", str(path), "runs", cwd=tmp_path)
    assert_one_line_error(done, "store", "restore it from a backup")


def test_runs_are_listed_from_a_read_only_folder(tmp_path):
    import subprocess

    from selfcorrect.store import Store
    from tests.cli import EXE

    folder = tmp_path / "ro"
    folder.mkdir()
    with Store(folder / "store.sqlite") as store:
        store.create_run({"task": "arithmetic", "items": 3, "strategies": ["single"]}, prompt_hashes={},
                         run_id="the-run")
    # A read-only mount, which holds for root too (bubblewrap makes it).
    command = ["bwrap", "--dev-bind", "/", "/", "--ro-bind", str(folder), str(folder),
               str(EXE), "--store", str(folder / "store.sqlite"), "runs"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "the-run" in done.stdout


def test_resume_refuses_options_that_would_change_the_run(tmp_path):
    done = selfcorrect("eval", "--resume", "some-run", "--limit", "3", "-s", "single", cwd=tmp_path)
    assert_one_line_error(done, "--resume some-run goes on with the settings the run was made with",
                          "--strategy, --limit would change them", "only --pool-cap, --out and --force")


def test_ctrl_c_stops_a_run_promptly_with_the_resume_hint_and_no_traceback(tmp_path):
    import os
    import signal
    import subprocess
    import time

    from tests.cli import EXE
    from tests.httpstub import HTTPStub

    stub = HTTPStub(lambda seen: "hang", hang_seconds=60)
    try:
        # faulthandler: a run that does not stop is sent SIGABRT below and prints where every thread was
        process = subprocess.Popen(
            [str(EXE), "--model", "openai:m", "--base-url", stub.url, "eval", "--limit", "20"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONFAULTHANDLER": "1"})
        deadline = time.monotonic() + 30
        while not stub.seen and time.monotonic() < deadline and process.poll() is None:  # the run is under way
            time.sleep(0.1)
        if not stub.seen:
            process.kill()
            _, stderr = process.communicate(timeout=15)
            pytest.fail(f"the run never asked the model (exit {process.returncode}); it said: {stderr[-2000:]}")
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        try:
            _, stderr = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            _, stderr = process.communicate(timeout=15)
            pytest.fail(f"the run did not stop within 15 s of ctrl-c; its threads were at: {stderr[-6000:]}")
        assert time.monotonic() - started < 10
    finally:
        stub.close()
    assert process.returncode == 130, stderr
    assert "resume with `selfcorrect eval --resume" in stderr
    assert "Traceback" not in stderr and "never retrieved" not in stderr


def test_an_eval_against_a_server_that_is_down_ends_in_one_error_with_the_resume_hint(tmp_path):
    (tmp_path / "selfcorrect.toml").write_text("retries = 1\n")
    url = f"http://127.0.0.1:{free_port()}/v1"
    done = selfcorrect("--model", "openai:m", "--base-url", url, "eval", "--limit", "3", cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "never retrieved" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot reach the model server") and "selfcorrect eval --resume" in last


@pytest.mark.parametrize("args, phrases", [
    (["--port", "0"], ["--port 0 is out of range"]),
    (["--api-keys", "/no/such/keys.txt"], ["keys file not found: /no/such/keys.txt", "serve-key"]),
    (["--strategy", "self-refien"], ["unknown strategy 'self-refien'", "did you mean 'self-refine'"]),
    (["--retriever", "magic"], ["unknown retriever 'magic'"]),
    (["--canary", "0.2"], ["--canary puts a new recipe on trial", "--recipe DIR"]),
    (["--canary", "1.5", "--improve", "cycle"], ["--canary 1.5 is out of range"]),
    (["--improve", "cycle", "--recipe", "elsewhere"], ["--improve serves its own recipes", "drop --recipe"]),
    (["--improve", "cycle", "--improve-every", "0"], ["--improve-every and --improve-threads must be at least 1"]),
])
def test_bad_serve_options_are_refused_before_it_listens(tmp_path, args, phrases):
    done = selfcorrect("serve", *args, cwd=tmp_path, timeout=60)
    assert_one_line_error(done, *phrases)


def test_a_keys_file_holding_a_key_instead_of_its_hash_is_refused(tmp_path):
    (tmp_path / "keys.txt").write_text("alice sc-the-key-itself\n")
    done = selfcorrect("serve", "--api-keys", str(tmp_path / "keys.txt"), cwd=tmp_path, timeout=60)
    assert_one_line_error(done, "keys.txt:1 is not a `name sha256-hash` line", "never store a key itself")


@pytest.mark.parametrize("args, phrases", [
    (["--method", "sft"], ["unknown training method 'sft'", "did you mean 'rft'?", "rft, star, correction, dpo, grpo, score"]),
    (["--labels", "oracle"], ["--labels: input should be 'gold', 'vote', 'program' or 'judge'"]),
    (["--method", "star", "--labels", "vote"], ["a majority vote always has one"]),
    (["--engine", "tgi"], ["--engine: input should be 'auto', 'gguf', 'hf', 'llama-server', 'vllm', 'sglang' or 'command'"]),
    (["--replicas", "2"], ["--replicas goes with a served engine, not --engine auto", "add --engine llama-server"]),
    (["--heldout", "2"], ["--heldout: input should be less than 1"]),
    (["--method", "correction", "--labels", "vote"], ["correction is rewarded by the task's check"]),
    (["--sample", "bogus"], ["unknown strategy 'bogus'"]),
])
def test_bad_train_options_are_refused_before_anything_runs(tmp_path, args, phrases):
    done = selfcorrect("train", *args, cwd=tmp_path, timeout=60)
    assert_one_line_error(done, *phrases)
    assert not (tmp_path / ".selfcorrect" / "train").exists()


def test_a_training_flag_the_method_does_not_read_is_refused_not_ignored(tmp_path):
    done = selfcorrect("train", "--method", "rft", "--grpo-steps", "10", cwd=tmp_path, timeout=60)
    assert_one_line_error(done, "--grpo-steps is read by grpo alone: --grpo-steps 10 goes with --method grpo")
    assert not (tmp_path / ".selfcorrect" / "train").exists()


def test_ctrl_c_caught_on_another_thread_of_the_run_stops_it_too(tmp_path):
    """The kernel may hand a process's SIGINT to any of its threads; asyncio.run's handler then
    waited for the main thread to wake, which a server that hangs never did (interrupt.py)."""
    import ctypes
    import os
    import platform
    import signal
    import subprocess
    import time

    from tests.cli import EXE
    from tests.httpstub import HTTPStub

    tgkill = {"x86_64": 234, "aarch64": 131}.get(platform.machine())
    if tgkill is None:
        pytest.skip("tgkill's number is known here for x86_64 and aarch64 only")
    libc = ctypes.CDLL(None, use_errno=True)
    stub = HTTPStub(lambda seen: "hang", hang_seconds=60)
    try:
        process = subprocess.Popen(
            [str(EXE), "--model", "openai:m", "--base-url", stub.url, "eval", "--limit", "20"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONFAULTHANDLER": "1"})
        deadline = time.monotonic() + 30
        while not stub.seen and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        others = [int(t) for t in os.listdir(f"/proc/{process.pid}/task") if int(t) != process.pid]
        assert stub.seen and others, "the run never asked the model, or has no thread but its main one"
        assert libc.syscall(tgkill, process.pid, others[0], signal.SIGINT) == 0
        try:
            _, stderr = process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGABRT)
            _, stderr = process.communicate(timeout=15)
            pytest.fail(f"the run did not stop within 15 s of ctrl-c; its threads were at: {stderr[-6000:]}")
    finally:
        stub.close()
    assert process.returncode == 130, stderr
    assert "resume with `selfcorrect eval --resume" in stderr and "Traceback" not in stderr
