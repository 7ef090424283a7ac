"""The ``hybrid`` command line: parse options, call one use case, print a table or JSON."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click
from rich.console import Console
from rich.table import Table

from . import evaluate as ev
from .backends import open_backend
from .backends.base import Backend
from .chunking import Chunking
from .embed import DEFAULT_MODEL, PRECISIONS, Embedder, Precision
from .errors import (
    DISTRIBUTION,
    ClusterUnavailableError,
    CredentialsRefusedError,
    DamagedIndexError,
    GateError,
    HybridError,
    IndexNotFoundError,
    NotAClusterError,
    ServerModelError,
    require_extra,
)
from .finetune import DEV_METRIC, MAX_EPOCHS
from .fusion import COMBINATIONS, DEFAULT_RANK_CONSTANT, METHODS, Combination, LegRank, Method
from .hits import Hit
from .ingest import ingest
from .onnx_encoder import ENCODER_KINDS, EncoderKind, document_encoder, export_encoder
from .searcher import EMBED_SITES, FUSION_SITES, MODES, EmbedSite, FusionSite, Searcher
from .settings import DEFAULT_WINDOW, SearchSettings, recorded_settings

if TYPE_CHECKING:
    from .backends.opensearch import OpenSearchBackend

console = Console()


class HybridGroup(click.Group):
    """Turns every error into one line and exit status 1, without a traceback (HYBRID_DEBUG=1 shows it)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except (HybridError, ValueError) as error:
            raise click.ClickException(with_advice(error)) from error
        except OSError as error:
            where = f"{error.filename}: " if error.filename else ""
            raise click.ClickException(f"{where}{error.strerror or error}") from error
        except KeyboardInterrupt:
            raise click.ClickException("interrupted") from None
        except Exception as error:
            if os.environ.get("HYBRID_DEBUG"):
                raise
            raise click.ClickException(f"unexpected error: {type(error).__name__}: {error} (run with "
                                       "HYBRID_DEBUG=1 to see where it happened)") from error


def with_advice(error: Exception) -> str:
    """The error's message and what a user of this command line can do about it: the library's errors say
    what went wrong, and an application that catches them gives advice of its own."""
    if isinstance(error, IndexNotFoundError):
        return f"{error}; create it with `hybrid ingest SOURCE --index {error.index}`"
    if isinstance(error, NotAClusterError):
        return f"{error}; point --opensearch (OPENSEARCH_URL) or --elasticsearch (ELASTICSEARCH_URL) at a cluster"
    if isinstance(error, ClusterUnavailableError) and error.status is None:  # nothing answered
        return (f"{error}; start it (docker/opensearch-node.sh start or docker/elasticsearch-node.sh start, or "
                "docker compose -f docker/docker-compose.yml up -d) or point --opensearch / --elasticsearch at a "
                "running cluster")
    if isinstance(error, ServerModelError):
        return (f"{error}; deploy it with `hybrid model deploy --index {error.index}` (just after a node restart, "
                "ML Commons may still be deploying it again: wait a minute)")
    if isinstance(error, GateError):
        return f"{error}; add --force to go ahead anyway"
    if isinstance(error, DamagedIndexError):
        return f"{error}: roll back (hybrid reindex --index NAME --rollback) or ingest again into a new index"
    if isinstance(error, CredentialsRefusedError):
        return (f"{error}; set OPENSEARCH_USER and OPENSEARCH_PASSWORD (Elasticsearch: ELASTICSEARCH_API_KEY, or "
                "ELASTICSEARCH_USER and ELASTICSEARCH_PASSWORD) to a user allowed to read and write the index")
    return str(error)


def comma_list(value: str) -> list[str]:
    """``"title, text"`` -> ``["title", "text"]``: the form of every list-valued option."""
    return [item.strip() for item in value.split(",") if item.strip()]


