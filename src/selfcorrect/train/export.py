"""The embedded model as a model that can learn: the SmolLM2 GGUF loaded with transformers
(dequantised to fp32 by its `gguf` reader), rebuilt as a plain model (a GGUF-loaded model
still counts as quantised: TRL refuses to train it, `save_pretrained` to save it as a plain
checkpoint), and saved as a normal transformers checkpoint."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from selfcorrect.errors import ConfigError
from selfcorrect.models.lineage import Checkpoint, Lineage
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


def export_base(store: Path, precision: Precision = "auto", folder: Path | None = None) -> Checkpoint:
    """The embedded model exported (to `folder`, default models/base beside the store) and
    registered as round 0 of the store's lineage, `base`."""
    folder = folder or Path(store).parent / "models" / "base"
    started = time.perf_counter()
    export_embedded(folder, precision)
    lineage = Lineage(store)
    try:
        return lineage.register(Checkpoint(name="base", round=0, path=str(folder.resolve()), method="export",
                                           metrics={"export_seconds": round(time.perf_counter() - started, 1),
                                                    "precision": "bf16" if precision == "bf16" else "fp32"}))
    finally:
        lineage.close()


def base_of(store: Path, lineage: Lineage, precision: Precision, say: Callable[[str], None]) -> Checkpoint:
    """Round 0 of the lineage; on first use (none registered) the embedded model, exported."""
    if not any(c.round == 0 for c in lineage.all()):
        say("no round 0 in the store: exporting the embedded model as the base (`selfcorrect models export`)")
        export_base(store, precision)
    return lineage.of_round(0)
