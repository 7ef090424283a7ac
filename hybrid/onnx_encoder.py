"""The query encoder: a sentence-transformers model exported once to ONNX and run with ONNX Runtime and
``tokenizers``, so that searching needs neither torch nor sentence-transformers. A web service that
imports the searcher starts in a fraction of a second, and one query encodes in ~0.4x torch's time.

An export is a folder that sentence-transformers can load too (``SentenceTransformer(folder,
backend="onnx", model_kwargs={"file_name": ...})``: the ``onnx/model_*.onnx`` it names, tokenizer and
module configs) plus ``hybrid_encoder.json``,
which records what turns the transformer's token embeddings into the sentence vector exactly as
sentence-transformers does (truncation length, pooling, prompt) and which model files it came from.
The export step checks that both give the same vectors before it keeps the folder.

Where exports live: inside a model folder (``MODEL/hybrid-onnx-fp32``), so a fine-tuned model carries
its own; for a model given by name (the bundled default, a hub name) under ``$HYBRID_ENCODER_DIR``
(default ``~/.hybrid/encoders``), next to the default local indexes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from filelock import FileLock

from .documents import LONE_SURROGATE
from .embed import (
    DEFAULT_ALIASES,
    DEFAULT_MODEL,
    Embedder,
    Encoder,
    Precision,
    check_model_folder,
    looks_like_path,
    model_id,
    resolve_model_path,
)
from .errors import HybridError, MissingExtraError, first_line, install_hint, require_extra

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

EncoderKind = Literal["auto", "onnx", "torch"]
ENCODER_KINDS: tuple[EncoderKind, ...] = ("auto", "onnx", "torch")
MANIFEST = "hybrid_encoder.json"
POOLINGS = ("mean", "cls", "max")
INT8_CONFIG = "avx512_vnni"
"""Dynamic int8 quantisation preset (sentence-transformers' names), the one measured in bench/onnx_bench.py.
ONNX Runtime runs it on any x86-64 CPU, but on CPUs without VNNI its u8 x s8 products can saturate, so
int8 vectors made on one kind of CPU may differ slightly from those made on another."""
OPTIMIZATION = "O2"
"""optimum's level for fp32 exports: exact graph fusions only (O3 adds an approximate GELU: 10% faster, but
vectors differ from torch's by up to 5e-4 per component)."""
AGREEMENT = {"fp32": 0.9999, "int8": 0.95}
"""Least cosine between the export's and torch's vector of each probe sentence for an export to be kept."""
PROBES = ("shock waves on a blunt body", "Ein kurzer Satz.", "x", "heat transfer " * 200)
NOT_MODEL_FILES = ("hybrid-", "onnx", "openvino", "checkpoint-", ".", "README")
"""Top-level names in a model folder that do not change its vectors: exports (ours and
sentence-transformers'), hybrid's fine-tuning report, checkpoints, hidden files, the model card."""


class EncoderMissingError(HybridError):
    """No usable ONNX export of a model here, and this install cannot make one."""


class UnsupportedModelError(HybridError):
    """The model has modules the ONNX encoder does not reproduce (e.g. a Dense layer): use torch."""


@dataclass(frozen=True)
class Manifest:
    """``hybrid_encoder.json``: what the export was made from and how to pool its output."""

    model: str
    precision: Precision
    onnx_file: str
    pooling: str
    max_length: int
    dimension: int
    prompt: str
    pad_id: int
    pad_token: str
    files: dict[str, list[Any]] | None
    """The model files it came from: relative path -> [size, mtime_ns, sha256]; None for a hub name."""

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        try:
            return cls(**json.loads((folder / MANIFEST).read_text()))
        except (OSError, ValueError, TypeError) as error:  # unreadable, not JSON, or another version's fields
            raise HybridError(f"{folder / MANIFEST} is damaged or from another version ({first_line(error)})") \
                from None

    def write(self, folder: Path) -> None:
        (folder / MANIFEST).write_text(json.dumps(asdict(self), indent=2))


class OnnxEncoder:
    """Encodes texts with an export folder, as sentence-transformers would: tokenize (truncating to the
    model's limit), run the transformer, pool over real tokens, normalise to unit length.
    Thread-safe: ONNX Runtime sessions and ``tokenizers`` allow concurrent calls."""

    def __init__(self, folder: str | Path) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        if not (self.folder / MANIFEST).is_file():
            raise HybridError(f"{self.folder} is not an ONNX query encoder (no {MANIFEST}); make one with "
                              "`hybrid model export MODEL --output FOLDER`")
        try:
            self.manifest = Manifest.read(self.folder)
            self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
            self.tokenizer.enable_truncation(self.manifest.max_length)
            self.tokenizer.enable_padding(pad_id=self.manifest.pad_id, pad_token=self.manifest.pad_token)
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 3  # ONNX Runtime's warnings about unused initialisers are noise here
            # Idle ONNX Runtime threads spin by default, taking the cores the search that follows each
            # query's encoding needs (hybrid search at 100k documents took 25-30 ms with spinning, 16-18 without).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            self.session = onnxruntime.InferenceSession(str(self.folder / self.manifest.onnx_file), options,
                                                        providers=["CPUExecutionProvider"])
        except Exception as error:  # a damaged or foreign folder: JSON, tokenizers and ONNX Runtime errors
            raise HybridError(f"cannot load the ONNX query encoder in {self.folder} ({first_line(error)}); "
                              "delete it and make it again (`hybrid model export`)") from None
        self.name = self.manifest.model
        self.precision = self.manifest.precision
        self._inputs = {item.name for item in self.session.get_inputs()}
        outputs = [item.name for item in self.session.get_outputs()]
        self._output = "last_hidden_state" if "last_hidden_state" in outputs else outputs[0]

    @property
    def dimension(self) -> int:
        return self.manifest.dimension

    @property
    def max_tokens(self) -> int:
        return self.manifest.max_length

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Encode texts as a (len(texts), dimension) float32 matrix of unit vectors."""
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        order = np.argsort([len(text) for text in texts], kind="stable")  # similar lengths pad little
        for start in range(0, len(texts), batch_size):
            chosen = order[start : start + batch_size]
            vectors[chosen] = self._encode_batch([texts[i] for i in chosen])
        return vectors

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        # The tokenizer refuses lone surrogates: embedded as U+FFFD, as the torch encoder does.
        encodings = self.tokenizer.encode_batch(
            [self.manifest.prompt + LONE_SURROGATE.sub("\ufffd", text) for text in texts])
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feed = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64), "attention_mask": mask,
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
        tokens = self.session.run([self._output], {name: feed[name] for name in self._inputs})[0]
        return normalise(pool(tokens, mask, self.manifest.pooling))


def pool(tokens: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    """sentence-transformers' pooling of (batch, tokens, dim) embeddings over the tokens ``mask`` keeps."""
    if mode == "cls":
        return tokens[:, 0]
    keep = mask[:, :, None].astype(tokens.dtype)
    if mode == "max":
        return np.where(keep > 0, tokens, -1e9).max(axis=1)
    return (tokens * keep).sum(axis=1) / np.clip(keep.sum(axis=1), 1e-9, None)


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Unit length, as torch's ``F.normalize`` (norms below 1e-12 are clamped, not divided by)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.clip(norms, 1e-12, None)).astype(np.float32)


