"""Personal-data detection speed: the `pii` stage next to the naive use of Presidio, in one run.

Corpus (--corpus):
  samples (default): the real text of data/samples, packed into documents of about 3 KB (consecutive sample
          documents joined, long ones cut at line breaks), shuffled with a fixed seed;
  short:  benchmarks/short_corpus.py's "short" shape: real documents from this machine's man pages and
          /usr/share/doc (never data/samples), median about 600 characters, 13% of them followed by a copy.
  naive:  one `AnalyzerEngine.analyze(text, language="en", entities=...)` per document, the same spaCy
          model (en_core_web_sm, full pipeline), the same recognizers and entity set (Presidio's for the
          eight default entities and our secret patterns; the e-mail check made offline in both).
  curate: `curate run --stages pii` on a workspace holding the corpus (the stage as users run it: process
          pool, model loading in each worker, DuckDB writes included), with 1 and with N workers. With
          --corpus short it is timed end to end as a user runs it: the `curate run --stages pii` command in
          its own process, start-up, policy and manifest included (ingest is not timed); with samples, the
          stage's own time inside `Workspace.run`.
Each variant runs in its own process; peak RSS is the largest sum over the process and its children.
Prints docs/s, chars/s, CPU time per document (independent of other load on the machine), peak RSS,
and the ratios to naive. Then, on the documents both ran on, per entity type at the policy's minimum
scores ([pii] in rules/default.toml): the naive loop's findings, curate's, and how many of each the other
finds too (same type, overlapping span). There is no ground truth on these corpora: "naive found by curate"
is curate's recall measured against the naive loop (benchmarks/pii_quality.py measures both against
labels); a naive finding curate does not make is shown, so one can judge whether it was a false positive.

    .venv/bin/python benchmarks/pii_speed.py [--corpus short] [--docs N] [--naive-docs 300] [--workers 2]
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
DEFAULT_DOCS = {"samples": 2000, "short": 3000}


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
    """Samples the resident memory of this process plus its children; `.peak` in MB. `.child_cpu`: the CPU
    seconds of the descendants seen, as last sampled (a pool's workers are the children of a fork server that
    nobody waits for, so getrusage does not count them; the last 0.1 s of each is missed)."""

    def __init__(self, every: float = 0.1):
        import psutil

        self.proc, self.every, self.peak, self._stop = psutil.Process(), every, 0.0, threading.Event()
        self.cpu: dict[int, float] = {}
        self.thread = threading.Thread(target=self._run, daemon=True)

    @property
    def child_cpu(self) -> float:
        return sum(self.cpu.values())

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in [self.proc, *self.proc.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                    if p.pid != self.proc.pid:
                        t = p.cpu_times()
                        self.cpu[p.pid] = t.user + t.system
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
        results = [engine.analyze(text, language="en", entities=entities) for text in docs]
        seconds, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    spans = [[i, r.entity_type, r.start, r.end, r.score] for i, rs in enumerate(results) for r in rs]
    return {"docs": len(docs), "chars": sum(map(len, docs)), "seconds": seconds, "cpu": cpu, "rss_mb": rss.peak,
            "found": len(spans), "spans": spans}


def run_curate(docs: list[str], workers: int, end_to_end: bool = False) -> dict:
    from curate import Workspace

    with tempfile.TemporaryDirectory() as d:
        shard = Path(d) / "corpus.jsonl"
        shard.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs)))
        for cmd in (["init", f"{d}/ws"], ["ingest", "--no-progress", f"{d}/ws", str(shard)]):  # not measured
            subprocess.run([PY, "-m", "curate.cli", *cmd], check=True, capture_output=True)
        with PeakRss() as rss:
            c0, t0 = cpu_seconds(), time.perf_counter()
            if end_to_end:  # the command a user types, in its own process: start-up to exit
                subprocess.run([PY, "-m", "curate.cli", "run", "--stages", "pii", "--workers", str(workers),
                                "--no-progress", f"{d}/ws"], check=True, capture_output=True)
                seconds, errors = time.perf_counter() - t0, 0
            else:
                report = next(r for r in Workspace(Path(d) / "ws").run(stages=["pii"], workers=workers).stages
                              if r.name == "pii")
                seconds, errors = report.seconds, report.errors
            cpu = cpu_seconds() - c0  # includes policy and manifest after the stage: a slight overcount
        if end_to_end:  # the command and its workers, sampled (see PeakRss), if getrusage saw less
            cpu = max(cpu, rss.child_cpu)
        ws = Workspace(Path(d) / "ws")
        if end_to_end:
            errors = ws.sql("SELECT count(*) FROM stage_errors WHERE stage = 'pii'").item()
        spans = ws.sql("""SELECT CAST(substr(doc_id, 2) AS INTEGER) AS i, entity_type, "start", "end", score
                          FROM pii_spans ORDER BY ALL""").rows()
        processed = ws.sql("SELECT count(*) FROM pii_docs").item()
    return {"docs": processed, "chars": sum(map(len, docs)), "seconds": seconds, "cpu": cpu, "rss_mb": rss.peak,
            "found": len(spans), "errors": errors, "spans": [list(r) for r in spans]}


def child(args: argparse.Namespace) -> None:
    docs = json.loads(Path(args.corpus_file).read_text())
    if args.variant == "naive":
        out = run_naive(docs[: args.naive_docs])
    else:
        out = run_curate(docs, args.workers, end_to_end=args.corpus == "short")
    print(json.dumps(out))


def load_corpus(kind: str, n: int) -> list[str]:
    if kind == "short":
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import short_corpus

        return [text for _, text in short_corpus.documents(n, "short")]
    return corpus(n)


def min_scores() -> tuple[dict[str, float], float]:
    """The policy's minimum score per entity type, and for secrets ([pii] in rules/default.toml)."""
    import tomllib

    pii = tomllib.loads((ROOT / "rules" / "default.toml").read_text())["pii"]
    return ({t: float(p.get("min_score", pii.get("min_score", 0.5))) for t, p in pii["entities"].items()},
            float(pii.get("secret_min_score", 0.5)))