def metric_value(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``--metric`` checked as it is parsed, before an index is read or a query run."""
    try:
        return ev.check_metric(value)
    except HybridError as error:
        raise click.BadParameter(str(error)) from None


def metrics_list(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    """``--metrics``: a comma-separated list, each checked as ``--metric`` is."""
    metrics = [metric_value(ctx, param, metric) for metric in comma_list(value)]
    if not metrics:
        raise click.BadParameter("name at least one metric")
    return metrics


def text_fields_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    """``--text-fields`` as a list; None (the default fields, where a missing title is empty) when not given."""
    return None if value is None else comma_list(value)


def backend_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options that choose a backend, and pass the opened backend as ``backend``."""
    return _backend_options(command, lazy=False)


def lazy_backend_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``backend_options`` for a command that may not need a backend: it gets ``open_chosen_backend``, a function
    that opens the chosen one, so that nothing is opened or asked of a cluster unless it is called."""
    return _backend_options(command, lazy=True)


def _backend_options(command: Callable[..., Any], lazy: bool) -> Callable[..., Any]:

    @click.option("--data-dir", envvar="HYBRID_DATA_DIR", type=click.Path(file_okay=False),
                  help="Folder of the local indexes [env HYBRID_DATA_DIR; default ~/.hybrid/indexes].")
    @click.option("--opensearch", "url", envvar="OPENSEARCH_URL", metavar="URL",
                  help="Use the OpenSearch cluster at URL instead of local indexes [env OPENSEARCH_URL; "
                       "credentials from OPENSEARCH_USER / OPENSEARCH_PASSWORD]; one that answers as "
                       "Elasticsearch is used as Elasticsearch.")
    @click.option("--elasticsearch", "elasticsearch_url", envvar="ELASTICSEARCH_URL", metavar="URL",
                  help="Use the Elasticsearch cluster (8.x, 9.x) at URL [env ELASTICSEARCH_URL; credentials from "
                       "ELASTICSEARCH_API_KEY, or ELASTICSEARCH_USER / ELASTICSEARCH_PASSWORD].")
    @click.option("--ca-certs", type=click.Path(exists=True, dir_okay=False),
                  help="CA bundle to verify the cluster's TLS certificate [env OPENSEARCH_CA_CERTS or "
                       "ELASTICSEARCH_CA_CERTS].")
    @click.option("--no-verify-certs", is_flag=True, help="Do not verify the cluster's TLS certificate.")
    @functools.wraps(command)
    def wrapper(data_dir: str | None, url: str | None, elasticsearch_url: str | None, ca_certs: str | None,
                no_verify_certs: bool, **kwargs: Any) -> Any:
        where = {"data_dir": data_dir, "url": url, "elasticsearch_url": elasticsearch_url}
        typed = {name for name in where if click.get_current_context().get_parameter_source(name)
                 == click.core.ParameterSource.COMMANDLINE}
        if typed:  # what is typed wins over what the environment says (ELASTICSEARCH_URL is often set for others)
            where = {name: value if name in typed else None for name, value in where.items()}
        opened = functools.partial(chosen_backend, **where, ca_certs=ca_certs,
                                   verify_certs=False if no_verify_certs else None)
        return command(open_chosen_backend=opened, **kwargs) if lazy else command(backend=opened(), **kwargs)

    return wrapper


def chosen_backend(data_dir: str | None, url: str | None, elasticsearch_url: str | None,
                   **settings: Any) -> Backend:
    """The backend the options name: Elasticsearch at ``elasticsearch_url``; at ``url``, the engine that answers
    there; else the local folder."""
    if url and elasticsearch_url:
        raise click.UsageError("give --opensearch or --elasticsearch, not both (or OPENSEARCH_URL and "
                               "ELASTICSEARCH_URL are both set: choose one with an option)")
    if not (url or elasticsearch_url):
        return open_backend(data_dir)
    from .backends import engine_at
    from .backends.opensearch import Connection

    if elasticsearch_url:
        return open_backend(elasticsearch=Connection.from_env(elasticsearch_url, "ELASTICSEARCH", **settings))
    connection = Connection.from_env(url, **settings)
    if engine_at(connection) == "elasticsearch":
        return open_backend(elasticsearch=connection)
    return open_backend(opensearch=connection)


def cluster_only(backend: Backend, what: str) -> OpenSearchBackend:
    """``backend``, which must be a cluster for ``what``."""
    from .backends.opensearch import OpenSearchBackend

    if not isinstance(backend, OpenSearchBackend):
        raise click.UsageError(f"{what}: add --opensearch URL or --elasticsearch URL")
    return backend


MODELS_RUN_ON_A_CLUSTER = "models are deployed to an OpenSearch cluster"


def opensearch_only(backend: Backend, what: str) -> OpenSearchBackend:
    """``backend``, which must be an OpenSearch cluster for ``what``."""
    from .backends.opensearch import OpenSearchBackend

    if not isinstance(backend, OpenSearchBackend) or backend.engine != "opensearch":
        raise click.UsageError(f"{what}: add --opensearch URL")
    return backend


def layout_options(in_place: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``--shards`` / ``--replicas`` for the indexes a command creates on OpenSearch (under ``backend_options``);
    ``in_place``: the existing ``index`` the command writes to gets the replicas at once."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @click.option("--shards", type=click.IntRange(min=1),
                      help="Primary shards of a new OpenSearch index [env OPENSEARCH_SHARDS; default: 1, or the "
                           "replaced version's].")
        @click.option("--replicas", type=click.IntRange(min=0),
                      help="Replicas of each shard [env OPENSEARCH_REPLICAS; default: 1 on a cluster of two data "
                           "nodes or more, else 0, or the replaced version's].")
        @functools.wraps(command)
        def wrapper(backend: Backend, shards: int | None, replicas: int | None, **kwargs: Any) -> Any:
            if shards is not None or replicas is not None:
                cluster = cluster_only(backend, "--shards and --replicas lay out an index on a cluster")
                connection = cluster.connection
                backend = type(cluster)(replace(connection, shards=shards or connection.shards,
                                                replicas=connection.replicas if replicas is None else replicas))
                if in_place and backend.exists(kwargs["index"]):
                    backend.relayout(kwargs["index"])
            return command(backend=backend, **kwargs)

        return wrapper

    return decorate


@click.group(cls=HybridGroup)
@click.version_option(package_name=DISTRIBUTION)
def cli() -> None:
    """Hybrid BM25 + vector search with reciprocal rank fusion, embedded or on OpenSearch or Elasticsearch."""


def chunk_value(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    if value is None or value == "off":
        return value
    try:
        return str(Chunking.parse(value))
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def chunk_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--chunk", "chunking", metavar="TOKENS/STRIDE|off", callback=chunk_value,
                        help="Embed documents longer than the model reads as overlapping windows of TOKENS word "
                             f"pieces, STRIDE apart (e.g. {Chunking()}); the vector leg scores a document by its "
                             "best window. 'off': whole documents [default: the index's; for a new one, "
                             f"{Chunking()} where most documents are longer than the model reads, else off].",
                        )(command)


PRECISION_HELP = ("int8: encode with the quantised ONNX export (about 2x faster on CPU; nDCG@10 within 0.002 on "
                  "SciFact). Queries then use it too; an index keeps one precision.")


def precision_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
                        help=PRECISION_HELP)(command)


@cli.command("ingest")
@click.argument("source", type=click.Path(exists=True))
@click.option("--index", required=True, help="Index to create or update.")
@click.option("--id-field", default=None, help="Field holding the document id [default: _id, else id].")
@click.option("--text-fields", default=None, callback=text_fields_list,
              help="Comma-separated fields that are embedded and searched by BM25; each is required "
                   "[default: title,text, where a missing title counts as empty].")
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="sentence-transformers model name or path (the default is bundled).")
@precision_option
@chunk_option
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--failures", "failures_path", type=click.Path(dir_okay=False), default=None,
              help="Where to write documents the index rejected [default: INDEX-failures.jsonl].")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--embed-on", type=click.Choice(EMBED_SITES), default="client", show_default=True,
              help="Where documents are embedded: here, or by the OpenSearch cluster (the model deployed there "
                   "first, as `hybrid model deploy` does; its ML nodes share the work).")
@backend_options
@layout_options(in_place=True)
def ingest_command(backend: Backend, source: str, index: str, id_field: str | None, text_fields: list[str] | None,
                   model: str, precision: Precision, chunking: str | None, batch_size: int,
                   failures_path: str | None, quiet: bool, embed_on: EmbedSite) -> None:
    """Embed the documents of SOURCE (JSONL, CSV or a folder of .txt/.md) and upsert them into an index.

    Re-running it is safe: documents are upserted by id and unchanged ones are not embedded again."""
    encoder = document_encoder(model, precision)
    if embed_on == "server":
        from .cluster_model import ingest_on_server

        deployment, report = ingest_on_server(source, index, opensearch_only(backend, MODELS_RUN_ON_A_CLUSTER),
                                              encoder, id_field=id_field, text_fields=text_fields,
                                              progress=not quiet, chunking=chunking)
        console.print(f"embedded by the cluster: {deployment.name} (model {deployment.model_id}, least cosine "
                      f"with hybrid's vectors {deployment.least_cosine:.6f})", soft_wrap=True)
    else:
        report = ingest(source, index, backend, encoder, id_field=id_field, text_fields=text_fields,
                        batch_size=batch_size, progress=not quiet, chunking=chunking)
    console.print(
        f"{index}: read {report.read}, embedded {report.embedded}, unchanged {report.unchanged}; "
        f"{report.count} documents in the index ({report.seconds:.1f} s)\nqueries: {report.query_encoder}"
        + (f"\nchunking: {report.chunking}" if report.chunking else ""),
        soft_wrap=True,  # a long path stays on one line, whole, for copying
    )
    for line in report.retried[:5]:  # what the cluster made us do again; every document is counted above
        console.print(f"retried: {line}")
    if len(report.retried) > 5:
        console.print(f"retried: ... {len(report.retried) - 5} more")
    if report.failures:
        path = Path(failures_path or f"{index}-failures.jsonl")
        path.write_text("".join(json.dumps({"id": f.id, "reason": f.reason}) + "\n" for f in report.failures))
        raise click.ClickException(
            f"{len(report.failures)} documents were rejected by the index (ids and reasons in {path}); "
            "fix them and run the same command again"
        )


def settings_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--settings", "settings_path", type=click.Path(exists=True, dir_okay=False),
                        help="Fusion settings JSON written by `hybrid tune` [default: those `hybrid tune --apply` "
                             "recorded in the index, else the defaults].")(command)


def settings_file(path: str | None) -> SearchSettings | None:
    """The ``--settings`` file's settings; None, where none is given, leaves the choice to the index."""
    return SearchSettings.load(path) if path else None


def settings_origin(searcher: Searcher, path: str | None) -> str:
    """Which settings a command fused with, said beside its results."""
    if path:
        return f"the settings in {path}"
    return "the index's tuned settings" if searcher.meta.tuned else "the default settings"


def query_encoder_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--query-encoder", type=click.Choice(ENCODER_KINDS), envvar="HYBRID_QUERY_ENCODER",
                        help="How queries are encoded: the model's ONNX export (no torch), torch, or auto "
                             "(ONNX where the export reproduces the model) [env HYBRID_QUERY_ENCODER; "
                             "default: auto].")(command)