def encoder_home() -> Path:
    return Path(os.environ.get("HYBRID_ENCODER_DIR") or "~/.hybrid/encoders").expanduser()


def export_folder(model: str, precision: Precision = "fp32") -> Path:
    """Where ``model``'s export lives: inside a model folder, else under ``encoder_home()``."""
    if model in DEFAULT_ALIASES:
        model = DEFAULT_MODEL
    if looks_like_path(model):
        return Path(model_id(model)) / f"hybrid-onnx-{precision}"
    return encoder_home() / f"{model.replace('/', '--')}-{precision}"


def _model_folder(model: str) -> Path | None:
    """The folder holding the model's files on this machine, if any (not for a hub name, nor for the
    bundled model in an install without it)."""
    try:
        folder = Path(resolve_model_path(model)).expanduser()
    except MissingExtraError:
        return None
    return folder if folder.is_dir() else None


def _model_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file()
                  and not path.relative_to(folder).parts[0].startswith(NOT_MODEL_FILES))


def _sha256(path: Path) -> str:
    with path.open("rb") as content:
        return hashlib.file_digest(content, "sha256").hexdigest()


def model_files(model: str) -> dict[str, list[Any]] | None:
    """What the export records of the model's files, to notice a model rewritten since."""
    folder = _model_folder(model)
    if folder is None:
        return None
    return {str(path.relative_to(folder)): [path.stat().st_size, path.stat().st_mtime_ns, _sha256(path)]
            for path in _model_files(folder)}


