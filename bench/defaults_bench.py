"""Issue #26 figures: what a user gets running each command with its defaults, reading nothing.

For each collection, in a fresh embedded data folder, through the command line a user types:

1. ``hybrid ingest corpus.jsonl --index NAME`` (the chunking rule chooses windows or whole documents),
   then ``hybrid eval`` (no flags) on the test judgments: RRF with the default chunking; and the same with
   the other choice (``--chunk off`` where the rule chose windows, ``--chunk 128/64`` where it did not), for
   what the rule gained or saved: nDCG@10, vectors, index size and ingest seconds side by side;
2. with train judgments (SciFact): ``hybrid tune --apply`` on train, then ``hybrid eval``: the index's tuned
   settings;
3. ``--finetune``, on the index 1-2 left in ``--work``: ``hybrid finetune --corpus --queries --qrels train
   --output M``, ``hybrid reindex --index NAME --model M`` (refused by the gate: said, and not forced), then
   ``hybrid eval``.

    python bench/defaults_bench.py [--collections scifact,cranfield,cisi] [--work DIR]
    python bench/defaults_bench.py --collections scifact --work DIR --finetune   # step 3, on step 1-2's index

Writes bench/results/defaults.json: ingest seconds, the chunking chosen and why, nDCG@10 per mode, the
tuning's verdict, the fine-tune's dev curve. The test judgments are used for the figures and nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def hybrid(*args: str, data_dir: Path) -> str:
    """Run the command line as a user would; its output, or the failure with it."""
    done = subprocess.run([sys.executable, "-m", "hybrid", *args, "--data-dir", str(data_dir)], text=True,
                          capture_output=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    if done.returncode:
        raise RuntimeError(f"hybrid {' '.join(args)} failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout


def evaluated(index: str, folder: Path, data_dir: Path) -> dict:
    return json.loads(hybrid("eval", "--index", index, "--queries", str(folder / "queries.jsonl"),
                             "--qrels", str(folder / "qrels" / "test.tsv"), "--metrics", "ndcg@10,recall@100",
                             "--json", data_dir=data_dir))


def one_line(text: str) -> str:
    return " ".join(text.split())


def ingested(source: Path, index: str, data_dir: Path, *options: str) -> dict:
    """Ingest as a user would; the seconds it took, what it said of its chunking, and what it built."""
    started = time.perf_counter()
    said = hybrid("ingest", str(source), "--index", index, "--quiet", *options, data_dir=data_dir)
    seconds = round(time.perf_counter() - started, 1)
    info = json.loads(hybrid("index", "info", index, data_dir=data_dir))
    folder = Path(info["location"])
    return {"seconds": seconds, "chunking": info["chunking"] or "off",
            "said": next((one_line(line) for line in said.splitlines() if "word pieces" in line), ""),
            "vectors": int(len(np.load(folder / "vectors.npy", mmap_mode="r"))),
            "index_mb": round(sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6, 1)}


def collection(name: str, work: Path) -> dict:
    """Steps 1 and 2 for one collection, in ``work``."""
    folder, data_dir = DATA / name, work / name
    figures: dict = {"ingest": ingested(folder / "corpus.jsonl", name, data_dir)}
    figures["defaults"] = evaluated(name, folder, data_dir)
    other = "off" if figures["ingest"]["chunking"] != "off" else "128/64"
    figures["other_ingest"] = ingested(folder / "corpus.jsonl", f"{name}-other", data_dir, "--chunk", other)
    figures["other"] = evaluated(f"{name}-other", folder, data_dir)
    print(name, json.dumps(figures), flush=True)
    train = folder / "qrels" / "train.tsv"
    if not train.exists():
        return figures
    queries = str(folder / "queries.jsonl")
    try:
        tuned = hybrid("tune", "--index", name, "--queries", queries, "--qrels", str(train), "--apply",
                       "--output", str(work / f"{name}-tuned.json"), data_dir=data_dir)
        figures["tune"] = {"said": one_line(tuned), "applied": True}
    except RuntimeError as refused:  # the gate: below the defaults on held-out train queries
        figures["tune"] = {"said": one_line(str(refused)), "applied": False}
    figures["tuned"] = evaluated(name, folder, data_dir)
    print(name, json.dumps({k: figures[k] for k in ("tune", "tuned")}), flush=True)
    return figures


def finetuned(name: str, work: Path) -> dict:
    """Step 3 on the index steps 1 and 2 left in ``work``: fine-tune with only the required options, switch
    the index to the model where the gate lets it, and score it (with the index's recorded settings)."""
    folder, data_dir, model = DATA / name, work / name, work / f"{name}-model"
    started = time.perf_counter()
    report = json.loads(hybrid("finetune", "--corpus", str(folder / "corpus.jsonl"), "--queries",
                               str(folder / "queries.jsonl"), "--qrels", str(folder / "qrels" / "train.tsv"),
                               "--output", str(model), "--json", data_dir=data_dir))
    figures: dict = {"finetune": {"minutes": round((time.perf_counter() - started) / 60, 1),
                                  "epochs": report["epochs"], "dev_before": report["before"],
                                  "dev_after": report["after"], "promote": report["promote"],
                                  "verdict": report["verdict"], "chunking": report["settings"]["chunking"]}}
    try:
        hybrid("reindex", "--index", name, "--model", str(model), "--quiet", data_dir=data_dir)
        figures["finetuned"] = evaluated(name, folder, data_dir)
    except RuntimeError as refused:
        figures["finetune"]["reindex"] = one_line(str(refused))
    print(name, json.dumps(figures), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--collections", default="scifact,cranfield,cisi")
    parser.add_argument("--work", type=Path, help="where the indexes and models stay [default: a temporary folder]")
    parser.add_argument("--finetune", action="store_true", help="step 3 only, on the indexes --work holds")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "defaults.json")
    args = parser.parse_args()
    step = finetuned if args.finetune else collection
    with tempfile.TemporaryDirectory(prefix="hybrid-defaults-") as scratch:
        work = args.work or Path(scratch)
        results = {name: step(name, work) for name in args.collections.split(",")}
    out = args.out.with_name(f"{args.out.stem}-finetune.json") if args.finetune else args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
