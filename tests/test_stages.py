from __future__ import annotations

import os
import time

import pyarrow as pa
import pytest
from conftest import TEXTS, doc, write_jsonl

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


TEXT = " ".join(TEXTS)


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


@pytest.mark.slow
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


NAMES = ["Maria Garcia", "John Smith", "Wei Zhang", "Olga Ivanova", "Ahmed Hassan"]


@pytest.mark.slow
def test_killed_run_leaves_no_process_and_resumes_without_duplicates(ws, tmp_path):
    """kill -9 of `curate run` mid-stage: no worker or fork server outlives it, the shards committed before the
    kill stay, the others are absent, and the rerun finishes the job without duplicating anything."""
    import signal

    from conftest import alive, descendants, run_until

    d = tmp_path / "shards"
    d.mkdir()
    for k in range(4):  # four shards: the kill lands after the first commit, long before the last
        rows = [doc(k * 400 + i, text=f"{TEXT} Reviewed by {NAMES[i % 5]} on day {i}. Mail {i}@example.org "
                    f"or call +1 212-555-{i % 9000:04d}.") for i in range(400)]
        write_jsonl(d / f"p{k}.jsonl", rows)
    ws.ingest([str(d)])
    proc, first = run_until(["run", "--no-progress", "--workers", "2", "--stages", "pii", str(ws.path)],
                            "shard_committed", stage="pii")
    workers = descendants(proc.pid)
    assert len(workers) >= 3, "a fork server and two workers should be running"
    os.kill(proc.pid, signal.SIGKILL)  # the run's process only: its workers must end by themselves
    proc.wait()
    deadline = time.monotonic() + 20
    while alive(workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(workers), f"processes outlived the killed run: {sorted(alive(workers))}"
    done = ws.sql("SELECT shard_id FROM stage_runs WHERE stage = 'pii'")["shard_id"].to_list()
    assert first["shard_id"] in done and 1 <= len(done) < 4
    spans = "SELECT count(*) FROM pii_spans s JOIN documents d USING (doc_id) WHERE d.shard_id NOT IN ({})"
    assert ws.sql(spans.format(", ".join(f"'{x}'" for x in done))).item() == 0  # nothing of unfinished shards
    ws.run(stages=["pii"], workers=2)
    assert ws.sql("SELECT count(*) FROM stage_runs WHERE stage = 'pii'").item() == 4
    total, distinct = ws.sql("""SELECT count(*), count(DISTINCT (doc_id, entity_type, "start", "end"))
                                FROM pii_spans""").row(0)
    assert total == distinct and ws.sql("SELECT count(DISTINCT doc_id) FROM pii_spans").item() == 1600
    assert ws.sql("SELECT count(*), count(DISTINCT doc_id) FROM decisions").row(0) == (1600, 1600)
