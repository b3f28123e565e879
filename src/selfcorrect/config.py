"""Settings: defaults, then a TOML file, then command-line flags (each overrides the last).

The file is `selfcorrect.toml` in the current directory when present, or the one named
by `--config`. Every key is checked: an unknown or ill-typed key is an error that names
the file, the key and the fix.
"""

from __future__ import annotations

import difflib
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from selfcorrect.errors import ConfigError
from selfcorrect.store import DEFAULT_STORE

DEFAULT_CONFIG = Path("selfcorrect.toml")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field("embedded", description="the model: embedded, gguf:PATH or openai:NAME")
    base_url: list[str] = Field(default_factory=list, description="the OpenAI-compatible server address(es)")
    api_key_env: str = Field("OPENAI_API_KEY", description="the environment variable holding the API key")
    threads: int | None = Field(None, ge=1, description="the number of llama.cpp threads")
    n_ctx: int = Field(8192, ge=64, description="the llama.cpp context in tokens, shared by all sequences")
    parallel: int = Field(8, ge=1, description="how many sequences llama.cpp decodes together")
    prefix_cache: int = Field(
        4, ge=0, description="how many evaluated prompts llama.cpp keeps for reuse (0: off)"
    )
    concurrency: int = Field(8, ge=1, description="how many HTTP requests are in flight per server")
    timeout: float = Field(120.0, gt=0, description="the seconds to wait for one HTTP reply")
    retries: int = Field(5, ge=0, description="how many times to retry a failed HTTP request")
    context_length: int = Field(0, ge=0, description="the context length of an HTTP model (0: unknown)")
    store: Path = Field(DEFAULT_STORE, description="the SQLite store file (sample cache, runs)")
    data: Path | None = Field(
        None, description="where datasets are: a folder holding gsm8k/ and mbpp/ (default: the hub)"
    )
    sandbox: Literal["bwrap", "process"] = Field(
        "bwrap", description="the sandbox's isolation: bwrap, or process (no isolation: unsafe)"
    )
    sandbox_workers: int | None = Field(
        None, ge=1, description="how many programs the sandbox runs at once (default: the cores)"
    )
    cache: bool = Field(True, description="whether to use the sample cache (true or false)")
    record_tokens: bool = Field(
        True, description="whether to keep every sample's token ids and log-probabilities (embedded)"
    )

    @field_validator("base_url", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value


def load_settings(config: Path | None = None, **overrides) -> Settings:
    """Settings from the config file (if any) overridden by the flags that were given."""
    path = config if config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    values: dict = {}
    if path is not None:
        values = _read_toml(path)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as e:
        raise _explain(e, path, {k for k, v in overrides.items() if v is not None}) from None


def _read_toml(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}", "check the --config path") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}", "fix the syntax at that place") from None


def _explain(error: ValidationError, path: Path | None, flags: set[str]) -> ConfigError:
    """One readable line for the first problem, naming where it came from."""
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"])
    where = f"--{key.replace('_', '-')}" if key in flags else f"{path or 'settings'}: {key}"
    valid = ", ".join(Settings.model_fields)
    if first["type"] == "extra_forbidden":
        near = difflib.get_close_matches(key, Settings.model_fields, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        return ConfigError(f"{path}: unknown key '{key}'", f"{hint}valid keys are: {valid}")
    field = Settings.model_fields.get(key)
    about = f"'{key}' is {field.description}" if field is not None else f"valid keys are: {valid}"
    return ConfigError(f"{where}: {first['msg'].lower()} (got {first.get('input')!r})", about)
