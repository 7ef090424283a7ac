"""The services bench/service_bench.py compares with examples/fastapi_app.py (AsyncSearcher), each a FastAPI
app with the same /search answer, run by uvicorn on loopback:

- ``peer``: what a team would write by hand instead: ``AsyncOpenSearch``, the query encoded in a thread, one
  ``_msearch`` with a match and a k-NN query, a few lines of RRF, one ``_mget`` for the page.
- ``sync``: the sync ``Searcher`` in a ``def`` endpoint, which FastAPI runs in its thread pool.

    uvicorn --app-dir bench service_apps:peer     (HYBRID_INDEX, OPENSEARCH_URL as for the example app)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from opensearchpy import AsyncOpenSearch

from hybrid import Searcher
from hybrid.backends.opensearch import ID_FIELD, STORED_ONLY, TEXT_FIELD, VECTOR_FIELD, Connection
from hybrid.onnx_encoder import query_encoder_for
from hybrid.settings import DEFAULT_WINDOW as WINDOW

INDEX = os.environ.get("HYBRID_INDEX", "sample")
URL = os.environ.get("OPENSEARCH_URL", "http://127.0.0.1:9200")
POOL_SIZE = int(os.environ.get("OPENSEARCH_POOL_SIZE", "10"))
"""Connections per node, the same for every service the bench compares."""


@asynccontextmanager
async def peer_lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.client = AsyncOpenSearch(hosts=[URL], maxsize=POOL_SIZE)
    app.state.encoder = query_encoder_for(Searcher(INDEX, opensearch=URL).meta.model, "fp32", "onnx")
    yield
    await app.state.client.close()


peer = FastAPI(lifespan=peer_lifespan)


@peer.get("/search")
async def peer_search(q: str, k: int = 10) -> dict[str, Any]:
    """The requests AsyncSearcher sends, written by hand: each leg's ids from doc values, BM25 with the
    index's term statistics, then RRF (rank constant 60) over the two lists and one _mget for the page."""
    vector = (await asyncio.to_thread(peer.state.encoder.encode, [q]))[0].tolist()
    ids_only = {"_source": False, "stored_fields": "_none_", "docvalue_fields": [ID_FIELD], "size": WINDOW}
    lines = [{"index": INDEX, "search_type": "dfs_query_then_fetch", "allow_partial_search_results": False},
             {**ids_only, "query": {"match": {TEXT_FIELD: q}}},
             {"index": INDEX, "allow_partial_search_results": False},
             {**ids_only, "query": {"knn": {VECTOR_FIELD: {"vector": vector, "k": WINDOW}}}}]
    legs = (await peer.state.client.msearch(body=lines))["responses"]
    scores: dict[str, float] = {}
    for leg in legs:
        for rank, hit in enumerate(leg["hits"]["hits"], start=1):
            doc = hit["fields"][ID_FIELD][0]
            scores[doc] = scores.get(doc, 0.0) + 1 / (60 + rank)
    page = sorted(scores, key=lambda doc: (-scores[doc], doc))[:k]
    docs = await peer.state.client.mget(index=INDEX, body={"ids": page},
                                        params={"_source_excludes": ",".join(STORED_ONLY)})
    sources = {doc["_id"]: doc["_source"] for doc in docs["docs"] if doc.get("found")}
    return {"query": q, "hits": [{"id": doc, "score": scores[doc], "source": sources.get(doc, {})} for doc in page]}


@asynccontextmanager
async def sync_lifespan(app: FastAPI) -> AsyncIterator[None]:
    with Searcher(INDEX, opensearch=Connection.from_env(URL)) as searcher:  # pool_size from the environment
        app.state.searcher = searcher.warm_up()
        yield


sync = FastAPI(lifespan=sync_lifespan)


@sync.get("/search")
def sync_search(q: str, k: int = 10) -> dict[str, Any]:
    hits = sync.state.searcher.search(q, k=k, explain=True)
    return {"query": q, "hits": [hit.to_dict() for hit in hits]}
