"""Throughput and peak memory of duplicate detection: `curate run --stages dedup_exact,dedup_fuzzy` (the CLI,
start-up included) vs a straightforward datasketch pipeline (per document: shingles, MinHash.update_batch,
MinHashLSH query + insert; union-find), on the same documents, shingles (word 5-grams,
curate.stages.dedup_fuzzy.minhash.shingles) and permutations (128, seed 1, datasketch's affine32 scheme), in one run.

Three corpus shapes (`--shape`), all of real text from this machine (never data/samples):
- long (default): documents of ~3 KB (dedup_corpus.py: man pages, /usr/share/doc, data/samples; each
  paragraph used once), cut at paragraphs; 10% are edited copies of an earlier document (words replaced or
  deleted, lines appended) and 3% exact copies. Past the real text available (~85k documents), documents are
  random mixtures of real paragraphs;
- short: short_corpus.py's web-like lengths (median ~600 bytes, mean ~2 KB), 10% edited and 3% exact copies;
- heavy: short_corpus.py's lengths, every document with four edited copies and one in 200 with a cluster of
  100-500 copies.

Each side runs as its own process, timed from launch to exit (curate: the `curate` command; datasketch: until
its clusters are known); CPU seconds and peak RSS are sampled over the process and its children (curate's
worker pool included). Ingest runs first (`curate ingest`), timed separately: it is not dedup work. Accuracy on
the planted copies: the share of planted copies found in one cluster with the document they were made from,
and the clusters that join documents of different planted groups (real texts can be near copies of each
other: licences, boilerplate).

    PYTHONPATH=. .venv/bin/python benchmarks/dedup_speed.py --docs 100000
    PYTHONPATH=. .venv/bin/python benchmarks/dedup_speed.py --docs 100000 --shape heavy
    PYTHONPATH=. .venv/bin/python benchmarks/dedup_speed.py --docs 1000000 --datasketch-docs 0
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dedup_corpus as corpus  # noqa: E402
import short_corpus  # noqa: E402

SHARD_DOCS = 100_000
DOC_CHARS = 3000
SHAPES = ("long", *short_corpus.SHAPES)
STAGES = "dedup_exact,dedup_fuzzy"


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
    """Yields n (doc_id, text, parent) of about DOC_CHARS characters each (see the module docstring);
    parent is the index of the document a copy was made from, else -1."""
    rng = np.random.default_rng(seed)
    paras = paragraphs()
    made: list[tuple[str, int]] = []
    at = 0
    for i in range(n):
        r = rng.random()
        parent = -1
        if made and r < 0.10:
            text, parent = made[int(rng.integers(len(made)))]
            kind = ("replace", "delete", "append")[int(rng.integers(3))]
            text = corpus.edit(text, kind, float(rng.uniform(0.02, 0.3)), rng, made[int(rng.integers(len(made)))][0])
        elif made and r < 0.13:
            text, parent = made[int(rng.integers(len(made)))]
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
            made.append((text, i))
        else:
            made[int(rng.integers(len(made)))] = (text, i)
        yield f"doc-{i:07d}", text, parent


def build(out: Path, n: int, seed: int) -> list[Path]:
    """Parquet shards of SHARD_DOCS documents in `out` (reused when built with the same n and seed), and
    `planted.npy`: each document's planted group (the first document of its chain of copies)."""
    stamp = out / "built.json"
    if stamp.exists() and json.loads(stamp.read_text()) == {"docs": n, "seed": seed, "version": 3}:
        return sorted(out.glob("shard-*.parquet"))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    ids, texts, shards, group = [], [], [], np.empty(n, np.int64)
    for i, (doc_id, text, parent) in enumerate(documents(n, seed)):
        group[i] = i if parent < 0 else group[parent]
        ids.append(doc_id)
        texts.append(text)
        if len(ids) == SHARD_DOCS:
            shards.append(_write(out, len(shards), ids, texts))
            ids, texts = [], []
    if ids:
        shards.append(_write(out, len(shards), ids, texts))
    np.save(out / "planted.npy", group)
    stamp.write_text(json.dumps({"docs": n, "seed": seed, "version": 3}))
    return shards


def _write(out: Path, k: int, ids: list[str], texts: list[str]) -> Path:
    p = out / f"shard-{k:03d}.parquet"
    pq.write_table(pa.table({"id": ids, "text": texts}), p, compression="zstd")
    return p


def build_short(out: Path, n: int, shape: str, seed: int) -> list[Path]:
    """short_corpus's JSONL shards, and `planted.npy` beside them (made once per corpus: short_corpus does not
    say which document a copy was made from, so its generator runs again with `edit` recording the parents)."""
    shards = short_corpus.build(out, n, shape, seed)
    planted, stamp = out / "planted.npy", out / "planted.json"
    if planted.exists() and stamp.exists() and stamp.read_text() == (out / "built.json").read_text():
        return shards
    edit, parent_of = corpus.edit, {}

    def recording(text: str, *args, **kwargs) -> str:
        copy = edit(text, *args, **kwargs)
        parent_of.setdefault(copy, text)
        return copy

    short_corpus.dedup_corpus.edit = recording
    try:
        # A group is a base document and the copies that follow it (short_corpus.documents).
        group, base, g = np.empty(n, np.int64), None, -1
        for i, (_, text) in enumerate(short_corpus.documents(n, shape, seed)):
            if base is None or (text != base and parent_of.get(text) != base):
                base, g = text, i
            group[i] = g
    finally:
        short_corpus.dedup_corpus.edit = edit
    np.save(planted, group)
    stamp.write_text((out / "built.json").read_text())
    return shards


