"""Throughput of the bias stage's lexicon matching on data/samples, and why it uses an ASCII word boundary.

Run: PYTHONPATH=. python benchmarks/bias_speed.py [SAMPLES_DIR]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import duckdb
import polars as pl

from curate.stages.bias.stage import RUST_BOUNDARY, load_lexicons, match, prepare


def texts(samples: Path) -> list[str]:
    con = duckdb.connect()
    parts = [f"SELECT text FROM read_json_auto('{p}', ignore_errors=true)" for p in sorted(samples.glob("*.jsonl*"))
             if "damaged" not in p.name]
    parts += [f"SELECT text FROM read_parquet('{p}')" for p in sorted(samples.glob("*.parquet"))]
    parts += [f"SELECT text FROM read_csv_auto('{p}')" for p in sorted(samples.glob("*.csv"))]
    return [r[0] for r in con.sql(" UNION ALL ".join(parts)).fetchall() if r[0]]


def main() -> None:
    samples = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "data" / "samples"
    docs = texts(samples)
    mb = sum(len(t.encode()) for t in docs) / 1e6
    lexicons = load_lexicons()
    best = min(_time(lambda: match(docs, lexicons)) for _ in range(3))
    print(f"{len(docs)} documents, {mb:.1f} MB, {sum(lx.terms for lx in lexicons)} terms in {len(lexicons)} lexicons")
    print(f"curate match (ASCII boundary): {best:.2f} s = {mb / best:.1f} MB/s, {len(docs) / best:.0f} docs/s")
    s = prepare(pl.Series(docs))
    unicode = _time(lambda: [s.str.extract_all(lx.pattern.replace(RUST_BOUNDARY, r"\b")) for lx in lexicons])
    ascii_ = _time(lambda: [s.str.extract_all(lx.pattern) for lx in lexicons])
    print(f"regex passes only: ASCII \\b {ascii_:.2f} s, Unicode \\b {unicode:.2f} s ({unicode / ascii_:.0f}x slower)")


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
