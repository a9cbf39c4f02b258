#!/usr/bin/env python3
"""Quality heuristics: Curate's `quality` stage against DataTrove's Gopher, C4 and FineWeb filters.

Both run in this one process on one core, over the same real documents of about 3 KB (2,000 to 4,000
UTF-8 bytes) from data/samples, in interleaved rounds; each side is warmed up first on other documents.
Reported:

- datatrove (all 4): every filter evaluated on every document (fresh copy each), the work our stage does;
- datatrove (pipeline): the filters chained as in a DataTrove pipeline, stopping at the first drop;
- curate metrics: every metric of the four filters (what the rules need);
- curate stage: the whole stage, i.e. metrics plus lid.176 language ID plus the default quality model.

    python benchmarks/quality_speed.py [--samples data/samples] [--min-bytes 2000] [--max-bytes 4000]

With `--corpus short`: real short documents (benchmarks/short_corpus.py, shape "short": median about 600
bytes, mean about 1.5 KB, never data/samples), the stage timed end to end as users run it: `curate ingest`
(timed apart), then `curate run WS --stages quality` in a fresh process (start-up, worker pool, models
loaded in each worker, DuckDB writes, policy and manifest included), its wall clock and the stage's own
seconds from its log. The peer, DataTrove's four filters on every document (one process, one core), runs
on the first --peer-docs documents in the same run. `--baseline DIR` times a second source tree (e.g. an
export of the last commit: `git archive HEAD curate rules pyproject.toml | tar -x -C DIR`) in the same
run, alternating with this one, so that a speed-up is a ratio measured side by side.

    python benchmarks/quality_speed.py --corpus short [--docs 10000] [--workers 2] [--repeat 2]
        [--peer-docs 2000] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def load(samples: str, lo: int, hi: int) -> list[str]:
    from curate import Workspace

    with tempfile.TemporaryDirectory() as d:
        ws = Workspace.init(Path(d) / "ws")
        ws.ingest([samples])
        return [r[0] for r in ws.sql(
            "SELECT text FROM documents WHERE strlen(text) BETWEEN ? AND ? ORDER BY sha256(doc_id)", [lo, hi]).rows()]


def timed(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def stage_seconds(log: str) -> float:
    """The quality stage's own seconds (from its stage_end event): the run less start-up, policy, manifest."""
    found = re.findall(r"stage_end stage=quality .*? seconds=([0-9.]+)", log)
    if not found:
        raise SystemExit(f"no stage_end event for quality in the run's log:\n{log[-3000:]}")
    return float(found[-1])


def curate_cli(tree: Path, *args: str) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds, output) of `python -m curate.cli ARGS` run from `tree` (so that its curate
    is the one imported: -m puts the current directory first on the path), as a user runs it. CPU time is
    the sum over the process and every descendant (the worker server and its workers), sampled every 50 ms
    (a worker's last 50 ms may be missed): unlike wall time it hardly depends on what else the machine runs."""
    import psutil

    env = {**os.environ, "PYTHONPATH": str(tree)}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=tree)
    cpu: dict[int, float] = {}
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    t = p.cpu_times()
                    cpu[p.pid] = t.user + t.system
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        time.sleep(0.05)
    out = proc.stdout.read() if proc.stdout else ""
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit(f"curate {' '.join(args)} ({tree}) failed:\n{out[-3000:]}")
    return seconds, sum(cpu.values()), out


