"""The README's results table: nDCG@10 of bm25, vector and hybrid on SciFact, Cranfield and CISI.

Runs `hybrid eval --beir` (embedded backend, bundled all-MiniLM-L6-v2, RRF k=60 over the top 100 of
each leg) on each collection and prints a Markdown table beside the published reference figures.

    python bench/eval_table.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from click.testing import CliRunner  # noqa: E402

from hybrid.cli import cli  # noqa: E402

COLLECTIONS = ("scifact", "cranfield", "cisi")
REFERENCE = {"scifact": "BM25 0.665-0.691, MiniLM 0.645, RRF ≈ 0.714 (published)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--data-dir", type=Path, default=Path.home() / ".cache" / "hybrid" / "bench-indexes")
    args = parser.parse_args()
    rows = []
    for name in COLLECTIONS:
        result = CliRunner().invoke(cli, ["eval", "--beir", str(args.data / name), "--data-dir", str(args.data_dir),
                                          "--metrics", "ndcg@10,recall@100", "--json"], catch_exceptions=False)
        if result.exit_code != 0:
            raise SystemExit(result.output)
        figures = json.loads(result.stdout)
        rows.append(f"| {name} | " + " | ".join(
            f"{figures[mode]['ndcg@10']:.3f}" for mode in ("bm25", "vector", "hybrid")) + " | " +
            " | ".join(f"{figures[mode]['recall@100']:.3f}" for mode in ("bm25", "vector", "hybrid")) +
            f" | {REFERENCE.get(name, '')} |")
        print(rows[-1], flush=True)
    print("\n| collection | nDCG@10 bm25 | vector | hybrid | R@100 bm25 | vector | hybrid | reference |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