def _unchanged(recorded: dict[str, list[Any]] | None, model: str) -> bool:
    """Whether the model's files are those the export was made from. Sizes and times are compared first;
    a file whose time changed (a copy) is hashed. True where the files are not here to compare."""
    folder = _model_folder(model)
    if recorded is None or folder is None:
        return True
    files = {str(path.relative_to(folder)): path for path in _model_files(folder)}
    if files.keys() != recorded.keys():
        return False
    for name, path in files.items():
        size, mtime, digest = recorded[name]
        stat = path.stat()
        if stat.st_size != size or (stat.st_mtime_ns != mtime and _sha256(path) != digest):
            return False
    return True


def _current(folder: Path, model: str, precision: Precision) -> bool:
    """Whether ``folder`` holds a readable export of the model's present files at ``precision`` (an export of
    the other precision written there by hand would encode queries unlike the index's documents)."""
    try:
        if not (folder / MANIFEST).is_file():
            return False
        manifest = Manifest.read(folder)
        return manifest.precision == precision and _unchanged(manifest.files, model)
    except HybridError:  # damaged, or written by another version of hybrid: made anew
        return False


def ensure_export(model: str, precision: Precision = "fp32", embedder: Embedder | None = None) -> Path:
    """The folder of ``model``'s export: the existing one if it is still the model's, else a new one
    (``embedder``: the model already loaded on torch, if it is). One process exports at a time."""
    check_model_folder(model)
    folder = export_folder(model, precision)
    if _current(folder, model, precision):
        return folder
    if importlib.util.find_spec("sentence_transformers") is None:
        raise EncoderMissingError(_missing_message(model, folder))
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(folder.parent / f".{folder.name}.lock"):
            if _current(folder, model, precision):  # another process made it meanwhile
                return folder
            return export_encoder(model, folder, precision, embedder)
    except OSError as error:  # a read-only (or full) encoder folder: where allowed, queries fall back to torch
        raise HybridError(f"cannot write the ONNX export of {model!r} to {folder.parent}: "
                          f"{error.strerror}") from error


def _missing_message(model: str, folder: Path) -> str:
    state = "is out of date (made from other model files, at another precision, or by another version)" if (
        folder / MANIFEST).is_file() else "is missing"
    where = "to the same path here" if looks_like_path(model) else \
        "to the same place here (or set HYBRID_ENCODER_DIR to the folder holding it)"
    return (f"no ONNX query encoder for model {model!r}: {folder} {state}, and this install cannot make one. "
            f"Copy that folder from the machine that built the index (ingest makes it there, or `hybrid model "
            f"export`) {where}, or {install_hint('ingest')} to export it here")


def export_encoder(model: str, output: str | Path | None = None, precision: Precision = "fp32",
                   embedder: Embedder | None = None) -> Path:
    """Export ``model`` to ONNX with sentence-transformers' ONNX backend (optimum), quantise it if asked,
    check its vectors against torch's, and move the folder into place (``export_folder`` by default).
    The folder appears whole or not at all; an existing folder is replaced only if it is an export."""
    require_extra("ingest", "sentence_transformers", "optimum.onnxruntime")
    model = model_id(model)
    target = Path(output).expanduser().resolve() if output else export_folder(model, precision)
    if target.exists() and not (target / MANIFEST).is_file() and any(target.iterdir()):
        raise HybridError(f"{target} exists and is not an ONNX query encoder; give an empty or new folder")
    torch_model = (embedder or Embedder(model)).model
    manifest_base = _manifest_fields(model, torch_model)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with _quietly():
            onnx_file = _write_onnx(model, staging, precision)
        Manifest(**manifest_base, precision=precision, onnx_file=onnx_file).write(staging)
        _check_agreement(torch_model, OnnxEncoder(staging), AGREEMENT[precision])
        staging.chmod(0o755)  # mkdtemp's 0700 would hide it from the service account that queries
        _swap_in(staging, target)
    except Exception as error:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(error, HybridError):
            raise
        raise HybridError(f"cannot export model {model!r} to ONNX: {first_line(error)}") from None
    log.info("exported %s (%s) to %s", model, precision, target)
    return target


