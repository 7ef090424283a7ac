"""Fine-tuning: pairs, mining, a short real training run, the gate, and re-indexing with rollback."""

from __future__ import annotations

import contextlib
import json
import threading

import pytest
from click.testing import CliRunner

from hybrid.backends.local import LocalBackend
from hybrid.cli import cli
from hybrid.documents import Document
from hybrid.embed import DEFAULT_MODEL, Embedder
from hybrid.errors import GateError, HybridError, IndexNotFoundError
from hybrid.evaluate import load_qrels, load_queries
from hybrid.finetune import (
    DEV_METRIC,
    FinetuneConfig,
    FinetuneReport,
    Labels,
    finetune,
    gate,
    labelled_pairs,
    mine_negatives,
    pseudo_pairs,
    retrieval_pairs,
    split_by_query,
)
from hybrid.ingest import ingest_documents, reindex, rollback
from hybrid.searcher import Searcher
from hybrid.settings import SearchSettings
from hybrid.sources import read_documents

CORPUS = [
    Document("sun", {"title": "Solar panels", "text": "Photovoltaic cells turn sunlight into electricity. "
                     "They work best facing south. Output falls on cloudy days and at night."}),
    Document("sun-copy", {"title": "Solar panels", "text": "Photovoltaic cells turn sunlight into electricity. "
                          "They work best facing south. Output falls on cloudy days and at night!"}),
    Document("wind", {"title": "Wind turbines", "text": "Blades catch moving air and spin a generator."}),
    Document("bread", {"title": "Sourdough", "text": "Wild yeast leavens the dough over many hours."}),
    Document("coffee", {"title": "Espresso", "text": "Hot water is forced through finely ground coffee."}),
    Document("dams", {"title": "Hydropower", "text": "Falling water drives turbines that make electricity."}),
]


def test_labelled_pairs_keep_positive_judgments_only():
    by_id = {d.id: d for d in CORPUS}
    pairs = labelled_pairs({"q1": "solar power", "q2": "bread"}, {"q1": {"sun": 1, "wind": 0}, "q2": {"bread": 2},
                                                                  "q3": {"sun": 1}}, by_id)
    assert [(p.query_id, p.doc_id) for p in pairs] == [("q1", "sun"), ("q2", "bread")]
    assert pairs[0].positive == by_id["sun"].text


def test_pseudo_pairs_title_to_body_and_inverse_cloze():
    pairs = pseudo_pairs(CORPUS[:1])
    title, cloze = pairs
    assert (title.query, title.positive) == ("Solar panels", CORPUS[0].fields["text"])
    assert cloze.query in CORPUS[0].fields["text"] and cloze.query not in cloze.positive


def test_split_holds_out_whole_queries():
    pairs = pseudo_pairs(CORPUS)
    train, dev = split_by_query(pairs, 0.3)
    assert train and dev and not {p.query_id for p in train} & {p.query_id for p in dev}


def test_mined_negatives_skip_positives_and_near_duplicates(tmp_path, embedder):
    backend = LocalBackend(tmp_path)
    ingest_documents(CORPUS, "tiny", backend, embedder, progress=False)
    pairs = labelled_pairs({"q": "solar panels make electricity from sunlight"}, {"q": {"sun": 1}},
                           {d.id: d for d in CORPUS})
    [negative] = mine_negatives(pairs, Searcher("tiny", backend, embedder=embedder))
    assert negative not in ("sun", "sun-copy") and negative in {d.id for d in CORPUS}


def test_log_queries_pair_with_their_top_hybrid_hit_and_skip_near_ranks(tmp_path, embedder):
    backend = LocalBackend(tmp_path)
    ingest_documents(CORPUS, "tiny", backend, embedder, progress=False)
    searcher = Searcher("tiny", backend, embedder=embedder)
    pairs = retrieval_pairs({"q1": "wind turbines spin generators", "q2": "sourdough bread yeast"}, searcher)
    assert [(p.query_id, p.doc_id) for p in pairs] == [("q1", "wind"), ("q2", "bread")]
    assert pairs[0].positive == next(d.text for d in CORPUS if d.id == "wind")
    ranked = [hit.id for hit in searcher.search("wind turbines spin generators", k=6)]
    near, far = mine_negatives(pairs[:1], searcher), mine_negatives(pairs[:1], searcher, skip=4)
    assert near[0] in ranked[1:]
    assert far == ranked[5:]  # only the last candidate is left after skipping 4


