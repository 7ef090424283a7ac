"""Ingestion: documents -> embeddings -> index, skipping documents whose content has not changed.

Documents are read and validated in full before anything is written. Only new or changed documents
(by content hash) are embedded, longest-last so that batches pad little, and written in batches while
the next batch is being encoded (the OpenSearch writer sends in the background).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .backends.base import Backend, IndexMeta, IndexWriter, StoredDocument, ToEmbed, WriteFailure, check_index_name
from .chunking import RULE_SAMPLE, Chunking, default_chunking, longer_share, plain, windows
from .documents import DEFAULT_TEXT_FIELDS, Document
from .embed import Encoder, looks_like_path
from .errors import BadRequestError, HybridError, IncompatibleIndexError
from .onnx_encoder import prepare_query_encoder
from .promotion import check_promotion
from .sources import read_documents

ENCODE_CHUNK = 256
"""Documents handed to the encoder (and then to the writer) at a time: big enough to keep the encoder
busy, small enough for a smooth progress bar and bounded memory."""


@dataclass
class IngestReport:
    index: str
    read: int
    embedded: int
    unchanged: int
    count: int
    seconds: float
    failures: list[WriteFailure] = field(default_factory=list)
    query_encoder: str = ""
    """Where queries' ONNX encoder is, or why queries use torch."""
    retried: list[str] = field(default_factory=list)
    """What the cluster could not take at first and was sent again (all of it arrived, or is a failure)."""
    chunking: str = ""
    """How a new index given no chunking embeds its documents, and why (``chosen_chunking``)."""


def chunking_setting(requested: str | None, existing: IndexMeta | None) -> str:
    """The chunking an index gets: ``requested`` (``TOKENS/STRIDE``, or ``off``), else what it has."""
    if requested is None:
        return existing.chunking if existing else ""
    return "" if requested in ("", "off") else str(Chunking.parse(requested))