def read_shard(path: Path):
    """(doc ids, texts) of one shard, a batch at a time."""
    if path.suffix == ".parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=1000, columns=["id", "text"]):
            yield batch.column("id").to_pylist(), batch.column("text").to_pylist()
        return
    with path.open(encoding="utf-8") as f:
        while rows := [json.loads(line) for _, line in zip(range(1000), f, strict=False)]:
            yield [r["id"] for r in rows], [r["text"] for r in rows]


# -- datasketch, in its own process ------------------------------------------------------------------
def child_datasketch(shards: list[Path], limit: int, clusters_out: Path) -> dict:
    from datasketch import MinHash, MinHashLSH

    from curate.stages.dedup_fuzzy.minhash import shingles

    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    n = 0
    for shard in shards:
        for ids, texts in read_shard(shard):
            for doc_id, text in zip(ids, texts, strict=True):
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
    label = {d: find(d) for d in parent}
    label.update({root: root for root in set(label.values())})  # a cluster's root is a member too
    end = time.time()  # the clusters are known: what follows is the benchmark's bookkeeping
    clusters_out.write_text(json.dumps(label))
    return {"docs": n, "end": end, "seconds_in_process": time.perf_counter() - t0}


# -- measuring a process -----------------------------------------------------------------------------
def measure(cmd: list[str], env: dict | None = None) -> dict:
    """Run a command; its wall clock, the CPU seconds and the peak RSS of it and its children (sampled every
    50 ms; CPU per process at its last sample or, for reaped children, from the kernel's accounting), and the
    last line it printed."""
    with tempfile.TemporaryFile() as out:
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.PIPE,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        top, cpu, peak = psutil.Process(proc.pid), {}, 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss = 0
            try:
                for p in [top, *top.children(recursive=True)]:
                    try:
                        with p.oneshot():
                            t = p.cpu_times()
                            cpu[p.pid] = t.user + t.system
                            rss += p.memory_info().rss
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            peak = max(peak, rss)
            time.sleep(0.05)
        wall = time.time() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read().decode()
        out.seek(0)
        text = out.read().decode()
    if proc.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd[:6]))} failed with {proc.returncode}:\n{err[-2000:]}")
    # The process's own rusage covers it and the children it reaped (workers whose fork server has exited
    # and been reaped); children never reaped are counted from their last sample.
    own = usage.ru_utime + usage.ru_stime
    return {"start": t0, "wall": wall, "cpu": max(own, sum(cpu.values())), "peak_rss_mb": peak / 1e6,
            "last_line": text.strip().splitlines()[-1] if text.strip() else ""}