def agreement(docs: list[str], naive: list[list], ours: list[list], n: int) -> None:
    """Per type, on the first n documents, at the policy's minimum scores: findings of each and how many of
    them the other finds too (same type, overlapping span); then a few of the naive findings curate lacks."""
    mins, secret_min = min_scores()

    def kept(spans: list[list]) -> dict[tuple[int, str], list[tuple[int, int]]]:
        out: dict[tuple[int, str], list[tuple[int, int]]] = {}
        for i, kind, start, end, score in spans:
            if i < n and score >= mins.get(kind, secret_min):
                out.setdefault((i, kind), []).append((start, end))
        return out

    a, b = kept(naive), kept(ours)

    def covered(x: dict, y: dict, key: tuple[int, str]) -> int:
        return sum(any(s < e2 and s2 < e for s2, e2 in y.get(key, ())) for s, e in x[key])

    kinds = sorted({k for _, k in a} | {k for _, k in b})
    print(f"\nagreement on the first {n} documents, at the [pii] minimum scores (overlapping span, same type):")
    print(f"  {'entity type':<22} {'naive':>6} {'curate':>6} | {'naive found by curate':>21} "
          f"{'curate found by naive':>21}")
    for kind in kinds:
        na = sum(len(v) for (_, k), v in a.items() if k == kind)
        nb = sum(len(v) for (_, k), v in b.items() if k == kind)
        ab = sum(covered(a, b, key) for key in a if key[1] == kind)
        ba = sum(covered(b, a, key) for key in b if key[1] == kind)
        print(f"  {kind:<22} {na:>6} {nb:>6} | {ab:>8} ({ab / na if na else 1:>6.1%}) {'':>4}"
              f"{ba:>8} ({ba / nb if nb else 1:>6.1%})")
    missed = [(i, k, s, e) for (i, k), v in sorted(a.items()) for s, e in v
              if not any(s < e2 and s2 < e for s2, e2 in b.get((i, k), ()))]
    for i, kind, s, e in missed[:12]:
        text = docs[i]
        print(f"  naive only: {kind} {text[s:e]!r} in {text[max(0, s - 30):e + 20]!r}")
    if len(missed) > 12:
        print(f"  ... and {len(missed) - 12} more naive-only findings")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", choices=sorted(DEFAULT_DOCS), default="samples",
                    help="samples: data/samples packed into 3 KB documents; short: benchmarks/short_corpus.py")
    ap.add_argument("--docs", type=int, help="documents for curate (samples: 2,000; short: 3,000)")
    ap.add_argument("--naive-docs", type=int, default=300, help="the first N of them for the naive loop")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--variant", choices=["naive", "curate"], help=argparse.SUPPRESS)
    ap.add_argument("--corpus-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        return child(args)
    docs = load_corpus(args.corpus, args.docs or DEFAULT_DOCS[args.corpus])
    lengths = sorted(map(len, docs))
    source = "real text of data/samples" if args.corpus == "samples" else "short_corpus.py 'short', real text"
    print(f"corpus: {len(docs)} documents, {sum(lengths) / len(docs):,.0f} chars on average, median "
          f"{lengths[len(lengths) // 2]:,} ({source}); {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    timed = "end to end (`curate run --stages pii`, start-up included)" if args.corpus == "short" else "the stage"
    print(f"curate timed: {timed}; naive: the analyze loop after a warm-up call", flush=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(docs, f)
    runs = [("naive Presidio, 1 process", ["--variant", "naive", "--naive-docs", str(args.naive_docs)])]
    runs += [(f"curate pii, {w} worker{'s' * (w > 1)}", ["--variant", "curate", "--workers", str(w)])
             for w in sorted({1, args.workers})]
    results = []
    try:
        for name, extra in runs:
            proc = subprocess.run([PY, __file__, "--corpus", args.corpus, "--corpus-file", f.name, *extra],
                                  capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
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
    agreement(docs, results[0][1]["spans"], results[-1][1]["spans"], results[0][1]["docs"])


if __name__ == "__main__":
    main()