def chosen_chunking(requested: str | None, existing: IndexMeta | None, documents: Sequence[Document],
                    embedder: Encoder) -> tuple[str, str]:
    """The chunking an index gets, and why where nobody chose it: ``chunking_setting``, except that a new
    index given no chunking gets windows where most of ``documents`` are longer than the model reads
    (``chunking.default_chunking``)."""
    if requested is not None or existing is not None or not documents:
        return chunking_setting(requested, existing), ""
    sample = documents[:: max(1, len(documents) // RULE_SAMPLE)][:RULE_SAMPLE]
    share = longer_share([d.text for d in sample], plain(embedder.tokenizer), embedder.max_tokens)
    rule = default_chunking(share)
    said = (f"{share:.0%} of the documents are longer than the model reads ({embedder.max_tokens} word pieces): "
            + (f"embedded as {rule} windows (--chunk off: whole)" if rule else "embedded whole (--chunk "
               f"{Chunking()}: windows)"))
    return (str(rule) if rule else ""), said


def check_compatible(existing: IndexMeta, index: str, embedder: Encoder, text_fields: tuple[str, ...],
                     chunking: str) -> None:
    """Refuse to mix vector spaces (another model), BM25 texts (other fields) or chunkings in one index."""
    if (existing.model, existing.precision) != (embedder.name, embedder.precision):
        raise IncompatibleIndexError(
            f"index {index!r} holds {existing.dimension}-d vectors of model {existing.model!r} at "
            f"{existing.precision}; model {embedder.name!r} at {embedder.precision} makes {embedder.dimension}-d "
            f"vectors. Use the same model and precision, another index, or `hybrid index delete {index}` first"
        )
    if existing.text_fields != text_fields:
        raise IncompatibleIndexError(
            f"index {index!r} was built from text fields {','.join(existing.text_fields)}, "
            f"not {','.join(text_fields)}; pass --text-fields {','.join(existing.text_fields)}"
        )
    if existing.chunking != chunking:
        raise IncompatibleIndexError(
            f"index {index!r} embeds {describe_chunking(existing.chunking)}, not {describe_chunking(chunking)}; "
            f"leave out --chunk, or change the whole index with `hybrid reindex --index {index} --chunk ...`"
        )


def describe_chunking(chunking: str) -> str:
    return f"windows of {chunking} (tokens/stride)" if chunking else "whole documents"


def ingest_documents(
    documents: Sequence[Document],
    index: str,
    backend: Backend,
    embedder: Encoder,
    batch_size: int = 32,
    progress: bool = True,
    chunking: str | None = None,
    embed_with: str | None = None,
) -> IngestReport:
    """Upsert ``documents`` into ``index`` (created if absent), embedding only what changed.

    ``chunking`` (``TOKENS/STRIDE`` or ``off``) embeds long documents as windows; None keeps the
    index's (whole documents for a new index). ``embed_with``: the id of ``embedder``'s model deployed in the
    cluster (``cluster_model.deploy``), which then embeds the texts (or windows) hybrid sends, as it writes
    them; the index records it for text-only searches.

    The model is checked against the index before anything is written; it is not even loaded when
    the index already holds every document unchanged (unless its ONNX query encoder is still to be
    made, which happens after the write). The index's writer lock is held throughout, so concurrent
    ingests of one index take turns instead of losing each other's documents.
    """
    started = time.perf_counter()
    check_index_name(index)
    if embed_with and not backend.embeds_texts:
        raise BadRequestError(f"{backend.location} cannot embed documents itself: embed them here")
    text_fields = documents[0].text_fields if documents else DEFAULT_TEXT_FIELDS
    with backend.lock(index):
        existing = backend.meta(index) if backend.exists(index) else None
        chunks, chunking_note = chosen_chunking(chunking, existing, documents, embedder)
        if existing is not None:
            check_compatible(existing, index, embedder, text_fields, chunks)
        stored = backend.hashes(index) if existing else {}
        changed = sorted((d for d in documents if stored.get(d.id) != d.hash), key=lambda d: len(d.text))
        failures: list[WriteFailure] = []
        retried: list[str] = []
        if changed or existing is None:
            meta = IndexMeta(model=embedder.name, dimension=embedder.dimension, text_fields=text_fields,
                             precision=embedder.precision, chunking=chunks, tuned=existing.tuned if existing else None,
                             server_model=embed_with or (existing.server_model if existing else ""))
            with backend.writer(index, meta) as writer:
                failures = _embed_into(writer, changed, embedder, meta, batch_size, progress,
                                       f"embedding into {index}", embed_with)
                retried = writer.retried
        count = backend.count(index)
    expected = len((stored.keys() | {d.id for d in documents}) - ({f.id for f in failures} - stored.keys()))
    if count < expected:  # more is fine: on a cluster, another writer may add documents meanwhile
        raise HybridError(f"index {index!r} holds {count} documents after ingest, expected {expected}")
    return IngestReport(
        index=index,
        read=len(documents),
        embedded=len(changed),
        unchanged=len(documents) - len(changed),
        count=count,
        seconds=time.perf_counter() - started,
        failures=failures,
        query_encoder=prepare_query_encoder(embedder),
        retried=retried,
        chunking=chunking_note,
    )


def _embed_into(writer: IndexWriter, documents: Sequence[Document], embedder: Encoder, meta: IndexMeta,
                batch_size: int, progress: bool, label: str, embed_with: str | None = None) -> list[WriteFailure]:
    """Encode in batches of documents (each as its windows where ``meta`` chunks) and hand each batch to
    the writer (which may send it while the next is encoded); with ``embed_with``, hand it the texts for
    the cluster's model to embed."""
    split = splitter(embedder, meta)
    with tqdm(total=len(documents), desc=label, unit="doc", disable=None if progress else True) as bar:
        for start in range(0, len(documents), ENCODE_CHUNK):
            batch = documents[start : start + ENCODE_CHUNK]
            texts = [split(d) for d in batch]
            if embed_with:
                writer.write([StoredDocument(d.id, d.fields, d.hash, ToEmbed(parts, embed_with))
                              for d, parts in zip(batch, texts)])
            else:
                vectors = embedder.encode([text for parts in texts for text in parts], batch_size=batch_size)
                ends = np.cumsum([len(parts) for parts in texts])
                writer.write([StoredDocument(d.id, d.fields, d.hash, vectors[end - len(parts) : end])
                              for d, parts, end in zip(batch, texts, ends)])
            bar.update(len(batch))
        return writer.commit()


def splitter(embedder: Encoder, meta: IndexMeta) -> Callable[[Document], list[str]]:
    """What to embed of a document: its text, or its windows in a chunked index."""
    chunks = meta.chunks
    if chunks is None:
        return lambda document: [document.text]
    tokenizer, limit = plain(embedder.tokenizer), embedder.max_tokens
    return lambda document: windows(document.fields, document.text_fields, chunks, tokenizer, limit)


@dataclass
class ReindexReport:
    index: str
    version: str
    previous: str
    documents: int
    model: str
    seconds: float
    query_encoder: str


def kept_server_model(meta: IndexMeta, embedder: Encoder) -> str:
    """The deployed model a re-index keeps: only one deployed for the same named model and precision. Another
    model's vectors would not match the new version's, and a model folder may have been trained again in
    place: deploy it again (nothing is uploaded where its export did not change)."""
    same = (embedder.name, embedder.precision) == (meta.model, meta.precision) and not looks_like_path(meta.model)
    return meta.server_model if same else ""


def reindex(index: str, backend: Backend, embedder: Encoder, batch_size: int = 32,
            progress: bool = True, chunking: str | None = None, force: bool = False) -> ReindexReport:
    """Re-embed every document of ``index`` with ``embedder`` into a new version, then switch to it.
    ``chunking`` (``TOKENS/STRIDE`` or ``off``) changes how long documents are embedded; None keeps it.
    A fine-tuned model that failed its evaluation (``promotion``) is refused unless ``force``.

    The index keeps answering from the old version until the switch, which is atomic; the old
    version is kept for ``rollback``. Nothing is switched if any document fails. The writer lock is
    held throughout, so no ingest can slip documents into the old version after they were read.
    """
    started = time.perf_counter()
    check_index_name(index)
    with backend.lock(index):
        snapshot = backend.snapshot(index)
        if embedder.name != snapshot.meta.model:  # the model serving already was let in (or forced) before
            check_promotion(embedder.name, force)
        text_fields = snapshot.meta.text_fields
        documents = sorted((Document(doc_id, fields, text_fields) for doc_id, fields in backend.documents(index)),
                           key=lambda d: len(d.text))
        meta = IndexMeta(model=embedder.name, dimension=embedder.dimension, text_fields=text_fields,
                         precision=embedder.precision, chunking=chunking_setting(chunking, snapshot.meta),
                         tuned=snapshot.meta.tuned, server_model=kept_server_model(snapshot.meta, embedder))
        version, writer = backend.new_version(index, meta)
        try:
            with writer:  # on any failure the writer removes the new version again
                failures = _embed_into(writer, documents, embedder, meta, batch_size, progress,
                                       f"re-embedding {index}")
                if failures:
                    raise HybridError(f"{len(failures)} documents failed to re-index (first: {failures[0].id}: "
                                      f"{failures[0].reason})")
        except HybridError as error:
            raise HybridError(f"{error}; {index} still serves {snapshot.version}") from None
        # Before the switch, so that no query waits for the export.
        query_encoder = prepare_query_encoder(embedder)
        _switch(backend, index, version)
    return ReindexReport(index, version, snapshot.version, len(documents), embedder.name,
                         time.perf_counter() - started, query_encoder)


def _switch(backend: Backend, index: str, version: str) -> None:
    """Switch, or say which version serves: on a cluster, a switch that reported a failure (a node died,
    the client sent it again to another) may still have been applied, and then it succeeded."""
    try:
        backend.switch(index, version)
    except HybridError as error:
        try:
            serving = backend.snapshot(index).version
        except HybridError:
            raise HybridError(f"{error}; which version {index} serves is unknown until the cluster answers "
                              f"(hybrid index info {index})") from None
        if serving != version:
            raise HybridError(f"{error}; {index} still serves {serving}") from None


def rollback(index: str, backend: Backend) -> tuple[str, str]:
    """Point ``index`` back at the version it served before its last re-index; return (from, to)."""
    check_index_name(index)
    with backend.lock(index):
        versions = backend.versions(index)
        current = next((v for v in versions if v.serving), None)
        if current is None or current.previous is None or current.previous not in {v.name for v in versions}:
            serving = f"serves {current.name}, which" if current else "serves a version that"
            raise HybridError(f"{index} {serving} replaced no version that is still kept; nothing to roll back to")
        backend.switch(index, current.previous)
    return current.name, current.previous


def ingest(
    source: str | Path,
    index: str,
    backend: Backend,
    embedder: Encoder,
    id_field: str | None = None,
    text_fields: Sequence[str] | None = None,
    batch_size: int = 32,
    progress: bool = True,
    chunking: str | None = None,
) -> IngestReport:
    """Read ``source`` (JSONL, CSV or a folder of .txt/.md) and upsert it into ``index``.

    Everything that can be checked without vectors (the index name, every record, the model) is
    checked before the first document is embedded."""
    check_index_name(index)
    documents = read_documents(source, id_field=id_field, text_fields=text_fields)
    return ingest_documents(documents, index, backend, embedder, batch_size=batch_size, progress=progress,
                            chunking=chunking)
