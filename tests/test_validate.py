from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from conftest import CURATE

from curate import Workspace
from curate.audit.validate import validate


def test_validation_passes_on_a_consistent_workspace_and_writes_the_bundle(audit_ws, tmp_path):
    bundle = tmp_path / "bundle"
    r = validate(audit_ws, bundle)
    assert r.ok, r.failures
    names = {s.name for s in r.suites}
    # documents, every stage's tables present and the manifest each have their suites
    assert {"documents", "documents.derived", "decisions", "shards.derived", "manifest", "manifest.derived",
            "manifest.counts", "pii_spans.derived", "quality", "dedup_fuzzy.keepers", "license_signals",
            "optout_matches", "bias_terms.derived"} <= names
    # what the stages' audit modules promise beyond their column names (EXPECTATIONS)
    promised = {(s.name, r["why"]) for s in r.suites for r in s.results}
    assert {("quality", "one row per document"), ("dedup_exact", "one row per document"),
            ("dedup_exact", "content_hash is always set"), ("license_signals", "use_class in the documented set"),
            ("pii_spans", "entity_type is always set"), ("optout_matches", "match_kind is always set"),
            ("bias_terms", "group_name is always set")} <= promised
    # the GX results are real: metrics were computed, not empty (the duckdb-engine trap)
    w = Workspace(audit_ws)
    docs = next(s for s in r.suites if s.name == "documents")
    unique = next(x for x in docs.results if x["expectation"] == "expect_column_values_to_be_unique")
    assert unique["element_count"] == w.sql("SELECT count(*) FROM documents").item() > 1000
    spans = next(s for s in r.suites if s.name == "pii_spans.derived").results[0]
    assert spans["element_count"] == w.sql("SELECT count(*) FROM pii_spans").item() > 1000
    saved = json.loads((bundle / "validation.json").read_text())
    assert saved["success"] is True and saved["failures"] == []
    assert sum(s["evaluated"] for s in saved["suites"]) >= 60
    assert r.docs_index and r.docs_index.exists() and "documents" in r.docs_index.read_text()


def plant_violations(ws) -> None:
    """One violation of each kind the suites promise to catch."""
    with Workspace(ws).connect(write=True) as con:
        a, b, c = (r[0] for r in con.execute("SELECT doc_id FROM documents ORDER BY doc_id LIMIT 3").fetchall())
        con.execute("""INSERT INTO documents SELECT doc_id, seq + 1000000, shard_id, "row" + 1000000, url, domain,
                       text, sha256, meta, chars, bytes, blank FROM documents WHERE doc_id = ?""", [a])  # duplicate id
        con.execute("UPDATE documents SET sha256 = 'not-a-hash' WHERE doc_id = ?", [b])
        con.execute("UPDATE decisions SET action = 'delete' WHERE doc_id = ?", [c])
        con.execute("INSERT INTO decisions SELECT * FROM decisions WHERE doc_id = ?", [b])  # two decisions
        con.execute("""UPDATE pii_spans SET "end" = 100000000
                       WHERE doc_id = (SELECT min(doc_id) FROM pii_spans)""")  # span past the end of the text
        con.execute("UPDATE quality SET lang_score = 1.7 WHERE doc_id = ?", [a])
        con.execute("INSERT INTO bias_terms VALUES ('no-such-document', 'age', 'old', 1)")
        con.execute("""UPDATE license_signals SET use_class = 'freeware'
                       WHERE doc_id = (SELECT min(doc_id) FROM license_signals)""")  # not a documented class
        con.execute("""UPDATE dedup_fuzzy SET is_keeper = true
                       WHERE cluster_id = (SELECT min(cluster_id) FROM dedup_fuzzy)""")  # two keepers
    run_file = ws / "manifest" / "run.json"
    run = json.loads(run_file.read_text())
    run["counts"]["documents"] += 1  # counts no longer conserved
    run_file.write_text(json.dumps(run))


@pytest.mark.slow
def test_validation_with_planted_violations_fails_naming_each_and_exits_non_zero(audit_ws, tmp_path):
    ws = tmp_path / "ws"
    shutil.copytree(audit_ws, ws, symlinks=True)
    plant_violations(ws)
    # a relative workspace path: the bundle goes to its default place, WS/audit/validation
    res = subprocess.run([*CURATE, "validate", "ws"], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 1, res.stdout + res.stderr
    bundle = ws / "audit" / "validation"
    assert (bundle / "data_docs" / "index.html").exists()
    saved = json.loads((bundle / "validation.json").read_text())
    assert saved["success"] is False
    failed = {(s["name"], r["why"]) for s in saved["suites"] for r in s["results"] if not r["success"]}
    expected = {
        ("documents", "document ids are unique"),
        ("documents.derived", "text hashes are SHA-256 hex"),
        ("documents.derived", "the stored hash is the SHA-256 of the stored text"),
        ("shards.derived", "the shard's document count is what the documents table holds"),
        ("decisions", "actions in the allowed set"),
        ("decisions", "one decision per document"),
        ("pii_spans.derived", "spans end inside the text"),
        ("quality", "lang_score is in [0, 1]"),
        ("bias_terms.derived", "no signal for an unknown document (doc_id)"),
        ("license_signals", "use_class in the documented set"),
        ("dedup_fuzzy.keepers", "exactly one keeper per cluster"),
        ("manifest", "one manifest row per document"),
        ("manifest.derived", "the manifest's action is the workspace's decision"),
        ("manifest.counts", "input rows = documents + quarantined rows (run.json)"),
        ("manifest.counts", "manifest rows = documents counted in run.json"),
        ("manifest.counts", "per-action counts add up to the documents"),
        # the root covers run.json: editing its counts changes the root too
        ("manifest.counts", "the root hash recomputes"),
    }
    assert failed == expected, (failed - expected, expected - failed)
    assert "FAILED" in res.stdout and "document ids are unique" in " ".join(res.stdout.split())
