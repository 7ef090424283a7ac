"""OpenSearch's own hybrid query: what a cluster's neural-search plugin can do, and a search pipeline that
fuses as hybrid's settings do, so that callers in any language get the same ranking with
``GET INDEX/_search?search_pipeline=NAME`` and a ``hybrid`` query.

hybrid's client-side fusion needs only the k-NN plugin; this needs neural-search (which brings
ml-commons and job-scheduler). Features by neural-search version, from its release notes: the
``hybrid`` query and ``normalization-processor`` (min_max, l2; arithmetic, geometric, harmonic
mean with weights) 2.10; RRF (``score-ranker-processor``), ``pagination_depth`` and the
``hybrid_score_explanation`` response processor 2.19; z_score and a filter on the hybrid query 3.0;
weights in RRF 3.1.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends.base import Filters, LegQuery
from .backends.opensearch import STORED_ONLY, TEXT_FIELD, OpenSearchBackend, filter_clauses, knn_query
from .errors import HybridError
from .searcher import SearchSettings

FEATURES = {
    "hybrid query": (2, 10),
    "rrf": (2, 19),
    "pagination_depth": (2, 19),
    "explanation": (2, 19),
    "z_score": (3, 0),
    "rrf weights": (3, 1),
}
"""The neural-search version each feature arrived in."""
PLUGIN = "opensearch-neural-search"
"""The plugin's name in ``_cat/plugins``."""
MARK = "hybrid:"
"""How a pipeline's description starts when hybrid wrote it: only those are replaced or deleted."""
PIPELINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
LEG_ORDER = ("bm25", "vector")
"""The order of the hybrid query's sub-queries, and so of a pipeline's weights."""


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


def hybrid_query(text: str, vector: list[float], k: int, settings: SearchSettings, windows: bool,
                 filters: Filters | None = None, paginated: bool = True) -> dict[str, Any]:
    """The request body of one ``hybrid`` query: BM25 and k-NN sub-queries, each retrieving
    ``settings.window`` candidates with the filters applied before ranking, as hybrid's legs do.
    Before 2.19 (not ``paginated``) a sub-query retrieves ``size`` hits: ask for the window, keep k."""
    clauses = filter_clauses(filters or {})
    vector_leg = LegQuery(text=None, vector=np.asarray(vector, dtype=np.float32), k=settings.window,
                          filters=filters or {}, windows=windows)
    queries = [{"bool": {"must": {"match": {TEXT_FIELD: text}}, "filter": clauses}}, knn_query(vector_leg, clauses)]
    depth = {"pagination_depth": settings.window} if paginated else {}
    return {"size": k if paginated else settings.window, "_source": {"excludes": STORED_ONLY},
            "query": {"hybrid": {**depth, "queries": queries}}}


def example_request(backend: OpenSearchBackend, index: str, pipeline: str, settings: SearchSettings) -> str:
    """What a caller in any language sends for the top 10 of QUERY, fused on the server as hybrid would."""
    meta = backend.meta(index)
    paginated = neural_search(backend).supports("pagination_depth")
    body = json.dumps(hybrid_query("QUERY", [], 10, settings, bool(meta.chunking), paginated=paginated), indent=2)
    vector = (f'"<QUERY embedded by {meta.model}: {meta.dimension} floats, unit length, as `hybrid` embeds '
              f'queries ({meta.precision})>"')
    return f"GET {index}/_search?search_pipeline={pipeline}\n" + body.replace('"vector": []', f'"vector": {vector}')


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
