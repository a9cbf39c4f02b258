from __future__ import annotations

import json
import subprocess

import pyarrow as pa
import pyarrow.parquet as pq
from conftest import CURATE, doc, write_jsonl
from test_ingest import damaged_shard

from curate import Workspace
from curate.core.manifest import diff, verify


def built(ws: Workspace, shards, tmp_path):
    ws.ingest([str(shards), str(damaged_shard(tmp_path / "damaged.jsonl.gz"))])
    ws.run(stages=["dedup_exact"])  # the quality rules would drop these one-line documents (under 50 words)
    return ws.path / "manifest"


def test_conservation_every_input_row_is_in_the_manifest_or_quarantine(ws, shards, tmp_path):
    m = built(ws, shards, tmp_path)
    run = json.loads((m / "run.json").read_text())
    rows = pq.read_table(m / "manifest.parquet")
    quarantined = ws.sql('SELECT count(*) FROM quarantine WHERE "row" IS NOT NULL').item()
    input_rows = sum(i["rows"] for i in run["inputs"])
    assert rows.num_rows + quarantined == input_rows == run["counts"]["input_rows"]
    assert run["counts"]["documents"] == rows.num_rows == sum(run["counts"]["by_action"].values())
    assert run["counts"]["quarantined_rows"] == quarantined == 8 + 3  # 3 ids repeat the clean shards
    by_rule = {}
    for ids in rows.column("rule_ids").to_pylist():
        for r in ids:
            by_rule[r] = by_rule.get(r, 0) + 1
    assert by_rule == run["counts"]["by_rule"] and by_rule.get("exact-duplicate") == 1
    for i in run["inputs"]:
        assert i["rows"] == i["documents"] + i["quarantined"]
    assert verify(m, workspace=ws, shards=True).ok


def test_two_runs_give_byte_identical_manifests(ws, shards, tmp_path):
    m = built(ws, shards, tmp_path)
    ws.manifest(tmp_path / "again")
    assert (m / "manifest.parquet").read_bytes() == (tmp_path / "again" / "manifest.parquet").read_bytes()
    a, b = (json.loads((d / "run.json").read_text()) for d in (m, tmp_path / "again"))
    a.pop("created_at"), b.pop("created_at")
    assert a == b
    # and a fresh workspace over the same shards gives the same rows
    other = Workspace.init(tmp_path / "ws2")
    other.ingest([str(shards), str(tmp_path / "damaged.jsonl.gz")])
    other.run(workers=1, stages=["dedup_exact"])
    assert (other.path / "manifest" / "manifest.parquet").read_bytes() == (m / "manifest.parquet").read_bytes()


def rewrite(path, column, fn):
    t = pq.read_table(path)
    values = t.column(column).to_pylist()
    values = fn(values)
    i = t.column_names.index(column)
    pq.write_table(t.set_column(i, column, pa.array(values, t.schema.field(column).type)), path)


def test_verify_catches_a_changed_row_root_and_shard(ws, shards, tmp_path):
    import shutil

    m = built(ws, shards, tmp_path)
    changed = tmp_path / "changed"
    shutil.copytree(m, changed)
    rewrite(changed / "manifest.parquet", "action", lambda a: ["drop"] + a[1:] if a[0] != "drop" else ["keep"] + a[1:])
    rep = verify(changed)
    assert not rep.ok and any("row_hash does not match" in p for p in rep.problems)

    rehashed = tmp_path / "rehashed"   # a forger who also fixes row_hash still breaks the root
    shutil.copytree(changed, rehashed)
    import duckdb

    from curate.core.manifest import ROW_HASH_SQL
    con = duckdb.connect()
    t = con.sql(f"SELECT * REPLACE ({ROW_HASH_SQL} AS row_hash) FROM read_parquet('{rehashed}/manifest.parquet') "
                "ORDER BY doc_id").to_arrow_table()
    pq.write_table(t, rehashed / "manifest.parquet")
    rep = verify(rehashed)
    assert any("root hash" in p for p in rep.problems)
    assert any("action" in p for p in verify(rehashed, workspace=ws).problems)

    root = tmp_path / "root"
    shutil.copytree(m, root)
    run = json.loads((root / "run.json").read_text())
    run["manifest"]["root_hash"] = "0" * 64
    (root / "run.json").write_text(json.dumps(run))
    assert any("root hash" in p for p in verify(root).problems)

    counts = tmp_path / "counts"
    shutil.copytree(m, counts)
    run = json.loads((counts / "run.json").read_text())
    run["counts"]["by_action"]["keep"] += 1
    (counts / "run.json").write_text(json.dumps(run))
    assert any("by_action" in p for p in verify(counts).problems)

    with open(shards / "a.jsonl", "a") as f:
        f.write(json.dumps(doc(99)) + "\n")
    rep = verify(m, shards=True)
    assert any("a.jsonl" in p and "SHA-256" in p for p in rep.problems)