def query_embed_option(command: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--embed-on", type=click.Choice(EMBED_SITES), default="client", show_default=True,
                        envvar="HYBRID_EMBED_ON",
                        help="Where queries are embedded: here, or by the model `hybrid model deploy` put in the "
                             "OpenSearch cluster (a neural query; refused for other backends). "
                             "[env: HYBRID_EMBED_ON]")(command)


def parse_filters(values: tuple[str, ...]) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for value in values:
        name, separator, wanted = value.partition("=")
        if not separator or not name:
            raise click.BadParameter(f"{value!r} is not field=value", param_hint="--filter")
        filters.setdefault(name, []).append(wanted)
    return filters


@cli.command("search")
@click.argument("query")
@click.option("--index", required=True)
@click.option("-k", "k", default=10, show_default=True, type=click.IntRange(min=1), help="Hits to return.")
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True)
@click.option("--filter", "filters", multiple=True, metavar="FIELD=VALUE",
              help="Keep documents whose FIELD equals VALUE; repeat for more (same field: any of them).")
@click.option("--offset", default=0, show_default=True, type=click.IntRange(min=0), help="Hits to skip (paging).")
@click.option("--window", type=click.IntRange(min=1),
              help=f"Candidates each leg retrieves before fusion [default: {DEFAULT_WINDOW}].")
