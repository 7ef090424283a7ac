"""Issue #5 figures: fine-tune all-MiniLM-L6-v2 on SciFact and score it on the test queries.

Three runs; the test judgments are used for the final figures and nothing else.
- labelled: trains on qrels/train.tsv (a dev share of those queries gates the model);
- corpus: no labels, pairs made from the corpus; the train judgments only judge the model (--dev-qrels),
  as a user's few judged queries would;
- query-log: the texts of 80 % of the train queries without their judgments (as a query log would
  give them), each paired with its top hybrid hit; the other 20 % of the train judgments judge it.

    python bench/finetune_bench.py [--runs labelled,corpus,query-log] [--max-epochs 4] [--corpus-steps 30]
                                   [--chunk 200/100|off] [--settings tuned.json] [--rescore]

Without --chunk, each fine-tune chooses as `hybrid finetune` does (windows where most documents are longer
than the model reads: on SciFact, 128/64).

Prints vector-only and hybrid nDCG@10 / Recall@100 on SciFact test, base vs fine-tuned, and the time
each fine-tune took (target: under 30 minutes on 2 cores for the labelled run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from hybrid.backends.local import LocalBackend  # noqa: E402
from hybrid.embed import Embedder  # noqa: E402
from hybrid.evaluate import evaluate_modes, load_qrels, load_queries  # noqa: E402
from hybrid.finetune import (  # noqa: E402
    MAX_EPOCHS,
    FinetuneConfig,
    Labels,
    finetune,
    labelled_pairs,
    split_by_query,
    work_indexes,
)
from hybrid.ingest import chosen_chunking  # noqa: E402
from hybrid.searcher import Searcher  # noqa: E402
from hybrid.settings import SearchSettings  # noqa: E402
from hybrid.sources import read_documents  # noqa: E402

METRICS = ["ndcg@10", "recall@100"]


def test_figures(work_dir: Path, index: str, model: str, queries: dict, qrels: dict,
                 settings: SearchSettings | None) -> dict:
    """Score an index the fine-tune left in ``work_dir`` on the test judgments."""
    searcher = Searcher(index, LocalBackend(work_dir / "indexes"), embedder=Embedder(model), settings=settings)
    return evaluate_modes(searcher, queries, qrels, modes=("vector", "hybrid"), metrics=METRICS, progress=False)[0]


def rescore(model: Path, work_dir: Path, before: str, after: str, queries: dict, test: dict,
            settings: SearchSettings | None) -> dict:
    """A kept fine-tune's before/after figures under ``settings`` (e.g. after a change to fusion), without
    training again: test judgments, and the dev share it held out where it wrote one."""
    report = json.loads((model / "hybrid-finetune.json").read_text())
    if (built := LocalBackend(work_dir / "indexes").meta(after).model) != report["model"]:
        raise SystemExit(f"{after} holds {built}'s vectors, not {report['model']}'s: the last fine-tune run replaced "
                         "it; --rescore one run, the last one trained with this --chunk")
    splits = {"test": test}
    if (model / "dev-qrels.tsv").exists():
        splits["dev"] = load_qrels(model / "dev-qrels.tsv")
    return {"fusion": (settings or SearchSettings()).to_dict()} | {
        f"{split}_{when}": test_figures(work_dir, index, name, queries, qrels, settings)
        for split, qrels in splits.items()
        for when, index, name in (("before", before, report["base_model"]), ("after", after, report["model"]))}


def write_dev_qrels(documents, queries: dict, train: dict, path: Path) -> None:
    """The train judgments of the queries a labelled fine-tune held out as its dev share (never trained on)."""
    pairs = labelled_pairs(queries, train, {d.id: d for d in documents})
    dev = {p.query_id for p in split_by_query(pairs, 0.2, 13)[1]}
    path.write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{r}\n" for q in sorted(dev) for d, r in sorted(train[q].items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--models", type=Path, default=Path.home() / ".cache" / "hybrid" / "bench-models")
    parser.add_argument("--max-epochs", type=int, default=MAX_EPOCHS)
    parser.add_argument("--learning-rate", type=float, default=3e-5)
    parser.add_argument("--corpus-steps", type=int, default=30)
    parser.add_argument("--corpus-learning-rate", type=float, default=2e-5)
    parser.add_argument("--runs", default="labelled,corpus,query-log")
    parser.add_argument("--chunk", help="TOKENS/STRIDE or off [default: hybrid finetune's rule]")
    parser.add_argument("--settings", type=Path, help="fusion settings (chosen on train, e.g. by hybrid tune)")
    parser.add_argument("--rescore", action="store_true",
                        help="train nothing: score the runs' kept models and work indexes with --settings")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "finetune.json")
    args = parser.parse_args()
    folder = args.data / "scifact"
    documents = read_documents(folder / "corpus.jsonl")
    queries = load_queries(folder / "queries.jsonl")
    train, test = load_qrels(folder / "qrels" / "train.tsv"), load_qrels(folder / "qrels" / "test.tsv")
    assert not set(train) & set(test), "train and test queries overlap"
    results: dict = {}
    held_out = sorted(train)
    random.Random(13).shuffle(held_out)
    log_dev = {q: train[q] for q in held_out[: len(held_out) // 5]}
    runs = {
        "labelled": (Labels(queries=queries, qrels=train),
                     {"max_epochs": args.max_epochs, "learning_rate": args.learning_rate}),
        "corpus": (Labels(queries=queries, dev_qrels=train),
                   {"max_epochs": 1, "max_steps": args.corpus_steps, "learning_rate": args.corpus_learning_rate}),
        "query-log": (Labels(queries=queries, log_queries={q: queries[q] for q in train}, dev_qrels=log_dev),
                      {"max_epochs": args.max_epochs, "learning_rate": args.learning_rate}),
    }
    work = args.models / "work"  # the base model's index of the corpus is kept and reused between runs
    settings = SearchSettings.load(args.settings) if args.settings else None
    chunking = chosen_chunking(args.chunk, None, documents, Embedder())[0]
    before, after = work_indexes(chunking)
    if args.rescore:
        results = {name: rescore(args.models / f"scifact-{name}", work, before, after, queries, test, settings)
                   for name in args.runs.split(",")}
        text = json.dumps(results, indent=2)
        print(text)
        args.out.with_name(f"{args.out.stem}-rescored-{'-'.join(results)}.json").write_text(text)
        return
    for name in args.runs.split(","):
        labels, options = runs[name]
        config = FinetuneConfig(work_dir=work, chunking=chunking or "off", settings=settings, **options)
        report = finetune(documents, args.models / f"scifact-{name}", labels, config)
        results[name] = {
            "minutes": round(report.seconds / 60, 1), "train_pairs": report.train_pairs, "epochs": report.epochs,
            "dev": {"before": report.before, "after": report.after, "promote": report.promote},
            "chunking": chunking or "off", "fusion": report.settings["fusion"],
            "test_before": test_figures(work, before, report.base_model, queries, test, settings),
            "test_after": test_figures(work, after, report.model, queries, test, settings),
        }
        print(json.dumps({name: results[name]}, indent=2), flush=True)
        if name == "labelled":  # what the fine-tune held out: `hybrid tune` may choose the fusion on it
            write_dev_qrels(documents, queries, train, Path(report.model) / "dev-qrels.tsv")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_name(f"{args.out.stem}-{'-'.join(results)}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
