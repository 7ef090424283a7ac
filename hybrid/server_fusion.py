"""OpenSearch's own hybrid query: what a cluster's neural-search plugin can do, and a search pipeline that
fuses as hybrid's settings do, so that callers in any language get the same ranking with
``GET INDEX/_search?search_pipeline=NAME`` and a ``hybrid`` query.

hybrid's client-side fusion needs only the k-NN plugin; this needs neural-search (which brings
ml-commons and job-scheduler). Features by neural-search version, from its release notes: the
``hybrid`` query and ``normalization-processor`` (min_max, l2; arithmetic, geometric, harmonic
mean with weights) 2.10; RRF (``score-ranker-processor``), ``pagination_depth`` and the
``hybrid_score_explanation`` response processor 2.19; z_score and a filter on the hybrid query 3.0;
weights in RRF 3.1; an explanation that is right for an index with a nested field (a chunked one) 3.8
(neural-search #1876: before it, all sub-queries collapse into one block).

``Searcher(fusion_on="server")`` fuses through ``ServerFusion`` where the cluster can, with the same
settings, filters and candidate depth as client-side fusion, and ties ordered by id as client-side RRF
orders them; only for a one-shard index (the default), since the ``hybrid`` query takes each shard's
candidates and BM25 statistics apart.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends.base import Filters, LegQuery, ServerEmbedded
from .backends.opensearch import (
    IDS_ONLY,
    MAX_RESULT_WINDOW,
    STORED_ONLY,
    TEXT_FIELD,
    OpenSearchBackend,
    filter_clauses,
    hit_id,
    inner_product,
    knn_query,
    match_query,
)
from .errors import HybridError
from .fusion import LegRank
from .hits import Hit
from .settings import SearchSettings
from .steps import Read, Steps

FEATURES = {
    "hybrid query": (2, 10),
    "rrf": (2, 19),
    "pagination_depth": (2, 19),
    "explanation": (2, 19),
    "z_score": (3, 0),
    "rrf weights": (3, 1),
    "explanation of nested": (3, 8),
}
"""The neural-search version each feature arrived in."""
PLUGIN = "opensearch-neural-search"
"""The plugin's name in ``_cat/plugins``."""
MARK = "hybrid:"
"""How a pipeline's description starts when hybrid wrote it: only those are replaced or deleted."""
PIPELINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
LEG_ORDER = ("bm25", "vector")
"""The order of the hybrid query's sub-queries, and so of a pipeline's weights."""
TIE_MARGIN = 10
"""Hits asked beyond a page, so that ties at its end can be ordered by id as client-side fusion orders them."""
PROBE_TTL_S = 300.0
"""How long a searcher trusts what it found out about the cluster's plugins."""


@dataclass(frozen=True)
class NeuralSearch:
    """The neural-search plugin on a cluster: its version, or None where some node lacks it."""

    version: tuple[int, ...] | None

    def supports(self, feature: str) -> bool:
        return self.version is not None and self.version[:2] >= FEATURES[feature]

    def __str__(self) -> str:
        if self.version is None:
            return "no neural-search plugin (on every node)"
        return f"neural-search {'.'.join(map(str, self.version))}"


def neural_search(backend: OpenSearchBackend) -> NeuralSearch:
    """What the cluster's neural-search can do (``NeuralSearch(None)``: it cannot fuse on the server)."""
    return probe(*backend.plugins())


def probe(plugins: list[dict[str, str]], node_names: set[str]) -> NeuralSearch:
    """``plugins``: ``_cat/plugins`` rows (name, component, version); every node must have neural-search."""
    rows = [row for row in plugins if row["component"] == PLUGIN]
    versions, holders = {row["version"] for row in rows}, {row["name"] for row in rows}
    if not versions or holders != node_names or len(versions) > 1:
        return NeuralSearch(None)
    return NeuralSearch(tuple(int(part) for part in next(iter(versions)).split(".") if part.isdigit()))


class CannotFuseHere(HybridError):
    """This search cannot fuse on the server (the message says why); it fuses client-side instead."""