def short_mode(args: argparse.Namespace) -> None:
    """`--corpus short`: end to end on real short documents, next to DataTrove (and a baseline tree)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import short_corpus

    shards = short_corpus.build(Path(args.out) / f"short-{args.docs}", args.docs, "short")
    shape = short_corpus.describe(shards)
    print(f"corpus: {shape['docs']} real short documents (short_corpus, shape short), {shape['text_mb']:.1f} MB, "
          f"median {shape['median_bytes']} B, mean {shape['mean_bytes']} B; {os.cpu_count()} CPUs, "
          f"--workers {args.workers}; load average {os.getloadavg()[0]:.2f} before", flush=True)
    trees = {"this tree": ROOT, **({"baseline": Path(args.baseline).resolve()} if args.baseline else {})}
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as d:
        for i, (name, tree) in enumerate(trees.items()):  # ingest once per tree, timed apart; runs use copies
            ws = Path(d) / f"ingested-{i}"
            curate_cli(tree, "init", str(ws))
            seconds, _, _ = curate_cli(tree, "ingest", "--no-progress", str(ws), *map(str, shards))
            print(f"  {name}: curate ingest {seconds:.1f} s (not counted below)", flush=True)
        for rep in range(args.repeat):
            for i, (name, tree) in enumerate(trees.items()):  # alternating: a change in load hits both alike
                ws = Path(d) / f"run-{rep}-{i}"
                subprocess.run(["cp", "-r", str(Path(d) / f"ingested-{i}"), str(ws)], check=True)
                wall, cpu, log = curate_cli(tree, "run", "--no-progress", "--workers", str(args.workers),
                                            "--stages", "quality", str(ws))
                runs[name].append((wall, stage_seconds(log), cpu))
                print(f"  {name}: curate run --stages quality {wall:.2f} s wall (stage {runs[name][-1][1]:.2f} s), "
                      f"{cpu:.2f} CPU s, {shape['docs'] / wall:.0f} docs/s end to end; load average "
                      f"{os.getloadavg()[0]:.2f}", flush=True)
                subprocess.run(["rm", "-rf", str(ws)], check=True)

    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    texts = [json.loads(line)["text"] for s in shards for line in s.open(encoding="utf-8")][: args.peer_docs]
    filters = [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(), FineWebQualityFilter()]
    t0 = time.perf_counter()
    for i, t in enumerate(texts):
        for f in filters:
            try:
                f.filter(Document(text=t, id=str(i)))
            except ZeroDivisionError:  # FineWeb divides by the word count
                pass
    peer = len(texts) / (time.perf_counter() - t0)
    print(f"  datatrove (all 4), one process: {peer:.0f} docs/s on the first {len(texts)} documents", flush=True)
    best = {name: tuple(min(x[i] for x in r) for i in range(3)) for name, r in runs.items()}
    for name, (wall, stage, cpu) in best.items():
        print(f"{name:<10} best of {args.repeat}: {wall:6.2f} s wall, stage {stage:6.2f} s, {cpu:6.2f} CPU s; "
              f"{shape['docs'] / wall:6.0f} docs/s end to end = {shape['docs'] / wall / peer:.1f}x datatrove (all 4)")
    if "baseline" in best:
        (w1, s1, c1), (w0, s0, c0) = best["this tree"], best["baseline"]
        print(f"speed-up over the baseline: {w0 / w1:.2f}x wall clock of curate run, {s0 / s1:.2f}x the stage's own "
              f"seconds, {c0 / c1:.2f}x CPU seconds")
    print(f"load average after the run: {os.getloadavg()[0]:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", choices=["samples", "short"], default="samples",
                    help="samples: 2-4 KB sample documents in one process; short: real short documents end to end")
    ap.add_argument("--docs", type=int, default=10_000, help="--corpus short: documents")
    ap.add_argument("--workers", type=int, default=2, help="--corpus short: curate run --workers")
    ap.add_argument("--repeat", type=int, default=2, help="--corpus short: timed runs per tree (best reported)")
    ap.add_argument("--peer-docs", type=int, default=2000, help="--corpus short: documents for DataTrove")
    ap.add_argument("--baseline", help="--corpus short: a second source tree timed in the same run")
    ap.add_argument("--out", default="/tmp/curate-bench", help="--corpus short: where the corpus is built")
    ap.add_argument("--samples", default=str(ROOT / "data" / "samples"))
    ap.add_argument("--min-bytes", type=int, default=2000)
    ap.add_argument("--max-bytes", type=int, default=4000)
    ap.add_argument("--warmup", type=int, default=30, help="documents used to warm up each side, not timed")
    ap.add_argument("--rounds", type=int, default=5, help="the documents are timed in this many interleaved rounds")
    args = ap.parse_args()
    if args.corpus == "short":
        return short_mode(args)

    import pyarrow as pa
    from datatrove.data import Document
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    from curate.core.policy import load_rules
    from curate.stages.quality.metrics import metrics
    from curate.stages.quality.stage import Quality
    from curate.stages.quality.words import Words

    docs = load(args.samples, args.min_bytes, args.max_bytes)
    warm, docs = docs[: args.warmup], docs[args.warmup:]
    mb = sum(len(t.encode()) for t in docs) / 1e6
    print(f"{len(docs)} documents of {args.min_bytes}-{args.max_bytes} bytes ({mb:.2f} MB, mean "
          f"{mb * 1e6 / len(docs):.0f} B); warm-up on {len(warm)} others", flush=True)

    filters = [GopherRepetitionFilter(), GopherQualityFilter(), C4QualityFilter(), FineWebQualityFilter()]

    def datatrove_all(texts: list[str]) -> None:
        for i, t in enumerate(texts):
            for f in filters:
                f.filter(Document(text=t, id=str(i)))

    def datatrove_pipeline(texts: list[str]) -> None:
        for i, t in enumerate(texts):
            d = Document(text=t, id=str(i))
            for f in filters:
                if f.filter(d) is not True:
                    break

    words = Words()
    stage = Quality(load_rules().raw.get("stages", {}).get("quality", {}))

    def curate_metrics(texts: list[str]) -> None:
        metrics(texts, stage.settings, words)

    def curate_stage(texts: list[str]) -> None:
        for i in range(0, len(texts), 1000):
            chunk = texts[i: i + 1000]
            stage(pa.record_batch({"doc_id": [str(j) for j in range(len(chunk))], "text": chunk}))

    for fn in (datatrove_all, curate_metrics, curate_stage):
        fn(warm)
    sides = {"datatrove (all 4)": datatrove_all, "datatrove (pipeline)": datatrove_pipeline,
             "curate metrics": curate_metrics, "curate stage": curate_stage}
    results = dict.fromkeys(sides, 0.0)
    step = -(-len(docs) // args.rounds)
    for r in range(0, len(docs), step):  # interleaved rounds: a change in machine load hits every side alike
        for name, fn in sides.items():
            results[name] += timed(fn, docs[r: r + step])
    for name, seconds in results.items():
        print(f"{name:<22} {len(docs) / seconds:8.1f} docs/s  {mb / seconds:6.2f} MB/s", flush=True)
    base = results["datatrove (all 4)"]
    print(f"speed-up, curate metrics vs datatrove (all 4): {base / results['curate metrics']:.1f}x; "
          f"curate stage (with language ID and model) vs datatrove (all 4): {base / results['curate stage']:.1f}x; "
          f"curate stage vs datatrove (pipeline): {results['datatrove (pipeline)'] / results['curate stage']:.1f}x")
    load1 = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"one process, one core; machine: {os.cpu_count()} cores, load average {load1:.1f} during the run")


if __name__ == "__main__":
    main()
