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
"""

from __future__ import annotations

import argparse
import os
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", default=str(ROOT / "data" / "samples"))
    ap.add_argument("--min-bytes", type=int, default=2000)
    ap.add_argument("--max-bytes", type=int, default=4000)
    ap.add_argument("--warmup", type=int, default=30, help="documents used to warm up each side, not timed")
    ap.add_argument("--rounds", type=int, default=5, help="the documents are timed in this many interleaved rounds")
    args = ap.parse_args()

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