class ServerFusion:
    """Searches fused by one cluster's ``hybrid`` query, as steps (``hybrid.steps``) that a sync or an async
    searcher carries out against its backend. What the cluster's neural-search can do and each version's
    shard count are asked once, and the plugins again after ``PROBE_TTL_S`` (a rolling upgrade may add
    or remove them). Safe to share between threads: a race only asks twice.

    Scores are OpenSearch's: for RRF with weights, the client-side score divided by the weights' sum
    (OpenSearch wants weights that add up to 1; the order is the same)."""

    def __init__(self, location: str) -> None:
        """``location``: the cluster's address, for messages."""
        self.location = location
        self._probed: tuple[float, NeuralSearch | CannotFuseHere] | None = None
        self._shards: dict[str, int] = {}

    def neural(self) -> Steps[NeuralSearch]:
        """The cluster's neural-search; CannotFuseHere where the cluster would not say (a user without
        ``cluster:monitor`` rights: that answer is kept too, so such a user is not asked every query)."""
        if self._probed is None or time.monotonic() - self._probed[0] >= PROBE_TTL_S:
            try:
                found: NeuralSearch | CannotFuseHere = probe(*(yield Read("plugins")))
            except HybridError as error:
                found = CannotFuseHere(f"could not ask which plugins the cluster has ({error})")
            self._probed = (time.monotonic(), found)
        if isinstance(self._probed[1], CannotFuseHere):
            raise self._probed[1]
        return self._probed[1]

    def pipeline(self, settings: SearchSettings, version: str) -> Steps[dict[str, Any]]:
        """The request-scoped pipeline that fuses ``version``'s hits as ``settings`` do, or CannotFuseHere."""
        neural = yield from self.neural()
        if not neural.supports("explanation"):  # RRF, pagination_depth and the explanation: all 2.19
            raise CannotFuseHere(f"OpenSearch at {self.location} has {neural}; fusing there needs "
                                 "neural-search 2.19 or later")
        if version not in self._shards:
            self._shards[version] = (yield Read("layout", (version,))).shards
        if self._shards[version] > 1:
            raise CannotFuseHere(f"{version} has {self._shards[version]} shards, and OpenSearch's hybrid query takes "
                                 "each shard's candidates and BM25 statistics apart, where hybrid ranks the index "
                                 "as one")
        try:
            body = pipeline_body(settings, neural)
        except HybridError as error:
            raise CannotFuseHere(str(error)) from None
        return {key: value for key, value in body.items() if key != "description"}

    def search(self, version: str, pipeline: dict[str, Any], text: str, vector: np.ndarray | ServerEmbedded,
               page: slice, depth: int,
               settings: SearchSettings, windows: bool, filters: Filters | None,
               explain: bool) -> Steps[tuple[list[Hit], str | None]]:
        """The fused hits at ``page`` from one ``hybrid`` query through the request-scoped ``pipeline``
        (nothing is written to the cluster), each leg retrieving ``depth`` candidates; with each leg's
        part where ``explain`` and OpenSearch can tell it, else a note saying why not.

        OpenSearch orders equal scores by its internal document number, which differs between replicas;
        hybrid orders them by id. So it asks ``TIE_MARGIN`` hits more than the page, sorts them by (score,
        id), and asks for all candidates where the page's last score continues past what came back."""
        neural = yield from self.neural()
        explained = explain and explains(neural, windows)
        most = min(2 * depth, MAX_RESULT_WINDOW)  # at most every candidate of both legs
        asked = min(page.stop + TIE_MARGIN, most)
        body = {**hybrid_query(text, vector, asked, settings.but(window=depth), windows, filters),
                **IDS_ONLY, "search_pipeline": pipeline}
        while True:
            ranked = sorted((yield Read("fused_search", (version, body, explained))),
                            key=lambda hit: (-hit["_score"], hit_id(hit)))
            if len(ranked) < asked or asked == most or ranked[-1]["_score"] < ranked[page.stop - 1]["_score"]:
                break  # every candidate came back, or all that tie with the page's last score did
            asked = body["size"] = most
        sources = yield Read("sources", (version, [hit_id(found) for found in ranked[page]]))
        hits = [_hit(found, sources, settings, explained) for found in ranked[page]]
        if explain and not explained:
            return hits, (f"OpenSearch at {self.location} has {neural}, whose explanation of a fused hit is "
                          "wrong for a chunked index (fixed in neural-search 3.8): hits carry the fused score only")
        if explained and not all(hit.explained for hit in hits):
            return hits, (f"OpenSearch at {self.location} explained fused hits in a shape hybrid does not "
                          "know (an alias filter or document-level security around the query?): those hits "
                          "carry the fused score only")
        return hits, None


