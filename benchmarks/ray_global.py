"""Measures the distributed global steps (curate/core/executors/ray_global.py) against the stages' own finalize
on the driver, on the planted near-duplicate corpus of tests/test_ray.py, and the union-find's bytes per edge.

    flock /tmp/curate-bench.lock env PYTHONPATH=.:tests .venv/bin/python \
        benchmarks/ray_global.py --docs 20000 --reps 2

Per repetition and mode, the dedup tables are reset to "nothing clustered yet" (what a first run's finalize
sees) and the two steps are timed inside one transaction each; every mode must give the same rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import duckdb
import numpy as np

RESET = ("UPDATE dedup_signatures SET clustered = false; DELETE FROM dedup_bands; DELETE FROM dedup_pairs; "
         "DELETE FROM dedup_fuzzy_state; DELETE FROM dedup_fuzzy; "
         "UPDATE dedup_exact SET cluster_id = NULL, is_keeper = NULL")
TABLES = ("dedup_pairs", "dedup_fuzzy", "dedup_exact", "dedup_bands")


def union_find_bytes(edges: int, docs: int, seed: int = 5) -> dict:
    """Peak bytes numpy allocates in ray_global.components (tracemalloc sees numpy's buffers), per edge, for a
    dedup-like graph: near-copy clusters (90% of edges) plus random pairs, `docs` ids."""
    from curate.core.executors.ray_global import components

    rng = np.random.default_rng(seed)
    heads = rng.integers(0, docs, edges)
    b = np.where(rng.random(edges) < 0.9, heads + rng.integers(1, 50, edges), rng.integers(0, docs, edges))
    a, b = np.minimum(heads, b).astype(np.int32), np.maximum(heads, b).astype(np.int32)  # as clusters() fetches
    tracemalloc.start()
    t = time.perf_counter()
    nodes, label = components(a, b)
    seconds = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    held = a.nbytes + b.nbytes  # the edge arrays fetched from DuckDB (INTEGER below 2^31 documents)
    return {"edges": edges, "nodes": len(nodes), "components": int(len(np.unique(label))),
            "peak_bytes": peak, "input_bytes": held, "bytes_per_edge": round((peak + held) / edges, 1),
            "seconds": round(seconds, 3)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--edges", type=int, nargs="*", default=[1_000_000, 6_000_000])
    ap.add_argument("--union-find-only", action="store_true")
    args = ap.parse_args()

    from raycluster import RayCluster
    from test_ray import planted_corpus

    from curate import Workspace
    from curate.core.executors import ray_global
    from curate.core.executors.ray import RayExecutor, _actor_env
    from curate.core.pipeline import run
    from curate.core.policy import load_rules
    from curate.core.stage import detectors

    out: dict = {"uptime_before": os.popen("uptime").read().strip()}
    for e in args.edges:
        out.setdefault("union_find", []).append(union_find_bytes(e, int(e / 0.6)))
    if args.union_find_only:
        json.dump(out, sys.stdout, indent=1)
        return
    tmp = Path(tempfile.mkdtemp(prefix="rg-bench-"))
    try:
        shards = planted_corpus(tmp / "corpus", args.docs, args.docs // 10)
        ws = Workspace.init(tmp / "ws")
        ws.ingest([str(p) for p in shards])
        with RayCluster(tmp / "ray", nodes=2, cpus=1) as cluster:
            os.environ.update(cluster.driver_env())
            run(ws, ["dedup_exact", "dedup_fuzzy"], engine="ray", ray_address=cluster.address)  # parts written
            ex = RayExecutor(cluster.address, str(ws.path / "parts"))
            modes = {"driver (finalize)": None, "ray tasks": ray_global.RayTasks(ex.connect, _actor_env()),
                     "in-process tasks": ray_global.InProcess(2)}
            dets = detectors(load_rules().raw, ["dedup_exact", "dedup_fuzzy"])
            results: dict = {m: [] for m in modes}
            rows: dict = {}
            for _ in range(args.reps):
                for mode, tasks in modes.items():
                    with ws.connect(write=True) as con:
                        con.execute(RESET)
                        rec = {}
                        for det in dets:
                            t = time.perf_counter()
                            con.execute("BEGIN")
                            if tasks is None:
                                det.finalize(con)
                            else:
                                with ray_global.Step(det, tasks, str(ws.path / "parts")) as s:
                                    ray_global.STEPS[det.name](s, con)
                                rec[f"{det.name}_stats"] = s.stats
                            con.execute("COMMIT")
                            rec[det.name] = round(time.perf_counter() - t, 3)
                        results[mode].append(rec)
                        rows[mode] = {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}
            ex.close()
        first = next(iter(rows.values()))
        out["same_rows"] = all(r == first for r in rows.values())
        out["edges"] = len(first["dedup_pairs"])
        out["steps"] = results
        out["uptime_after"] = os.popen("uptime").read().strip()
        with duckdb.connect(str(ws.path / "curate.duckdb"), read_only=True) as con:
            out["band_rows"] = con.execute("SELECT count(*) FROM dedup_bands").fetchone()[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    json.dump(out, sys.stdout, indent=1, default=str)
    print()


if __name__ == "__main__":
    main()
