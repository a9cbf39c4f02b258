"""The whole pipeline as a user runs it: `curate run WS` (every stage, the policy, the manifest and the summary it
prints) on real-like short documents, with wall clock, CPU seconds and peak RSS per phase.

The corpus is benchmarks/short_corpus.py's "short" shape (real text of this machine, median 600 characters,
10% edited and 3% exact copies); past the real text (about 150,000 documents) the base documents come round
again with fresh edits, so a million documents are the real ones resampled and perturbed. Ingest is timed
apart (`curate ingest`). The run's JSON log marks the phases: start-up (process start to the first
stage_start), each stage (stage_start to stage_end), and the rest (policy, manifest, summary, exit; the
policy and manifest events give their own seconds). CPU seconds and resident memory are sampled from /proc
over the curate process and its children every 0.1 s and charged to the phase running at the time; peak RSS
is the largest sum over the process tree seen in the phase.

    PYTHONPATH=. .venv/bin/python benchmarks/full_run.py --docs 100000
    PYTHONPATH=. .venv/bin/python benchmarks/full_run.py --docs 1000000 --stages dedup_exact   # fixed cost at 1M
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import short_corpus  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CURATE = [sys.executable, "-m", "curate.cli"]
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
BETWEEN, LAST = "between stages (set-up)", "policy, manifest, summary"


def tree(pid: int) -> list[int]:
    """pid and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def sample(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, RSS bytes) of a live process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError):
        return None
    if fields[0] == "Z":
        return None
    return (int(fields[11]) + int(fields[12])) / TICK, rss


class PhaseMeter:
    """CPU seconds and peak RSS of a process tree, charged to the phase named by `phase` when sampled."""

    def __init__(self, pid: int) -> None:
        self.pid, self.phase = pid, "start-up"
        self.cpu: dict[int, float] = {}  # pid -> CPU seconds last seen
        self.by_phase: dict[str, dict[str, float]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.stop.is_set():
            self.tick()
            time.sleep(0.1)

    def tick(self) -> None:
        row = self.by_phase.setdefault(self.phase, {"cpu_seconds": 0.0, "peak_rss_mb": 0.0})
        rss = 0
        for p in tree(self.pid):
            s = sample(p)
            if s is None:
                continue
            row["cpu_seconds"] += s[0] - self.cpu.get(p, 0.0)
            self.cpu[p] = s[0]
            rss += s[1]
        row["peak_rss_mb"] = max(row["peak_rss_mb"], rss / 1e6)

    def switch(self, phase: str) -> None:
        self.tick()  # what ran so far belongs to the phase that is ending
        self.phase = phase

    def finish(self) -> dict[str, dict[str, float]]:
        self.stop.set()
        self.thread.join()
        return self.by_phase


def run(ws: Path, stages: str | None, workers: int | None) -> dict:
    """`curate run` with JSON logs; returns per-phase wall, CPU and RSS, and the events of the run."""
    cmd = [*CURATE, "--log-format", "json", "run", str(ws), "--no-progress"]
    cmd += ["--stages", stages] if stages else []
    cmd += ["--workers", str(workers)] if workers else []
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    meter = PhaseMeter(proc.pid)
    walls: dict[str, float] = {}
    phase, since, events, gaps = "start-up", started, [], 0
    for line in proc.stderr:
        if not line.startswith("{"):
            continue
        e = json.loads(line)
        events.append(e)
        now = time.monotonic()
        if e["event"] == "stage_start":
            new = e["stage"]
        elif e["event"] == "stage_end":
            gaps += 1
            new = f"gap {gaps}"  # the next stage's set-up, or (the last gap) policy, manifest and summary
        else:
            continue
        walls[phase] = walls.get(phase, 0.0) + now - since
        meter.switch(new)
        phase, since = new, now
    out = proc.stdout.read()
    proc.wait()
    walls[phase] = walls.get(phase, 0.0) + time.monotonic() - since
    usage = meter.finish()
    if proc.returncode:
        raise SystemExit(f"curate run exited {proc.returncode}: {out[-2000:]}")
    for k in range(1, gaps + 1):  # name the gaps: set-up between stages, then what follows the last stage
        name = LAST if k == gaps else BETWEEN
        for table in (walls, usage):
            row = table.pop(f"gap {k}", None)
            if row is None:
                continue
            if isinstance(row, float):
                table[name] = table.get(name, 0.0) + row
            else:
                have = table.setdefault(name, {"cpu_seconds": 0.0, "peak_rss_mb": 0.0})
                have["cpu_seconds"] += row["cpu_seconds"]
                have["peak_rss_mb"] = max(have["peak_rss_mb"], row["peak_rss_mb"])
    phases = {k: {"seconds": round(v, 2), "cpu_seconds": round(usage.get(k, {}).get("cpu_seconds", 0.0), 1),
                  "peak_rss_mb": round(usage.get(k, {}).get("peak_rss_mb", 0.0))} for k, v in walls.items()}
    return {"wall_seconds": round(time.monotonic() - started, 2), "phases": phases,
            "policy_seconds": next((e["seconds"] for e in events if e["event"] == "policy"), None),
            "manifest_seconds": next((e.get("seconds") for e in events if e["event"] == "manifest"), None)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--stages", help="Stages to run (default: every stage, as `curate run` does).")
    ap.add_argument("--workers", type=int)
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("CURATE_BENCH_DATA", "/tmp/curate-bench")))
    ap.add_argument("--json", type=Path, help="Also write the figures here.")
    args = ap.parse_args()
    shards = short_corpus.build(args.data / f"short-{args.docs}", args.docs, "short")
    shape = short_corpus.describe(shards)
    ws = args.data / f"full-run-ws-{args.docs}"
    shutil.rmtree(ws, ignore_errors=True)
    subprocess.run([*CURATE, "init", str(ws)], check=True, stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    subprocess.run([*CURATE, "ingest", str(ws), *map(str, shards), "--no-progress"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ingest = time.monotonic() - t0
    print(f"{shape['docs']:,} documents, {shape['text_mb']:.0f} MB of text (median {shape['median_bytes']} bytes, "
          f"mean {shape['mean_bytes']}); ingest {ingest:.1f} s; {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f}", flush=True)
    result = run(ws, args.stages, args.workers)
    docs, wall = shape["docs"], result["wall_seconds"]
    print(f"{'phase':<28}{'wall s':>9}{'CPU s':>9}{'peak RSS MB':>13}{'docs/s':>10}")
    for name, p in result["phases"].items():
        rate = f"{docs / p['seconds']:,.0f}" if name not in ("start-up", BETWEEN, LAST) else ""
        print(f"{name:<28}{p['seconds']:>9.1f}{p['cpu_seconds']:>9.1f}{p['peak_rss_mb']:>13,}{rate:>10}")
    fixed = sum(result["phases"].get(k, {}).get("seconds", 0) for k in ("start-up", BETWEEN, LAST))
    print(f"whole run {wall:.1f} s: {docs / wall:,.0f} documents/s, {wall / docs * 1e6 / 3600:.2f} h per million; "
          f"fixed cost (start-up, set-up between stages, policy {result['policy_seconds']} s, "
          f"manifest {result['manifest_seconds']} s, "
          f"summary) {fixed:.1f} s = {fixed / wall:.1%} of the run (load average now {os.getloadavg()[0]:.1f})")
    if args.json:
        args.json.write_text(json.dumps({"shape": shape, "ingest_seconds": round(ingest, 2), **result}, indent=2))


if __name__ == "__main__":
    main()
