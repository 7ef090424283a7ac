"""The ``hybrid`` command line: parse options, call one use case, print a table or JSON."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from .backends import open_backend
from .backends.base import Backend
from .embed import DEFAULT_MODEL, Embedder
from .errors import HybridError
from .fusion import DEFAULT_RANK_CONSTANT
from .ingest import ingest
from .searcher import DEFAULT_WINDOW, MODES, Hit, Searcher

console = Console()


class HybridGroup(click.Group):
    """Turns the errors a user can act on into one line and exit status 1, without a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (HybridError, ValueError) as error:
            raise click.ClickException(str(error)) from error


def backend_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the options that choose a backend, and pass the opened backend as ``backend``."""

    @click.option("--data-dir", envvar="HYBRID_DATA_DIR", type=click.Path(file_okay=False),
                  help="Folder of the local indexes [env HYBRID_DATA_DIR; default ~/.hybrid/indexes].")
    @functools.wraps(command)
    def wrapper(data_dir: str | None, **kwargs: Any) -> Any:
        return command(backend=open_backend(data_dir), **kwargs)

    return wrapper


@click.group(cls=HybridGroup)
@click.version_option(package_name="hybrid-search")
def cli() -> None:
    """Hybrid BM25 + vector search with reciprocal rank fusion, embedded or on OpenSearch."""


@cli.command("ingest")
@click.argument("source", type=click.Path(exists=True))
@click.option("--index", required=True, help="Index to create or update.")
@click.option("--id-field", default=None, help="Field holding the document id [default: _id, else id].")
@click.option("--text-fields", default="title,text", show_default=True,
              help="Comma-separated fields that are embedded and searched by BM25.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True,
              help="sentence-transformers model name or path (the default is bundled).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--quiet", is_flag=True, help="No progress bar.")
@backend_options
def ingest_command(backend: Backend, source: str, index: str, id_field: str | None, text_fields: str,
                   model: str, batch_size: int, quiet: bool) -> None:
    """Embed the documents of SOURCE (JSONL, CSV or a folder of .txt/.md) and upsert them into an index."""
    fields = [name.strip() for name in text_fields.split(",") if name.strip()]
    report = ingest(source, index, backend, Embedder(model), id_field=id_field, text_fields=fields,
                    batch_size=batch_size, progress=not quiet)
    console.print(
        f"{index}: read {report.read}, embedded {report.embedded}, unchanged {report.unchanged}; "
        f"{report.count} documents in the index ({report.seconds:.1f} s)"
    )


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
@click.option("--window", default=DEFAULT_WINDOW, show_default=True, type=click.IntRange(min=1),
              help="Candidates each leg retrieves before fusion.")
@click.option("--rank-constant", default=DEFAULT_RANK_CONSTANT, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print hits as JSON.")
@backend_options
def search_command(backend: Backend, query: str, index: str, k: int, mode: str, filters: tuple[str, ...],
                   offset: int, window: int, rank_constant: int, as_json: bool) -> None:
    """Search an index with BM25, vectors, or both fused by RRF."""
    searcher = Searcher(index, backend)
    hits = searcher.search(query, k=k, mode=mode, filters=parse_filters(filters),  # type: ignore[arg-type]
                           offset=offset, window=window, rank_constant=rank_constant)
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
        legs = [f"#{leg.rank} {leg.score:.3f}" if leg else "-" for leg in (hit.bm25, hit.vector)]
        text = " | ".join(str(hit.source[name]) for name in text_fields if hit.source.get(name))
        table.add_row(str(position), hit.id, f"{hit.score:.4f}", *legs, " ".join(text.split()))
    return table


@cli.group("index")
def index_group() -> None:
    """List, inspect or delete indexes."""


@index_group.command("list")
@backend_options
def index_list(backend: Backend) -> None:
    """List the indexes and their sizes."""
    table = Table("index", "documents", "model", "dimension")
    for name in backend.names():
        info = backend.info(name)
        table.add_row(name, str(info.count), info.meta.model, str(info.meta.dimension))
    console.print(table)


@index_group.command("info")
@click.argument("index")
@backend_options
def index_info(backend: Backend, index: str) -> None:
    """Show what an index holds and what it was built with."""
    info = backend.info(index)
    click.echo(json.dumps({"index": info.name, "count": info.count, "location": info.location,
                           **info.meta.to_dict()}, indent=2))


@index_group.command("delete")
@click.argument("index")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@backend_options
def index_delete(backend: Backend, index: str, yes: bool) -> None:
    """Delete an index and everything in it."""
    count = backend.count(index)
    if not yes:
        click.confirm(f"Delete index {index!r} with {count} documents?", abort=True)
    backend.delete(index)
    console.print(f"deleted {index} ({count} documents)")


def main() -> None:
    cli(prog_name="hybrid")
