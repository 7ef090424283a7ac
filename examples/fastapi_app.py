"""A search service: FastAPI with hybrid's AsyncSearcher, on an OpenSearch cluster or an embedded index.

    HYBRID_INDEX=sample OPENSEARCH_URL=http://127.0.0.1:9200 uvicorn examples.fastapi_app:app
    HYBRID_INDEX=sample HYBRID_DATA_DIR=~/.hybrid/indexes uvicorn examples.fastapi_app:app

``GET /search?q=...&k=10&mode=hybrid&offset=0&filter=FIELD=VALUE`` answers the hits as ``hybrid search
--json`` prints them. hybrid's errors become statuses: a bad query (or parameter) 400, a missing index
404, an overloaded cluster 429 and one that is down 503 (both with ``Retry-After``); the service itself
stays up, and the details of a failure go to its log, not to the client. The searcher
is built once, warmed up when the service starts (a cluster that is down then is said, not fatal), and
closed when it stops. Needs ``pip install fastapi uvicorn``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from hybrid import (
    AsyncSearcher,
    BadRequestError,
    ClusterUnavailableError,
    HybridError,
    IndexNotFoundError,
    OverloadedError,
)

STATUSES: list[tuple[type[HybridError], int]] = [
    (BadRequestError, 400), (IndexNotFoundError, 404), (OverloadedError, 429), (ClusterUnavailableError, 503),
]
"""hybrid's errors and the HTTP status each becomes; any other HybridError is the service's 500."""
MAX_K, MAX_OFFSET = 100, 1000
log = logging.getLogger("search-service")


def searcher_from_env() -> AsyncSearcher:
    """The index in $HYBRID_INDEX, on the cluster at $OPENSEARCH_URL, else in $HYBRID_DATA_DIR."""
    index = os.environ.get("HYBRID_INDEX", "sample")
    url = os.environ.get("OPENSEARCH_URL")
    if url:
        return AsyncSearcher(index, opensearch=url)
    return AsyncSearcher(index, data_dir=os.environ.get("HYBRID_DATA_DIR"))


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with searcher_from_env() as searcher:
        app.state.searcher = searcher
        try:
            await searcher.warm_up()
        except HybridError as error:  # start anyway: searches answer 503 until the cluster is back
            log.warning("searches will fail until this is fixed: %s", error)
        yield


app = FastAPI(title="hybrid search", lifespan=lifespan)


SAID = {404: "no such index", 429: "the search cluster is overloaded; try again shortly",
        503: "the search cluster is unavailable; try again shortly", 500: "the search failed"}
"""What a client is told: the whole message (cluster addresses, folders, the cluster's reasons) goes to the
log, and only a bad request's message, which is about the client's own query, goes back."""


@app.exception_handler(HybridError)
async def hybrid_error(request: Request, error: HybridError) -> JSONResponse:
    status = next((code for kind, code in STATUSES if isinstance(error, kind)), 500)
    if status >= 500:
        log.error("search failed: %s", error)
    headers = {"Retry-After": "1"} if error.retriable else None
    detail = str(error) if status == 400 else SAID[status]
    return JSONResponse({"error": type(error).__name__, "detail": detail}, status_code=status, headers=headers)


@app.exception_handler(RequestValidationError)
async def invalid_parameters(request: Request, error: RequestValidationError) -> JSONResponse:
    """A missing or malformed parameter is a bad request too, in the same shape."""
    problems = "; ".join(f"{'.'.join(map(str, problem['loc'][1:]))}: {problem['msg']}" for problem in error.errors())
    return JSONResponse({"error": "BadRequestError", "detail": problems}, status_code=400)


@app.get("/search")
async def search(request: Request, q: str, k: Annotated[int, Query(ge=1, le=MAX_K)] = 10, mode: str = "hybrid",
                 offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
                 filter: Annotated[list[str] | None, Query()] = None) -> dict[str, Any]:  # noqa: A002 (the parameter's name)
    """The hits ranked ``offset+1 .. offset+k``; ``k`` and ``offset`` are bounded, so no request can ask
    for the whole index."""
    filters: dict[str, list[str]] = {}
    for condition in filter or []:
        field, found, value = condition.partition("=")
        if not found:
            raise BadRequestError(f"filter {condition!r}: give FIELD=VALUE")
        filters.setdefault(field, []).append(value)
    hits = await request.app.state.searcher.search(q, k=k, mode=mode, offset=offset, filters=filters, explain=True)
    return {"query": q, "hits": [hit.to_dict() for hit in hits]}


@app.get("/health")
async def health() -> dict[str, str]:
    """The service answers (whether the cluster does is /search's to say)."""
    return {"status": "ok"}
