"""Ingest throughput and memory: `curate ingest` next to a bare DuckDB `read_json` load of the same file.

Builds a JSONL corpus of the requested sizes from data/samples (documents resampled and perturbed:
words dropped and swapped, new ids and URLs), then, for each size, runs in fresh subprocesses:
  bare:   CREATE TABLE t AS SELECT * FROM read_json(file)   (duckdb, into a database file)
  curate: curate init + curate ingest                          (validation, quarantine, hashes, domains)
and reports MB/s and peak RSS (from wait4) for both.

    .venv/bin/python benchmarks/ingest.py --sizes 0.25 1.0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def sample_texts() -> list[tuple[str, str]]:
    """(text, url) of every readable sample document, read with curate itself."""
    from curate import Workspace

    with tempfile.TemporaryDirectory() as d:
        ws = Workspace.init(Path(d) / "ws")
        ws.ingest([str(ROOT / "data" / "samples")])
        rows = ws.sql("SELECT text, coalesce(url, '') AS url FROM documents WHERE length(text) > 200 ORDER BY seq")
    return list(rows.iter_rows())


def build_corpus(path: Path, size_bytes: int, seed: int = 7) -> int:
    """Write resampled, perturbed documents until the file reaches size_bytes; returns the row count."""
    rng = random.Random(seed)
    docs = sample_texts()
    written = rows = 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size_bytes:
            text, url = docs[rng.randrange(len(docs))]
            words = text.split(" ")
            for _ in range(max(1, len(words) // 50)):  # ~2% of words dropped or swapped
                i = rng.randrange(len(words))
                if rng.random() < 0.5:
                    words.pop(i)
                else:
                    j = rng.randrange(len(words))
                    words[i], words[j] = words[j], words[i]
            host = url.split("/")[2] if url.count("/") >= 2 else "example.org"
            line = json.dumps({"id": f"bench-{rows}", "text": " ".join(words),
                               "url": f"https://{rng.choice(['www.', 'docs.', ''])}{host}/r/{rows}",
                               "meta": {"source": "benchmark", "author": f"Author {rows % 997}"}},
                              ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            rows += 1
    return rows


def measure(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of a command run in its own process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


BARE = """
import duckdb, sys
con = duckdb.connect(sys.argv[2])
con.execute("SET memory_limit = '1500MB'")
con.execute("CREATE TABLE t AS SELECT * FROM read_json(?, format = 'newline_delimited')", [sys.argv[1]])
print(con.execute("SELECT count(*) FROM t").fetchall()[0][0])
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", type=float, default=[0.25, 1.0], help="corpus sizes in GB")
    ap.add_argument("--dir", type=Path, default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args()
    scratch = args.dir or Path(tempfile.mkdtemp(prefix="curate-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    print(f"{'size':>6} {'rows':>8} | {'bare MB/s':>9} {'RSS MB':>7} | {'curate MB/s':>11} {'RSS MB':>7} | ratio")
    try:
        for gb in args.sizes:
            corpus = scratch / f"corpus-{gb}.jsonl"
            rows = build_corpus(corpus, int(gb * 1e9))
            mb = corpus.stat().st_size / 1e6
            bare_db = scratch / "bare.duckdb"
            bare_db.unlink(missing_ok=True)
            t_bare, rss_bare = measure([PY, "-c", BARE, str(corpus), str(bare_db)])
            ws = scratch / "ws"
            shutil.rmtree(ws, ignore_errors=True)
            subprocess.run([PY, "-m", "curate.cli", "init", str(ws)], check=True, capture_output=True)
            t_cur, rss_cur = measure([PY, "-m", "curate.cli", "ingest", "--no-progress", str(ws), str(corpus)])
            print(f"{gb:>5}G {rows:>8} | {mb / t_bare:>9.1f} {rss_bare:>7.0f} | {mb / t_cur:>11.1f} {rss_cur:>7.0f} "
                  f"| {t_bare / t_cur:.2f}", flush=True)
            corpus.unlink()
            bare_db.unlink(missing_ok=True)
            shutil.rmtree(ws, ignore_errors=True)
    finally:
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
