"""What a batch job and an analyst rely on: exit codes, events off a terminal, one-line errors, output formats,
manifests kept as releases."""

from __future__ import annotations

import json
import os
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import CURATE, doc, write_jsonl

from curate import Workspace


def cli(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CURATE, *args], capture_output=True, text=True, timeout=300, **kw)


def test_ingest_exit_codes_and_every_named_input_ends_in_shards(ws, tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [doc(i) for i in range(200)])
    assert cli("ingest", str(ws.path), str(good)).returncode == 0
    (tmp_path / "notes.txt").write_text("not a shard")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 this is not parquet")
    r = cli("ingest", str(ws.path), str(tmp_path / "nonexistent.jsonl"), str(tmp_path / "nothing*.jsonl"),
            str(tmp_path / "notes.txt"), str(tmp_path / "broken.parquet"))
    assert r.returncode == 1, r.stderr
    rows = dict(ws.sql("SELECT name, status FROM shards").iter_rows())
    assert rows == {"good.jsonl": "ok", "nonexistent.jsonl": "missing", "nothing*.jsonl": "missing",
                    "notes.txt": "failed", "broken.parquet": "failed"}
    assert ws.sql('SELECT count(*) FROM quarantine WHERE "row" IS NULL').item() == 2
    # too many quarantined rows is exit 1; within --max-quarantine it is 0
    bad = write_jsonl(tmp_path / "bad.jsonl", [doc(1000 + i) for i in range(8)] + [b"{not json"] * 2)
    assert cli("ingest", str(ws.path), str(bad)).returncode == 1
    bad2 = write_jsonl(tmp_path / "bad2.jsonl", [doc(2000 + i) for i in range(8)] + [b"{not json"] * 2)
    assert cli("ingest", str(ws.path), str(bad2), "--max-quarantine", "0.5").returncode == 0


def test_events_off_a_terminal_and_as_json(ws, tmp_path):
    ws.ingest([str(write_jsonl(tmp_path / "s.jsonl", [doc(i) for i in range(50)]))])
    log = tmp_path / "events.jsonl"
    r = cli("--log-format", "json", "--log-file", str(log), "run", str(ws.path), "--stages", "dedup_exact",
            env={**os.environ, "CURATE_PROGRESS_SECONDS": "0"})
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in log.read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.index("stage_start") < kinds.index("shard_committed") < kinds.index("stage_end") \
        < kinds.index("policy") < kinds.index("manifest")
    assert all({"ts", "event", "level"} <= set(e) for e in events)
    assert "progress" in kinds and next(e for e in events if e["event"] == "progress")["total"] == 50
    end = next(e for e in events if e["event"] == "stage_end")
    assert end["stage"] == "dedup_exact" and end["documents"] == 50 and end["rows"] == 50
    # the fixed cost of a run is measurable from the log (benchmarks/full_run.py reads these)
    assert all(isinstance(next(e for e in events if e["event"] == k)["seconds"], float) for k in ("policy", "manifest"))
    # stderr redirected and no --log-format: plain lines, one per event
    r = cli("run", str(ws.path), "--stages", "dedup_exact")
    assert "stage_start stage=dedup_exact" in r.stderr and "manifest path=" in r.stderr
    assert cli("-q", "run", str(ws.path), "--stages", "dedup_exact").stderr == ""
    assert cli("--version").stdout.startswith("curate ")


def test_analyst_errors_are_one_line_and_formats_parse(ws, tmp_path):
    ws.ingest([str(write_jsonl(tmp_path / "s.jsonl", [doc(i) for i in range(5)]))])
    for query, says in [("select * from nosuchtable", "nosuchtable does not exist"),
                        ("select nosuchcol from documents", '"nosuchcol" not found'),
                        ("delete from documents", "only queries that read"), ("selec 1", "syntax error")]:
        r = cli("sql", str(ws.path), query)
        assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = cli("diff", str(tmp_path / "nope1"), str(tmp_path / "nope2"))
    assert r.returncode == 2 and "not a manifest directory" in r.stderr and "Traceback" not in r.stderr
    rows = json.loads(cli("sql", str(ws.path), "select doc_id from documents order by 1", "--format", "json").stdout)
    assert [x["doc_id"] for x in rows] == [f"doc-{i}" for i in range(5)]
    plain = cli("sql", str(ws.path), "select doc_id, chars from documents order by 1").stdout  # piped: plain
    assert plain.splitlines()[0] == "doc_id\tchars" and len(plain.splitlines()) == 6
    assert cli("signals", str(ws.path), "--format", "csv").stdout.splitlines()[0] == "column,type"


def test_manifests_are_releases_and_diff_names_a_changed_rule(ws, tmp_path):
    ws.ingest([str(write_jsonl(tmp_path / "s.jsonl", [doc(i, text="short " * (i + 1)) for i in range(8)]))])

    def rules(action: str):
        p = tmp_path / f"r-{action}.toml"
        p.write_text(f'[[rules]]\nid = "short"\nversion = "1"\ndescription = "short texts"\n'
                     f'when = "text_chars < 20"\naction = "{action}"\n')
        return str(p)

    assert cli("run", str(ws.path), "--stages", "dedup_exact", "--rules", rules("drop")).returncode == 0
    assert cli("run", str(ws.path), "--stages", "dedup_exact", "--rules", rules("flag"), "--name", "flagged"
               ).returncode == 0
    rel = Workspace(ws.path).manifests()
    assert [r["name"] for r in rel] == ["1", "flagged"] and rel[-1]["current"] and not rel[0]["current"]
    assert (ws.path / "manifest").resolve() == (ws.path / "manifests" / "flagged").resolve()
    out = tmp_path / "changes.csv"
    r = cli("diff", str(ws.path / "manifests" / "1"), str(ws.path / "manifests" / "flagged"), "--out", str(out))
    assert r.returncode == 0 and "rule short changed: action 'drop' -> 'flag'" in r.stdout
    changed = out.read_text().splitlines()[1:]
    # the same rule fired in both manifests on doc-0..2 (6, 12, 18 chars): no rule added or removed, one changed
    assert changed == [f'"doc-{i}","drop","keep","","","short"' for i in range(3)]
    assert "manifests" in cli("manifests", str(ws.path)).stdout or "flagged" in cli("manifests", str(ws.path)).stdout


def test_a_corrupt_parquet_file_is_failed_not_vanished(ws, tmp_path):
    t = pa.table({"id": ["a", "b"], "text": ["one", "two"]})
    pq.write_table(t, tmp_path / "ok.parquet")
    data = (tmp_path / "ok.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    r = cli("ingest", str(ws.path), str(tmp_path / "cut.parquet"))
    assert r.returncode == 1
    assert ws.sql("SELECT status FROM shards").item() == "failed"


def test_ingest_progress_moves_inside_one_big_shard(ws, tmp_path):
    big = write_jsonl(tmp_path / "big.jsonl", [doc(i, text="lorem ipsum dolor sit amet " * 40) for i in range(60000)])
    log = tmp_path / "events.jsonl"
    r = cli("--log-format", "json", "--log-file", str(log), "ingest", str(ws.path), str(big),
            env={**os.environ, "CURATE_PROGRESS_SECONDS": "0"})
    assert r.returncode == 0, r.stderr
    done = [e["done"] for e in map(json.loads, log.read_text().splitlines()) if e["event"] == "progress"]
    size = big.stat().st_size
    assert done[-1] == size and any(0 < d < size for d in done), done  # moved before the shard was done