@click.option("--fusion", type=click.Choice(METHODS),
              help="rrf (reciprocal rank fusion), or normalise each leg's scores (min_max, l2, z_score) and "
                   "combine them [default: rrf, or the --settings file's].")
@click.option("--combination", type=click.Choice(COMBINATIONS),
              help="How normalised scores combine (score fusion only): weighted arithmetic, geometric or "
                   "harmonic mean [default: arithmetic].")
@click.option("--rank-constant", type=click.IntRange(min=1),
              help=f"RRF rank constant (RRF only) [default: {DEFAULT_RANK_CONSTANT}].")
@click.option("--fusion-on", type=click.Choice(FUSION_SITES), default="client", show_default=True,
              envvar="HYBRID_FUSION_ON",
              help="Where hybrid hits are fused: here, or by OpenSearch's own hybrid query (neural-search 2.19+; "
                   "where the cluster cannot, here, saying why). [env: HYBRID_FUSION_ON]")
@query_embed_option
@click.option("--json", "as_json", is_flag=True, help="Print hits as JSON.")
@settings_option
@query_encoder_option
@backend_options
def search_command(backend: Backend, query: str, index: str, k: int, mode: str, filters: tuple[str, ...],
                   offset: int, window: int | None, fusion: Method | None, combination: Combination | None,
                   rank_constant: int | None, fusion_on: FusionSite, embed_on: EmbedSite, as_json: bool,
                   settings_path: str | None, query_encoder: EncoderKind | None) -> None:
    """Search an index with BM25, vectors, or both fused (RRF by default)."""
    searcher = Searcher(index, backend, settings=settings_file(settings_path),
                        query_encoder=query_encoder, fusion_on=fusion_on, embed_on=embed_on)
    hits = searcher.search(query, k=k, mode=mode, filters=parse_filters(filters),  # type: ignore[arg-type]
                           offset=offset, window=window, rank_constant=rank_constant, fusion=fusion,
                           combination=combination, explain=True)  # a person reading hits wants the why
    if as_json:
        click.echo(json.dumps([hit.to_dict() for hit in hits], ensure_ascii=False, indent=2))
    else:
        console.print(hits_table(hits, offset, searcher.meta.text_fields))


def hits_table(hits: list[Hit], offset: int, text_fields: tuple[str, ...]) -> Table:
    table = Table(expand=True)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("id", no_wrap=True)
    table.add_column("score", justify="right", no_wrap=True)
    table.add_column("bm25", justify="right", no_wrap=True)
    table.add_column("vector", justify="right", no_wrap=True)
    table.add_column("text", no_wrap=True, overflow="ellipsis", ratio=1)
    for position, hit in enumerate(hits, start=offset + 1):
        legs = [leg_cell(leg, hit.explained) for leg in (hit.bm25, hit.vector)]
        text = " | ".join(str(hit.source[name]) for name in text_fields if hit.source.get(name))
        table.add_row(str(position), hit.id, f"{hit.score:.4f}", *legs, " ".join(text.split()))
    return table


def leg_cell(leg: LegRank | None, explained: bool) -> str:
    """``#rank score``; ``-`` where the leg missed the document, ``?`` where the server did not say."""
    if leg is None:
        return "-" if explained else "?"
    return f"#{leg.rank if leg.rank is not None else '?'} {leg.score:.3f}"


def beir_inputs(beir: str | None, index: str | None, queries: str | None, qrels: str | None, split: str,
                backend: Backend) -> tuple[str, str, str]:
    """Resolve --beir DIR into an index (ingested if needed; unchanged documents are skipped) and files."""
    if beir is None:
        if not (index and queries and qrels):
            raise click.UsageError("give --index, --queries and --qrels, or --beir DIR")
        return index, queries, qrels
    folder = Path(beir)
    index = index or folder.name
    ingest(folder / "corpus.jsonl", index, backend, Embedder(), progress=True)
    return index, queries or str(folder / "queries.jsonl"), qrels or str(folder / "qrels" / f"{split}.tsv")


def results_table(results: dict[str, dict[str, float]]) -> Table:
    metrics = list(next(iter(results.values())))
    table = Table(*(["mode"] + metrics))
    best = {m: max(row[m] for row in results.values()) for m in metrics}
    for mode, row in results.items():
        table.add_row(mode, *(f"[bold green]{row[m]:.4f} *[/]" if row[m] == best[m] and len(results) > 1
                              else f"{row[m]:.4f}" for m in metrics))
    return table


@cli.command("eval")
@click.option("--index", help="Index to evaluate [default with --beir: the folder's name].")
@click.option("--queries", type=click.Path(exists=True, dir_okay=False), help="BEIR queries.jsonl.")
@click.option("--qrels", type=click.Path(exists=True, dir_okay=False), help="BEIR qrels .tsv or TREC qrels.")
@click.option("--beir", type=click.Path(exists=True, file_okay=False),
              help="A BEIR folder: ingest its corpus (if needed) and use its queries and qrels.")
