"""Issue #23 measurements: the example FastAPI service (examples/fastapi_app.py) under load on loopback.

Each service runs in its own uvicorn process (one worker); a bounded load loop keeps ``--clients``
requests in flight for ``--seconds`` (after a warm-up that is not counted), cycling through SciFact's
queries, and reports requests/s and p50/p99 latency. In part 1 the three services take turns, in
``--rounds`` rounds, so none gains from running later on a node that has warmed up.

1. OpenSearch backend: the example app (``AsyncSearcher``) vs the hand-written async peer (bench/service_apps.py
   ``peer``: AsyncOpenSearch, ``_msearch`` + ``_mget``, a few lines of RRF) and the sync ``Searcher`` in a
   threadpool endpoint (``sync``). Targets: ours >= 0.9x the peer's requests/s; p99 <= 3x p50.
2. The example app with a proxy in front of the node that answers 429 to every ``--every``-th ``_msearch``
   (10%), against the same proxy injecting nothing, both at the same arrival rate (half of 1.'s
   throughput): the p50 of the requests that were not retried (answered under the 1 s retry pause) moves
   by <= 20%.
3. Embedded backend: the example app's requests/s vs the sync ``Searcher`` called directly in one thread.

    docker/opensearch-node.sh start
    python bench/service_bench.py [--url http://127.0.0.1:9200] [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from cluster import copy_index  # noqa: E402

from hybrid import Searcher  # noqa: E402
from hybrid.backends.local import LocalBackend  # noqa: E402
from hybrid.backends.opensearch import Connection, OpenSearchBackend  # noqa: E402
from hybrid.embed import Embedder  # noqa: E402
from hybrid.evaluate import load_queries  # noqa: E402
from hybrid.ingest import ingest  # noqa: E402

INDEX = "bench-service"
OVERLOADED = json.dumps({"error": {"type": "rejected_execution_exception", "reason": "injected by the bench"},
                         "status": 429}).encode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], seconds: float = 180) -> None:
    import urllib.request

    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise SystemExit(f"{url} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise SystemExit(f"{url} did not answer in {seconds} s") from None
            time.sleep(0.3)


@contextmanager
def serving(target: str, env: dict[str, str], app_dir: Path = ROOT) -> Iterator[str]:
    """``target`` (module:app) under uvicorn on a free loopback port; yields its URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", target, "--app-dir", str(app_dir), "--host",
                                "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"],
                               cwd=ROOT, env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/search?q=warm+up", process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def injecting(node: str, every: int) -> Iterator[str]:
    """A proxy in front of ``node`` (in its own process) answering 429 to every ``every``-th ``_msearch``
    (0: none); yields its URL."""
    port = free_port()
    process = subprocess.Popen([sys.executable, __file__, "--proxy", node, "--port", str(port), "--every", str(every)])
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url, process, 30)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def proxy(node: str, port: int, every: int) -> None:
    """Forward every request to ``node``; answer 429 to each ``every``-th ``_msearch`` instead."""
    searches = itertools.count(1)

    async def forward(request: web.Request) -> web.Response:
        if request.path.endswith("/_msearch") and every and next(searches) % every == 0:
            return web.Response(status=429, body=OVERLOADED, content_type="application/json")
        session: aiohttp.ClientSession = request.app["session"]
        async with session.request(request.method, node + request.path_qs, data=await request.read(),
                                   headers={"Content-Type": request.headers.get("Content-Type", "application/json")}
                                   ) as answer:
            return web.Response(status=answer.status, body=await answer.read(),
                                content_type=answer.content_type)

    async def session(app: web.Application):  # type: ignore[no-untyped-def]
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=128))
        yield
        await app["session"].close()

    app = web.Application()
    app.cleanup_ctx.append(session)
    app.router.add_route("*", "/{tail:.*}", forward)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


def summary(latencies: list[float], seconds: float, statuses: Counter[int]) -> dict:
    ms = sorted(1000 * value for value in latencies)
    return {"requests_per_s": round(len(ms) / seconds, 1), "requests": len(ms),
            "p50_ms": round(statistics.median(ms), 1), "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 1),
            "p99_over_p50": round(ms[int(0.99 * (len(ms) - 1))] / statistics.median(ms), 2),
            "statuses": dict(sorted(statuses.items()))}


async def load(url: str, queries: list[str], clients: int, seconds: float, warm_up: float,
               rate: float | None = None) -> tuple[list[float], Counter[int]]:
    """Requests for ``warm_up + seconds`` s, at most ``clients`` in flight: each sent as soon as one answers
    (closed loop), or, with ``rate``, that many per second whatever the answers take (open loop: a request
    that waits a retry out does not slow the others' arrival). Latencies and statuses of the requests that
    started after the warm-up and ended in time."""
    cycle = itertools.cycle(queries)
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    start = time.perf_counter()
    counted_from, until = start + warm_up, start + warm_up + seconds
    slots = asyncio.Semaphore(clients)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients)) as session:
        async def one() -> None:
            sent = time.perf_counter()
            try:
                async with session.get(f"{url}/search", params={"q": next(cycle), "k": "10"}) as answer:
                    await answer.read()
            finally:
                slots.release()
            done = time.perf_counter()
            if sent >= counted_from and done <= until:
                latencies.append(done - sent)
                statuses[answer.status] += 1

        sending: set[asyncio.Task[None]] = set()
        next_at = start
        while time.perf_counter() < until:
            await slots.acquire()
            task = asyncio.create_task(one())
            sending.add(task)
            task.add_done_callback(sending.discard)
            if rate:
                next_at += 1 / rate
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
        await asyncio.gather(*sending)
    return latencies, statuses


