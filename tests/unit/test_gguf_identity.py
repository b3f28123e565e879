"""Which model evidence was measured against, when the files differ: the server runs the
embedded model's own Q8_0 (llama.cpp's quantizer), `improve` measures its base written back
to Q8_0 by to_gguf. Same tensors, other metadata and order: other file fingerprints. The
tensors hash must call them one model, and any change to a tensor another."""

from pathlib import Path

import numpy as np
import pytest

from selfcorrect.models.embedded.files import file_fingerprint, gguf_tensors_hash
from selfcorrect.models.recipe import is_measured_against

gguf = pytest.importorskip("gguf")
TENSORS = {"token_embd.weight": np.arange(64, dtype=np.float32).reshape(8, 8) / 7,
           "blk.0.attn_norm.weight": np.ones(8, dtype=np.float32)}


def write(path: Path, tensors: dict, name: str, order=None) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)  # metadata only
    for key in order or tensors:
        writer.add_tensor(key, tensors[key])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


class Engine:
    def __init__(self, identity: str, path: Path | None = None):
        self.identity, self.path = identity, path


def test_the_same_tensors_under_other_metadata_and_order_are_one_model(tmp_path):
    served = write(tmp_path / "served.gguf", TENSORS, "as llama.cpp wrote it")
    measured = write(tmp_path / "measured.gguf", TENSORS, "as improve wrote it back", order=list(TENSORS)[::-1])
    changed = write(tmp_path / "changed.gguf", {**TENSORS, "blk.0.attn_norm.weight": np.full(8, 1.0001, np.float32)},
                    "as llama.cpp wrote it")
    assert file_fingerprint(served) != file_fingerprint(measured)
    assert gguf_tensors_hash(served) == gguf_tensors_hash(measured) != gguf_tensors_hash(changed)

    against = ["a672150fb4f99d7c", file_fingerprint(measured), f"tensors:{gguf_tensors_hash(measured)}"]
    assert is_measured_against(against, Engine(f"gguf:served.gguf:{file_fingerprint(served)}", served))
    assert not is_measured_against(against, Engine(f"gguf:changed.gguf:{file_fingerprint(changed)}", changed))
    assert not is_measured_against(against, Engine("scripted:incumbent"))  # no file to read
    # the weights' hash in an identity (transformers engines) is recognised without a file
    assert is_measured_against(against, Engine("hf:base:a672150fb4f99d7c"))
