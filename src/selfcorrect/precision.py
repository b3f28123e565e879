"""The numeric precision torch works in: training (SFT, DPO, GRPO, SCoRe, verifiers), the
transformers engine's generation, the verifiers' scoring.

    auto  bf16 where the hardware has bf16 matrix units (a CPU with `amx_bf16` or
          `avx512_bf16`: Intel AMX, AMD Zen 4; a CUDA GPU that supports bf16), fp32 elsewhere
    bf16  bf16 even where it is only emulated (slow, but the same numbers)
    fp32  fp32

In bf16, what is trained keeps fp32 master weights and fp32 optimizer state (the trainers run
under bf16 autocast: matrix products in bf16, sums and the loss in fp32); frozen weights (the
base under a LoRA adapter) and weights that only infer are held in bf16. A checkpoint written
by `selfcorrect models export` stays fp32 under auto: it is the master copy every round starts
from, and the embedded model's Q8_0 weights are exact in fp32, not in bf16.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Literal

from selfcorrect.errors import ConfigError

Precision = Literal["auto", "fp32", "bf16"]
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
CPUINFO = Path("/proc/cpuinfo")

log = logging.getLogger(__name__)


@functools.cache
def _cpuinfo(path: Path) -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo, read once (empty where there is none:
    not Linux)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in lines:
        if not line.strip():
            break  # the next processor's block
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_flags() -> set[str]:
    """The CPU's feature flags ("Features" on ARM)."""
    info = _cpuinfo(CPUINFO)
    return set(info.get("flags", info.get("Features", "")).split())


def _cuda_bf16() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


@functools.cache
def _fallback_said() -> None:
    """Say once per process that auto fell back to fp32."""
    log.warning("this CPU has no bf16 matrix units (%s): torch works in fp32 (--precision bf16 emulates it, slowly)",
                " or ".join(BF16_FLAGS))


def resolve(precision: Precision = "auto", *, gpu: bool | None = None) -> Literal["fp32", "bf16"]:
    """What `precision` means on this machine: "bf16" or "fp32"."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"unknown precision {precision!r}", "use auto, fp32 or bf16")
    if precision != "auto":
        return precision
    if gpu is None:
        import torch

        gpu = torch.cuda.is_available()
    if _cuda_bf16() if gpu else set(BF16_FLAGS) & cpu_flags():
        return "bf16"
    if not gpu:
        _fallback_said()
    return "fp32"


def dtype(precision: Precision = "auto"):
    """The torch dtype of weights that only infer (or stay frozen) in this precision."""
    import torch

    return torch.bfloat16 if resolve(precision) == "bf16" else torch.float32


def describe() -> dict:
    """The machine as the figures should name it: CPU model, its bf16 flags, the GPU if any."""
    import torch

    return {"cpu": _cpuinfo(CPUINFO).get("model name", ""), "bf16_flags": sorted(set(BF16_FLAGS) & cpu_flags()),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "auto": resolve("auto")}
