"""The query helper a Python backend builds once and calls per request.

It runs the BM25 and vector legs on whichever backend holds the index, fuses them with RRF and
returns typed hits that say how each leg ranked and scored every document.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from tqdm.auto import tqdm

from .backends import open_backend
from .backends.base import Backend, Filters, IndexMeta, LegHit, LegQuery, ServerEmbedded, Snapshot, check_index_name
from .embed import Encoder, Precision
from .errors import BadRequestError, ServerModelError, SourceError, VersionGoneError
from .fusion import Combination, Method
from .hits import Hit
from .onnx_encoder import EncoderKind, query_encoder_for
from .settings import SearchSettings, recorded_settings
from .steps import Compute, Read, Steps, run

if TYPE_CHECKING:
    import numpy as np
    from elasticsearch import AsyncElasticsearch, Elasticsearch
    from opensearchpy import AsyncOpenSearch, OpenSearch

    from .backends.opensearch import Connection
    from .server_fusion import ServerFusion

Mode = Literal["hybrid", "bm25", "vector"]
MODES: tuple[Mode, ...] = ("hybrid", "bm25", "vector")
FusionSite = Literal["client", "server"]
FUSION_SITES: tuple[FusionSite, ...] = ("client", "server")
EmbedSite = Literal["client", "server"]
EMBED_SITES: tuple[EmbedSite, ...] = ("client", "server")
log = logging.getLogger("hybrid")
FUSE_INLINE_DEPTH = 1000
"""Legs up to this deep are fused where the search runs (well under a millisecond at the default 100);
deeper ones are CPU work (RRF over two legs of 10,000 took 27 ms) that an async searcher does off its loop."""


def candidate_depth(window: int, end: int) -> int:
    """How many hits each leg retrieves for a page ending at fused position ``end``: the window, or the
    smallest multiple of it that reaches ``end``. Pages inside one multiple come from one fused list
    (no overlap, no gap); a deeper page fuses deeper lists, so it never ends early while a leg has more."""
    return window * max(1, math.ceil(end / window))


class SearchTarget(Protocol):
    """What a searcher needs to know of its backend besides the reads it yields (see ``steps.Read``)."""

    location: str
    snapshot_ttl_s: float
    max_depth: int | None
    embeds_texts: bool


class BaseSearcher:
    """Everything ``Searcher`` and ``AsyncSearcher`` share: their arguments, the version they answer from,
    the checks, and each search written once as steps (``hybrid.steps``) that either carries out."""

    backend: SearchTarget

    def __init__(
        self,
        index: str,
        backend: Any = None,
        *,
        data_dir: str | Path | None = None,
        opensearch: str | Connection | None = None,
        client: OpenSearch | AsyncOpenSearch | Elasticsearch | AsyncElasticsearch | None = None,
        elasticsearch: str | Connection | None = None,
        embedder: Encoder | None = None,
        settings: SearchSettings | None = None,
        snapshot_ttl_s: float | None = None,
        query_encoder: EncoderKind | None = None,
        fusion_on: FusionSite = "client",
        embed_on: EmbedSite = "client",
    ) -> None:
        """Search ``index`` on ``backend``; or on a cluster through the application's own ``client``, or at
        ``opensearch`` (a URL or a ``Connection``: its ``pool_size`` is the connections kept per node), or at
        ``elasticsearch`` (likewise; ``client`` may be an ``Elasticsearch`` one); or else in the local folder
        ``data_dir`` (default: $HYBRID_DATA_DIR or ~/.hybrid/indexes).
        ``settings`` (e.g. ``SearchSettings.load("tuned.json")``) sets the fusion defaults; without it,
        searches use those ``hybrid tune --apply`` recorded in the index, else the defaults.
        ``embedder`` encodes queries for indexes built with its model (others get their own).
        ``query_encoder``: ``onnx``, ``torch`` or ``auto`` (default: $HYBRID_QUERY_ENCODER, else auto:
        the model's ONNX export, which needs neither torch nor sentence-transformers).
        ``snapshot_ttl_s``: how long a query may still be answered from the version that served
        before a switch (default: the backend's; 0 locally, 10 s on OpenSearch, where looking up the
        serving version costs a round trip).
        ``fusion_on="server"``: hybrid searches are fused by OpenSearch's own ``hybrid`` query (neural-search
        2.19+) with the same settings; where the cluster cannot, they fuse here, and the log says why, once.
        ``embed_on="server"``: the query's text is embedded by the model ``hybrid model deploy`` put in the
        OpenSearch cluster (a ``neural`` query) rather than here; the index must record one.
        Building a searcher does no I/O."""
        check_index_name(index)
        if fusion_on not in FUSION_SITES:
            raise BadRequestError(f"fusion_on must be one of {', '.join(FUSION_SITES)}, got {fusion_on!r}")
        if embed_on not in EMBED_SITES:
            raise BadRequestError(f"embed_on must be one of {', '.join(EMBED_SITES)}, got {embed_on!r}")
        self.index = index
        self.backend = backend or self._open(data_dir, opensearch, client, elasticsearch)
        if embed_on == "server" and not self.backend.embeds_texts:
            raise BadRequestError(f"embed_on='server' needs an OpenSearch cluster that runs models (ML Commons); "
                                  f"{self.backend.location} cannot embed queries")
        self.embed_on = embed_on
        self._given_settings = settings
        self._recorded: tuple[IndexMeta, SearchSettings | None] | None = None  # a version's record, read once
        self.snapshot_ttl_s = self.backend.snapshot_ttl_s if snapshot_ttl_s is None else snapshot_ttl_s
        self._given = embedder
        self._encoder_kind = query_encoder
        self._owns_backend = backend is None  # one it opened itself, it closes; one it was given, not
        self._snapshot: Snapshot | None = None  # taken by warm_up or the first query: building does no I/O
        self._taken_at = -math.inf
        self.fusion_on = fusion_on
        self._server: ServerFusion | None = None
        self._said: set[str] = set()
        self._saying = threading.Lock()

    def _open(self, data_dir: str | Path | None, opensearch: str | Connection | None, client: Any,
              elasticsearch: str | Connection | None) -> SearchTarget:
        """The backend this searcher opens for itself."""
        raise NotImplementedError

    def _embedder(self, snapshot: Snapshot) -> Encoder:
        """The given encoder if it is the version's model (and precision), else that model's own."""
        meta = snapshot.meta
        given = self._given
        if given is not None and (given.name, getattr(given, "precision", "fp32")) == (meta.model, meta.precision):
            return given
        return query_encoder_for(meta.model, cast(Precision, meta.precision), self._encoder_kind)

    def _settings(self, snapshot: Snapshot | None) -> SearchSettings:
        """The fusion settings searches use: the ones given, else the ones recorded in the version
        (``None``: not read yet), else the defaults. A version's record is read once; one that cannot be
        read (written by a newer hybrid, or edited by hand) is said once, and the defaults used."""
        if self._given_settings or snapshot is None or not snapshot.meta.tuned:
            return self._given_settings or SearchSettings()
        parsed = self._recorded
        if parsed is None or parsed[0] is not snapshot.meta:
            try:
                parsed = (snapshot.meta, recorded_settings(snapshot.meta))
            except SourceError as unreadable:
                self._say_once(f"{self.index}: {unreadable}; searching with the default settings until "
                               f"`hybrid tune --index {self.index} --clear` (or --apply) records readable ones")
                parsed = (snapshot.meta, None)
            self._recorded = parsed
        return parsed[1] or SearchSettings()

    def _encode(self, snapshot: Snapshot, texts: list[str]) -> np.ndarray:
        return self._embedder(snapshot).encode(texts)

    def _current(self, refresh: bool = False) -> Steps[Snapshot]:
        """The pinned snapshot, taken anew once it is older than ``snapshot_ttl_s`` (or when asked)."""
        snapshot = self._snapshot
        if snapshot is None or refresh or time.monotonic() - self._taken_at >= self.snapshot_ttl_s:
            snapshot = yield Read("snapshot", (self.index,))
            self._snapshot, self._taken_at = snapshot, time.monotonic()
        return snapshot

    def _query_vectors(self, snapshot: Snapshot,
                       queries: Sequence[str]) -> Steps[Sequence[np.ndarray | ServerEmbedded]]:
        """The vector leg's queries for ``snapshot``'s version: embedded here by its model, or (``embed_on``
        the server) the texts, for the model deployed in the cluster to embed."""
        if self.embed_on == "client":
            return (yield Compute(partial(self._encode, snapshot, list(queries))))
        if not snapshot.meta.server_model:
            raise ServerModelError(f"{self.index} records no model deployed in the cluster to embed queries on the "
                                   "server", self.index)
        return [ServerEmbedded(query, snapshot.meta.server_model) for query in queries]

    def _warm_up(self) -> Steps[None]:
        snapshot = yield from self._current(refresh=True)
        if self.embed_on == "server":  # one neural search: the recorded model is deployed, and warm on its nodes
            yield from self._legs(snapshot, ["warm up"], "vector", 1, None)
        else:
            yield from self._query_vectors(snapshot, ["warm up"])

    def _check(self, queries: Sequence[str], mode: Mode, depth: int) -> None:
        """Refuse what no backend should be asked, wherever the search goes."""
        if mode not in MODES:
            raise BadRequestError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if any(not query.strip() for query in queries):
            raise BadRequestError("the query is empty")
        if depth < 1:
            raise BadRequestError(f"window must be at least 1, got {depth}")
        limit = self.backend.max_depth
        if limit is not None and depth > limit:
            raise BadRequestError(f"this needs {depth} candidates from each leg, but {self.backend.location} "
                                  f"returns at most {limit} per query; lower the window, the offset or k")

    def _retrieve_many(self, queries: Sequence[str], mode: Mode, window: int | None, filters: Filters | None,
                       progress: bool = False) -> Steps[list[dict[str, list[LegHit]]]]:
        self._check(queries, mode, self._settings(None).window if window is None else window)  # before any I/O
        snapshot = yield from self._current()
        depth = self._settings(snapshot).window if window is None else window
        self._check(queries, mode, depth)
        return (yield from self._legs(snapshot, queries, mode, depth, filters, progress))

    def _legs(self, snapshot: Snapshot, queries: Sequence[str], mode: Mode, depth: int, filters: Filters | None,
              progress: bool = False) -> Steps[list[dict[str, list[LegHit]]]]:
        """Every query's legs from ``snapshot``'s version, with query vectors from that version's model (the
        arguments checked by the caller, before it read anything)."""
        vectors: Sequence[np.ndarray | ServerEmbedded | None] = (
            [None] * len(queries) if mode == "bm25" else (yield from self._query_vectors(snapshot, queries)))
        pairs = zip(queries, vectors)
        if progress:  # a disabled bar still costs more than a whole local query
            pairs = tqdm(pairs, total=len(queries), desc="queries", unit="q", disable=None)  # None: off without a TTY
        windows = bool(snapshot.meta.chunking)
        legs = []
        for query, vector in pairs:
            legs.append((yield Read("retrieve", (snapshot.version, LegQuery(query if mode != "vector" else None,
                                                                            vector, depth, filters or {}, windows)))))
        return legs

    def _search_steps(self, query: str, k: int, mode: Mode, filters: Filters | None,
                      weights: Mapping[str, float] | None, rank_constant: int | None, window: int | None,
                      offset: int, fusion: Method | None, combination: Combination | None,
                      explain: bool) -> Steps[list[Hit]]:
        """``search`` as steps (see ``Searcher.search``)."""
        if k < 1:
            raise BadRequestError(f"k must be at least 1, got {k}")
        if offset < 0:
            raise BadRequestError(f"offset must not be negative, got {offset}")
        overrides = {"fusion": fusion, "combination": combination, "rank_constant": rank_constant,
                     "weights": weights, "window": window}

        def planned(snapshot: Snapshot | None) -> tuple[SearchSettings, int]:
            """The settings and candidate depth for ``snapshot`` (None: before any I/O), checked."""
            settings = self._settings(snapshot).but(**overrides)  # the index's own, where it records them
            depth = candidate_depth(settings.window, offset + k)
            self._check([query], mode, depth)
            return settings, depth

        planned(None)  # before any I/O: a bad query is a 400 even while the cluster is down
        snapshot = yield from self._current()
        try:
            return (yield from self._search(snapshot, query, k, mode, filters, *planned(snapshot), offset, explain))
        except VersionGoneError:  # a write replaced the pinned version: answer from the serving one
            snapshot = yield from self._current(refresh=True)
            return (yield from self._search(snapshot, query, k, mode, filters, *planned(snapshot), offset, explain))

    def _search(self, snapshot: Snapshot, query: str, k: int, mode: Mode, filters: Filters | None,
                settings: SearchSettings, depth: int, offset: int, explain: bool) -> Steps[list[Hit]]:
        if mode == "hybrid" and self.fusion_on == "server":
            fused = yield from self._fused_on_server(snapshot, query, slice(offset, offset + k), filters, settings,
                                                     depth, explain)
            if fused is not None:
                return fused
        legs = (yield from self._legs(snapshot, [query], mode, depth, filters))[0]
        if depth > FUSE_INLINE_DEPTH:
            page = (yield Compute(partial(settings.fuse, legs, depth, offset + k)))[offset:]
        else:
            page = settings.fuse(legs, depth, limit=offset + k)[offset:]
        sources = yield Read("sources", (snapshot.version, [item.id for item in page]))
        return [
            Hit(
                id=item.id,
                score=item.score if mode == "hybrid" else item.legs[mode].score,  # type: ignore[union-attr]
                bm25=item.legs.get("bm25"),
                vector=item.legs.get("vector"),
                source=sources.get(item.id, {}),
            )
            for item in page
        ]

    def _fused_on_server(self, snapshot: Snapshot, query: str, page: slice, filters: Filters | None,
                         settings: SearchSettings, depth: int, explain: bool) -> Steps[list[Hit] | None]:
        """The page fused by the cluster, or None where it cannot fuse this search (saying why, once)."""
        why_not = yield Read("server_fusion", (snapshot.version,))
        if why_not is not None:
            self._say_once(f"{self.backend.location}: {why_not}: fusing client-side")
            return None
        from .server_fusion import CannotFuseHere, ServerFusion  # never imported for an embedded index

        if self._server is None:
            self._server = ServerFusion(self.backend.location)
        try:
            pipeline = yield from self._server.pipeline(settings, snapshot.version)
        except CannotFuseHere as why:
            self._say_once(f"{why}: fusing client-side")
            return None
        vector = (yield from self._query_vectors(snapshot, [query]))[0]
        hits, note = yield from self._server.search(snapshot.version, pipeline, query, vector, page, depth, settings,
                                                    bool(snapshot.meta.chunking), filters, explain)
        if note:
            self._say_once(note)
        return hits

    def _say_once(self, message: str) -> None:
        with self._saying:
            if message in self._said:
                return
            self._said.add(message)
        log.warning(message)


class Searcher(BaseSearcher):
    """Hybrid search over one index. Build it once; ``search`` is safe to call per request, from many threads.

    Each query is answered from one version of the index (a ``Snapshot``) and its query vector comes
    from the model that version was built with, so after ``hybrid reindex`` switches models no query
    ever scores one model's vector against another's. Building one does no I/O; the index is looked up and
    its query encoder loaded by ``warm_up()`` (at an application's start) or else by the first query.
    ``close()``, or ``with Searcher(...) as searcher:``, releases the connections it opened.
    For an asyncio application, ``AsyncSearcher`` takes the same arguments and gives the same hits.
    """

    backend: Backend

    def _open(self, data_dir: str | Path | None, opensearch: str | Connection | None, client: Any,
              elasticsearch: str | Connection | None) -> Backend:
        return open_backend(data_dir, opensearch, client, elasticsearch)

    @property
    def meta(self) -> IndexMeta:
        """What the serving version of the index was built with."""
        return run(self._current(), self.backend).meta

    @property
    def settings(self) -> SearchSettings:
        """The fusion settings searches use now: the ones given, else the index's recorded ones, else the
        defaults."""
        return self._settings(run(self._current(), self.backend))

    @property
    def embedder(self) -> Encoder:
        """The query encoder of the serving version."""
        return self._embedder(run(self._current(), self.backend))

    def warm_up(self) -> Searcher:
        """Check the index and load its query encoder now (call it at an application's start), so the first
        query is as fast as the rest; with ``embed_on="server"``, send one neural search, which finds the
        recorded model undeployed and warms it on its nodes. Raises what a search would: the index is
        missing, the cluster is down."""
        run(self._warm_up(), self.backend)
        return self

    def close(self) -> None:
        """Release the connections of a backend this searcher opened itself (from ``opensearch=`` or
        ``data_dir=``); a backend or client handed in stays the caller's to close."""
        if self._owns_backend:
            self.backend.close()

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def retrieve(self, query: str, mode: Mode = "hybrid", window: int | None = None,
                 filters: Filters | None = None) -> dict[str, list[LegHit]]:
        """Each leg's ``window`` best documents, unfused (what ``search`` fuses)."""
        return self.retrieve_many([query], mode, window, filters)[0]

    def retrieve_many(self, queries: Sequence[str], mode: Mode = "hybrid", window: int | None = None,
                      filters: Filters | None = None, progress: bool = False) -> list[dict[str, list[LegHit]]]:
        """``retrieve`` for many queries (evaluation, mining): all from one version of the index, the
        queries encoded together with its model, which is far faster than one by one."""
        return run(self._retrieve_many(queries, mode, window, filters, progress), self.backend)

    def search(
        self,
        query: str,
        k: int = 10,
        mode: Mode = "hybrid",
        filters: Filters | None = None,
        weights: Mapping[str, float] | None = None,
        rank_constant: int | None = None,
        window: int | None = None,
        offset: int = 0,
        fusion: Method | None = None,
        combination: Combination | None = None,
        explain: bool = False,
    ) -> list[Hit]:
        """The hits ranked ``offset+1 .. offset+k``; unset fusion arguments come from ``settings``.
        Client-side fusion always knows each leg's part; fused on the server, hits carry it only with
        ``explain`` (OpenSearch then explains every hit, which took 10-30 times as long as the search here).

        Each leg retrieves its best ``candidate_depth(window, offset + k)`` documents (after
        ``filters``), so a page is full while either leg has documents left. ``k`` must be at least 1
        and ``offset`` at least 0; an offset past the last hit gives an empty page; an empty query
        is an error. Errors are ``hybrid.errors``' classes, which an application maps to HTTP statuses.
        """
        return run(self._search_steps(query, k, mode, filters, weights, rank_constant, window, offset, fusion,
                                      combination, explain), self.backend)
