"""Throughput and peak memory of near-duplicate detection: curate's dedup_fuzzy stage vs a straightforward
datasketch pipeline (per document: shingles, MinHash.update_batch, MinHashLSH query + insert; union-find),
on the same documents, shingles (word 5-grams, curate.stages.dedup_fuzzy.minhash.shingles) and permutations (128,
seed 1, datasketch's affine32 scheme), in one run.

Documents of ~3 KB of real text (dedup_corpus.py: man pages, /usr/share/doc, data/samples; each paragraph
used once), cut at paragraphs; 10% are edited copies of an earlier document (words replaced or deleted, lines appended)
and 3% exact copies. Past the real text available (~85k documents), documents are random mixtures of
real paragraphs. Each side runs in its own process; peak RSS is sampled over the process and its
children (curate's worker pool included). Ingest is timed separately (it is not dedup work).

    PYTHONPATH=. .venv/bin/python benchmarks/dedup_speed.py --docs 100000
    PYTHONPATH=. .venv/bin/python benchmarks/dedup_speed.py --docs 1000000 --datasketch-docs 0
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dedup_corpus as corpus  # noqa: E402

SHARD_DOCS = 100_000
DOC_CHARS = 3000


def paragraphs() -> list[str]:
    """Real paragraphs, each once (licence texts repeat in hundreds of copyright files: only planted
    copies should be duplicates)."""
    out, seen = [], set()
    for _, text in corpus.source_documents():
        for p in re.split(r"\n\s*\n", text):
            p = p.strip("\n")
            while len(p) > 2 * DOC_CHARS:  # a very long paragraph: cut at a line end
                cut = p.rfind("\n", 0, DOC_CHARS)
                cut = cut if cut > 0 else DOC_CHARS
                out.append(p[:cut])
                p = p[cut:].lstrip("\n")
            key = hash(" ".join(p.split()).casefold())
            if p.strip() and key not in seen:
                seen.add(key)
                out.append(p)
    return out


def documents(n: int, seed: int):
    """Yields n (doc_id, text) of about DOC_CHARS characters each (see the module docstring)."""
    rng = np.random.default_rng(seed)
    paras = paragraphs()
    made: list[str] = []
    at = 0
    for i in range(n):
        r = rng.random()
        if made and r < 0.10:
            parent = made[int(rng.integers(len(made)))]
            kind = ("replace", "delete", "append")[int(rng.integers(3))]
            text = corpus.edit(parent, kind, float(rng.uniform(0.02, 0.3)), rng, made[int(rng.integers(len(made)))])
        elif made and r < 0.13:
            text = made[int(rng.integers(len(made)))]
        else:
            piece: list[str] = []
            size = 0
            while size < DOC_CHARS:
                if at < len(paras):  # consecutive real paragraphs while they last
                    p, at = paras[at], at + 1
                else:  # then mixtures of random real paragraphs
                    p = paras[int(rng.integers(len(paras)))]
                piece.append(p)
                size += len(p) + 2
            text = "\n\n".join(piece)
        if len(made) < 50_000:  # earlier documents that copies are made from (a bounded, random sample)
            made.append(text)
        else:
            made[int(rng.integers(len(made)))] = text
        yield f"doc-{i:07d}", text


def build(out: Path, n: int, seed: int) -> list[Path]:
    """Parquet shards of SHARD_DOCS documents in `out` (reused when built with the same n and seed)."""
    stamp = out / "built.json"
    if stamp.exists() and json.loads(stamp.read_text()) == {"docs": n, "seed": seed, "version": 2}:
        return sorted(out.glob("shard-*.parquet"))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    ids, texts, shards = [], [], []
    for doc_id, text in documents(n, seed):
        ids.append(doc_id)
        texts.append(text)
        if len(ids) == SHARD_DOCS:
            shards.append(_write(out, len(shards), ids, texts))
            ids, texts = [], []
    if ids:
        shards.append(_write(out, len(shards), ids, texts))
    stamp.write_text(json.dumps({"docs": n, "seed": seed, "version": 2}))
    return shards


def _write(out: Path, k: int, ids: list[str], texts: list[str]) -> Path:
    p = out / f"shard-{k:03d}.parquet"
    pq.write_table(pa.table({"id": ids, "text": texts}), p, compression="zstd")
    return p


# -- the two sides, each in its own process ---------------------------------------------------------
def child_curate(ws_dir: Path, shards: list[Path], workers: int) -> dict:
    from curate import Workspace
    from curate.core.db import one
    from curate.core.executors import executor
    from curate.core.policy import load_rules
    from curate.core.runner import run_stage
    from curate.core.stage import detectors

    shutil.rmtree(ws_dir, ignore_errors=True)
    ws = Workspace.init(ws_dir)
    t0 = time.perf_counter()
    ws.ingest([str(s) for s in shards])
    ingest_s = time.perf_counter() - t0
    det = detectors(load_rules().raw, ["dedup_fuzzy"])[0]
    t0, cpu0 = time.perf_counter(), _cpu()
    with ws.connect(write=True) as con:
        report = run_stage(con, det, executor("local", workers))
        clusters, clustered, pairs = one(con.execute(
            "SELECT count(DISTINCT cluster_id), count(*), (SELECT count(*) FROM dedup_pairs) FROM dedup_fuzzy"))
    seconds = time.perf_counter() - t0
    return {"docs": report.documents, "seconds": seconds, "cpu_seconds": _cpu() - cpu0, "ingest_seconds": ingest_s,
            "clusters": clusters,
            "docs_in_clusters": clustered, "edges": pairs,
            "workspace_bytes": (ws_dir / "curate.duckdb").stat().st_size}


def child_datasketch(shards: list[Path], limit: int) -> dict:
    from datasketch import MinHash, MinHashLSH

    from curate.stages.dedup_fuzzy.minhash import shingles

    t0, cpu0 = time.perf_counter(), _cpu()
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    n = 0
    for shard in shards:
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=1000):
            for doc_id, text in zip(batch.column("id").to_pylist(), batch.column("text").to_pylist(), strict=True):
                if n >= limit:
                    break
                n += 1
                grams = {s.encode() for s in shingles(text)}
                if not grams:
                    continue
                m = MinHash(num_perm=128, seed=1)
                m.update_batch(grams)
                for other in lsh.query(m):
                    parent[find(doc_id)] = find(other)
                lsh.insert(doc_id, m)
    seconds = time.perf_counter() - t0
    roots = {find(d) for d in parent}
    return {"docs": n, "seconds": seconds, "cpu_seconds": _cpu() - cpu0, "clusters": len(roots),
            "docs_in_clusters": len(parent) + len(roots)}


def _cpu() -> float:
    """CPU seconds of this process and its (finished) children: the worker pool included."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(cmd: list[str]) -> tuple[dict, int]:
    """Run a child; returns its JSON result and the peak RSS of it and its children (sampled every 0.1 s)."""
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    out = proc.stdout.read().decode()
    if proc.returncode:
        raise SystemExit(f"{cmd[:4]} failed with {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]), peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--datasketch-docs", type=int, default=None,
                    help="Documents for datasketch (default: all; 0 skips it).")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("CURATE_BENCH_DATA", "/tmp/curate-bench")))
    ap.add_argument("--json", type=Path, help="Also write the figures here.")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    shards_dir = args.data / f"dedup-{args.docs}"
    if args.child:
        shards = sorted(shards_dir.glob("shard-*.parquet"))
        if args.child[0] == "curate":
            print(json.dumps(child_curate(args.data / f"ws-{args.docs}", shards, args.workers)))
        else:
            print(json.dumps(child_datasketch(shards, int(args.child[1]))))
        return

    t0 = time.perf_counter()
    shards = build(shards_dir, args.docs, args.seed)
    mb = sum(pq.ParquetFile(s).metadata.num_rows for s in shards)
    text_mb = sum(pc.sum(pc.binary_length(pq.read_table(s, columns=["text"]).column("text"))).as_py()
                  for s in shards) / 1e6
    print(f"{mb} documents, {text_mb:.0f} MB of text in {len(shards)} shards ({time.perf_counter() - t0:.0f} s to "
          f"build or load); {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}", flush=True)
    me = [sys.executable, __file__, "--docs", str(args.docs), "--data", str(args.data), "--workers", str(args.workers)]
    results = {}
    ours, peak = measure(me + ["--child", "curate"])
    results["curate dedup_fuzzy"] = {**ours, "peak_rss_mb": peak / 1e6}
    limit = args.docs if args.datasketch_docs is None else args.datasketch_docs
    if limit:
        theirs, peak = measure(me + ["--child", "datasketch", str(limit)])
        results["datasketch"] = {**theirs, "peak_rss_mb": peak / 1e6}
    for name, r in results.items():
        r["docs_per_s"] = r["docs"] / r["seconds"]
        r["mb_per_s"] = text_mb * r["docs"] / mb / r["seconds"]
        print(f"{name:<20} {r['docs']:>9,} docs {r['seconds']:>8.1f} s {r['docs_per_s']:>9.0f} docs/s "
              f"({r['cpu_seconds']:.0f} CPU s, {r['docs'] / r['cpu_seconds']:.0f} docs per CPU s) "
              f"{r['mb_per_s']:>6.1f} MB/s  peak RSS {r['peak_rss_mb']:>6.0f} MB  clusters {r['clusters']:,}"
              + (f"  (ingest {r['ingest_seconds']:.0f} s, workspace {r['workspace_bytes'] / 1e9:.2f} GB)"
                 if "ingest_seconds" in r else ""))
    if "datasketch" in results:
        ratio = results["curate dedup_fuzzy"]["docs_per_s"] / results["datasketch"]["docs_per_s"]
        cpu = (results["datasketch"]["cpu_seconds"] / results["datasketch"]["docs"]) / \
            (results["curate dedup_fuzzy"]["cpu_seconds"] / results["curate dedup_fuzzy"]["docs"])
        print(f"throughput ratio curate / datasketch: {ratio:.1f}x wall clock, {cpu:.1f}x per CPU second "
              f"(load average now {os.getloadavg()[0]:.1f})")
        results["ratio"], results["cpu_ratio"] = ratio, cpu
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
