"""The embedded model as a model that can learn: the SmolLM2 GGUF loaded with transformers
(dequantised to fp32 by its `gguf` reader), rebuilt as a plain model (a GGUF-loaded model
still counts as quantised: TRL refuses to train it, `save_pretrained` to save it as a plain
checkpoint), and saved as a normal transformers checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

from selfcorrect.errors import ConfigError
from selfcorrect.precision import Precision


def export_embedded(out: Path, precision: Precision = "auto") -> Path:
    """Write the embedded model, from the shipped Q4_1 file (the Q8_0 the engine runs is
    converted from it), to `out` as an fp32 checkpoint (about 540 MB), which holds the
    quantised weights exactly; bf16 (half the size, rounded) only when asked for by name: the
    export is the master copy every training round starts from (precision.py)."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError:
        raise ConfigError("exporting needs torch, transformers and gguf",
                          "pip install torch==2.13.0 'selfcorrect[train]'") from None
    from selfcorrect.models.embedded import default_model_path

    source = default_model_path()
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are plain fp32 now
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    if precision == "bf16":
        plain = plain.to(torch.bfloat16)
    plain.generation_config = loaded.generation_config
    out.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "EXPORTED_FROM").write_text(f"{source.name}\n{time.perf_counter() - started:.1f} s\n")
    return out
