"""The kill-point soak (`make soak`): `curate ingest`, `run` and `export` killed with SIGKILL at many seeded points
(each a logged event: a shard ingested or committed by a stage, a stage's end, the policy, the manifest), then run
again: every rerun converges to the uninterrupted manifest root and export, and no process survives."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import CURATE, TEXTS, alive, descendants, doc, write_jsonl

STAGES = "dedup_exact,dedup_fuzzy,quality,licenses,optout,bias"
POINTS = int(os.environ.get("CURATE_KILL_POINTS", 50))
COMMANDS = [["ingest", "{ws}", "{shards}"], ["run", "{ws}", "--stages", STAGES, "--workers", "2"],
            ["export", "{ws}", "--out", "{ws}/export"]]

pytestmark = pytest.mark.soak


def sequence(ws: Path, shards: Path, kill_at: int | None = None) -> list[dict]:
    """Run the three commands; with `kill_at`, SIGKILL the command during which the kill_at-th event is logged
    (counting over all three) and stop there. Returns the events seen."""
    events: list[dict] = []
    for cmd in COMMANDS:
        args = [a.format(ws=ws, shards=shards) for a in cmd]
        proc = subprocess.Popen([*CURATE, "--log-format", "json", *args], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        for line in proc.stderr:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
            if kill_at is not None and len(events) == kill_at:
                tree = descendants(proc.pid)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                deadline = time.monotonic() + 20
                while alive(tree) and time.monotonic() < deadline:
                    time.sleep(0.2)
                assert not alive(tree), f"processes outlived the kill at event {kill_at}: {sorted(alive(tree))}"
                return events
        assert proc.wait() in (0, 1), f"curate {' '.join(args)} failed"
    return events


def outcome(ws: Path) -> tuple[str, str]:
    root = (ws / "manifest" / "ROOT").read_text().strip()
    index = json.loads((ws / "export" / "export.json").read_text())
    return root, json.dumps([(f["file"], f["sha256"]) for f in index["files"]])


def test_every_kill_point_converges_to_the_uninterrupted_result(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    rng = random.Random(7)
    for k in range(6):
        write_jsonl(shards / f"p{k}.jsonl", [doc(k * 200 + i, text=" ".join(rng.sample(TEXTS, 3)) + f" ({i % 50})")
                                             for i in range(200)])
    subprocess.run([*CURATE, "init", str(tmp_path / "clean")], check=True, capture_output=True)
    events = sequence(tmp_path / "clean", shards)
    expected = outcome(tmp_path / "clean")
    points = sorted(random.Random(1).sample(range(1, len(events)), min(POINTS, len(events) - 1)))
    for k in points:
        ws = tmp_path / f"ws-{k}"
        subprocess.run([*CURATE, "init", str(ws)], check=True, capture_output=True)
        seen = sequence(ws, shards, kill_at=k)
        assert len(seen) == k
        sequence(ws, shards)  # the same commands again finish the job
        assert outcome(ws) == expected, f"kill at event {k} ({seen[-1]['event']}) did not converge"
        shutil.rmtree(ws)
    print(f"{len(points)} kill points of {len(events)} events: every rerun converged")
