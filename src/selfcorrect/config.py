"""Settings: defaults, then a TOML file, then command-line flags (each overrides the last).

The file is `selfcorrect.toml` in the current directory when present, or the one named
by `--config`. Each backend has its own section, `[llama]` (the embedded engine and GGUF
files) and `[http]` (OpenAI-compatible servers); the rest is top level. Every key is checked:
an unknown or ill-typed key is an error that names the file, the key and the fix. The flat
keys of earlier versions (`threads = 2` at top level) still work, with a warning that names
their section.
"""

from __future__ import annotations

import difflib
import logging
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from selfcorrect.errors import ConfigError
from selfcorrect.precision import Precision

log = logging.getLogger(__name__)

DEFAULT_CONFIG = Path("selfcorrect.toml")
DEFAULT_STORE = Path(".selfcorrect") / "store.sqlite"


class LlamaSettings(BaseModel):
    """[llama]: the in-process llama.cpp engine (embedded, gguf:PATH)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    threads: int | None = Field(None, ge=1, description="the number of llama.cpp threads")
    n_ctx: int = Field(8192, ge=64, description="the llama.cpp context in tokens, shared by all sequences")
    parallel: int = Field(8, ge=1, description="how many sequences llama.cpp decodes together")
    prefix_cache: int = Field(4, ge=0, description="how many evaluated prompts llama.cpp keeps for reuse (0: off)")
    record_tokens: bool = Field(
        True, description="whether to keep every sample's token ids and log-probabilities")


class HTTPSettings(BaseModel):
    """[http]: OpenAI-compatible servers (openai:NAME)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: list[str] = Field(default_factory=list, description="the OpenAI-compatible server address(es)")
    api_key_env: str = Field("OPENAI_API_KEY", description="the environment variable holding the API key")
    concurrency: int = Field(8, ge=1, description="how many HTTP requests are in flight per server")
    timeout: float = Field(120.0, gt=0, description="the seconds to wait for one HTTP reply")
    retries: int = Field(5, ge=0, description="how many times to retry a failed HTTP request")
    context_length: int = Field(0, ge=0, description="the context length of an HTTP model (0: unknown)")

    @field_validator("base_url", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return [value] if isinstance(value, str) else value


class HFSettings(BaseModel):
    """[hf]: the transformers engine (hf:PATH, round:N)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch: int = Field(8, ge=1, description="how many sequences the transformers engine decodes together")
    threads: int | None = Field(None, ge=1, description="torch's threads (default: torch's choice)")


SECTIONS: dict[str, type[BaseModel]] = {"llama": LlamaSettings, "http": HTTPSettings, "hf": HFSettings}


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field("embedded", description="the model: embedded, gguf:PATH, openai:NAME, hf:PATH, round:N or recipe:DIR")
    store: Path = Field(DEFAULT_STORE, description="the SQLite store file (sample cache, runs)")
    data: Path | None = Field(
        None, description="where datasets are: a folder holding gsm8k/ and mbpp/ (default: the copy shipped in selfcorrect)"
    )
    sandbox: Literal["bwrap", "process"] = Field(
        "bwrap", description="the sandbox's isolation: bwrap, or process (no isolation: unsafe)"
    )
    sandbox_workers: int | None = Field(
        None, ge=1, description="how many programs the sandbox runs at once (default: the cores)"
    )
    cache: bool = Field(True, description="whether to use the sample cache (true or false)")
    prompts: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="prompt overrides per strategy ([prompts.NAME] key = template)")
    llama: LlamaSettings = Field(default_factory=LlamaSettings, description="the [llama] section")
    http: HTTPSettings = Field(default_factory=HTTPSettings, description="the [http] section")
    hf: HFSettings = Field(default_factory=HFSettings, description="the [hf] section")
    precision: Precision = Field(
        "auto", description="torch's precision for training, the transformers engine and verifiers: auto (bf16 "
                            "where the CPU has amx_bf16 or avx512_bf16, or the GPU supports it; fp32 elsewhere), "
                            "fp32 or bf16 (docs/train.md)")


def load_settings(config: Path | None = None, **overrides) -> Settings:
    """Settings from the config file (if any) overridden by the flags that were given.
    Overrides may name a section's key directly (`threads=2`, `base_url=[...]`)."""
    path = config if config is not None else (DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None)
    values: dict = {}
    if path is not None:
        values = _nest(_read_toml(path), path)
    flags = {k for k, v in overrides.items() if v is not None}
    for key in flags:
        section = _section_of(key)
        if section:
            values.setdefault(section, {})[key] = overrides[key]
        else:
            values[key] = overrides[key]
    try:
        return Settings(**values)
    except ValidationError as e:
        raise _explain(e, path, flags) from None


def _section_of(key: str) -> str | None:
    return next((name for name, section in SECTIONS.items() if key in section.model_fields), None)


def _nest(values: dict, path: Path) -> dict:
    """Old flat keys moved into their sections, with a warning (a section's own key wins)."""
    nested = dict(values)
    for key in list(values):
        section = _section_of(key)
        if section and key not in SECTIONS:
            log.warning("%s: '%s' belongs in the [%s] section now; the top-level key still works",
                        path, key, section)
            value = nested.pop(key)
            if isinstance(nested.get(section), dict):
                nested[section] = {key: value, **nested[section]}
            else:
                nested.setdefault(section, {key: value})
    return nested


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
    loc = [str(part) for part in first["loc"]]
    key = loc[-1]
    section = loc[0] if len(loc) > 1 and loc[0] in SECTIONS else None
    model = SECTIONS[section] if section else Settings
    shown = f"[{section}] {key}" if section else key
    where = f"--{key.replace('_', '-')}" if key in flags else f"{path or 'settings'}: {shown}"
    valid = ", ".join(model.model_fields)
    if first["type"] == "extra_forbidden":
        candidates = list(model.model_fields) + ([] if section else
                                                 [k for s in SECTIONS.values() for k in s.model_fields])
        near = difflib.get_close_matches(key, candidates, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        return ConfigError(f"{path}: unknown key '{shown}'", f"{hint}valid keys are: {valid}")
    field = model.model_fields.get(key)
    about = f"'{key}' is {field.description}" if field is not None else f"valid keys are: {valid}"
    return ConfigError(f"{where}: {first['msg'].lower()} (got {first.get('input')!r})", about)