@click.option("--split", default="test", show_default=True, help="qrels/SPLIT.tsv of the --beir folder.")
@click.option("--modes", default="bm25,vector,hybrid", show_default=True)
@click.option("--metrics", "metric_list", default=",".join(ev.DEFAULT_METRICS), show_default=True,
              callback=metrics_list)
@click.option("--exclude-self", is_flag=True, help="Drop a hit whose id equals the query id (e.g. ArguAna).")
@click.option("--save-runs", type=click.Path(file_okay=False), help="Write one TREC run file per mode here.")
@click.option("--compare", "with_test", is_flag=True, help="Also print ranx's paired t-test between modes.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write a PNG bar chart.")
@click.option("--json", "as_json", is_flag=True)
@settings_option
@query_encoder_option
@query_embed_option
@backend_options
def eval_command(backend: Backend, index: str | None, queries: str | None, qrels: str | None, beir: str | None,
                 split: str, modes: str, metric_list: list[str], exclude_self: bool, save_runs: str | None,
                 with_test: bool, plot_path: str | None, as_json: bool, settings_path: str | None,
                 query_encoder: EncoderKind | None, embed_on: EmbedSite) -> None:
    """Score BM25, vector and hybrid retrieval against relevance judgments."""
    ev.require_eval(*(["matplotlib"] if plot_path else []))
    index, queries, qrels = beir_inputs(beir, index, queries, qrels, split, backend)
    mode_list = comma_list(modes)
    if unknown := set(mode_list) - set(MODES):
        raise click.BadParameter(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}",
                                 param_hint="--modes")
    judged, all_queries = ev.load_qrels(qrels), ev.load_queries(queries)
    searcher = Searcher(index, backend, settings=settings_file(settings_path), query_encoder=query_encoder,
                        embed_on=embed_on)
    results, runs = ev.evaluate_modes(searcher, all_queries, judged, mode_list, metric_list,  # type: ignore[arg-type]
                                      exclude_self=exclude_self, progress=not as_json)
    skipped = sum(1 for q in all_queries if q not in judged)
    textless = sum(1 for q in judged if q not in all_queries)
    if save_runs:
        Path(save_runs).mkdir(parents=True, exist_ok=True)
        for mode, run in runs.items():
            ev.save_trec_run(run, Path(save_runs) / f"{index}.{mode}.trec", f"{index}-{mode}")
    if plot_path:
        ev.plot(results, plot_path, f"{index}: {len(runs[mode_list[0]])} judged queries")
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    console.print(results_table(results))
    console.print(f"{index}: {len(runs[mode_list[0]])} judged queries scored, {skipped} without judgments "
                  f"skipped" + (f", {textless} judged query ids without text in {queries} not scored" if textless
                                else "") + f"; fused with {settings_origin(searcher, settings_path)}; "
                  "* marks the best value of each metric")
    if with_test:
        click.echo(ev.compare_runs({q: judged[q] for q in runs[mode_list[0]]}, runs, metric_list))


@cli.command("tune")
@click.option("--index")
@click.option("--queries", type=click.Path(exists=True, dir_okay=False))
@click.option("--qrels", type=click.Path(exists=True, dir_okay=False),
              help="Judgments to tune on (e.g. a train split).")
@click.option("--heldout-qrels", type=click.Path(exists=True, dir_okay=False),
              help="Judgments to score the choice on (e.g. the test split) [default: a held-out share of --qrels].")
@click.option("--beir", type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="test", show_default=True)
@click.option("--metric", default="ndcg@10", show_default=True, callback=metric_value)
@click.option("--methods", default=",".join(METHODS), show_default=True, help="Fusion methods to try.")
@click.option("--dev-share", default=0.5, show_default=True, type=click.FloatRange(0.05, 1.0),
              help="Without --heldout-qrels: the share of --qrels' queries to tune on; the rest scores it.")
@click.option("--exclude-self", is_flag=True)
@click.option("--output", type=click.Path(dir_okay=False), default="fusion-settings.json", show_default=True,
              help="Where to write the best settings (load them with --settings or SearchSettings.load).")
@click.option("--apply", "apply_to_index", is_flag=True,
              help="Record the choice in the index: its searches, evaluations, pipelines and fine-tunes then use "
                   "it. Refused where it scored below the defaults on the held-out queries.")
