"""The embedded backend: a GGUF model run in-process by llama.cpp (llama-cpp-python).

  engine.py     EmbeddedModel: the engine thread, batched decoding, stop strings
  scheduler.py  admission of requests into sequence slots and KV cells, the prefix cache
  sampling.py   per-sample sampler chains, log-probabilities
  chat.py       the GGUF's chat template and tokenizer
  files.py      the shipped model file, its Q8_0 conversion, file fingerprints
  llama.py      importing llama-cpp-python and routing its log
"""

from selfcorrect.models.embedded.engine import EmbeddedModel, EngineStats
from selfcorrect.models.embedded.files import (
    DEFAULT_MODEL_FILE,
    EMBEDDED_QUANTS,
    SHIPPED_QUANT,
    default_model_path,
    embedded_model_path,
    file_fingerprint,
)

__all__ = ["DEFAULT_MODEL_FILE", "EMBEDDED_QUANTS", "SHIPPED_QUANT", "EmbeddedModel", "EngineStats",
           "default_model_path", "embedded_model_path", "file_fingerprint"]
