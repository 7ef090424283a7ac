"""Adapt the embedding model to a small corpus, and prove on held-out judgments whether it helped.

With judgments, training pairs are (query, judged document); without, they come from the corpus
itself: title -> body, and inverse-cloze pairs (one sentence -> the rest of its passage). Each pair
gets a hard negative mined with the project's own hybrid retrieval under the base model (judged
positives and near-duplicates of them excluded). Training is sentence-transformers' trainer with
MultipleNegativesRankingLoss; a dev share of the queries is held out (or separate dev judgments are
given) and scored before training and after every epoch; training runs up to ``FinetuneConfig.max_epochs``
(4), stops once ``patience`` epochs bring no gain on dev (never on test), and keeps the best epoch's
weights; the curve is reported. The model is then scored before and after on the whole corpus.
The model is marked for promotion only when it beats the base model there, on judged queries: a dev
share of pseudo-queries rewards the training task itself (on SciFact it rose while real queries fell).
With a chunked index, judged documents and negatives are trained as their best window for the query
(``seen_texts``), the text the vector leg will compare the query with.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .backends.local import LocalBackend, LocalIndex
from .documents import Document, document_text
from .embed import DEFAULT_MODEL, Embedder, resolve_model_path
from .errors import require_extra
from .evaluate import Qrels, evaluate_modes
from .ingest import chosen_chunking, ingest_documents, splitter
from .promotion import REPORT_FILE
from .searcher import Searcher, candidate_depth
from .settings import SearchSettings

TRAINING_MODULES = ("datasets", "accelerate", "ranx")
"""What training needs beyond the base install (sentence-transformers' trainer, and the evaluation)."""
GATE_METRICS = ("ndcg@10", "recall@100")
EVALUATOR_QUERIES = 300
"""Dev queries in the per-epoch check (the final before/after figures use every dev query)."""
DEV_METRIC = "dev_cosine_ndcg@10"
"""What chooses the epoch: vector nDCG@10 of the dev queries on the per-epoch check's small corpus."""
MAX_EPOCHS = 4
"""The most epochs a fine-tune trains; the dev queries choose the best of them."""
NEAR_DUPLICATE = 0.95
"""Cosine above which a mined candidate counts as a copy of a positive, not as a negative."""


@dataclass(frozen=True)
class Pair:
    """A training or dev example: a query and the text of the document it should find."""

    query_id: str
    query: str
    doc_id: str
    positive: str


def labelled_pairs(queries: Mapping[str, str], qrels: Qrels, documents: Mapping[str, Document]) -> list[Pair]:
    """(query, judged-relevant document) for every positive judgment whose query and document exist."""
    return [
        Pair(query_id, queries[query_id], doc_id, documents[doc_id].text)
        for query_id, judged in sorted(qrels.items())
        for doc_id, relevance in sorted(judged.items())
        if relevance > 0 and query_id in queries and doc_id in documents
    ]


def pseudo_pairs(documents: Sequence[Document], seed: int = 13) -> list[Pair]:
    """Label-free pairs: title -> body where a title exists, and one sentence -> the rest of its passage."""
    rng = random.Random(seed)
    pairs = []
    for doc in documents:
        title, body = str(doc.fields.get("title") or ""), str(doc.fields.get("text") or "")
        if title.strip() and body.strip() and title.strip() != body.strip():
            pairs.append(Pair(f"title:{doc.id}", title, doc.id, body))
        sentences = [s for s in re.split(r"(?<=[.!?])\s+", body) if len(s.split()) >= 5]
        if len(sentences) >= 3:
            chosen = rng.randrange(len(sentences))
            rest = " ".join(s for i, s in enumerate(sentences) if i != chosen)
            pairs.append(Pair(f"cloze:{doc.id}", sentences[chosen], doc.id, f"{title}\n{rest}".strip()))
    return pairs


def split_by_query(pairs: Sequence[Pair], dev_share: float, seed: int = 13) -> tuple[list[Pair], list[Pair]]:
    """Hold out whole queries (never one query's pairs on both sides)."""
    query_ids = sorted({p.query_id for p in pairs})
    random.Random(seed).shuffle(query_ids)
    dev_ids = set(query_ids[: max(1, round(len(query_ids) * dev_share))]) if dev_share > 0 else set()
    return [p for p in pairs if p.query_id not in dev_ids], [p for p in pairs if p.query_id in dev_ids]


def _fused_ids(searcher: Searcher, queries: Sequence[str], depth: int) -> list[list[str]]:
    """Each query's top ``depth`` hybrid ids, fused with the searcher's settings from legs as deep as a
    search for them would retrieve, queries encoded at once."""
    settings = searcher.settings  # read once: a property that looks up the serving version
    legs_depth = candidate_depth(settings.window, depth)
    return [[hit.id for hit in settings.fuse(legs, legs_depth, limit=depth)]
            for legs in searcher.retrieve_many(queries, window=legs_depth)]


def _local_index(searcher: Searcher) -> LocalIndex:
    if not isinstance(searcher.backend, LocalBackend):
        raise TypeError("mining needs a searcher over a local index")
    return searcher.backend.load(searcher.index)


def retrieval_pairs(queries: Mapping[str, str], searcher: Searcher) -> list[Pair]:
    """Queries without judgments (a query log): each paired with its top hybrid hit under the base model.

    The hybrid ranks better than the vector leg alone, so the model learns what BM25 adds; the
    positives are guesses (on SciFact the top hit is relevant for 57 % of 648 train queries).
    """
    index = _local_index(searcher)
    # The legs' full window, as a search would use: with a window of 1, the top hit would be a tie
    # between the two legs' first hits, settled by id.
    fused = _fused_ids(searcher, list(queries.values()), searcher.settings.window)
    return [Pair(query_id, query, ids[0], index.text(index.rows[ids[0]]))
            for (query_id, query), ids in zip(queries.items(), fused) if ids]


def mine_negatives(pairs: Sequence[Pair], searcher: Searcher, depth: int = 30, skip: int = 0,
                   seed: int = 13) -> list[str]:
    """One hard negative's id per pair, drawn from the query's top hybrid hits under the base model.

    ``searcher`` must search a local index (its vectors spot near-duplicates). Judged positives of
    the query and candidates nearly identical to one of them (cosine >= 0.95: often the same text
    twice in a corpus) are skipped, and so are the first ``skip`` candidates where more remain (when
    positives are guesses, the next hits may be relevant too); a pair with no candidate left gets a
    random document.
    """
    index = _local_index(searcher)
    row = index.rows
    positives: dict[str, set[str]] = {}
    for pair in pairs:
        positives.setdefault(pair.query_id, set()).add(pair.doc_id)
    rng = random.Random(seed)
    negatives = []
    for pair, fused in zip(pairs, _fused_ids(searcher, [p.query for p in pairs], depth)):
        own = np.stack([index.lead_vectors[row[d]] for d in positives[pair.query_id] if d in row] or
                       [np.zeros(index.lead_vectors.shape[1], dtype=np.float32)])
        allowed = [
            doc_id for doc_id in fused
            if doc_id not in positives[pair.query_id]
            and float(np.max(own @ index.lead_vectors[row[doc_id]])) < NEAR_DUPLICATE
        ]
        candidates = allowed[skip:skip + 10] or allowed[-10:]
        negatives.append(rng.choice(candidates) if candidates else rng.choice(index.ids))
    return negatives


def seen_texts(searcher: Searcher, queries: Sequence[str], doc_ids: Sequence[str]) -> list[str]:
    """What the vector leg compares each query with in its document: the whole text, or in a chunked
    index the window the base model scores highest for the query.

    Training on those windows teaches the model the comparison it will make; a whole long document
    would be cut at the model's word-piece limit (on SciFact 71% of documents lose their end), and
    a window of it is what the index holds.
    """
    index = _local_index(searcher)
    rows = [index.rows[doc_id] for doc_id in doc_ids]
    if index.owners is None:
        return [index.text(row) for row in rows]
    split = splitter(searcher.embedder, index.meta)
    vectors = index.document_vectors()
    texts = []
    for query_vector, doc_id, row in zip(searcher.embedder.encode(list(queries)), doc_ids, rows):
        windows = split(Document(doc_id, index.fields[row], index.meta.text_fields))
        if len(windows) != len(vectors[row]):
            raise ValueError(f"document {doc_id!r} splits into {len(windows)} windows, the index holds "
                             f"{len(vectors[row])}: was it built with another model's tokenizer?")
        texts.append(windows[int(np.argmax(vectors[row] @ query_vector))])
    return texts


@dataclass
class FinetuneReport:
    """Before/after figures on the dev share, over the whole corpus, and the gate's verdict."""

    base_model: str
    model: str
    labelled: bool
    train_pairs: int
    dev_queries: int
    before: dict[str, dict[str, float]]
    after: dict[str, dict[str, float]]
    promote: bool
    verdict: str
    seconds: float
    dev_judged: bool = True
    settings: dict[str, Any] = field(default_factory=dict)
    epochs: list[dict[str, float]] = field(default_factory=list)
    """The dev curve: the per-epoch check's score before training (epoch 0) and after each epoch."""

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / REPORT_FILE
        path.write_text(json.dumps(asdict(self), indent=2))
        return path

    @classmethod
    def load(cls, folder: str | Path) -> FinetuneReport | None:
        path = Path(folder) / REPORT_FILE
        return cls(**json.loads(path.read_text())) if path.exists() else None


def evaluate_dev(searcher: Searcher, pairs: Sequence[Pair], judgments: Qrels) -> dict[str, dict[str, float]]:
    """Vector-only and hybrid figures for the dev queries over the whole corpus."""
    queries = {p.query_id: p.query for p in pairs}
    return evaluate_modes(searcher, queries, {q: judgments[q] for q in queries}, modes=("vector", "hybrid"),
                          metrics=GATE_METRICS, progress=False)[0]


def gate(before: Mapping[str, Mapping[str, float]], after: Mapping[str, Mapping[str, float]],
         judged: bool = True) -> tuple[bool, str]:
    """Promote only a model that beats the base on vector nDCG@10 without losing hybrid nDCG@10,
    measured on judged queries."""
    vector = after["vector"]["ndcg@10"] - before["vector"]["ndcg@10"]
    hybrid = after["hybrid"]["ndcg@10"] - before["hybrid"]["ndcg@10"]
    change = f"vector nDCG@10 {vector:+.4f}, hybrid {hybrid:+.4f} on the dev queries"
    if not (vector > 0 and hybrid >= 0):
        return False, (f"NOT better than the base model ({change}): keep the base model; this one is not marked "
                       "for promotion")
    if not judged:
        return False, (f"NOT proven: {change}, but these dev queries are not judged (their relevant document is "
                       "the passage they were cut from, or the base model's top hit), which rewards the training "
                       "task itself; judge a few dozen real queries and pass them with --dev-qrels to prove a gain. "
                       "Not marked for promotion")
    return True, f"better: {change}"


def check_dev_judgments(queries: Mapping[str, str] | None, qrels: Qrels | None, dev_qrels: Qrels | None) -> None:
    """Refuse, before any work, dev judgments without query texts or shared with the training ones."""
    if not dev_qrels:
        return
    if not queries:
        raise ValueError("dev judgments need the text of their queries")
    shared = set(dev_qrels) & set(qrels or {})
    if shared:
        raise ValueError(f"{len(shared)} queries are in both the training and the dev judgments "
                         f"(e.g. {sorted(shared)[0]}): a model must not be judged on what it was trained on")


def dev_split(pairs: list[Pair], queries: Mapping[str, str] | None, dev_qrels: Qrels | None,
              training_qrels: Qrels | None, documents: Mapping[str, Document], dev_share: float,
              seed: int) -> tuple[list[Pair], list[Pair], Qrels]:
    """Training pairs, dev pairs and the dev judgments: ``dev_qrels`` (never trained on), or a held-out
    share of the training queries, judged by ``training_qrels`` (else each judges only its own positive)."""
    if dev_qrels and queries:
        return pairs, labelled_pairs(queries, dev_qrels, documents), dev_qrels
    train, dev = split_by_query(pairs, dev_share, seed)
    return train, dev, training_qrels if training_qrels else {p.query_id: {p.doc_id: 1} for p in dev}


@dataclass(frozen=True)
class Labels:
    """What a model learns from and is judged on: judged queries (``queries`` + ``qrels``), else a query log
    (``log_queries``: queries without judgments, see ``retrieval_pairs``), else the corpus itself.
    ``dev_qrels`` (texts in ``queries``) judge the model, never trained on, instead of a dev share of the
    training queries; without labels for training they are what can prove a gain."""

    queries: Mapping[str, str] | None = None
    qrels: Qrels | None = None
    dev_qrels: Qrels | None = None
    log_queries: Mapping[str, str] | None = None

    @property
    def labelled(self) -> bool:
        return bool(self.queries and self.qrels)


@dataclass(frozen=True)
class FinetuneConfig:
    """How ``finetune`` trains and judges; the CLI, the bench and the tests each build one.

    Training runs up to ``max_epochs``; the dev queries are scored after each epoch and the best epoch's
    weights are kept, stopping once ``patience`` epochs in a row did not improve on it (early stopping on
    dev, never on test), so the number of epochs is chosen, not guessed. ``max_steps`` (> 0) caps the
    steps instead. ``settings`` and ``chunking`` are the index's fusion settings and windows (None: the
    defaults, and whole documents): mining, the windows trained on and the gate use them, so the models
    are compared as the index would use them. ``work_dir`` keeps the "before" and "after" indexes (a
    temporary folder by default); reusing it skips re-embedding the corpus with the base model."""

    base_model: str = DEFAULT_MODEL
    max_epochs: int = MAX_EPOCHS
    patience: int = 1
    batch_size: int = 32
    learning_rate: float = 3e-5
    dev_share: float = 0.2
    max_steps: int = -1
    seed: int = 13
    settings: SearchSettings | None = None
    chunking: str | None = None
    work_dir: str | Path | None = None
    progress: bool = True


@dataclass(frozen=True)
class TrainingSet:
    """What one training run sees: its pairs, a mined negative per pair, and the dev queries that choose
    the epoch (with the judgments that score them)."""

    train: Sequence[Pair]
    negatives: Sequence[str]
    dev: Sequence[Pair]
    judgments: Qrels


def finetune(documents: Sequence[Document], output: str | Path, labels: Labels = Labels(),
             config: FinetuneConfig = FinetuneConfig()) -> FinetuneReport:
    """Fine-tune ``config.base_model`` on ``documents`` (and ``labels``); save it and its report in ``output``,
    with the gate's verdict on the dev queries over the whole corpus (see ``gate``)."""
    require_extra("train", *TRAINING_MODULES)
    started = time.perf_counter()
    check_dev_judgments(labels.queries, labels.qrels, labels.dev_qrels)
    by_id = {d.id: d for d in documents}
    judged = labels.labelled or bool(labels.dev_qrels)
    log = {} if labels.labelled else {q: text for q, text in (labels.log_queries or {}).items()
                                      if q not in (labels.dev_qrels or {})}
    pairs = labelled_pairs(labels.queries or {}, labels.qrels or {}, by_id) if labels.labelled else [] if log else \
        pseudo_pairs(documents, config.seed)
    if not (pairs or log):
        raise ValueError("no training pairs: no judged query matches the corpus, and no queries, titles or passages "
                         "to use")
    with tempfile.TemporaryDirectory() as scratch:
        backend = LocalBackend(Path(config.work_dir or scratch) / "indexes")
        base = Embedder(config.base_model)
        chunks = chosen_chunking(config.chunking, None, documents, base)[0]
        before_index, after_index = work_indexes(chunks)
        ingest_documents(documents, before_index, backend, base, progress=config.progress, chunking=chunks)
        before_searcher = Searcher(before_index, backend, embedder=base, settings=config.settings)
        pairs = pairs or retrieval_pairs(log, before_searcher)
        train, dev, judgments = dev_split(pairs, labels.queries, labels.dev_qrels, labels.qrels, by_id,
                                          config.dev_share, config.seed)
        before = evaluate_dev(before_searcher, dev, judgments) if dev else {}
        queries_of_train = [p.query for p in train]
        if chunks and (labels.labelled or log):  # positives that are whole documents: train on their best windows
            train = [replace(pair, positive=text) for pair, text in
                     zip(train, seen_texts(before_searcher, queries_of_train, [p.doc_id for p in train]))]
        negatives = seen_texts(before_searcher, queries_of_train,
                               mine_negatives(train, before_searcher, skip=10 if log else 0, seed=config.seed))
        model_path, curve = _train(config, TrainingSet(train, negatives, dev, judgments), before_searcher,
                                   Path(output))
        tuned = Embedder(str(model_path))
        if backend.exists(after_index):  # left by an earlier run in the same work_dir, for another model
            backend.delete(after_index)
        ingest_documents(documents, after_index, backend, tuned, progress=config.progress, chunking=chunks)
        after_searcher = Searcher(after_index, backend, embedder=tuned, settings=config.settings)
        after = evaluate_dev(after_searcher, dev, judgments) if dev else {}
    promote, verdict = gate(before, after, judged) if dev else (False, "no dev queries: nothing proves a gain")
    report = FinetuneReport(
        base_model=config.base_model, model=str(model_path), labelled=labels.labelled, train_pairs=len(train),
        dev_queries=len({p.query_id for p in dev}), before=before, after=after, promote=promote, verdict=verdict,
        seconds=round(time.perf_counter() - started, 1), dev_judged=judged, epochs=curve,
        settings={"pairs": "judged" if labels.labelled else "log queries" if log else "corpus",
                  "max_epochs": config.max_epochs, "patience": config.patience, "batch_size": config.batch_size,
                  "learning_rate": config.learning_rate, "dev_share": config.dev_share,
                  "max_steps": config.max_steps, "seed": config.seed, "chunking": chunks or "off",
                  "fusion": (config.settings or SearchSettings()).to_dict()},
    )
    report.save(model_path)
    return report


def work_indexes(chunking: str) -> tuple[str, str]:
    """Names of the "before" and "after" indexes in a work folder, one pair per chunking."""
    tag = chunking.replace("/", "-") or "whole"
    return f"before-{tag}", f"after-{tag}"


def _train(config: FinetuneConfig, data: TrainingSet, base_searcher: Searcher,
           output: Path) -> tuple[Path, list[dict[str, float]]]:
    """sentence-transformers training with in-batch and mined negatives, up to ``config.max_epochs``: the
    dev queries are scored before training and after each epoch, and the best epoch's weights are kept.
    Returns the saved model's folder and that curve (epoch 0: the base model)."""
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )
    from transformers import EarlyStoppingCallback

    model = SentenceTransformer(resolve_model_path(config.base_model))
    dataset = Dataset.from_dict({"anchor": [p.query for p in data.train],
                                 "positive": [p.positive for p in data.train], "negative": list(data.negatives)})
    evaluator = _dev_evaluator(data.dev, base_searcher, data.judgments) if data.dev else None
    curve = [{"epoch": 0.0, DEV_METRIC: round(float(evaluator(model)[DEV_METRIC]), 4)}] if evaluator else []
    steps_per_epoch = math.ceil(len(data.train) / config.batch_size)
    total = config.max_steps if config.max_steps > 0 else config.max_epochs * steps_per_epoch
    checkpoints = output / "checkpoints"
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints), num_train_epochs=config.max_epochs, max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate, seed=config.seed,
        warmup_steps=max(1, total // 10),
        batch_sampler=BatchSamplers.NO_DUPLICATES,  # a text twice in a batch would be its own false negative
        eval_strategy="epoch" if evaluator else "no", save_strategy="epoch" if evaluator else "no",
        load_best_model_at_end=evaluator is not None, metric_for_best_model=f"eval_{DEV_METRIC}",
        save_total_limit=config.patience + 1, logging_steps=10, report_to="none", disable_tqdm=not config.progress,
        dataloader_num_workers=0, dataloader_pin_memory=False,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=dataset, loss=MultipleNegativesRankingLoss(model), evaluator=evaluator,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=config.patience)] if evaluator else None)
    with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its logs; stdout is for our report
        trainer.train()
    curve += [{"epoch": round(float(entry["epoch"]), 2), DEV_METRIC: round(float(entry[f"eval_{DEV_METRIC}"]), 4)}
              for entry in trainer.state.log_history if f"eval_{DEV_METRIC}" in entry]
    output.mkdir(parents=True, exist_ok=True)
    model.save(str(output))
    shutil.rmtree(checkpoints, ignore_errors=True)
    return output.resolve(), curve


def _dev_evaluator(dev: Sequence[Pair], base_searcher: Searcher, judgments: Qrels) -> Any:
    """Per-epoch dev check on a small corpus: the dev positives plus each dev query's top base-model
    candidates, so an epoch's evaluation costs seconds, not a re-embedding of the whole corpus."""
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    queries = dict(list({p.query_id: p.query for p in dev}.items())[:EVALUATOR_QUERIES])
    dev = [p for p in dev if p.query_id in queries]
    relevant: dict[str, set[str]] = {}
    corpus: dict[str, str] = {}
    for pair in dev:
        relevant[pair.query_id] = {d for d, r in judgments[pair.query_id].items() if r > 0}
        corpus[pair.doc_id] = pair.positive
    for query in queries.values():
        for hit in base_searcher.search(query, k=10):
            corpus.setdefault(hit.id, document_text(hit.source, base_searcher.meta.text_fields))
    return InformationRetrievalEvaluator(queries, corpus, relevant, name="dev", show_progress_bar=False)