def test_gate_refuses_a_model_that_is_not_better():
    before = {"vector": {"ndcg@10": 0.60}, "hybrid": {"ndcg@10": 0.70}}
    promote, verdict = gate(before, {"vector": {"ndcg@10": 0.58}, "hybrid": {"ndcg@10": 0.71}})
    assert not promote and "NOT better" in verdict
    promote, _ = gate(before, {"vector": {"ndcg@10": 0.62}, "hybrid": {"ndcg@10": 0.69}})
    assert not promote
    better = {"vector": {"ndcg@10": 0.62}, "hybrid": {"ndcg@10": 0.70}}
    assert gate(before, better)[0]
    promote, verdict = gate(before, better, judged=False)  # pseudo-queries cannot prove a gain
    assert not promote and "NOT proven" in verdict and "--dev-qrels" in verdict


def test_dev_judgments_must_not_overlap_training_judgments(cranfield):
    documents = read_documents(cranfield / "corpus.jsonl")[:50]
    queries = {"1": "what similarity laws must be obeyed", "2": "supersonic flow"}
    with pytest.raises(ValueError, match="in both the training and the dev judgments"):
        finetune(documents, "unused", Labels(queries=queries, qrels={"1": {"1": 1}, "2": {"2": 1}},
                                             dev_qrels={"2": {"3": 1}}), FinetuneConfig(progress=False))
    with pytest.raises(ValueError, match="dev judgments need the text of their queries"):
        finetune(documents, "unused", Labels(dev_qrels={"2": {"3": 1}}), FinetuneConfig(progress=False))


@pytest.fixture(scope="module")
def short_finetune(tmp_path_factory, cranfield):
    """A few real training steps on Cranfield without labels, at a learning rate that harms the model."""
    documents = read_documents(cranfield / "corpus.jsonl")[:150]
    output = tmp_path_factory.mktemp("tuned")
    report = finetune(documents, output, config=FinetuneConfig(
        batch_size=8, learning_rate=5e-3, max_steps=4, dev_share=0.3, progress=False, chunking="128/64",
        settings=SearchSettings(fusion="min_max", weights={"bm25": 0.5, "vector": 1.0})))
    return report, documents


def test_short_finetune_saves_a_loadable_model_and_an_honest_report(short_finetune):
    report, _ = short_finetune
    assert not report.labelled and report.train_pairs > 0 and report.dev_queries > 0
    assert set(report.before) == set(report.after) == {"vector", "hybrid"}
    assert Embedder(report.model).encode(["a test"]).shape == (1, 384)
    assert FinetuneReport.load(report.model) == report
    # A learning rate of 5e-3 wrecks a pretrained encoder: the gate must say so.
    assert report.after["vector"]["ndcg@10"] < report.before["vector"]["ndcg@10"]
    assert not report.promote and "NOT better" in report.verdict and not report.dev_judged
    # both models were judged as the index would use them: its chunking and its fusion
    assert report.settings["chunking"] == "128/64" and report.settings["fusion"]["fusion"] == "min_max"
    # the dev curve: the base model (epoch 0), then the check where its 4 steps stopped, inside epoch 1
    epochs = [point["epoch"] for point in report.epochs]
    assert len(epochs) == 2 and epochs[0] == 0 and 0 < epochs[1] <= 1
    assert all(0 <= point[DEV_METRIC] <= 1 for point in report.epochs)
    assert report.epochs[1][DEV_METRIC] < report.epochs[0][DEV_METRIC]  # the wrecked model scores lower


def test_mining_and_query_log_pairs_fuse_as_search_does(local_cranfield):
    settings = SearchSettings(fusion="z_score", combination="geometric", weights={"bm25": 0.5, "vector": 1.0})
    searcher = Searcher("cranfield", local_cranfield, settings=settings)
    queries = {"q1": "boundary layer separation", "q2": "heat transfer in hypersonic flow", "q3": "jet noise"}
    pairs = retrieval_pairs(queries, searcher)
    assert [p.doc_id for p in pairs] == [searcher.search(q, k=1)[0].id for q in queries.values()]
    assert any(p.doc_id != Searcher("cranfield", local_cranfield).search(p.query, k=1)[0].id for p in pairs)


@pytest.fixture
def small_index(any_backend, embedder, short_finetune):
    from cluster import cli_args

    _, documents = short_finetune
    backend, args = any_backend, cli_args(any_backend)
    with contextlib.suppress(IndexNotFoundError):  # versions an interrupted run may have left
        backend.delete("reindexed")
    ingest_documents(documents[:60], "reindexed", backend, embedder, progress=False)
    yield backend, args
    backend.delete("reindexed")