@click.option("--force", is_flag=True, help="With --apply: record the choice even so.")
@click.option("--clear", is_flag=True, help="Remove the settings recorded in --index (it uses the defaults again).")
@backend_options
def tune_command(backend: Backend, index: str | None, queries: str | None, qrels: str | None,
                 heldout_qrels: str | None, beir: str | None, split: str, metric: str, methods: str, dev_share: float,
                 exclude_self: bool, output: str, apply_to_index: bool, force: bool, clear: bool) -> None:
    """Choose the fusion method, combination, leg weights, rank constant and window that score best on
    tuning queries; report the choice and the defaults on held-out queries, with a paired t-test."""
    from . import tuning

    if clear:
        if not index or apply_to_index or force or queries or qrels or heldout_qrels or beir:
            raise click.UsageError("--clear takes --index NAME alone (nothing is tuned)")
        said = "removed" if tuning.clear(backend, index) else "had none"
        console.print(f"{index}: recorded fusion settings {said}; its searches use the defaults")
        return
    if force and not apply_to_index:
        raise click.UsageError("--force goes with --apply")
    ev.require_eval()
    index, queries, qrels = beir_inputs(beir, index, queries, qrels, split, backend)
    method_list = comma_list(methods)
    if unknown := set(method_list) - set(METHODS):
        raise click.BadParameter(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}",
                                 param_hint="--methods")
    result = ev.tune(Searcher(index, backend), ev.load_queries(queries), ev.load_qrels(qrels), metric=metric,
                     heldout_qrels=ev.load_qrels(heldout_qrels) if heldout_qrels else None, dev_share=dev_share,
                     grid=ev.fusion_grid(method_list), exclude_self=exclude_self)  # type: ignore[arg-type]
    result.best.save(output)
    console.print(f"best of {result.settings_tried} settings on {result.tuning_queries} tuning queries: "
                  f"{describe_settings(result.best)} ({metric} {result.tuning_score:.4f}); written to {output}")
    if result.heldout_queries:
        console.print(f"held-out {result.heldout_queries} queries: {metric} {result.heldout_score:.4f}, defaults "
                      f"{result.default_heldout_score:.4f} (paired t-test p = {result.p_value:.3f}): "
                      f"{tune_verdict(result)}")
    else:
        console.print("no held-out queries to check it on")
    if apply_to_index:
        files = {"queries": queries, "qrels": qrels, "heldout_qrels": heldout_qrels}
        tuned = tuning.record(backend, index, result, {
            **{name: str(Path(path).resolve()) if path else None for name, path in files.items()},
            "dev_share": None if heldout_qrels else dev_share}, force)
        forced = " (forced: " + str(tuning.refusal(result)) + ")" if tuned["chosen_on"]["forced"] else ""
        console.print(f"recorded in {index}{forced}: its searches now fuse with these settings unless told "
                      f"otherwise (`hybrid tune --index {index} --clear` removes them)")


def tune_verdict(result: ev.TuneResult) -> str:
    if result.significant:
        return "significantly better than the defaults"
    if result.heldout_score < result.default_heldout_score:
        return ("[bold]worse than the defaults[/]" + (" (significantly)" if result.p_value < 0.05 else "") +
                ": keep the defaults")
    return "[bold]not significantly better[/] than the defaults (at least as good)"


def describe_settings(settings: SearchSettings) -> str:
    method = (f"rrf rank_constant={settings.rank_constant}" if settings.fusion == "rrf"
              else f"{settings.fusion} {settings.combination} mean")
    return f"{method}, weights={dict(settings.weights)}, window={settings.window}"


@cli.command("finetune")
@click.option("--corpus", required=True, type=click.Path(exists=True), help="Documents to adapt the model to.")
@click.option("--queries", type=click.Path(exists=True, dir_okay=False),
              help="BEIR queries.jsonl (with --qrels and/or --dev-qrels).")
@click.option("--qrels", type=click.Path(exists=True, dir_okay=False),
              help="Training judgments; without them, pairs come from --log-queries or from the corpus itself.")
@click.option("--dev-qrels", type=click.Path(exists=True, dir_okay=False),
              help="Judgments that only judge the model (never trained on), instead of --dev-share.")
@click.option("--log-queries", type=click.Path(exists=True, dir_okay=False),
              help="Queries without judgments (e.g. a query log, as queries.jsonl) to train on instead of the "
                   "corpus: each is paired with its top hybrid hit under the base model.")
@click.option("--output", required=True, type=click.Path(file_okay=False), help="Folder for the new model.")
@click.option("--base-model", default=DEFAULT_MODEL, show_default=True)
@click.option("--max-epochs", default=MAX_EPOCHS, show_default=True, type=click.IntRange(min=1),
              help="The most epochs to train; the dev queries are scored after each and the best epoch is kept.")
@click.option("--patience", default=1, show_default=True, type=click.IntRange(min=1),
              help="Stop after this many epochs in a row without a better dev score.")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=2))
@click.option("--learning-rate", default=3e-5, show_default=True, type=float)
@click.option("--dev-share", default=0.2, show_default=True, type=click.FloatRange(0.0, 0.9),
              help="Queries held out to judge the model before and after.")
@click.option("--max-steps", default=-1, show_default=True, help="Stop after this many steps (-1: all epochs).")
@click.option("--index", help="The index the model is for: its chunking and tuned fusion settings are used, "
                              "unless --chunk or --settings say otherwise.")
@chunk_option
@settings_option
@click.option("--id-field", default=None)
@click.option("--text-fields", default=None, callback=text_fields_list,
              help="As for `hybrid ingest` [default: title,text].")
