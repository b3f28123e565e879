"""A round's checkpoint on a served engine: `train` and `improve` start OpenAI-compatible
servers for each round's model, wait for them, sample and measure through the OpenAI backend
(spread over the replicas as `eval` spreads), and stop them.

    llama-server  llama.cpp's OpenAI server (`models/llama_server`) on the GGUF written back
    vllm          `vllm serve` on the merged checkpoint; a LoRA round on one long-lived server
                  started with `--enable-lora`, each round's adapter loaded by name through
                  `/v1/load_lora_adapter` (no restart between rounds)
    sglang        `python -m sglang.launch_server` on the merged checkpoint
    command       any other server: `--serve-command` with {model}, {port} and {name}

A server that does not come up is stopped and reported with the last lines of its log; the
logs go to the run's `serving/` folder, one file per round and replica.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

from selfcorrect.config import Settings
from selfcorrect.errors import BackendUnavailableError, ConfigError
from selfcorrect.models.lineage import Checkpoint
from selfcorrect.models.openai_http import OpenAICompatibleModel

SERVED_ENGINES = ("llama-server", "vllm", "sglang", "command")
LOG_TAIL = 20  # lines of a failed server's log in its error
MAX_LORA_RANK = 64  # vLLM refuses an adapter above the rank it was started for


@dataclass(frozen=True)
class Serving:
    """How a run serves its rounds: the engine, `replicas` servers of each model, extra
    arguments for the server, the command template for `command`, and how long a server may
    take to answer its first /v1/models."""

    engine: str
    replicas: int = 1
    engine_args: str = ""
    command: str = ""
    ready_seconds: float = 600.0

    def __post_init__(self):
        if self.engine not in SERVED_ENGINES:
            raise ConfigError(f"--engine {self.engine} is not a served engine", f"use one of {', '.join(SERVED_ENGINES)}")
        if self.replicas < 1:
            raise ConfigError(f"--replicas {self.replicas} is out of range", "use 1 or more")
        if (self.engine == "command") != bool(self.command):
            raise ConfigError("--serve-command goes with --engine command" if self.command else
                              "--engine command needs --serve-command",
                              "write --engine command --serve-command 'my-server --model {model} --port {port}'")
        if self.command:
            missing = [k for k in ("{model}", "{port}") if k not in self.command]
            if missing:
                raise ConfigError(f"--serve-command {self.command!r} has no {' or '.join(missing)}",
                                  "the template names where the model and the port go: ... --model {model} --port {port}")
        try:
            shlex.split(self.engine_args)
        except ValueError as e:
            raise ConfigError(f"--engine-args {self.engine_args!r} does not parse: {e}", "quote it as a shell would") from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_argv(serving: Serving, model: str, port: int, name: str, *, threads: int = 0, n_ctx: int = 0,
                lora: bool = False) -> list[str]:
    """The command line of one server of `model` (a GGUF file for llama-server, a transformers
    folder for the others) on 127.0.0.1:`port`, answering to `name`."""
    extra = shlex.split(serving.engine_args)
    if serving.engine == "llama-server":
        return [sys.executable, "-m", "selfcorrect.models.llama_server", "--model", model, "--model_alias", name,
                "--host", "127.0.0.1", "--port", str(port), *(["--n_threads", str(threads)] if threads else []),
                *(["--n_ctx", str(n_ctx)] if n_ctx else []), "--verbose", "false", *extra]
    if serving.engine == "vllm":
        return ["vllm", "serve", model, "--host", "127.0.0.1", "--port", str(port), "--served-model-name", name,
                *(["--enable-lora", "--max-lora-rank", str(MAX_LORA_RANK)] if lora else []), *extra]
    if serving.engine == "sglang":
        return [sys.executable, "-m", "sglang.launch_server", "--model-path", model, "--host", "127.0.0.1",
                "--port", str(port), "--served-model-name", name, *extra]
    return [*shlex.split(serving.command.format(model=shlex.quote(model), port=port, name=shlex.quote(name))), *extra]


class ServerGroup:
    """`replicas` servers of one model: started together, each logging to its own file, ready
    when every one answers GET /v1/models; stopped together (terminate, then kill)."""

    def __init__(self, argvs: list[list[str]], ports: list[int], logs: list[Path], env: dict | None = None):
        self.argvs, self.ports, self.logs, self.env = argvs, ports, logs, env
        self.processes: list[subprocess.Popen] = []

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}/v1" for port in self.ports]

    async def start(self, ready_seconds: float) -> None:
        executable = self.argvs[0][0]
        if shutil.which(executable) is None and not Path(executable).is_file():
            raise BackendUnavailableError(f"the server command {executable!r} is not installed here",
                                          "install the engine (pip install vllm / sglang) on this machine, or "
                                          "serve it elsewhere and pass --base-url")
        for argv, log in zip(self.argvs, self.logs):
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as sink:
                sink.write(f"$ {shlex.join(argv)}\n".encode())
                sink.flush()
                self.processes.append(subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT,
                                                       env={**os.environ, **(self.env or {})},
                                                       start_new_session=True))
        try:
            await asyncio.gather(*(self._ready(i, ready_seconds) for i in range(len(self.processes))))
        except BaseException:
            self.stop()
            raise

    async def _ready(self, index: int, ready_seconds: float) -> None:
        process, url = self.processes[index], self.urls[index]
        deadline = time.monotonic() + ready_seconds
        async with httpx.AsyncClient(timeout=5) as client:
            while True:
                if process.poll() is not None:
                    raise self._failed(index, f"exited with status {process.returncode} before it answered")
                try:
                    if (await client.get(url + "/models")).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise self._failed(index, f"did not answer {url}/models within {ready_seconds:.0f} s")
                await asyncio.sleep(0.25)

    def _failed(self, index: int, what: str) -> BackendUnavailableError:
        log = self.logs[index]
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL:] if log.is_file() else []
        return BackendUnavailableError(
            f"the server {shlex.join(self.argvs[index])} {what}; the last lines of {log}:\n" + "\n".join(tail),
            "read the log, fix the engine's arguments (--engine-args), or raise the wait")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []


class ServedModel(OpenAICompatibleModel):
    """The OpenAI backend on servers this run started: closing it stops them (`on_close`)."""

    def __init__(self, *args, on_close: Callable[[], object], **kwargs):
        super().__init__(*args, **kwargs)
        self._on_close = on_close

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            done = self._on_close()
            if asyncio.iscoroutine(done):
                await done


class ServedEngines:
    """How a run opens checkpoints on served engines: `await engines(checkpoint)` gives a model
    to sample and measure with (closed when done); `await engines.aclose()` when the run ends
    stops what outlives a round (vLLM's LoRA server)."""

    def __init__(self, settings: Settings, serving: Serving, logs: Path, *, gguf_of: Callable[[Checkpoint], str],
                 merged_of: Callable[[Checkpoint], Path], say: Callable[[str], None], lora: bool = False):
        self.settings, self.serving, self.logs, self.say = settings, serving, Path(logs), say
        self.lora_rounds = lora and serving.engine == "vllm"  # every round on the one LoRA server
        self.gguf_of, self.merged_of = gguf_of, merged_of
        self.lora_server: ServerGroup | None = None
        self.lora_base: str | None = None

    def _group(self, model: str, name: str, label: str, lora: bool = False) -> ServerGroup:
        serving, llama = self.serving, self.settings.llama
        threads = max(1, (llama.threads or os.cpu_count() or 1) // serving.replicas)
        ports = [free_port() for _ in range(serving.replicas)]
        argvs = [server_argv(serving, model, port, name, threads=threads, n_ctx=llama.n_ctx, lora=lora) for port in ports]
        logs = [self.logs / f"{label}.server-{i}.log" for i in range(serving.replicas)]
        return ServerGroup(argvs, ports, logs, env={"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"} if lora else None)

    def _model(self, name: str, urls: list[str], identity: str, on_close) -> ServedModel:
        http = self.settings.http
        n_ctx = self.settings.llama.n_ctx if self.serving.engine == "llama-server" else http.context_length
        return ServedModel(name, urls, api_key_env=http.api_key_env, concurrency=http.concurrency,
                           timeout=http.timeout, retries=http.retries, context_length=n_ctx or 0,
                           identity=identity, on_close=on_close)

    async def __call__(self, checkpoint: Checkpoint) -> ServedModel:
        from selfcorrect.models.embedded.files import file_fingerprint

        serving = self.serving
        label = checkpoint.name.replace("/", "_")
        # draws are cached by what made them: the weights served, and the engine
        if self.lora_rounds or (serving.engine == "vllm" and checkpoint.adapter):
            return await self._lora(checkpoint, f"vllm:{checkpoint.content_hash()}")
        if serving.engine == "llama-server":
            model = self.gguf_of(checkpoint)
            identity = f"llama-server:{Path(model).name}:{file_fingerprint(Path(model))}"
        else:
            model = str(self.merged_of(checkpoint) if checkpoint.adapter else checkpoint.path)
            identity = f"{serving.engine}:{checkpoint.content_hash()}"
        group = self._group(model, checkpoint.name, label)
        self.say(f"starting {serving.replicas} {serving.engine} server(s) for {checkpoint.name}")
        await group.start(serving.ready_seconds)
        return self._model(checkpoint.name, group.urls, identity, group.stop)

    async def _lora(self, checkpoint: Checkpoint, identity: str) -> ServedModel:
        """One vLLM server of the adapters' base for the whole run, answering to `base` for the
        base itself; each round's adapter loaded by name. An adapter on another base (a round
        that started from a merged one) gets a server of its own base, started in place of the
        first."""
        if self.lora_server is None or self.lora_base != checkpoint.path:
            await self.aclose()
            group = self._group(checkpoint.path, "base", "vllm-lora", lora=True)
            self.say(f"starting {self.serving.replicas} vLLM server(s) with --enable-lora on {checkpoint.path}")
            await group.start(self.serving.ready_seconds)
            self.lora_server, self.lora_base = group, checkpoint.path
        urls = self.lora_server.urls
        if not checkpoint.adapter:
            return self._model("base", urls, identity, lambda: None)
        async with httpx.AsyncClient(timeout=300) as client:
            for url in urls:
                served = await client.get(url + "/models")
                if checkpoint.name in {m.get("id") for m in served.json().get("data", [])}:
                    continue  # loaded already (by the server's own list, not by reading its error text)
                reply = await client.post(url + "/load_lora_adapter",
                                          json={"lora_name": checkpoint.name, "lora_path": checkpoint.adapter})
                if reply.status_code != 200:
                    raise BackendUnavailableError(
                        f"vLLM at {url} refused the adapter {checkpoint.adapter} ({reply.status_code}: {reply.text[:300]})",
                        f"vLLM loads adapters at run time only with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True and a rank "
                        f"at most {MAX_LORA_RANK}; see {self.lora_server.logs[0]}")

        async def unload():
            async with httpx.AsyncClient(timeout=60) as client:
                for url in urls:
                    try:
                        await client.post(url + "/unload_lora_adapter", json={"lora_name": checkpoint.name})
                    except httpx.HTTPError:
                        pass  # a server already gone holds nothing

        return self._model(checkpoint.name, urls, identity, unload)

    async def aclose(self) -> None:
        if self.lora_server is not None:
            self.lora_server.stop()
            self.lora_server, self.lora_base = None, None