def test_reindex_switches_model_without_downtime_and_rolls_back(small_index, short_finetune, embedder):
    backend, args = small_index
    report, documents = short_finetune
    refused = CliRunner().invoke(cli, ["reindex", "--index", "reindexed", "--model", report.model, *args])
    assert refused.exit_code == 1 and "did not pass its evaluation" in refused.output
    assert backend.meta("reindexed").model == DEFAULT_MODEL

    searcher = Searcher("reindexed", backend, snapshot_ttl_s=0)
    failures, answered, stop = [], [], threading.Event()

    def keep_querying():
        while not stop.is_set():
            try:
                answered.append(len(searcher.search("supersonic flow", k=5)))
            except Exception as error:  # any failure during the switch is what this test looks for
                failures.append(error)

    worker = threading.Thread(target=keep_querying)
    worker.start()
    with pytest.raises(GateError, match="did not pass its evaluation"):  # the library enforces the gate too
        reindex("reindexed", backend, Embedder(report.model), progress=False)
    try:
        result = reindex("reindexed", backend, Embedder(report.model), progress=False, force=True)
    finally:
        stop.set()
        worker.join()
    assert failures == [] and answered and min(answered) == 5
    assert backend.meta("reindexed").model == report.model and backend.count("reindexed") == 60
    versions = backend.versions("reindexed")
    [current] = [v for v in versions if v.serving]
    assert (current.name, current.previous) == (result.version, result.previous)
    assert result.previous in {v.name for v in versions}
    searcher.search("supersonic flow")
    assert searcher.embedder.name == report.model  # the searcher follows the index's recorded model

    back = CliRunner().invoke(cli, ["reindex", "--index", "reindexed", "--rollback", *args])
    assert back.exit_code == 0, back.output
    assert backend.meta("reindexed").model == DEFAULT_MODEL
    with pytest.raises(HybridError, match="nothing to roll back to"):
        rollback("reindexed", backend)

    backend.delete("reindexed")  # every version goes, the ones kept for rollback too
    ingest_documents(documents[:5], "reindexed", backend, embedder, progress=False)
    assert len(backend.versions("reindexed")) == 1


@pytest.mark.parametrize("pairs", ["corpus", "log queries"])
def test_finetune_cli_without_labels_judged_on_dev_qrels(tmp_path, cranfield, pairs):
    """Label-free training (from the corpus, or from unjudged queries), judged on real Cranfield judgments."""
    corpus = tmp_path / "corpus.jsonl"
    lines = (cranfield / "corpus.jsonl").read_text().splitlines()[:80]
    corpus.write_text("".join(line + "\n" for line in lines))
    kept = {json.loads(line)["_id"] for line in lines}
    judged = {query: {doc: 1 for doc in docs if doc in kept}
              for query, docs in load_qrels(cranfield / "qrels" / "test.tsv").items()}
    judged = {query: docs for query, docs in judged.items() if docs}
    dev_qrels = tmp_path / "dev.tsv"
    dev_qrels.write_text("".join(f"{q}\t{d}\t1\n" for q, docs in judged.items() for d in docs))
    queries = cranfield / "queries.jsonl"
    log = {query: text for query, text in list(load_queries(queries).items())[:40]}
    extra = []
    if pairs == "log queries":
        (tmp_path / "log.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in log.items()))
        extra = ["--log-queries", str(tmp_path / "log.jsonl")]
    result = CliRunner().invoke(cli, ["finetune", "--corpus", str(corpus), "--output", str(tmp_path / "model"),
                                      "--queries", str(queries), "--dev-qrels", str(dev_qrels), *extra,
                                      "--max-steps", "1", "--batch-size", "4", "--json"], catch_exceptions=False,
                                # no --index: the cluster settings of the environment are never used, nor tried
                                env={"OPENSEARCH_URL": "http://127.0.0.1:9", "ELASTICSEARCH_URL": "http://127.0.0.1:9"})
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["model"] == str((tmp_path / "model").resolve()) and report["settings"]["pairs"] == pairs
    assert not report["labelled"] and report["dev_judged"] and report["dev_queries"] == len(judged)
    if pairs == "corpus":
        assert report["train_pairs"] == len(pseudo_pairs(read_documents(corpus)))  # none held out for dev
    else:
        assert report["train_pairs"] == len(set(log) - set(judged))  # judged queries are never trained on
    assert 0 < report["before"]["hybrid"]["ndcg@10"] <= 1
