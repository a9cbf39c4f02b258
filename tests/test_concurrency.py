"""Reading while a run writes: a reader process queries in a loop while `curate run` writes; every query sees a
consistent committed state (or waits briefly), none fails."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import CURATE, TEXTS, doc, run_until, write_jsonl

READER = textwrap.dedent("""
    import json, sys, time
    from curate import Workspace
    path, stop = sys.argv[1], sys.argv[2]
    import os
    while not os.path.exists(stop):
        t = time.monotonic()
        row = Workspace(path).sql('''
            SELECT (SELECT sum(rows) FROM shards) = (SELECT count(*) FROM documents)
                       + (SELECT count(*) FROM quarantine WHERE "row" IS NOT NULL) AS conserved,
                   (SELECT count(*) FROM stage_runs WHERE stage = 'pii') AS shards_done,
                   (SELECT count(*) FROM pii_spans s JOIN documents d USING (doc_id)
                    WHERE d.shard_id NOT IN (SELECT shard_id FROM stage_runs WHERE stage = 'pii')) AS stray_spans
        ''').row(0, named=True)
        print(json.dumps({**row, "waited": round(time.monotonic() - t, 3)}), flush=True)
        time.sleep(0.05)
""")


@pytest.mark.slow
def test_a_reader_queries_while_a_run_writes(ws, tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    text = " ".join(TEXTS)
    for k in range(6):
        write_jsonl(d / f"p{k}.jsonl", [doc(k * 300 + i, text=f"{text} Signed off by Maria Garcia on day {i}.")
                                        for i in range(300)])
    ws.ingest([str(d)])
    writer, _ = run_until(["run", "--no-progress", "--workers", "2", "--stages", "pii", str(ws.path)],
                          "stage_start", stage="pii")
    stop = tmp_path / "stop"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(ws.path), str(stop)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        writer.stderr.read()  # the run's remaining events, until it ends
        assert writer.wait(timeout=600) == 0
    finally:
        stop.touch()
        out, err = reader.communicate(timeout=120)
    assert reader.returncode == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows and all(r["conserved"] and r["stray_spans"] == 0 for r in rows)
    seen = {r["shards_done"] for r in rows}
    assert any(0 < n < 6 for n in seen), f"no read landed mid-run: {sorted(seen)}"
    assert ws.sql("SELECT count(*) FROM stage_runs WHERE stage = 'pii'").item() == 6
    print(f"{len(rows)} reads during the run, the longest wait {max(r['waited'] for r in rows)} s")


def test_a_second_writer_is_refused_while_a_run_writes(ws, tmp_path):
    d = tmp_path / "shards"
    d.mkdir()
    for k in range(4):
        write_jsonl(d / f"p{k}.jsonl", [doc(k * 300 + i, text=" ".join(TEXTS)) for i in range(300)])
    ws.ingest([str(d)])
    writer, _ = run_until(["run", "--no-progress", "--workers", "2", "--stages", "pii", str(ws.path)],
                          "stage_start", stage="pii")
    try:
        r = subprocess.run([*CURATE, "decide", str(ws.path)], capture_output=True, text=True, timeout=60)
    finally:
        writer.stderr.read()
        writer.wait(timeout=600)
    assert r.returncode == 2 and f"process {writer.pid}" in r.stderr and "being written" in r.stderr