def test_cli_verify_exits_1_and_names_the_mismatch(ws, shards, tmp_path):
    m = built(ws, shards, tmp_path)
    ok = subprocess.run([*CURATE, "verify", str(m), "--workspace", str(ws.path)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    rewrite(m / "manifest.parquet", "input_sha256", lambda a: ["f" * 64] + a[1:])
    bad = subprocess.run([*CURATE, "verify", str(m)], capture_output=True, text=True)
    assert bad.returncode == 1 and "MISMATCH" in bad.stdout and "doc-" in bad.stdout


def test_diff_lists_changed_documents_and_rules(ws, tmp_path):
    ws.ingest([str(write_jsonl(tmp_path / "s.jsonl", [doc(i, text="w" * (10 * i)) for i in range(1, 5)]))])
    rules = tmp_path / "r.toml"
    rules.write_text('[[rules]]\nid = "short"\nversion = "1"\ndescription = "d"\nwhen = "text_chars < 15"\n'
                     'action = "drop"\n')
    ws.run(rules=rules, manifest=tmp_path / "m1")
    rules.write_text(rules.read_text().replace("< 15", "< 35"))
    ws.run(rules=rules, manifest=tmp_path / "m2")
    summary, table = diff(tmp_path / "m1", tmp_path / "m2")
    assert summary == {"keep -> drop": 2}
    assert table.column("doc_id").to_pylist() == ["doc-2", "doc-3"]
    assert table.column("rules_added").to_pylist() == [["short"], ["short"]]
    assert diff(tmp_path / "m1", tmp_path / "m1")[0] == {}


def test_export_writes_kept_documents_whose_hashes_are_in_the_manifest(ws, shards, tmp_path):
    import hashlib

    m = built(ws, shards, tmp_path)
    s = ws.export(tmp_path / "out", max_bytes=300)
    assert len(s.files) > 1  # size cap rolls over
    exported = [json.loads(line) for f in sorted((tmp_path / "out").glob("part-*.jsonl"))
                for line in f.read_text().splitlines()]
    manifest = {r["doc_id"]: r for r in pq.read_table(m / "manifest.parquet").to_pylist()}
    kept = {k for k, r in manifest.items() if r["action"] in ("keep", "redact")}
    assert {d["id"] for d in exported} == kept and len(exported) == len(kept)
    for d in exported:
        assert hashlib.sha256(d["text"].encode()).hexdigest() == manifest[d["id"]]["output_sha256"]
    index = json.loads((tmp_path / "out" / "export.json").read_text())
    assert index["documents"] == len(kept)
    for f in index["files"]:
        assert hashlib.sha256((tmp_path / "out" / f["file"]).read_bytes()).hexdigest() == f["sha256"]


def test_explain_shows_rules_and_signals(ws, shards, tmp_path):
    built(ws, shards, tmp_path)
    info = ws.explain("doc-8")
    assert info["action"] == "drop" and info["rules"][0]["id"] == "exact-duplicate"
    assert info["signals"]["dedup_exact"][0]["is_keeper"] is False
    assert ws.explain("broken")["quarantined"]["row"] == 3
