from __future__ import annotations

import pyarrow as pa
import pytest
from conftest import doc, write_jsonl

from curate import stages
from curate.core.redact import merge, redact
from curate.core.stage import Detector
from curate.util.text import content_hash, normalize


def test_normalisation_is_nfc_casefold_and_collapsed_whitespace():
    assert normalize("  Stra\u00dfe\tIS\n\nOPEN ") == "strasse is open"
    assert normalize("Cafe\u0301") == normalize("Caf\u00e9")
    assert content_hash("A  b") == content_hash("a b") != content_hash("a  c")


def test_exact_duplicates_keep_the_first_ingested(ws, tmp_path):
    t = "Same words, different case and spacing."
    ws.ingest([str(write_jsonl(tmp_path / "1.jsonl", [doc(5, text=t), doc(6, text="other")]))])
    ws.ingest([str(write_jsonl(tmp_path / "2.jsonl", [doc(1, text=t.upper()), doc(2, text=f"  {t}\n")]))])
    ws.run()
    rows = {r[0]: r[1:] for r in ws.sql("SELECT doc_id, cluster_id, is_keeper FROM dedup_exact").iter_rows()}
    assert rows["doc-5"][1] is True and rows["doc-1"][1] is False and rows["doc-2"][1] is False
    assert rows["doc-5"][0] == rows["doc-1"][0] == rows["doc-2"][0] != rows["doc-6"][0]
    assert ws.sql("SELECT action FROM decisions WHERE doc_id = 'doc-1'").item() == "drop"


def test_stages_only_process_new_shards(ws, tmp_path):
    ws.ingest([str(write_jsonl(tmp_path / "1.jsonl", [doc(1), doc(2)]))])
    r1 = ws.run().stages
    r2 = ws.run().stages
    ws.ingest([str(write_jsonl(tmp_path / "2.jsonl", [doc(3)]))])
    r3 = ws.run().stages
    exact = [next(r for r in rs if r.name == "dedup_exact") for rs in (r1, r2, r3)]
    assert [(r.shards, r.documents) for r in exact] == [(1, 2), (0, 0), (1, 1)]


class Boom(Detector):
    """A test detector that fails on one document."""

    name = "test_boom"
    tables = {"test_boom": "CREATE TABLE test_boom (doc_id VARCHAR, n BIGINT)"}
    output = "test_boom"

    def __call__(self, batch):
        texts = batch.column("text").to_pylist()
        if any("BOOM" in t for t in texts):
            raise RuntimeError("detector exploded")
        return pa.table({"doc_id": batch.column("doc_id"), "n": [len(t) for t in texts]})


@pytest.fixture
def boom():
    stages.register(Boom)
    yield Boom
    stages.REGISTRY.pop("test_boom")


def test_a_failing_document_is_recorded_and_the_batch_goes_on(ws, tmp_path, boom):
    ws.ingest([str(write_jsonl(tmp_path / "1.jsonl", [doc(1), doc(2, text="BOOM here"), doc(3)]))])
    report = ws.run(stages=["test_boom"]).stages[0]
    assert report.errors == 1 and report.documents == 3
    assert ws.sql("SELECT doc_id FROM test_boom ORDER BY doc_id")["doc_id"].to_list() == ["doc-1", "doc-3"]
    assert ws.sql("SELECT doc_id, error FROM stage_errors").row(0) == ("doc-2", "RuntimeError: detector exploded")


def test_results_do_not_depend_on_the_worker_count(tmp_path):
    from curate import Workspace

    rows = [doc(i, text=f"text number {i % 700}") for i in range(3000)]
    out = []
    for workers in (1, 2):
        w = Workspace.init(tmp_path / f"w{workers}")
        w.ingest([str(write_jsonl(tmp_path / "s.jsonl", rows))])
        w.run(workers=workers)
        out.append(w.sql("SELECT * FROM dedup_exact ORDER BY doc_id"))
        out.append((w.path / "manifest" / "manifest.parquet").read_bytes())
    assert out[0].equals(out[2]) and out[1] == out[3]


def test_redaction_merges_overlaps_and_leaves_no_value_behind():
    text = "Mail jane.doe@example.com or call +1 212-555-0143 today."
    spans = [(5, 25, "EMAIL_ADDRESS"), (10, 25, "URL"), (34, 49, "PHONE_NUMBER")]
    assert merge(spans) == [(5, 25, "EMAIL_ADDRESS"), (34, 49, "PHONE_NUMBER")]
    out = redact(text, spans)
    assert out == "Mail <EMAIL_ADDRESS> or call <PHONE_NUMBER> today."
    assert "jane" not in out and "555" not in out


def test_killed_run_resumes_without_duplicates(ws, tmp_path):
    import os
    import signal
    import subprocess
    import time

    from conftest import CURATE

    d = tmp_path / "big"
    d.mkdir()
    for k in range(4):
        write_jsonl(d / f"p{k}.jsonl", [doc(k * 25000 + i, text=f"words {i % 5000} " * 30) for i in range(25000)])
    ws.ingest([str(d)])
    proc = subprocess.Popen([*CURATE, "run", "--no-progress", "--workers", "2", str(ws.path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(4)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    ws.run(workers=2)
    assert ws.sql("SELECT count(*), count(DISTINCT doc_id) FROM dedup_exact").row(0) == (100000, 100000)
    assert ws.sql("SELECT count(*) FROM stage_runs WHERE stage = 'dedup_exact'").item() == 4
    assert ws.sql("SELECT count(*), count(DISTINCT doc_id) FROM decisions").row(0) == (100000, 100000)
    assert ws.sql("SELECT count(*) FROM dedup_exact WHERE is_keeper").item() == 5000
