"""Evaluation: run queries through any backend in every mode and score the runs with ranx.

Metrics come from ranx (nDCG, recall, MRR, MAP, with trec_eval's definitions: linear gain), not from
formulas of ours. Runs can be saved as TREC run files and compared with ranx's paired t-test. The
tuner searches fusion methods and their settings on tuning queries and scores the best on held-out ones.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .backends.base import LegHit
from .errors import BadRequestError, SourceError, require_extra
from .fusion import COMBINATIONS, METHODS, Method
from .searcher import MODES, Mode, Searcher
from .settings import SearchSettings

DEFAULT_METRICS = ("ndcg@10", "recall@100", "mrr@10", "map@100")
METRIC_NAMES = ("ndcg", "recall", "precision", "mrr", "map", "hits", "hit_rate", "f1", "r-precision", "bpref",
                "ndcg_burges", "dcg", "dcg_burges")
"""ranx's metrics that take judgments alone (each ``NAME`` or ``NAME@K``)."""
Run = dict[str, dict[str, float]]
Qrels = dict[str, dict[str, int]]


def load_queries(path: str | Path) -> dict[str, str]:
    """BEIR queries.jsonl: one ``{"_id", "text"}`` per line."""
    queries = {}
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                queries[str(record["_id"])] = record["text"]
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise SourceError(f"{path}, line {number}: expected {{\"_id\", \"text\"}} ({error})") from None
    return queries


def load_qrels(path: str | Path) -> Qrels:
    """BEIR qrels (``query-id corpus-id score``, header line optional) or TREC qrels (``qid 0 docid rel``)."""
    qrels: Qrels = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        row = line.split()
        if not row or (number == 1 and not row[-1].lstrip("-").isdigit()):
            continue  # blank line or BEIR header
        if len(row) not in (3, 4) or not row[-1].lstrip("-").isdigit():
            raise SourceError(f"{path}, line {number}: expected 'query-id corpus-id score' or TREC 'qid 0 docid rel'")
        query, doc, relevance = (row[0], row[1], row[2]) if len(row) == 3 else (row[0], row[2], row[3])
        qrels.setdefault(query, {})[doc] = int(relevance)
    if not qrels:
        raise SourceError(f"{path}: no judgments found")
    return qrels


def check_metric(metric: str) -> str:
    """``metric`` if ranx can compute it (``ndcg@10``, ``mrr``); refused before any query runs, saying why."""
    name, at, cutoff = metric.partition("@")
    if name not in METRIC_NAMES:
        raise BadRequestError(f"unknown metric {metric!r}: choose from {', '.join(METRIC_NAMES)}, each with an "
                              "optional @K cut-off (ndcg@10)")
    if at and not re.fullmatch(r"[1-9][0-9]*", cutoff):
        raise BadRequestError(f"metric {metric!r}: the cut-off after @ must be a whole number of 1 or more")
    return metric


def judged_queries(queries: Mapping[str, str], qrels: Qrels) -> dict[str, str]:
    """The queries that have judgments; none at all is an error (ids that do not match, most likely)."""
    judged = {q: text for q, text in queries.items() if q in qrels}
    if not judged:
        raise SourceError(f"none of the {len(queries)} queries has a judgment in the qrels ({len(qrels)} judged "
                          "query ids): check that the query ids of both files match")
    return judged


def as_run(hits: Sequence[tuple[str, float]]) -> dict[str, float]:
    """Rank-based scores (1/rank) so the metric library sees exactly our order, ties included."""
    return {doc_id: 1.0 / rank for rank, (doc_id, _) in enumerate(hits, start=1)}


MODE_LEGS: dict[str, tuple[str, ...]] = {"hybrid": ("bm25", "vector"), "bm25": ("bm25",), "vector": ("vector",)}


@dataclass
class LegRuns:
    """Each query's raw legs, retrieved once and fused as often as the caller likes."""

    legs: dict[str, dict[str, list[LegHit]]]

    def subset(self, query_ids: Sequence[str]) -> LegRuns:
        return LegRuns({q: self.legs[q] for q in query_ids})

    def fuse(self, settings: SearchSettings, depth: int, mode: Mode = "hybrid", exclude_self: bool = False) -> Run:
        """The run ``mode`` would give: its legs cut to the window, fused, cut to ``depth``."""
        run: Run = {}
        for query_id, legs in self.legs.items():
            lists = {leg: [h for h in legs[leg][: settings.window] if not (exclude_self and h.id == query_id)]
                     for leg in MODE_LEGS[mode]}
            run[query_id] = as_run([(hit.id, hit.score) for hit in settings.fuse(lists, limit=depth)])
        return run


def retrieve_legs(searcher: Searcher, queries: Mapping[str, str], window: int, progress: bool = True) -> LegRuns:
    """Both legs of every query, from one version of the index."""
    ids = list(queries)
    return LegRuns(dict(zip(ids, searcher.retrieve_many([queries[q] for q in ids], window=window,
                                                        progress=progress))))