def curate_cli() -> list[str]:
    """The `curate` command of this interpreter's environment."""
    script = Path(sys.executable).with_name("curate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "curate.cli"]


def run_curate(ws: Path, shards: list[Path], workers: int | None) -> dict:
    shutil.rmtree(ws, ignore_errors=True)
    subprocess.run([*curate_cli(), "-q", "init", str(ws)], check=True, stdout=subprocess.DEVNULL)
    t0 = time.perf_counter()
    subprocess.run([*curate_cli(), "-q", "ingest", str(ws), *map(str, shards), "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL)
    ingest = time.perf_counter() - t0
    log = ws.parent / f"{ws.name}.log.jsonl"
    log.unlink(missing_ok=True)
    r = measure([*curate_cli(), "--log-format", "json", "--log-file", str(log), "run", str(ws), "--stages", STAGES,
                 "--no-progress", *(["--workers", str(workers)] if workers else [])])
    events = [json.loads(line) for line in log.read_text().splitlines()]
    phases = {e["stage"]: e["seconds"] for e in events if e["event"] == "stage_end"}
    phases.update({e["event"]: e["seconds"] for e in events if e["event"] in ("policy", "manifest") and "seconds" in e})
    con = duckdb.connect(str(ws / "curate.duckdb"), read_only=True)
    try:
        label = dict(con.execute("SELECT doc_id, cluster_id FROM dedup_fuzzy").fetchall())
        edges = con.execute("SELECT count(*) FROM dedup_pairs").fetchone()[0]
        docs = con.execute("SELECT count(*) FROM documents").fetchone()[0]
    finally:
        con.close()
    return {**r, "docs": docs, "ingest_seconds": ingest, "phases": phases, "label": label, "edges": edges,
            "workspace_bytes": (ws / "curate.duckdb").stat().st_size}


def accuracy(label: dict[str, str], planted: np.ndarray, ids: list[str]) -> dict:
    """Clusters found, and how they match the planted groups (copies of one base document)."""
    index = {d: i for i, d in enumerate(ids)}
    cluster = np.arange(len(ids))  # alone: a cluster of its own
    roots: dict[str, int] = {}
    for d, c in label.items():
        if d in index:
            cluster[index[d]] = roots.setdefault(c, len(ids) + len(roots))
    copies = np.flatnonzero(planted != np.arange(len(planted)))  # documents made from an earlier one
    found = cluster[copies] == cluster[planted[copies]]
    sizes = np.bincount(cluster)
    in_clusters = np.flatnonzero(sizes[cluster] > 1)
    pairs = np.unique(np.stack([cluster[in_clusters], planted[in_clusters]]), axis=1)
    mixed = np.count_nonzero(np.bincount(pairs[0]) > 1)
    return {"clusters": int(np.count_nonzero(sizes > 1)), "docs_in_clusters": len(in_clusters),
            "planted_copies": len(copies), "copies_found": float(found.mean()) if len(copies) else 1.0,
            "mixed_clusters": int(mixed)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--shape", choices=SHAPES, default="long", help="Corpus shape (see above; default long).")
    ap.add_argument("--datasketch-docs", type=int, default=None,
                    help="Documents for datasketch (default: all; 0 skips it).")
    ap.add_argument("--workers", type=int, default=None,
                    help="curate's --workers (default: not given, as a user runs it: one per core, in-process "
                         "for a stage's work under a few seconds)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("CURATE_BENCH_DATA", "/tmp/curate-bench")))
    ap.add_argument("--json", type=Path, help="Also write the figures here.")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    shards_dir = args.data / (f"dedup-{args.docs}" if args.shape == "long" else f"{args.shape}-{args.docs}")
    if args.child:  # datasketch LIMIT CLUSTERS_FILE
        shards = sorted(p for p in shards_dir.iterdir() if p.name.startswith("shard-"))
        print(json.dumps(child_datasketch(shards, int(args.child[1]), Path(args.child[2]))))
        return

    t0 = time.perf_counter()
    if args.shape == "long":
        shards = build(shards_dir, args.docs, args.seed)
    else:
        shards = build_short(shards_dir, args.docs, args.shape, args.seed)
    planted = np.load(shards_dir / "planted.npy")
    ids, sizes = [], []
    for s in shards:
        for batch_ids, texts in read_shard(s):
            ids += batch_ids
            sizes += [len(t.encode()) for t in texts]
    text_mb = sum(sizes) / 1e6
    print(f"{args.shape}: {len(ids):,} documents, {text_mb:.0f} MB of text (median {int(np.median(sizes)):,} bytes) "
          f"in {len(shards)} shards ({time.perf_counter() - t0:.0f} s to build or load); {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)

    results = {}
    ours = run_curate(args.data / f"ws-{args.shape}-{args.docs}", shards, args.workers)
    results["curate"] = {**ours, **accuracy(ours.pop("label"), planted, ids)}
    limit = args.docs if args.datasketch_docs is None else args.datasketch_docs
    if limit:
        with tempfile.TemporaryDirectory(prefix="dedup-speed-") as tmp:
            out = Path(tmp) / "clusters.json"
            theirs = measure([sys.executable, __file__, "--docs", str(args.docs), "--shape", args.shape,
                              "--data", str(args.data), "--child", "datasketch", str(limit), str(out)])
            child = json.loads(theirs["last_line"])
            theirs["wall"] = child["end"] - theirs["start"]  # launch until its clusters are known
            results["datasketch"] = {**theirs, "docs": child["docs"],
                                     **accuracy(json.loads(out.read_text()), planted[:child["docs"]],
                                                ids[:child["docs"]])}
    for name, r in results.items():
        r.pop("last_line", None)
        r["docs_per_s"] = r["docs"] / r["wall"]
        extra = ""
        if name == "curate":
            extra = (f"\n    ingest {r['ingest_seconds']:.1f} s (not counted); in the run: "
                     + ", ".join(f"{k} {v:.1f} s" for k, v in r["phases"].items())
                     + f"; {r['edges']:,} verified edges; workspace {r['workspace_bytes'] / 1e9:.2f} GB")
        print(f"{name:<11} {r['docs']:>9,} docs {r['wall']:>7.1f} s wall {r['docs_per_s']:>7.0f} docs/s "
              f"{r['cpu']:>6.1f} CPU s  peak RSS {r['peak_rss_mb']:>5.0f} MB  clusters {r['clusters']:,} holding "
              f"{r['docs_in_clusters']:,}; planted copies found {100 * r['copies_found']:.1f}% of "
              f"{r['planted_copies']:,}; clusters joining planted groups {r['mixed_clusters']:,}{extra}")
    if "datasketch" in results:
        c, d = results["curate"], results["datasketch"]
        ratio = c["docs_per_s"] / d["docs_per_s"]
        cpu = (d["cpu"] / d["docs"]) / (c["cpu"] / c["docs"])
        print(f"ratio curate / datasketch: {ratio:.1f}x wall clock, {cpu:.1f}x per CPU second "
              f"(load average now {os.getloadavg()[0]:.1f})")
        results["ratio"], results["cpu_ratio"] = ratio, cpu
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
