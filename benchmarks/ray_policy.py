"""Measures the policy and the manifest's rows per shard in tasks (curate/core/executors/ray_policy.py) against the
driver path (pipeline.write_decisions + manifest.manifest_rows in the workspace), on the planted corpus of
tests/test_ray.py after a Ray run of the stages (their rows in parts).

    flock /tmp/curate-bench.lock env PYTHONPATH=.:tests .venv/bin/python \
        benchmarks/ray_policy.py --docs 20000 --reps 2

Every mode must give the same decisions and the same manifest rows.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--stages", default="dedup_exact,dedup_fuzzy,bias,quality")
    args = ap.parse_args()

    from raycluster import RayCluster
    from test_ray import planted_corpus

    from curate import Workspace
    from curate.core.executors import ray_global, ray_policy
    from curate.core.executors.ray import RayExecutor, _actor_env
    from curate.core.manifest import manifest_rows
    from curate.core.pipeline import run, write_decisions
    from curate.core.policy import load_rules

    out: dict = {"uptime_before": os.popen("uptime").read().strip()}
    tmp = Path(tempfile.mkdtemp(prefix="rp-bench-"))
    try:
        shards = planted_corpus(tmp / "corpus", args.docs, args.docs // 10)
        ws = Workspace.init(tmp / "ws")
        ws.ingest([str(p) for p in shards])
        ruleset = load_rules()
        with RayCluster(tmp / "ray", nodes=2, cpus=1) as cluster:
            os.environ.update(cluster.driver_env())
            t = time.perf_counter()
            run(ws, args.stages.split(","), engine="ray", ray_address=cluster.address)
            out["ray_run_seconds"] = round(time.perf_counter() - t, 1)
            ex = RayExecutor(cluster.address, str(ws.path / "parts"))
            modes = {"driver": None, "ray tasks": ray_global.RayTasks(ex.connect, _actor_env()),
                     "in-process tasks": ray_global.InProcess(2)}
            results: dict = {m: [] for m in modes}
            found: dict = {}
            for _ in range(args.reps):
                for mode, tasks in modes.items():
                    with ws.connect(write=True) as con:
                        t = time.perf_counter()
                        if tasks is None:
                            write_decisions(con, ruleset)
                            t1 = time.perf_counter()
                            rows = manifest_rows(con, ruleset)
                            rec = {"decisions": round(t1 - t, 3), "manifest_rows": round(time.perf_counter() - t1, 3)}
                        else:
                            events: list = []
                            from curate.util import log
                            real = log.event
                            log.event = lambda name, *a, **kw: events.append(kw) if name == "policy" else None  # noqa: B023 - restored below, in this iteration
                            try:
                                _, rows = ray_policy.policy_step(con, ruleset, tasks, str(ws.path / "parts"))
                            finally:
                                log.event = real
                            rec = {k: v for k, v in events[0].items() if k.endswith("seconds") or k in (
                                "from_parts", "exported", "global", "nodes", "tasks")}
                        rec["total"] = round(time.perf_counter() - t, 3)
                        results[mode].append(rec)
                        found[mode] = (con.execute("SELECT * FROM decisions ORDER BY doc_id").fetchall(), rows)
            ex.close()
        first = next(iter(found.values()))
        out["same_rows"] = all(f[0] == first[0] and f[1].equals(first[1]) for f in found.values())
        out["documents"] = len(first[0])
        out["modes"] = results
        out["uptime_after"] = os.popen("uptime").read().strip()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    json.dump(out, sys.stdout, indent=1, default=str)
    print()


if __name__ == "__main__":
    main()
