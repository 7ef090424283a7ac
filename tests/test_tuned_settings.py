"""Tuned settings travel with the index: `hybrid tune --apply` records them, every reader uses them, ingest and
re-index keep them, `--clear` removes them, and the gate keeps a choice worse than the defaults out. Evaluation
scores exactly the queries it ran, and a tuning that cannot find anything is refused."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math

import pytest
from click.testing import CliRunner

from hybrid import AsyncSearcher, tuning
from hybrid.backends.local import LocalBackend
from hybrid.cli import cli
from hybrid.documents import Document
from hybrid.errors import GateError, IndexNotFoundError
from hybrid.evaluate import TuneResult, load_qrels, load_queries
from hybrid.ingest import ingest_documents, reindex, rollback
from hybrid.searcher import Searcher
from hybrid.settings import SearchSettings

DOCUMENTS = [
    Document("sun", {"title": "Solar panels", "text": "Photovoltaic cells turn sunlight into electricity."}),
    Document("wind", {"title": "Wind turbines", "text": "Blades catch moving air and spin a generator."}),
    Document("dams", {"title": "Hydropower", "text": "Falling water drives turbines that make electricity."}),
]
CHOSEN = SearchSettings(fusion="z_score", combination="geometric", weights={"bm25": 0.5, "vector": 1.0}, window=50)


def result(heldout: float, default: float, heldout_queries: int = 20) -> TuneResult:
    return TuneResult(CHOSEN, "ndcg@10", 0.61, heldout, default, 20, heldout_queries, 0.042, 252)


async def async_settings(backend, index: str) -> SearchSettings:
    """What an ``AsyncSearcher`` of ``index`` on ``backend`` (opened as an application would) fuses with."""
    where = ({"data_dir": backend.data_dir} if isinstance(backend, LocalBackend)
             else {backend.engine: backend.connection.url})
    async with AsyncSearcher(index, **where) as searcher:
        return await searcher.settings()


@pytest.fixture
def small(any_backend, embedder):
    with contextlib.suppress(IndexNotFoundError):  # versions an interrupted run may have left
        any_backend.delete("tuned-small")
    ingest_documents(DOCUMENTS, "tuned-small", any_backend, embedder, progress=False)
    yield any_backend
    any_backend.delete("tuned-small")


def test_recorded_settings_are_used_kept_across_ingest_and_reindex_and_cleared(small, embedder):
    backend = small
    recorded = tuning.record(backend, "tuned-small", result(0.55, 0.50), {"queries": "q.jsonl", "qrels": "t.tsv"})
    tuned = backend.meta("tuned-small").tuned
    assert tuned == recorded and SearchSettings.from_dict(tuned["settings"]) == CHOSEN
    assert tuned["chosen_on"] | {"recorded_at": None} == {
        "queries": "q.jsonl", "qrels": "t.tsv", "metric": "ndcg@10", "tuning_queries": 20, "tuning_score": 0.61,
        "heldout_queries": 20, "heldout_score": 0.55, "default_heldout_score": 0.50, "p_value": 0.042,
        "settings_tried": 252, "model": embedder.name, "chunking": "off", "forced": False, "recorded_at": None}
    assert Searcher("tuned-small", backend).settings == CHOSEN  # nothing given: the index's own
    assert asyncio.run(async_settings(backend, "tuned-small")) == CHOSEN
    given = SearchSettings(window=7)
    assert Searcher("tuned-small", backend, settings=given).settings == given  # told otherwise
    hits = Searcher("tuned-small", backend).search("electricity from the sun", k=3)
    legs = Searcher("tuned-small", backend).retrieve("electricity from the sun", window=CHOSEN.window)
    assert [h.id for h in hits] == [f.id for f in CHOSEN.fuse(legs, limit=3)]
    assert [h.id for h in hits] != [] and hits[0].score == pytest.approx(CHOSEN.fuse(legs, limit=1)[0].score)

    ingest_documents([Document("sun", {"title": "Solar panels", "text": "Cells turn light into power."})],
                     "tuned-small", backend, embedder, progress=False)
    assert backend.meta("tuned-small").tuned == tuned  # an ingest keeps them
    reindex("tuned-small", backend, embedder, progress=False, chunking="128/64")
    assert backend.meta("tuned-small").tuned == tuned and backend.meta("tuned-small").chunking == "128/64"
    assert tuning.clear(backend, "tuned-small") and backend.meta("tuned-small").tuned is None
    assert Searcher("tuned-small", backend).settings == SearchSettings()
    assert not tuning.clear(backend, "tuned-small")
    rollback("tuned-small", backend)  # recording kept the version chain: rollback still finds the version before
    assert backend.meta("tuned-small").chunking == "" and backend.meta("tuned-small").tuned == tuned


def test_a_choice_worse_than_the_defaults_or_unchecked_is_not_applied_without_force(small):
    backend = small
    with pytest.raises(GateError) as refused:
        tuning.record(backend, "tuned-small", result(0.48, 0.50), {})
    assert "0.4800, below the defaults' 0.5000 (paired t-test p = 0.042)" in str(refused.value)
    with pytest.raises(GateError, match="no held-out query checked it"):
        tuning.record(backend, "tuned-small", result(math.nan, math.nan, heldout_queries=0), {})
    assert backend.meta("tuned-small").tuned is None
    forced = tuning.record(backend, "tuned-small", result(math.nan, math.nan, heldout_queries=0), {}, force=True)
    assert forced["chosen_on"]["forced"] and forced["chosen_on"]["heldout_score"] is None  # JSON has no NaN
    assert backend.meta("tuned-small").tuned == forced
    tuning.record(backend, "tuned-small", result(0.50, 0.50), {})  # as good as the defaults: applied
    assert backend.meta("tuned-small").tuned["chosen_on"]["forced"] is False


def test_eval_scores_exactly_the_queries_it_ran(local_cranfield, cranfield, tmp_path):
    queries = load_queries(cranfield / "queries.jsonl")
    judged = load_qrels(cranfield / "qrels" / "test.tsv")
    some = dict(list((q, t) for q, t in queries.items() if q in judged)[:40])
    (tmp_path / "q40.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in some.items()))
    (tmp_path / "t40.tsv").write_text("".join(f"{q}\t{d}\t{r}\n" for q in some for d, r in judged[q].items()))
    args = ["eval", "--index", "cranfield", "--queries", str(tmp_path / "q40.jsonl"), "--modes", "hybrid",
            "--metrics", "ndcg@10", "--data-dir", str(local_cranfield.data_dir)]
    full = CliRunner().invoke(cli, [*args, "--qrels", str(cranfield / "qrels" / "test.tsv"), "--json"])
    only = CliRunner().invoke(cli, [*args, "--qrels", str(tmp_path / "t40.tsv"), "--json"])
    assert json.loads(full.stdout) == json.loads(only.stdout)
    assert json.loads(full.stdout)["hybrid"]["ndcg@10"] > 0.25  # 0.0542 when the 185 others counted 0
    said = " ".join(CliRunner().invoke(cli, [*args, "--qrels", str(cranfield / "qrels" / "test.tsv")]).output.split())
    assert "40 judged queries scored" in said and f"{len(judged) - 40} judged query ids without text" in said
    test_qrels = str(cranfield / "qrels" / "test.tsv")
    compared = CliRunner().invoke(cli, [*args, "--modes", "bm25,hybrid", "--qrels", test_qrels, "--compare"])
    assert compared.exit_code == 0, compared.output
    assert "bm25" in compared.output and "Traceback" not in compared.output


def test_tuning_on_judgments_of_another_index_is_refused_before_trying_settings(local_cranfield, cranfield,
                                                                                  tmp_path):
    (tmp_path / "other.tsv").write_text("".join(f"{q}\tnot-here-{q}\t1\n" for q in range(1, 60)))
    output = tmp_path / "best.json"
    refused = CliRunner().invoke(cli, ["tune", "--index", "cranfield", "--queries", str(cranfield / "queries.jsonl"),
                                       "--qrels", str(tmp_path / "other.tsv"), "--output", str(output),
                                       "--data-dir", str(local_cranfield.data_dir)])
    assert refused.exit_code == 1 and "neither leg finds any relevant document" in refused.output
    assert not output.exists()


@pytest.mark.parametrize(("command", "metric", "said"), [
    ("tune", ["--metric", "ndcg@zz"], "the cut-off after @ must be a whole number"),
    ("eval", ["--metrics", "ndcg@10,bogus"], "unknown metric 'bogus'"),
])
def test_a_metric_ranx_cannot_compute_is_refused_as_it_is_parsed(tmp_path, command, metric, said):
    refused = CliRunner().invoke(cli, [command, "--index", "absent", *metric, "--data-dir", str(tmp_path)])
    assert refused.exit_code == 2 and said in refused.output and "Traceback" not in refused.output


def test_a_record_this_version_cannot_read_is_said_once_and_the_defaults_used(tmp_path, embedder, caplog):
    from dataclasses import replace

    backend = LocalBackend(tmp_path)
    ingest_documents(DOCUMENTS, "future", backend, embedder, progress=False)
    with backend.lock("future"):  # as a newer hybrid might write it: a fusion method this one does not know
        backend.record_meta("future", replace(backend.meta("future"), tuned={"settings": {"fusion": "rrf2"}}))
    searcher = Searcher("future", backend)
    with caplog.at_level("WARNING", logger="hybrid"):
        assert searcher.search("electricity", k=2) and searcher.search("wind", k=2)
    assert searcher.settings == SearchSettings()
    said = [r.getMessage() for r in caplog.records if "recorded in the index" in r.getMessage()]
    assert len(said) == 1 and "hybrid tune --index future --clear" in said[0] and "rrf2" in said[0]
    cleared = CliRunner().invoke(cli, ["tune", "--index", "future", "--clear", "--data-dir", str(tmp_path)])
    assert cleared.exit_code == 0 and backend.meta("future").tuned is None
    (tmp_path / "t.tsv").write_text("1\tsun\t1\n")
    mixed = CliRunner().invoke(cli, ["tune", "--index", "future", "--clear", "--qrels", str(tmp_path / "t.tsv"),
                                     "--data-dir", str(tmp_path)])
    assert mixed.exit_code == 2 and "--clear takes --index NAME alone" in mixed.output


def test_reindex_with_only_a_precision_is_a_reindex(tmp_path, embedder):
    backend = LocalBackend(tmp_path)
    ingest_documents(DOCUMENTS, "tiny", backend, embedder, progress=False)
    changed = CliRunner().invoke(cli, ["reindex", "--index", "tiny", "--precision", "fp32", "--quiet",
                                       "--data-dir", str(tmp_path)])
    assert changed.exit_code == 0, changed.output
    assert len(backend.versions("tiny")) == 2
    nothing = CliRunner().invoke(cli, ["reindex", "--index", "tiny", "--data-dir", str(tmp_path)])
    assert nothing.exit_code == 2 and "--precision" in nothing.output