def require_eval(*also: str) -> None:
    """Import ranx (and ``also``), or say in one line which extra brings them. Quietly: compiling ranx warns
    about the LaTeX escapes in its report strings (DeprecationWarning to 3.11, SyntaxWarning from 3.12),
    which are not ours to fix."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        require_extra("eval", "ranx", *also)


def ranx_run(run: Run, name: str | None = None) -> Any:
    """A ranx Run of ``run``; a query without hits gets a placeholder (ranx refuses empty ones), so it
    still counts, as zero. Its callers have imported ranx (``require_eval``)."""
    from ranx import Run as RanxRun

    return RanxRun.from_dict({q: r or {"": 0.0} for q, r in run.items()}, name=name)


def score(qrels: Qrels, runs: Mapping[str, Run], metrics: Sequence[str]) -> dict[str, dict[str, float]]:
    """Each run's mean of each metric over the judged queries (ranx)."""
    require_eval()
    from ranx import Qrels as RanxQrels
    from ranx import evaluate

    judged = RanxQrels.from_dict(qrels)
    results = {}
    for name, run in runs.items():
        with warnings.catch_warnings():  # numba's note on an integer cast inside ranx
            warnings.simplefilter("ignore")
            values = evaluate(judged, ranx_run(run), list(metrics), make_comparable=True)
        values = values if isinstance(values, dict) else {metrics[0]: values}
        results[name] = {metric: round(float(values[metric]), 4) for metric in metrics}
    return results


def evaluate_modes(
    searcher: Searcher,
    queries: Mapping[str, str],
    qrels: Qrels,
    modes: Sequence[Mode] = MODES,
    metrics: Sequence[str] = DEFAULT_METRICS,
    exclude_self: bool = False,
    depth: int = 100,
    progress: bool = True,
) -> tuple[dict[str, dict[str, float]], dict[str, Run]]:
    """Run every judged query in every mode; return the metrics and the runs (for saving or testing).
    Metrics average over exactly the queries run: a judged query without text is left out, not counted 0."""
    judged = judged_queries(queries, qrels)
    settings = searcher.settings
    legs = retrieve_legs(searcher, judged, max(settings.window, depth), progress)
    runs: dict[str, Run] = {mode: legs.fuse(settings, depth, mode, exclude_self) for mode in modes}
    return score({q: qrels[q] for q in judged}, runs, metrics), runs


def save_trec_run(run: Run, path: str | Path, name: str) -> None:
    with Path(path).open("w") as out:
        for query_id, docs in run.items():
            for rank, (doc_id, value) in enumerate(sorted(docs.items(), key=lambda d: -d[1]), start=1):
                out.write(f"{query_id} Q0 {doc_id} {rank} {value:.6f} {name}\n")


def compare_runs(qrels: Qrels, runs: Mapping[str, Run], metrics: Sequence[str]) -> str:
    """ranx's comparison table with a paired Student's t-test between every pair of runs."""
    return str(_compare(qrels, runs, metrics))


def _compare(qrels: Qrels, runs: Mapping[str, Run], metrics: Sequence[str]) -> Any:
    require_eval()
    from ranx import Qrels as RanxQrels
    from ranx import compare

    ranx_runs = [ranx_run(run, name) for name, run in runs.items()]
    with warnings.catch_warnings():  # numba's note on an integer cast inside ranx
        warnings.simplefilter("ignore")
        return compare(RanxQrels.from_dict(qrels), ranx_runs, list(metrics), stat_test="student")


@dataclass
class TuneResult:
    """The best setting on the tuning queries, and how it and the defaults score on held-out queries."""

    best: SearchSettings
    metric: str
    tuning_score: float
    heldout_score: float
    default_heldout_score: float
    tuning_queries: int
    heldout_queries: int
    p_value: float
    """Paired t-test (ranx) of best vs defaults on the held-out queries."""
    settings_tried: int

    @property
    def significant(self) -> bool:
        return self.heldout_score > self.default_heldout_score and self.p_value < 0.05


RANK_CONSTANTS = (10, 20, 40, 60, 100)
BM25_WEIGHTS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
WINDOWS = (50, 100, 200)


def fusion_grid(methods: Sequence[Method] = METHODS, bm25_weights: Sequence[float] = BM25_WEIGHTS,
                windows: Sequence[int] = WINDOWS, rank_constants: Sequence[int] = RANK_CONSTANTS,
                ) -> list[SearchSettings]:
    """Every setting ``tune`` tries: RRF over rank constants, the normalisations over combinations; each
    with every BM25 weight (the vector leg's is 1) and window."""
    grid = []
    for method, weight, window in itertools.product(methods, bm25_weights, windows):
        weights = {"bm25": weight, "vector": 1.0}
        variants = ([{"rank_constant": c} for c in rank_constants] if method == "rrf"
                    else [{"combination": c} for c in COMBINATIONS])
        grid += [SearchSettings(fusion=method, weights=weights, window=window, **v) for v in variants]  # type: ignore[arg-type]
    return grid