@click.option("--json", "as_json", is_flag=True)
@lazy_backend_options
def finetune_command(open_chosen_backend: Callable[[], Backend], corpus: str, queries: str | None, qrels: str | None,
                     dev_qrels: str | None,
                     log_queries: str | None, output: str, base_model: str, max_epochs: int, patience: int,
                     batch_size: int, learning_rate: float, dev_share: float, max_steps: int, index: str | None,
                     chunking: str | None, settings_path: str | None, id_field: str | None,
                     text_fields: list[str] | None, as_json: bool) -> None:
    """Adapt the embedding model to your corpus and show, on held-out queries, whether it helped."""
    from .finetune import TRAINING_MODULES, FinetuneConfig, Labels, finetune
    from .sources import read_documents

    require_extra("train", *TRAINING_MODULES)

    if bool(queries) != bool(qrels or dev_qrels):
        raise click.UsageError("--queries goes with --qrels and/or --dev-qrels (leave all out to train without labels)")
    documents = read_documents(corpus, id_field=id_field, text_fields=text_fields)
    meta = open_chosen_backend().meta(index) if index else None
    labels = Labels(queries=ev.load_queries(queries) if queries else None,
                    qrels=ev.load_qrels(qrels) if qrels else None,
                    dev_qrels=ev.load_qrels(dev_qrels) if dev_qrels else None,
                    log_queries=ev.load_queries(log_queries) if log_queries else None)
    config = FinetuneConfig(
        base_model=base_model, max_epochs=max_epochs, patience=patience, batch_size=batch_size,
        learning_rate=learning_rate, dev_share=dev_share, max_steps=max_steps, progress=not as_json,
        chunking=chunking or (meta.chunking or "off" if meta else None),
        settings=settings_file(settings_path) or (recorded_settings(meta) if meta else None))
    report = finetune(documents, output, labels, config)
    if as_json:
        click.echo(json.dumps(asdict(report), indent=2))
        return
    if report.before:
        table = Table("", *(f"{mode} {metric}" for mode in report.before for metric in report.before[mode]))
        for name, figures in (("base model", report.before), ("fine-tuned", report.after)):
            table.add_row(name, *(f"{figures[mode][metric]:.4f}" for mode in figures for metric in figures[mode]))
        console.print(table)
    if report.epochs:
        console.print("dev check per epoch (vector nDCG@10 on the dev queries' candidates): " + ", ".join(
            f"{point['epoch']:g}: {point[DEV_METRIC]:.4f}" for point in report.epochs) + "; the best epoch is kept")
    console.print(f"{report.dev_queries} dev queries ({'judged' if report.dev_judged else 'pseudo-queries'}), "
                  f"{report.train_pairs} training pairs (from {report.settings['pairs']}), {report.seconds:.0f} s")
    console.print(f"[bold {'green' if report.promote else 'red'}]{report.verdict}[/]")
    console.print(f"model saved in {report.model}" + (f"; switch an index to it with `hybrid reindex --index NAME "
                                                      f"--model {report.model}`" if report.promote else ""))


@cli.command("reindex")
@click.option("--index", required=True)
@click.option("--model", help="Model to re-embed the index with (a `hybrid finetune` output folder).")
@click.option("--rollback", is_flag=True, help="Switch back to the version before the current one.")
@click.option("--force", is_flag=True, help="Use a fine-tuned model even though it did not pass its evaluation.")
@click.option("--precision", type=click.Choice(PRECISIONS),
              help=f"{PRECISION_HELP} [default: the index's without --model, else fp32].")
@chunk_option
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--quiet", is_flag=True)
@backend_options
@layout_options(in_place=False)
def reindex_command(backend: Backend, index: str, model: str | None, rollback: bool, force: bool,
                    precision: Precision | None, chunking: str | None, batch_size: int, quiet: bool) -> None:
    """Re-embed an index with another model (or chunking) into a new version and switch to it without
    downtime."""
    from .ingest import reindex
    from .ingest import rollback as roll_back

    if rollback == bool(model or chunking or precision):
        raise click.UsageError("give what to change (--model, --chunk and/or --precision), or --rollback alone")
    if rollback:
        left, now = roll_back(index, backend)
        console.print(f"{index} now serves {now} ({backend.count(index)} documents; was {left}, which the next "
                      "write removes: documents ingested after the re-index are not in this version)")
        return
    if not model:  # only the chunking changes
        current = backend.meta(index)
        model, precision = current.model, precision or current.precision  # type: ignore[assignment]
    result = reindex(index, backend, document_encoder(model, precision or "fp32"), batch_size=batch_size,
                     progress=not quiet, chunking=chunking, force=force)
    console.print(f"{index} now serves {result.version} ({result.documents} documents, model {result.model}); "
                  f"{result.previous} is kept: `hybrid reindex --index {index} --rollback` switches back")


@cli.group("model")
def model_group() -> None:
    """Prepare models for querying."""


@model_group.command("export")
@click.argument("model")
@click.option("--output", type=click.Path(file_okay=False),
              help="Folder to write [default: where queries look for it: MODEL/hybrid-onnx-PRECISION for a "
                   "model folder, else $HYBRID_ENCODER_DIR (~/.hybrid/encoders)].")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True)
def model_export(model: str, output: str | None, precision: Precision) -> None:
    """Export MODEL to ONNX for querying without torch (ingest and finetune do it too; this is for copying
    the query encoder to a machine with the query-only install)."""
    folder = export_encoder(model, output, precision)
    console.print(f"ONNX query encoder for {model} ({precision}) written to {folder}")