def measured(url: str, queries: list[str], args: argparse.Namespace,
             rate: float | None = None) -> tuple[dict, list[float]]:
    latencies, statuses = asyncio.run(load(url, queries, args.clients, args.seconds, args.warm_up, rate))
    result = summary(latencies, args.seconds, statuses)
    print(json.dumps(result), flush=True)
    return result, latencies


def taking_turns(services: dict[str, tuple[str, Path]], env: dict[str, str], queries: list[str],
                 args: argparse.Namespace) -> dict[str, dict]:
    """Each service's figures over ``args.seconds``, measured in ``args.rounds`` turns of equal length, the
    services taking turns (all started first, idle while the others are measured): a node that warms up, or
    a machine whose speed drifts, weighs on every service alike rather than on whichever ran first."""
    turn = argparse.Namespace(**{**vars(args), "seconds": args.seconds / args.rounds})
    latencies: dict[str, list[float]] = {name: [] for name in services}
    statuses: dict[str, Counter[int]] = {name: Counter() for name in services}
    with ExitStack() as stack:
        urls = {name: stack.enter_context(serving(target, env, app_dir))
                for name, (target, app_dir) in services.items()}
        for _ in range(args.rounds):
            for name, url in urls.items():
                took, answered = asyncio.run(load(url, queries, turn.clients, turn.seconds, turn.warm_up))
                latencies[name] += took
                statuses[name] += answered
    results = {name: summary(latencies[name], args.seconds, statuses[name]) for name in services}
    print(json.dumps(results), flush=True)
    return results


def direct(searcher: Searcher, queries: list[str], seconds: float) -> dict:
    """The sync searcher called in one thread, back to back, for ``seconds``."""
    latencies = []
    until = time.perf_counter() + seconds
    for query in itertools.cycle(queries):
        if (sent := time.perf_counter()) >= until:
            break
        searcher.search(query, k=10, explain=True)
        latencies.append(time.perf_counter() - sent)
    return summary(latencies, seconds, Counter({200: len(latencies)}))


def indexes(data: Path, node: str, cache: Path) -> Path:
    """SciFact embedded under ``cache`` (ingested once) and copied, same vectors, to the node."""
    local = LocalBackend(cache)
    if not local.exists(INDEX):
        ingest(data / "corpus.jsonl", INDEX, local, Embedder(), progress=True)
    cluster = OpenSearchBackend(Connection(node))
    if not cluster.exists(INDEX) or cluster.count(INDEX) != local.count(INDEX):
        if cluster.exists(INDEX):
            cluster.delete(INDEX)
        copy_index(local, INDEX, cluster, INDEX)
    return cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--url", default=os.environ.get("OPENSEARCH_URL", "http://127.0.0.1:9200"))
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warm-up", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="turns each service takes in part 1")
    parser.add_argument("--every", type=int, default=10, help="the proxy answers 429 to every N-th _msearch")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "hybrid" / "bench-service")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "service.json")
    parser.add_argument("--proxy", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.proxy:
        return proxy(args.proxy, args.port, args.every)

    folder = args.data / "scifact"
    queries = list(load_queries(folder / "queries.jsonl").values())
    data_dir = indexes(folder, args.url, args.cache)
    on_cluster = {"HYBRID_INDEX": INDEX, "OPENSEARCH_URL": args.url, "OPENSEARCH_POOL_SIZE": str(args.clients)}
    report: dict = {"clients": args.clients, "seconds": args.seconds, "queries": len(queries)}

    print(f"1. OpenSearch backend: AsyncSearcher app, hand-written peer, sync Searcher in a threadpool, taking "
          f"turns in {args.rounds} rounds", flush=True)
    report.update(taking_turns({"async_searcher": ("examples.fastapi_app:app", ROOT),
                                "peer": ("service_apps:peer", ROOT / "bench"),
                                "sync_searcher": ("service_apps:sync", ROOT / "bench")}, on_cluster, queries, args))
    report["async_over_peer"] = round(report["async_searcher"]["requests_per_s"] / report["peer"]["requests_per_s"], 3)

    # Open loop at half the closed loop's throughput: requests keep arriving while some wait out a retry,
    # so what moves the others' latency is the retries' cost to the service, not fewer requests in flight.
    rate = report["paced_rate_per_s"] = round(report["async_searcher"]["requests_per_s"] / 2, 1)
    print(f"2. 429 on every {args.every}th _msearch through a proxy (and through it injecting nothing), {rate} "
          "requests/s", flush=True)
    pause = 1.0  # the first retry's wait
    for name, every in [("proxy_no_429", 0), ("proxy_429", args.every)]:
        with injecting(args.url, every) as node, \
                serving("examples.fastapi_app:app", {**on_cluster, "OPENSEARCH_URL": node}) as url:
            report[name], latencies = measured(url, queries, args, rate)
        report[name]["p50_not_retried_ms"] = round(1000 * statistics.median(t for t in latencies if t < pause), 1)
    moved = report["proxy_429"]["p50_not_retried_ms"] / report["proxy_no_429"]["p50_not_retried_ms"]
    report["p50_moved_by"] = round(moved - 1, 3)

    print("3. Embedded backend: the app under load vs the sync Searcher in one thread", flush=True)
    with serving("examples.fastapi_app:app", {"HYBRID_INDEX": INDEX, "HYBRID_DATA_DIR": str(data_dir)}) as url:
        report["embedded_app"], _ = measured(url, queries, args)
    with Searcher(INDEX, data_dir=data_dir) as searcher:
        searcher.warm_up()
        report["embedded_direct"] = direct(searcher, queries, args.seconds)
    report["embedded_app_over_direct"] = round(report["embedded_app"]["requests_per_s"]
                                               / report["embedded_direct"]["requests_per_s"], 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