def _swap_in(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; an old export there is renamed aside first, then removed."""
    old = target.with_name(f".{target.name}-old-{uuid.uuid4().hex[:8]}")
    if target.exists():
        target.rename(old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def _write_onnx(model: str, folder: Path, precision: Precision) -> str:
    """Write the ONNX model folder; the path of the .onnx file to run, relative to ``folder``."""
    from sentence_transformers import (
        SentenceTransformer,
        export_dynamic_quantized_onnx_model,
        export_optimized_onnx_model,
    )

    onnx_model = SentenceTransformer(resolve_model_path(model), backend="onnx", device="cpu",
                                     model_kwargs={"export": True})
    onnx_model.save_pretrained(str(folder))
    if precision == "int8":
        export_dynamic_quantized_onnx_model(onnx_model, INT8_CONFIG, str(folder))
        chosen = f"onnx/model_qint8_{INT8_CONFIG}.onnx"
    else:
        try:  # ONNX Runtime's transformer fusions: ~12% faster per query on CPU, the same vectors
            export_optimized_onnx_model(onnx_model, OPTIMIZATION, str(folder))
            chosen = f"onnx/model_{OPTIMIZATION}.onnx"
        except Exception as error:  # an architecture the optimiser does not know: the plain export serves
            log.info("ONNX Runtime cannot optimise %s (%s); using the plain export", model, first_line(error))
            return "onnx/model.onnx"
    (folder / "onnx" / "model.onnx").unlink()  # only the chosen file is kept
    return chosen


@contextlib.contextmanager
def _quietly() -> Iterator[None]:
    """The exporter's deprecation notes and its advice to save the export are not for our users, and the
    quantiser configures the root logger (DEBUG lines from every library after it): put it back."""
    loggers = [logging.getLogger(name) for name in ("sentence_transformers", "optimum", "transformers")]
    levels = [logger.level for logger in loggers]
    root_level, root_handlers = logging.root.level, list(logging.root.handlers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels):
                logger.setLevel(level)
            logging.root.setLevel(root_level)
            logging.root.handlers[:] = root_handlers


def _manifest_fields(model: str, st: SentenceTransformer) -> dict[str, Any]:
    """What the query encoder must reproduce, read from the loaded model; refuses what it cannot."""
    kinds = [type(module).__name__ for module in st]
    if kinds[:2] != ["Transformer", "Pooling"] or set(kinds[2:]) - {"Normalize"}:
        raise UnsupportedModelError(f"model {model!r} has modules {kinds}; the ONNX query encoder reproduces "
                                    "Transformer + Pooling (+ Normalize) only, so queries use torch")
    pooling = st[1].get_config_dict()  # type: ignore[operator]  # torch's stubs type module indexing as a Tensor
    modes = [pooling["pooling_mode"]] if "pooling_mode" in pooling else [
        name for name in POOLINGS if pooling.get(f"pooling_mode_{name}_token" + ("s" if name != "cls" else ""))]
    if len(modes) != 1 or modes[0] not in POOLINGS or not pooling.get("include_prompt", True):
        raise UnsupportedModelError(f"model {model!r} pools with {pooling}; the ONNX query encoder reproduces "
                                    f"one of {', '.join(POOLINGS)} pooling only, so queries use torch")
    if st.tokenizer is None or not st.tokenizer.is_fast or not st.max_seq_length:
        raise UnsupportedModelError(f"model {model!r} has no fast tokenizer (tokenizer.json) or no length "
                                    "limit, so queries use torch")
    return {"model": model, "pooling": modes[0], "max_length": st.max_seq_length,
            "dimension": st.get_embedding_dimension(), "prompt": st.prompts.get(st.default_prompt_name or "", ""),
            "pad_id": st.tokenizer.pad_token_id or 0, "pad_token": st.tokenizer.pad_token or "[PAD]",
            "files": model_files(model)}


def _check_agreement(torch_model: SentenceTransformer, encoder: OnnxEncoder, least: float) -> None:
    """Refuse an export whose vectors differ from torch's: pooling or tokenisation not reproduced."""
    expected = torch_model.encode(list(PROBES), normalize_embeddings=True, convert_to_numpy=True)
    cosines = (encoder.encode(list(PROBES)) * expected).sum(axis=1)
    if cosines.min() < least:
        raise UnsupportedModelError(f"the ONNX export of {encoder.name!r} does not reproduce its vectors "
                                    f"(cosine {cosines.min():.4f} < {least}), so queries use torch")


_cache: dict[tuple[str, str, str], Encoder] = {}
_cache_lock = threading.Lock()
_inherited: list[Encoder] = []
"""Encoders a forked child inherited from its parent: kept alive, never used. Their sessions must not be used
across a fork, nor destroyed in the child either: ONNX Runtime's destructor waits for worker threads that
stayed behind in the parent, and the child hangs (gunicorn --preload forks after the application warmed up)."""


def _after_fork_in_child() -> None:
    """A forked worker loads its own encoders, and takes a lock no thread of its parent can be holding."""
    global _cache_lock
    _inherited.extend(_cache.values())
    _cache.clear()
    _cache_lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


def query_encoder_for(model: str, precision: Precision = "fp32", kind: EncoderKind | None = None,
                      loaded: Embedder | None = None) -> Encoder:
    """The encoder for queries against an index built with ``model`` at ``precision``, one per process.

    ``kind`` (default ``$HYBRID_QUERY_ENCODER`` or ``auto``): ``onnx`` uses the model's export, making it
    once if sentence-transformers is installed; ``torch`` uses sentence-transformers (fp32 indexes only);
    ``auto`` is ``onnx``, falling back to torch (saying why) where the export cannot be made or used.
    ``loaded``: the model already on torch, which an export made now reads instead of loading it again.
    """
    kind = kind or os.environ.get("HYBRID_QUERY_ENCODER") or "auto"  # type: ignore[assignment]
    if kind not in ENCODER_KINDS:
        raise HybridError(f"query encoder must be one of {', '.join(ENCODER_KINDS)}, got {kind!r}")
    key = (model, precision, kind)
    if (encoder := _cache.get(key)) is not None:  # every query comes here: no lock once loaded
        return encoder
    with _cache_lock:
        if key not in _cache:
            _cache[key] = _load_query_encoder(model, precision, kind, loaded)  # type: ignore[arg-type]
        return _cache[key]


def _load_query_encoder(model: str, precision: Precision, kind: EncoderKind, loaded: Embedder | None) -> Encoder:
    check_model_folder(model)
    if kind == "torch":
        return _torch_encoder(model, precision)
    embedder = Embedder(model)  # loads only if an export is made or torch is fallen back on
    try:
        return OnnxEncoder(ensure_export(model, precision, loaded or embedder))
    except EncoderMissingError:
        raise
    except HybridError as error:
        if kind == "onnx" or precision != "fp32" or importlib.util.find_spec("sentence_transformers") is None:
            raise
        log.warning("%s; queries use torch", error)
        return embedder


def _torch_encoder(model: str, precision: Precision) -> Embedder:
    if precision != "fp32":
        raise HybridError(f"the index's vectors come from the {precision} ONNX export of {model!r}; "
                          "torch cannot encode queries the same way (use the onnx query encoder)")
    require_extra("ingest", "sentence_transformers")
    return Embedder(model)


def document_encoder(model: str, precision: Precision = "fp32") -> Encoder:
    """The encoder ingest uses: the one queries use (``query_encoder_for``, auto), so documents and queries
    of an index are encoded alike. The ONNX export also encodes documents faster than torch on CPU (1.1x
    at fp32, 2.2x at int8: bench/onnx_bench.py); a model it cannot reproduce is encoded on torch."""
    return LazyEncoder(model, precision)


class LazyEncoder:
    """``model``'s encoder at ``precision``, made or loaded on first use: after ingest has checked the
    documents, so bad input is reported before the export's work."""

    def __init__(self, model: str, precision: Precision) -> None:
        self.name, self.precision = model_id(model), precision

    @functools.cached_property
    def encoder(self) -> Encoder:
        return query_encoder_for(self.name, self.precision, "auto")

    @property
    def dimension(self) -> int:
        return self.encoder.dimension

    @property
    def tokenizer(self) -> Tokenizer:
        return self.encoder.tokenizer

    @property
    def max_tokens(self) -> int:
        return self.encoder.max_tokens

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        return self.encoder.encode(texts, batch_size)


def prepare_query_encoder(encoder: Encoder) -> str:
    """Make (or find) the encoder queries will use while the model is at hand, after an ingest, and say
    which it is. A failed export never fails the ingest that asked for it."""
    loaded = encoder if isinstance(encoder, Embedder) else None  # e.g. finetune's: not loaded a second time
    try:
        chosen = query_encoder_for(encoder.name, encoder.precision, "auto", loaded)
    except HybridError as error:
        return f"no query encoder yet ({error})"
    if isinstance(chosen, OnnxEncoder):
        return f"ONNX encoder at {chosen.folder}"
    return "torch encoder (the model's ONNX export cannot reproduce it)"