@model_group.command("deploy")
@click.argument("model", required=False)
@click.option("--index", help="Deploy the model this index was built with, and record it there for text-only "
                              "searches and pipelines.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="For MODEL (an index deploys its own precision).")
@backend_options
def model_deploy(backend: Backend, model: str | None, index: str | None, precision: Precision) -> None:
    """Deploy MODEL, or --index's model, into the OpenSearch cluster (ML Commons), so the cluster embeds texts
    as hybrid does; checked on probe sentences. Running it again reuses what is there."""
    from .cluster_model import deploy, deploy_for

    if (model is None) == (index is None):
        raise click.UsageError("give MODEL or --index NAME")
    cluster = opensearch_only(backend, MODELS_RUN_ON_A_CLUSTER)
    done = deploy_for(cluster, index) if index else deploy(cluster, cast(str, model), precision)
    click.echo(json.dumps({"model_id": done.model_id, "name": done.name, "registered_now": done.registered_now,
                           "least_cosine": round(done.least_cosine, 6), "mean_cosine": round(done.mean_cosine, 6),
                           **({"index": index} if index else {})}, indent=2))


@model_group.command("undeploy")
@click.option("--index", help="Undeploy the model recorded in this index, and forget it there.")
@click.option("--model-id", help="Undeploy this model (only one that hybrid registered).")
@backend_options
def model_undeploy(backend: Backend, index: str | None, model_id: str | None) -> None:
    """Undeploy a model that `hybrid model deploy` put in the cluster (it stays registered: deploying it again
    uploads nothing)."""
    from .cluster_model import undeploy, undeploy_for

    if (model_id is None) == (index is None):
        raise click.UsageError("give --index NAME or --model-id ID")
    cluster = opensearch_only(backend, MODELS_RUN_ON_A_CLUSTER)
    name = undeploy_for(cluster, index) if index else undeploy(cluster, cast(str, model_id))
    console.print(f"undeployed {name}")


@cli.group("index")
def index_group() -> None:
    """List, inspect or delete indexes."""


@index_group.command("list")
@backend_options
def index_list(backend: Backend) -> None:
    """List the indexes and their sizes."""
    table = Table("index", "documents", "model", "dimension")
    for name in backend.names():
        try:
            info = backend.info(name)
        except HybridError as error:  # one unreadable index must not hide the others
            table.add_row(name, "-", f"[red]{error}[/]", "-")
            continue
        table.add_row(name, str(info.count), info.meta.model, str(info.meta.dimension))
    console.print(table)


@index_group.command("info")
@click.argument("index")
@backend_options
def index_info(backend: Backend, index: str) -> None:
    """Show what an index holds and what it was built with."""
    info = backend.info(index)
    versions = [{"name": v.name, "number": v.number, "previous": v.previous, "serving": v.serving}
                for v in info.versions]
    meta = info.meta.to_dict()
    if not backend.embeds_texts:  # the embedded index and Elasticsearch run no deployed model: it cannot apply
        meta.pop("server_model", None)
    click.echo(json.dumps({"index": info.name, "count": info.count, "location": info.location,
                           **info.layout, **meta, "versions": versions}, indent=2, ensure_ascii=False))


@index_group.command("delete")
@click.argument("index")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@backend_options
def index_delete(backend: Backend, index: str, yes: bool) -> None:
    """Delete an index and everything in it."""
    try:
        count = str(backend.count(index))
    except IndexNotFoundError:
        raise
    except HybridError:  # a damaged index must still be deletable
        count = "an unknown number of"
    if not yes:
        click.confirm(f"Delete index {index!r} with {count} documents?", abort=True)
    backend.delete(index)
    console.print(f"deleted {index} ({count} documents)")


PIPELINES_LIVE_ON_A_CLUSTER = "search pipelines live on an OpenSearch cluster"


@cli.group("pipeline")
def pipeline_group() -> None:
    """OpenSearch search pipelines that fuse as hybrid does, for callers in any language (needs neural-search)."""


@pipeline_group.command("create")
@click.argument("name")
@click.option("--index", required=True, help="The index the printed example request searches.")
@settings_option
@backend_options
def pipeline_create(backend: Backend, name: str, index: str, settings_path: str | None) -> None:
    """Write the search pipeline NAME for the fusion settings (--settings, else the index's tuned ones, else
    the defaults), and print it with the request a caller sends."""
    from .server_fusion import create_pipeline, example_request

    cluster = opensearch_only(backend, PIPELINES_LIVE_ON_A_CLUSTER)
    settings = settings_file(settings_path) or recorded_settings(cluster.meta(index)) or SearchSettings()
    click.echo(json.dumps(create_pipeline(cluster, name, settings), indent=2))
    click.echo(example_request(cluster, index, name, settings))


@pipeline_group.command("show")
@click.argument("name")
@click.option("--index", help="Also print the request a caller sends to this index.")
@backend_options
def pipeline_show(backend: Backend, name: str, index: str | None) -> None:
    """Print the search pipeline NAME (and the request for --index)."""
    from .server_fusion import MARK, example_request, show_pipeline

    cluster = opensearch_only(backend, PIPELINES_LIVE_ON_A_CLUSTER)
    body = show_pipeline(cluster, name)
    click.echo(json.dumps(body, indent=2))
    description = str(body.get("description", ""))
    if index and description.startswith(MARK):
        settings = SearchSettings.from_dict(json.loads(description.removeprefix(MARK)), f"pipeline {name!r}")
        click.echo(example_request(cluster, index, name, settings))


@pipeline_group.command("delete")
@click.argument("name")
@backend_options
def pipeline_delete(backend: Backend, name: str) -> None:
    """Delete the search pipeline NAME (only one that hybrid wrote)."""
    from .server_fusion import delete_pipeline

    delete_pipeline(opensearch_only(backend, PIPELINES_LIVE_ON_A_CLUSTER), name)
    console.print(f"deleted search pipeline {name}")


def main() -> None:
    cli(prog_name="hybrid")
