"""Personal-data detection speed: the `pii` stage next to the naive use of Presidio, in one run.

Corpus: the real text of data/samples, packed into documents of about 3 KB (consecutive sample documents
joined, long ones cut at line breaks), shuffled with a fixed seed.
  naive:  one `AnalyzerEngine.analyze(text, language="en", entities=...)` per document, the same spaCy
          model (en_core_web_sm, full pipeline), the same recognizers and entity set (Presidio's for the
          eight default entities and our secret patterns; the e-mail check made offline in both).
  curate: `curate run --stages pii` on a workspace holding the corpus (the stage as users run it: process
          pool, model loading in each worker, DuckDB writes included), with 1 and with N workers.
Each variant runs in its own process; peak RSS is the largest sum over the process and its children.
Prints docs/s, chars/s, CPU time per document (independent of other load on the machine), peak RSS,
and the ratios to naive.

    .venv/bin/python benchmarks/pii_speed.py [--docs 2000] [--naive-docs 300] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def sample_texts() -> list[str]:
    """The text of every readable sample document, in ingest order, read with curate itself."""
    from curate import Workspace

    with tempfile.TemporaryDirectory() as d:
        ws = Workspace.init(Path(d) / "ws")
        ws.ingest([str(ROOT / "data" / "samples")])
        return ws.sql("SELECT text FROM documents ORDER BY seq")["text"].to_list()


def corpus(n: int, size: int = 3000, seed: int = 11) -> list[str]:
    """n real documents of about `size` chars: sample texts joined or cut at line breaks; repeated (each
    pass shuffled differently) when the samples do not make n."""
    texts = sample_texts()
    docs: list[str] = []
    rng = random.Random(seed)
    while len(docs) < n:
        order = texts[:]
        rng.shuffle(order)
        buf = ""
        for t in order:
            buf = f"{buf}\n\n{t}" if buf else t
            while len(buf) >= size * 5 // 6:
                cut = buf.rfind("\n", size * 5 // 6, size * 7 // 6)
                cut = cut if cut > 0 else min(len(buf), size)
                docs.append(buf[:cut])
                buf = buf[cut:].lstrip("\n")
    return docs[:n]


def cpu_seconds() -> float:
    """CPU time of this process and of its children that have ended (the pool's workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


class PeakRss:
    """Samples the resident memory of this process plus its children; `.peak` in MB."""

    def __init__(self, every: float = 0.1):
        import psutil

        self.proc, self.every, self.peak, self._stop = psutil.Process(), every, 0.0, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self.proc, *self.proc.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total / 2**20)
            self._stop.wait(self.every)

    def __enter__(self) -> PeakRss:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.thread.join()


def run_naive(docs: list[str]) -> dict:
    from curate.stages.pii.engine import analyzer, entity_set, load_recognizers, recognizers_path

    spec = load_recognizers(recognizers_path())
    with PeakRss() as rss:
        engine = analyzer(spec, fast=False)
        entities = entity_set(spec)
        engine.analyze(docs[0], language="en", entities=entities)  # warm: lazy loading is not timed
        t0, c0 = time.perf_counter(), cpu_seconds()
        found = sum(len(engine.analyze(text, language="en", entities=entities)) for text in docs)
        seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return {"docs": len(docs), "chars": sum(map(len, docs)), "seconds": seconds, "cpu": cpu, "rss_mb": rss.peak,
            "found": found}


def run_curate(docs: list[str], workers: int) -> dict:
    from curate import Workspace

    with tempfile.TemporaryDirectory() as d:
        shard = Path(d) / "corpus.jsonl"
        shard.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs)))
        for cmd in (["init", f"{d}/ws"], ["ingest", "--no-progress", f"{d}/ws", str(shard)]):  # not measured
            subprocess.run([PY, "-m", "curate.cli", *cmd], check=True, capture_output=True)
        ws = Workspace(Path(d) / "ws")
        with PeakRss() as rss:
            c0 = cpu_seconds()
            report = next(r for r in ws.run(stages=["pii"], workers=workers).stages if r.name == "pii")
            cpu = cpu_seconds() - c0  # includes policy and manifest after the stage: a slight overcount
        found = ws.sql("SELECT count(*) FROM pii_spans").item()
    return {"docs": report.documents, "chars": sum(map(len, docs)), "seconds": report.seconds, "cpu": cpu,
            "rss_mb": rss.peak, "found": found, "errors": report.errors}


def child(args: argparse.Namespace) -> None:
    docs = json.loads(Path(args.corpus).read_text())
    out = run_naive(docs[: args.naive_docs]) if args.variant == "naive" else run_curate(docs, args.workers)
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=2000, help="documents for curate (the runner batches 1,000)")
    ap.add_argument("--naive-docs", type=int, default=300, help="the first N of them for the naive loop")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--variant", choices=["naive", "curate"], help=argparse.SUPPRESS)
    ap.add_argument("--corpus", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        return child(args)
    docs = corpus(args.docs)
    print(f"corpus: {len(docs)} documents, {sum(map(len, docs)) / len(docs):,.0f} chars on average "
          f"(real text of data/samples); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(docs, f)
    runs = [("naive Presidio, 1 process", ["--variant", "naive", "--naive-docs", str(args.naive_docs)])]
    runs += [(f"curate pii, {w} worker{'s' * (w > 1)}", ["--variant", "curate", "--workers", str(w)])
             for w in sorted({1, args.workers})]
    results = []
    try:
        for name, extra in runs:
            proc = subprocess.run([PY, __file__, "--corpus", f.name, *extra], capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(ROOT)})
            if proc.returncode:
                raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
            results.append((name, json.loads(proc.stdout.strip().splitlines()[-1])))
            r = results[-1][1]
            print(f"  {name:<28} {r['docs'] / r['seconds']:>7.2f} docs/s {r['chars'] / r['seconds'] / 1e3:>7.1f} "
                  f"kchars/s  {1e3 * r['cpu'] / r['docs']:>6.1f} CPU ms/doc  peak RSS {r['rss_mb']:>5.0f} MB  "
                  f"({r['docs']} docs in {r['seconds']:.1f} s, {r['found']} findings)", flush=True)
    finally:
        os.unlink(f.name)
    base = results[0][1]["docs"] / results[0][1]["seconds"]
    cpu = results[0][1]["cpu"] / results[0][1]["docs"]
    print("ratio to naive, docs/s (CPU time per doc): " + ", ".join(
        f"{name}: {r['docs'] / r['seconds'] / base:.1f}x ({cpu / (r['cpu'] / r['docs']):.1f}x)"
        for name, r in results[1:]))
    print(f"load average after the run: {os.getloadavg()[0]:.1f} (other processes share these CPUs)")


if __name__ == "__main__":
    main()
