"""Backends: the registry of engines a model spec names (`NAME[:ARG]`), and loading one.

Built in: `embedded` (the embedded model; `embedded:q4_1` for the shipped file), `gguf:PATH`
(any GGUF file) and `openai:NAME` (an OpenAI-compatible server). Others register through the
`selfcorrect.backends` entry point: a factory `(settings, arg) -> Model` (docs/write-a-backend.md).
"""

from __future__ import annotations

from pathlib import Path

from selfcorrect.config import Settings
from selfcorrect.errors import ConfigError
from selfcorrect.models.base import Model
from selfcorrect.registry import Registry

BACKENDS = Registry("backend", "selfcorrect.backends")


@BACKENDS.register("embedded", about="SmolLM2-135M-Instruct in-process (llama.cpp); embedded:q4_1 for "
                   "the shipped file, embedded (Q8_0) by default")
def _embedded(settings: Settings, arg: str) -> Model:
    from selfcorrect.models.embedded import EMBEDDED_QUANTS

    if arg and arg not in EMBEDDED_QUANTS:
        raise ConfigError(f"unknown model {settings.model!r}",
                          f"use embedded, embedded:{' or embedded:'.join(EMBEDDED_QUANTS)}, or gguf:PATH")
    return _llama(settings, None, arg or EMBEDDED_QUANTS[0])


@BACKENDS.register("gguf", about="gguf:PATH: any GGUF file in-process (llama.cpp)")
def _gguf(settings: Settings, arg: str) -> Model:
    if not arg:
        raise ConfigError("--model gguf: needs a path", "write --model gguf:/path/to/model.gguf")
    return _llama(settings, arg, None)


def load_gguf(settings: Settings, path: str | Path) -> Model:
    """A GGUF file on the llama.cpp engine, with the settings' [llama] options."""
    return _llama(settings, str(path), None)


def _llama(settings: Settings, path: str | None, quant: str | None) -> Model:
    from selfcorrect.models.embedded import EMBEDDED_QUANTS, EmbeddedModel

    llama = settings.llama
    return EmbeddedModel(path, quant=quant or EMBEDDED_QUANTS[0], threads=llama.threads, n_ctx=llama.n_ctx,
                         parallel=llama.parallel, prefix_cache=llama.prefix_cache,
                         record_tokens=llama.record_tokens)


@BACKENDS.register("openai", about="openai:NAME --base-url URL: an OpenAI-compatible server "
                   "(vLLM, SGLang, llama.cpp, Ollama), replicas spread")
def _openai(settings: Settings, arg: str) -> Model:
    from selfcorrect.models.openai_http import OpenAICompatibleModel

    http = settings.http
    return OpenAICompatibleModel(arg, http.base_url, api_key_env=http.api_key_env, concurrency=http.concurrency,
                                 timeout=http.timeout, retries=http.retries, context_length=http.context_length,
                                 probe=True)


@BACKENDS.register("hf", about="hf:PATH[+ADAPTER]: a transformers checkpoint in-process, with a LoRA "
                   "adapter if given (the model that can learn; selfcorrect[train])")
def _hf(settings: Settings, arg: str) -> Model:
    from selfcorrect.models.hf import HFModel

    if not arg:
        raise ConfigError("--model hf: needs a path", "write --model hf:/path/to/checkpoint[+/path/to/adapter]")
    path, _, adapter = arg.partition("+")
    return HFModel(path, adapter or None, batch=settings.hf.batch, threads=settings.hf.threads,
                   precision=settings.precision)


@BACKENDS.register("round", about="round:N: the checkpoint of self-training round N (0: the exported "
                   "embedded model), or round:NAME for a checkpoint by name; from the lineage in the store")
def _round(settings: Settings, arg: str) -> Model:
    from selfcorrect.models.hf import HFModel
    from selfcorrect.models.lineage import Lineage

    if not arg:
        raise ConfigError("--model round: needs a round number or a checkpoint name",
                          "write --model round:0, round:1, ... (names: `selfcorrect models lineage`)")
    lineage = Lineage(settings.store)
    try:
        checkpoint = lineage.of_round(int(arg)) if arg.isdigit() else lineage.get(arg)
    finally:
        lineage.close()
    if checkpoint is None:
        raise ConfigError(f"no checkpoint named {arg!r}", "list them with `selfcorrect models lineage`")
    return HFModel(checkpoint.path, checkpoint.adapter, batch=settings.hf.batch, threads=settings.hf.threads,
                   precision=settings.precision)


@BACKENDS.register("recipe", about="recipe:DIR: the checkpoint `selfcorrect improve` accepted (DIR/recipe.json); "
                   "eval and serve run its strategy when none is named")
def _recipe(settings: Settings, arg: str) -> Model:
    from selfcorrect.models.hf import HFModel
    from selfcorrect.models.recipe import check_identity, read_recipe

    if not arg:
        raise ConfigError("--model recipe: needs a folder", "write --model recipe:DIR (the --out of `selfcorrect improve`)")
    recipe = read_recipe(arg)
    check_identity(recipe, arg)
    checkpoint = recipe.checkpoint
    if checkpoint.gguf and Path(checkpoint.gguf).is_file():
        return load_gguf(settings, checkpoint.gguf)
    return HFModel(checkpoint.path, checkpoint.adapter, batch=settings.hf.batch, threads=settings.hf.threads,
                   precision=settings.precision)


def load_model(settings: Settings) -> Model:
    """The engine a settings' model spec names, without the cache."""
    name, _, arg = settings.model.partition(":")
    if name not in BACKENDS.names():
        raise ConfigError(f"unknown model {settings.model!r}",
                          "use one of: embedded, embedded:QUANT, gguf:PATH, openai:NAME, hf:PATH, round:N, recipe:DIR"
                          + "".join(f", {n}:ARG" for n in BACKENDS.names() if n not in ("embedded", "gguf", "openai", "hf", "round", "recipe")))
    return BACKENDS.get(name).factory(settings, arg)