def tune(
    searcher: Searcher,
    queries: Mapping[str, str],
    qrels: Qrels,
    metric: str = "ndcg@10",
    heldout_qrels: Qrels | None = None,
    dev_share: float = 0.5,
    grid: Sequence[SearchSettings] | None = None,
    exclude_self: bool = False,
    seed: int = 13,
    progress: bool = True,
) -> TuneResult:
    """Choose the fusion setting (method, combination, weights, rank constant, window) that scores best.

    It is chosen on ``qrels``' queries and scored on ``heldout_qrels``' (e.g. a train and a test split);
    without them, on a random ``dev_share`` of ``qrels``' queries, scored on the rest. Both legs are
    retrieved once per query at the largest window; every setting is a re-fusion. The best is compared
    with the defaults on the held-out queries by a paired t-test, since with a few hundred queries a
    grid's best is partly chosen by noise.
    """
    check_metric(metric)
    grid = list(grid or fusion_grid())
    if heldout_qrels is None:
        judged = sorted(judged_queries(queries, qrels))
        random.Random(seed).shuffle(judged)
        cut = max(1, int(len(judged) * dev_share))
        tuning, heldout = judged[:cut], judged[cut:]
        heldout_qrels = qrels
    else:
        tuning = sorted(judged_queries(queries, qrels))
        heldout = sorted(set(judged_queries(queries, heldout_qrels)) - set(tuning))
    depth = max(s.window for s in [*grid, SearchSettings()])
    legs = retrieve_legs(searcher, {q: queries[q] for q in [*tuning, *heldout]}, depth, progress)
    require_relevant_found(legs.subset(tuning), qrels, depth)
    best_score, best = choose(legs.subset(tuning), {q: qrels[q] for q in tuning}, grid, metric, exclude_self,
                              progress)
    if not heldout:
        return TuneResult(best, metric, best_score, float("nan"), float("nan"), len(tuning), 0, float("nan"), len(grid))
    judged_heldout = {q: heldout_qrels[q] for q in heldout}
    runs = {name: legs.subset(heldout).fuse(settings, 100, exclude_self=exclude_self)
            for name, settings in (("best", best), ("default", SearchSettings()))}
    scores = score(judged_heldout, runs, [metric])
    return TuneResult(best, metric, best_score, scores["best"][metric], scores["default"][metric], len(tuning),
                      len(heldout), paired_p_value(judged_heldout, runs["best"], runs["default"], metric), len(grid))


def require_relevant_found(legs: LegRuns, qrels: Qrels, depth: int) -> None:
    """Refuse to tune where neither leg finds a single relevant document for any tuning query: every setting
    would score 0, and the "best" would be the first tried (judgments for another index, most likely)."""
    for query_id, by_leg in legs.legs.items():
        relevant = {doc for doc, grade in qrels[query_id].items() if grade > 0}
        if any(hit.id in relevant for hits in by_leg.values() for hit in hits):
            return
    raise SourceError(f"neither leg finds any relevant document of the {len(legs.legs)} tuning queries in its top "
                      f"{depth}: every setting would score 0. Are the judgments for this index (do their document "
                      "ids match its ids)?")


def choose(legs: LegRuns, qrels: Qrels, grid: Sequence[SearchSettings], metric: str = "ndcg@10",
           exclude_self: bool = False, progress: bool = False) -> tuple[float, SearchSettings]:
    """The setting of ``grid`` whose fused runs score best on ``qrels`` (the first of equals), and its score."""
    def value(settings: SearchSettings) -> float:
        return score(qrels, {"run": legs.fuse(settings, 100, exclude_self=exclude_self)}, [metric])["run"][metric]

    bar = tqdm(grid, desc="tuning", unit="setting", disable=None if progress else True)
    return max(((value(settings), settings) for settings in bar), key=lambda pair: pair[0])


def paired_p_value(qrels: Qrels, first: Run, second: Run, metric: str) -> float:
    """Two-sided paired Student's t-test of two runs' per-query ``metric`` (ranx's); 1.0 for equal runs."""
    if first == second:
        return 1.0
    p_value = float(_compare(qrels, {"a": first, "b": second}, [metric]).to_dict()["a"]["comparisons"]["b"][metric])
    return 1.0 if math.isnan(p_value) else p_value


def plot(results: Mapping[str, Mapping[str, float]], path: str | Path, title: str) -> None:
    """Grouped bars: one group per metric, one bar per mode."""
    require_extra("eval", "matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(results)
    metrics = list(next(iter(results.values())))
    width = 0.8 / len(modes)
    figure, axes = plt.subplots(figsize=(1.8 + 1.6 * len(metrics), 4))
    for position, mode in enumerate(modes):
        xs = [i + (position - (len(modes) - 1) / 2) * width for i in range(len(metrics))]
        bars = axes.bar(xs, [results[mode][m] for m in metrics], width, label=mode)
        axes.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    axes.set_xticks(range(len(metrics)), metrics)
    axes.set_ylim(0, 1.05)
    axes.set_title(title)
    axes.legend(loc="upper left", ncols=len(modes), fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