def explains(neural: NeuralSearch, windows: bool) -> bool:
    """Whether OpenSearch's explanation of a fused hit is right for this index (see ``FEATURES``)."""
    return neural.supports("explanation") and (not windows or neural.supports("explanation of nested"))


def _hit(found: dict[str, Any], sources: dict[str, dict[str, Any]], settings: SearchSettings, explained: bool) -> Hit:
    legs = legs_explained(found.get("_explanation"), settings) if explained else None
    found_id = hit_id(found)
    return Hit(found_id, float(found["_score"]), (legs or {}).get("bm25"), (legs or {}).get("vector"),
               sources.get(found_id, {}), explained=legs is not None)


def legs_explained(explanation: dict[str, Any] | None, settings: SearchSettings) -> dict[str, LegRank] | None:
    """Each leg's part in a fused hit, from ``hybrid_score_explanation``: one detail per sub-query that
    matches the document, in the query's order, valued 0 where the document was not among that leg's
    candidates (BM25 matches a document it ranked below the window). The BM25 detail is the one whose
    Lucene explanation scores the text field. RRF's value is ``1 / (rank_constant + rank)``, so it gives
    the rank; a normalised score does not. None where the explanation has another shape (a query
    wrapped by an alias filter or document-level security collapses the sub-queries into one block)."""
    details = (explanation or {}).get("details")
    if not details or len(details) > len(LEG_ORDER):
        return None
    legs: dict[str, LegRank] = {}
    seen = set()
    for detail in details:
        inner = detail.get("details") or []
        if len(inner) != 1 or not str(detail.get("description", "")).endswith("normalization of:") \
                or inner[0].get("description") == "combined score of:":
            return None
        leg = "bm25" if f"{TEXT_FIELD}:" in json.dumps(inner) else "vector"
        if leg in seen:
            return None
        seen.add(leg)
        normalized, raw = float(detail["value"]), float(inner[0]["value"])
        if normalized > 0:
            rank = round(1 / normalized - settings.rank_constant) if settings.fusion == "rrf" else None
            legs[leg] = LegRank(rank, raw if leg == "bm25" else inner_product(raw), normalized)
    return legs


def pipeline_body(settings: SearchSettings, neural: NeuralSearch) -> dict[str, Any]:
    """The search pipeline that fuses as ``settings`` do, or a HybridError saying what this cluster lacks."""
    if not neural.supports("hybrid query"):
        raise HybridError(f"the cluster has {neural}: hybrid's own client-side fusion is what searches use")
    weights = [float(settings.weights.get(leg, 1.0)) for leg in LEG_ORDER]
    total = sum(weights)
    if settings.fusion == "rrf":
        if not neural.supports("rrf"):
            raise HybridError(f"RRF on the server needs neural-search 2.19 or later; the cluster has {neural}")
        combination: dict[str, Any] = {"technique": "rrf", "rank_constant": settings.rank_constant}
        if len(set(weights)) > 1:
            if not neural.supports("rrf weights"):
                raise HybridError(f"weighted RRF on the server needs neural-search 3.1 or later; the cluster has "
                                  f"{neural} (equal weights, or client-side fusion)")
            combination["parameters"] = {"weights": [w / total for w in weights]}
        processor = {"score-ranker-processor": {"combination": combination}}
    else:
        if settings.fusion == "z_score" and not neural.supports("z_score"):
            raise HybridError(f"z_score on the server needs neural-search 3.0 or later; the cluster has {neural}")
        processor = {"normalization-processor": {
            "normalization": {"technique": settings.fusion},
            # OpenSearch wants weights that add up to 1; the weighted mean is the same.
            "combination": {"technique": f"{settings.combination}_mean",
                            "parameters": {"weights": [w / total for w in weights]}},
        }}
    body: dict[str, Any] = {"description": f"{MARK} {json.dumps(settings.to_dict())}",
                            "phase_results_processors": [processor]}
    if neural.supports("explanation"):
        body["response_processors"] = [{"hybrid_score_explanation": {}}]
    return body


