"""Benchmark of the Ray engine against the local one: the same corpus and stages on the local engine, on Ray with
one node and with two nodes on this machine (tests/raycluster.py: loopback, token auth, 1 CPU per node).

    .venv/bin/python benchmarks/scale_ray.py [--docs 100000] [--stages dedup_exact,dedup_fuzzy] [--out DIR]

The corpus: benchmarks/short_corpus.py's "short" shape (real text of this machine, not data/samples: median 600
characters, 10% edited and 3% exact copies), in shards of 5,000. Each configuration runs `curate run` on a
fresh copy of one ingested workspace. Printed per configuration: wall clock; CPU seconds and peak RSS of the
driver and of every cluster process (sampled from /proc every 0.2 s: a process that lives less than that is
missed; the peak is the kernel's VmHWM); bytes of parts written; and the manifest's root (the same on all).
The overhead of Ray per document is (CPU seconds on Ray with one node - CPU seconds locally with one worker)
/ documents.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

sys.path.insert(0, str(ROOT / "benchmarks"))

import short_corpus  # noqa: E402
from raycluster import RayCluster, descendants  # noqa: E402

CURATE = [sys.executable, "-m", "curate.cli"]
TICK = os.sysconf("SC_CLK_TCK")


def corpus(d: Path, docs: int, shard_docs: int = 5000) -> list[Path]:
    """short_corpus's "short" shape (real text of this machine, median 600 characters, 10% edited and 3% exact
    copies) in JSONL shards of `shard_docs` documents."""
    return short_corpus.build(d, docs, "short", shard_docs=shard_docs)


class Sampler:
    """CPU seconds and peak RSS of a set of processes (and their descendants), sampled from /proc."""

    def __init__(self, roots):
        self.roots = roots  # callable -> pids
        self.seen: dict[int, tuple[str, float, int]] = {}  # pid -> (name, cpu s, peak rss bytes)
        self.base: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def read(pid: int) -> tuple[str, float, int] | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            status = Path(f"/proc/{pid}/status").read_text()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" or not cmd[0]:
            return None  # exited: its last live sample stands
        cpu = (int(fields[11]) + int(fields[12])) / TICK
        hwm = re.search(r"VmHWM:\s+(\d+) kB", status)
        name = cmd[0].decode(errors="replace").rsplit("/", 1)[-1]
        if name.startswith("python") and len(cmd) > 2:
            name = " ".join(c.decode(errors="replace") for c in cmd[1:4])[:40]
        return name, cpu, int(hwm.group(1)) * 1024 if hwm else 0

    def pids(self) -> set[int]:
        out = set()
        for p in self.roots():
            out.add(p)
            out.update(descendants(p))
        return out

    def start(self) -> Sampler:
        for p in self.pids():
            r = self.read(p)
            if r:
                self.base[p] = r[1]
        self.thread.start()
        return self

    def _loop(self) -> None:
        while not self.stop.is_set():
            for p in self.pids():
                r = self.read(p)
                if r:
                    self.seen[p] = r
            time.sleep(0.2)

    def finish(self) -> dict:
        self.stop.set()
        self.thread.join()
        cpu = sum(c - self.base.get(p, 0.0) for p, (_, c, _) in self.seen.items())
        peaks: dict[str, int] = {}
        for _, (name, _, rss) in self.seen.items():
            peaks[name] = max(peaks.get(name, 0), rss)
        return {"cpu_seconds": round(cpu, 1), "peak_rss_mb": {k: round(v / 2**20) for k, v in sorted(peaks.items())}}


def run(base: Path, work: Path, label: str, stages: str, args: list[str], env: dict[str, str],
        cluster: RayCluster | None) -> dict:
    ws = work / label
    shutil.rmtree(ws, ignore_errors=True)
    shutil.copytree(base, ws)
    started = time.monotonic()
    proc = subprocess.Popen([*CURATE, "--log-format", "json", "run", str(ws), "--stages", stages, *args],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sampler = Sampler(lambda: [proc.pid, *(cluster.pids() if cluster else [])]).start()
    _, err = proc.communicate()
    wall = time.monotonic() - started
    usage = sampler.finish()
    if proc.returncode:
        raise SystemExit(f"{label}: curate run exited {proc.returncode}:\n{err[-3000:]}")
    ends = [json.loads(line) for line in err.splitlines() if line.startswith("{") and '"stage_end"' in line]
    parts = sum(p.stat().st_size for p in (ws / "parts").rglob("*.parquet")) if (ws / "parts").exists() else 0
    return {"config": label, "wall_seconds": round(wall, 1), **usage, "parts_bytes": parts,
            "root": (ws / "manifest" / "ROOT").read_text()[:16],
            "stages": {e["stage"]: {"seconds": e["seconds"], "nodes": e.get("nodes")} for e in ends}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--stages", default="dedup_exact,dedup_fuzzy")
    ap.add_argument("--out", type=Path, default=Path("/tmp/curate-scale-ray"))
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    shards = corpus(a.out / f"corpus-{a.docs}", a.docs)
    base = a.out / f"base-{a.docs}"
    if not (base / "curate.duckdb").exists():
        shutil.rmtree(base, ignore_errors=True)
        subprocess.run([*CURATE, "init", str(base)], check=True, stdout=subprocess.DEVNULL)
        subprocess.run([*CURATE, "ingest", str(base), *map(str, shards)], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    # A copy of the rules directory: every configuration reads the same rules file even while it is edited.
    rules = a.out / "rules"
    shutil.rmtree(rules, ignore_errors=True)
    shutil.copytree(ROOT / "rules", rules)
    frozen = {"CURATE_RULES_DIR": str(rules)}
    results = []
    for workers in (1, 2):
        results.append(run(base, a.out, f"local-{workers}", a.stages, ["--workers", str(workers)], frozen, None))
        print(json.dumps(results[-1]), flush=True)
    for nodes in (1, 2):
        with RayCluster(a.out / f"cluster-{nodes}", nodes=nodes) as cluster:
            env = {**frozen, **cluster.driver_env()}
            results.append(run(base, a.out, f"ray-{nodes}node", a.stages,
                               ["--engine", "ray", "--ray-address", cluster.address], env, cluster))
            print(json.dumps(results[-1]), flush=True)
    by = {r["config"]: r for r in results}
    overhead = (by["ray-1node"]["cpu_seconds"] - by["local-1"]["cpu_seconds"]) / a.docs
    print(json.dumps({"docs": a.docs, "ray_overhead_cpu_ms_per_doc": round(overhead * 1000, 3),
                      "roots_equal": len({r["root"] for r in results}) == 1}))


if __name__ == "__main__":
    main()
