"""Ingest throughput and memory: `curate ingest` next to a bare DuckDB `read_json` load of the same file.

Builds a JSONL corpus of the requested sizes in one of two shapes:
  long:   documents from data/samples (3-4 KB; resampled and perturbed: words dropped and swapped, new ids
          and URLs), meta {"source", "author"};
  short:  real short documents of this machine (benchmarks/short_corpus.py, "short" shape: median 600 bytes,
          mean about 1.6 KB), each with a URL and crawl metadata (about 500 bytes: response headers,
          HTML meta, fetch time), as web and forum text comes;
then, for each size, runs in fresh subprocesses:
  bare:   CREATE TABLE t AS SELECT * FROM read_json(file)   (duckdb, into a database file)
  curate: curate init + curate ingest                          (validation, quarantine, hashes, domains)
and reports MB/s and peak RSS (from wait4) for both.

    .venv/bin/python benchmarks/ingest.py --sizes 0.25 1.0
    PYTHONPATH=. .venv/bin/python benchmarks/ingest.py --shape short --sizes 0.2 --repeat 3
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
sys.path.insert(0, str(ROOT / "benchmarks"))


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


SERVERS = ["nginx", "Apache", "cloudflare", "Microsoft-IIS/10.0", "openresty", "LiteSpeed"]
TYPES = ["text/html; charset=utf-8", "text/html; charset=UTF-8", "text/html", "application/xhtml+xml"]
HOSTS = ["forum", "www", "blog", "docs", "news", "community", "wiki", "lists"]
TLDS = ["org", "com", "net", "io", "de", "fr", "co.uk", "info"]


def build_short(path: Path, size_bytes: int, seed: int = 7) -> int:
    """Write short_corpus's "short" documents, each with a URL and crawl metadata, until the file reaches
    size_bytes; returns the row count. Header names keep one spelling each, so that the bare load (which
    auto-detects meta as a struct) can read the file too; curate's handling of names differing only in case
    is in tests/test_ingest.py."""
    import short_corpus

    rng = random.Random(seed)
    written = rows = 0
    with open(path, "w", encoding="utf-8") as f:
        for doc_id, text in short_corpus.documents(10**9, "short"):
            site = f"{rng.choice(HOSTS)}.site{rng.randrange(5000)}.{rng.choice(TLDS)}"
            headers = {"Content-Type": rng.choice(TYPES), "Server": rng.choice(SERVERS),
                       "Date": f"Sun, {rng.randrange(1, 29):02d} Oct 2026 {rng.randrange(24):02d}:"
                               f"{rng.randrange(60):02d}:{rng.randrange(60):02d} GMT",
                       "Content-Length": str(len(text.encode()) * 3 + rng.randrange(20000)),
                       "Cache-Control": rng.choice(["max-age=600", "no-cache", "private, max-age=0"]),
                       "ETag": f'"{rng.getrandbits(64):016x}"'}
            if rng.random() < 0.05:
                headers["X-Robots-Tag"] = rng.choice(["noai", "noindex", "noai, noimageai"])
            meta = {"source": "crawl-2026-10", "fetched": f"2026-10-{rng.randrange(1, 29):02d}T"
                                                           f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:00Z",
                    "status": 200, "headers": headers,
                    "html_meta": {"lang": rng.choice(["en", "en-US", "en-GB"]),
                                  "description": " ".join(text.split()[:12])}}
            line = json.dumps({"id": doc_id, "text": text, "url": f"https://{site}/t/{rows}-{rng.randrange(10**6)}",
                               "meta": meta}, ensure_ascii=False) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            rows += 1
            if written >= size_bytes:
                break
    return rows


def measure(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of a command run in its own process. The page cache's dirty pages are written
    out first: both sides write their database file (1 GB for 1 GB of JSONL) and fsync it, and a run that
    followed another paid for its predecessor's writes (measured: curate 12.8 s after the bare load, 6.8 s
    alone, on 1 GB)."""
    os.sync()
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
    ap.add_argument("--shape", choices=["long", "short"], default="long", help="document shape (see above)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each side per size; the median is shown")
    ap.add_argument("--dir", type=Path, default=None, help="scratch directory (default: a temp dir)")
    args = ap.parse_args()
    scratch = args.dir or Path(tempfile.mkdtemp(prefix="curate-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    print(f"{'size':>6} {'rows':>8} | {'bare MB/s':>9} {'RSS MB':>7} | {'curate MB/s':>11} {'RSS MB':>7} | ratio")
    try:
        for gb in args.sizes:
            corpus = scratch / f"corpus-{args.shape}-{gb}.jsonl"
            rows = (build_short if args.shape == "short" else build_corpus)(corpus, int(gb * 1e9))
            mb = corpus.stat().st_size / 1e6
            bare_db = scratch / "bare.duckdb"
            ws = scratch / "ws"
            bare, cur = [], []
            for _ in range(args.repeat):  # alternated, so that a change in the machine's load hits both sides
                bare_db.unlink(missing_ok=True)
                bare.append(measure([PY, "-c", BARE, str(corpus), str(bare_db)]))
                shutil.rmtree(ws, ignore_errors=True)
                subprocess.run([PY, "-m", "curate.cli", "init", str(ws)], check=True, capture_output=True)
                cur.append(measure([PY, "-m", "curate.cli", "ingest", "--no-progress", str(ws), str(corpus)]))
            (t_bare, rss_bare), (t_cur, rss_cur) = sorted(bare)[len(bare) // 2], sorted(cur)[len(cur) // 2]
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