def hybrid_query(text: str, vector: np.ndarray | list[float] | ServerEmbedded, k: int, settings: SearchSettings,
                 windows: bool, filters: Filters | None = None, paginated: bool = True) -> dict[str, Any]:
    """The request body of one ``hybrid`` query: BM25 and k-NN sub-queries (``neural`` where the cluster
    embeds the text), each retrieving ``settings.window`` candidates with the filters applied before ranking,
    as hybrid's legs do. Before 2.19 (not ``paginated``) a sub-query retrieves ``size`` hits: ask for the
    window, keep k."""
    clauses = filter_clauses(filters or {})
    given = vector if isinstance(vector, ServerEmbedded) else np.asarray(vector, dtype=np.float32)
    vector_leg = LegQuery(text=None, vector=given, k=settings.window, filters=filters or {}, windows=windows)
    queries = [match_query(text, clauses), knn_query(vector_leg, clauses)]
    depth = {"pagination_depth": settings.window} if paginated else {}
    return {"size": k if paginated else settings.window, "_source": {"excludes": STORED_ONLY},
            "query": {"hybrid": {**depth, "queries": queries}}}


def example_request(backend: OpenSearchBackend, index: str, pipeline: str, settings: SearchSettings) -> str:
    """What a caller in any language sends for the top 10 of QUERY, fused on the server as hybrid would."""
    meta = backend.meta(index)
    paginated = neural_search(backend).supports("pagination_depth")
    vector = ServerEmbedded("QUERY", meta.server_model) if meta.server_model else np.zeros(0, dtype=np.float32)
    body = json.dumps(hybrid_query("QUERY", vector, 10, settings, bool(meta.chunking), paginated=paginated), indent=2)
    embedded = (f'"<QUERY embedded by {meta.model}: {meta.dimension} floats, unit length, as `hybrid` embeds '
                f'queries ({meta.precision}); or `hybrid model deploy --index {index}` and send the text>"')
    return f"GET {index}/_search?search_pipeline={pipeline}\n" + body.replace('"vector": []', f'"vector": {embedded}')


def create_pipeline(backend: OpenSearchBackend, name: str, settings: SearchSettings) -> dict[str, Any]:
    """Write (or rewrite) the pipeline ``name`` for ``settings``; refuse one that hybrid did not write."""
    check_pipeline_name(name)
    body = pipeline_body(settings, neural_search(backend))
    _check_ours(backend, name, missing_ok=True)
    backend.put_search_pipeline(name, body)
    return body


def show_pipeline(backend: OpenSearchBackend, name: str) -> dict[str, Any]:
    check_pipeline_name(name)
    found = backend.search_pipeline(name)
    if found is None:
        raise HybridError(f"no search pipeline {name!r} at {backend.location}: hybrid pipeline create {name}")
    return found


def delete_pipeline(backend: OpenSearchBackend, name: str) -> None:
    check_pipeline_name(name)
    _check_ours(backend, name, missing_ok=False)
    backend.delete_search_pipeline(name)


def _check_ours(backend: OpenSearchBackend, name: str, missing_ok: bool) -> None:
    """Another application's pipeline of the same name is never replaced or deleted."""
    found = backend.search_pipeline(name)
    if found is None and not missing_ok:
        raise HybridError(f"no search pipeline {name!r} at {backend.location}")
    if found is not None and not str(found.get("description", "")).startswith(MARK):
        raise HybridError(f"search pipeline {name!r} at {backend.location} was not written by hybrid; "
                          "choose another name")


def check_pipeline_name(name: str) -> None:
    """A name that is one pipeline's (no wildcard, no path), so a request can only ever touch that one."""
    if not PIPELINE_NAME.fullmatch(name):
        raise HybridError(f"invalid pipeline name {name!r}: use letters, digits, '.', '_' and '-', starting with a "
                          "letter or digit")
