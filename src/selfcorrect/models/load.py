"""Build the engine that a settings' model spec names."""

from __future__ import annotations

from selfcorrect.config import Settings
from selfcorrect.errors import ConfigError
from selfcorrect.models.base import Model

SPECS = ("embedded", "embedded:QUANT", "gguf:PATH", "openai:NAME")


def load_model(settings: Settings) -> Model:
    """The engine a settings' model spec names, without the cache."""
    kind, _, arg = settings.model.partition(":")
    if kind in ("embedded", "gguf"):
        if kind == "gguf" and not arg:
            raise ConfigError("--model gguf: needs a path", "write --model gguf:/path/to/model.gguf")
        from selfcorrect.models.embedded import EMBEDDED_QUANTS, EmbeddedModel

        if kind == "embedded" and arg and arg not in EMBEDDED_QUANTS:
            raise ConfigError(f"unknown model {settings.model!r}",
                              f"use embedded, embedded:{' or embedded:'.join(EMBEDDED_QUANTS)}, or gguf:PATH")
        return EmbeddedModel(
            arg if kind == "gguf" else None,
            quant=arg if kind == "embedded" and arg else EMBEDDED_QUANTS[0],
            threads=settings.threads,
            n_ctx=settings.n_ctx,
            parallel=settings.parallel,
            prefix_cache=settings.prefix_cache,
            record_tokens=settings.record_tokens,
        )
    if kind == "openai":
        from selfcorrect.models.openai_http import OpenAICompatibleModel

        return OpenAICompatibleModel(
            arg,
            settings.base_url,
            api_key_env=settings.api_key_env,
            concurrency=settings.concurrency,
            timeout=settings.timeout,
            retries=settings.retries,
            context_length=settings.context_length,
        )
    raise ConfigError(f"unknown model {settings.model!r}", f"use one of: {', '.join(SPECS)}")

