"""Back to GGUF: a trained checkpoint of the embedded model written as a GGUF file, so that it
runs on the fast llama.cpp engine again (`--model gguf:PATH`).

The shipped GGUF is the template: its metadata (tokenizer, chat template, hyper-parameters)
is copied, and each of its tensors is replaced by the checkpoint's, quantised to Q8_0 (the
engine's default; norms stay F32). Names follow gguf's Llama map; the query and key weights
are permuted back into llama.cpp's rotary layout (transformers un-permutes them on loading).
A LoRA adapter is merged first (`HFModel.merge_adapter`).
"""

from __future__ import annotations

import time
from pathlib import Path

from selfcorrect.errors import ConfigError


def _permute(weights, heads: int):
    """llama.cpp's layout of a query or key projection (convert_hf_to_gguf's `permute`)."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def fits_template(checkpoint: Path, template: Path | None = None) -> bool:
    """Whether a checkpoint has the template GGUF's shape (layers, widths, heads, vocabulary):
    only then can it be written back into it."""
    import json

    import gguf

    from selfcorrect.models.embedded import default_model_path

    config_file = Path(checkpoint) / "config.json"
    if not config_file.is_file():
        return False
    config = json.loads(config_file.read_text())
    fields = gguf.GGUFReader(str(template or default_model_path())).fields
    if fields["general.architecture"].contents() != "llama" or config.get("model_type") != "llama":
        return False
    pairs = (("num_hidden_layers", "llama.block_count"), ("hidden_size", "llama.embedding_length"),
             ("num_attention_heads", "llama.attention.head_count"),
             ("num_key_value_heads", "llama.attention.head_count_kv"),
             ("intermediate_size", "llama.feed_forward_length"))
    return all(config.get(key) == int(fields[field].contents()) for key, field in pairs)


def checkpoint_to_gguf(checkpoint: Path, out: Path, template: Path | None = None) -> dict:
    """Write `checkpoint` (a transformers folder of the embedded model's architecture) to `out`."""
    try:
        import gguf
        from safetensors.torch import load_file  # numpy has no bf16: a bf16 checkpoint reads through torch
    except ImportError:
        raise ConfigError("writing GGUF needs torch and the gguf and safetensors packages",
                          "pip install torch==2.13.0 'selfcorrect[train]'") from None
    from selfcorrect.models.embedded import default_model_path

    started = time.perf_counter()
    template = template or default_model_path()
    reader = gguf.GGUFReader(str(template))
    architecture = reader.fields["general.architecture"].contents()
    if architecture != "llama":
        raise ConfigError(f"{template} is a {architecture} model", "only Llama-architecture GGUFs are written back")
    if not fits_template(checkpoint, template):
        raise ConfigError(f"{checkpoint} does not have the shape of {template.name} (layers, widths, heads)",
                          "write back checkpoints of the embedded model, or run the checkpoint with hf:PATH")
    blocks = int(reader.fields["llama.block_count"].contents())
    heads = int(reader.fields["llama.attention.head_count"].contents())
    kv_heads = int(reader.fields["llama.attention.head_count_kv"].contents())
    weights: dict = {}
    for file in sorted(Path(checkpoint).glob("*.safetensors")):
        weights.update(load_file(file))
    if not weights:
        raise ConfigError(f"no safetensors weights in {checkpoint}", "merge a LoRA adapter into a checkpoint first")
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, blocks)
    by_gguf_name = {}
    for name, tensor in weights.items():
        target = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if target is None:
            raise ConfigError(f"{checkpoint}: tensor {name} has no GGUF name", "only Llama checkpoints are written back")
        tensor = tensor.float().numpy()
        if name.endswith("q_proj.weight"):
            tensor = _permute(tensor, heads)
        elif name.endswith("k_proj.weight"):
            tensor = _permute(tensor, kv_heads)
        by_gguf_name[target] = tensor  # get_name keeps the suffix it matched
    missing = [t.name for t in reader.tensors if t.name not in by_gguf_name]
    if missing:
        raise ConfigError(f"{checkpoint} lacks {len(missing)} tensors of the template (first: {missing[0]})",
                          "write back a checkpoint of the same architecture")

    writer = gguf.GGUFWriter(str(out), architecture)
    for field in reader.fields.values():
        if field.name == "general.architecture" or field.name.startswith("GGUF."):
            continue
        kind = field.types[0]
        value = field.contents()
        if field.name == "general.file_type":
            value = int(gguf.LlamaFileType.MOSTLY_Q8_0)
        writer.add_key_value(field.name, value, kind,
                             sub_type=field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None)
    for info in reader.tensors:
        tensor = by_gguf_name[info.name]
        if tensor.ndim == 1:
            writer.add_tensor(info.name, tensor)
        else:
            writer.add_tensor(info.name, gguf.quants.quantize(tensor, gguf.GGMLQuantizationType.Q8_0),
                              raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"path": str(out), "seconds": round(time.perf_counter() - started, 1),
            "megabytes": round(out.stat().st_size / 1e6)}


def write_checkpoint_gguf(checkpoint, out: Path | None = None) -> dict:
    """A lineage checkpoint as GGUF: its adapter merged first, into a temporary folder (a
    merged copy is the whole model, 538 MB for the embedded one: not worth keeping)."""
    import tempfile

    from selfcorrect.models.hf import HFModel

    folder = Path(checkpoint.adapter or checkpoint.path)
    out = out or folder / "model.Q8_0.gguf"
    if not checkpoint.adapter:
        return checkpoint_to_gguf(Path(checkpoint.path), out)
    with tempfile.TemporaryDirectory(dir=folder) as merged:
        model = HFModel(checkpoint.path, checkpoint.adapter)
        try:
            source = model.merge_adapter(Path(merged))
        finally:
            model.close()
        return checkpoint_to_gguf(source, out)
