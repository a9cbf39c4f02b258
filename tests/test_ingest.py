from __future__ import annotations

import gzip
import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import CURATE, TEXTS, doc, write_jsonl

from curate import Workspace
from curate.io.ingest import Fields


def count(ws: Workspace, sql: str) -> int:
    return ws.sql(sql).item()


def test_every_format_is_ingested_with_ids_urls_and_domains(ws, shards):
    s = ws.ingest([str(shards)])
    assert [r.status for r in s.shards] == ["ingested"] * 5
    assert s.documents == 12 and s.quarantined == 0
    docs = ws.sql("SELECT doc_id, url, domain, text, meta, sha256 FROM documents ORDER BY seq")
    assert docs["doc_id"].to_list() == [f"doc-{i}" for i in range(12)]
    assert docs["domain"].to_list()[:2] == ["www.example.org", "www.example.org"]
    assert docs.filter(docs["doc_id"] == "doc-9")["domain"].item() == "mirror.example.net"
    assert docs.filter(docs["doc_id"] == "doc-10")["domain"].item() is None
    assert json.loads(docs.filter(docs["doc_id"] == "doc-9")["meta"].item()) == {"html_meta": {"robots": "noai"}}
    assert docs.filter(docs["doc_id"] == "doc-11")["text"].item() == "A CSV row, with a comma"
    for text, sha in zip(docs["text"], docs["sha256"], strict=True):
        assert sha == hashlib.sha256(text.encode()).hexdigest()
    shard_rows = ws.sql("SELECT name, rows, documents, quarantined, status, bytes, sha256 FROM shards ORDER BY name")
    assert shard_rows["rows"].to_list() == [4, 3, 2, 2, 1]
    assert shard_rows["status"].to_list() == ["ok"] * 5
    assert all(len(h) == 64 for h in shard_rows["sha256"])


def test_reingest_is_a_no_op(ws, shards):
    ws.ingest([str(shards)])
    before = ws.sql("SELECT * FROM documents ORDER BY doc_id")
    s = ws.ingest([str(shards / "*.jsonl*"), str(shards)])
    assert {r.status for r in s.shards} == {"skipped"}
    assert ws.sql("SELECT * FROM documents ORDER BY doc_id").equals(before)
    assert count(ws, "SELECT count(*) FROM shards") == 5


def test_missing_id_is_derived_from_shard_name_and_row(ws, tmp_path):
    p = write_jsonl(tmp_path / "noid.jsonl", [{"text": "first"}, {"text": "second", "id": 7}, {"text": "third"}])
    ws.ingest([str(p)])
    assert ws.sql("SELECT doc_id FROM documents ORDER BY seq")["doc_id"].to_list() == [
        "noid.jsonl:0", "7", "noid.jsonl:2"]


def test_field_names_are_configurable(ws, tmp_path):
    p = write_jsonl(tmp_path / "custom.jsonl", [{"key": "k1", "content": "hello there", "link": "https://a.org/x",
                                                 "attrs": {"author": "Z"}}])
    ws.ingest([str(p)], fields=Fields(id="key", text="content", url="link", meta="attrs"))
    row = ws.sql("SELECT doc_id, text, domain, meta FROM documents").row(0)
    assert row == ("k1", "hello there", "a.org", '{"author":"Z"}')


def damaged_shard(path: Path) -> Path:
    good = [json.dumps(doc(i)).encode() for i in range(3)]
    lines = good + [
        b'{"id": "broken", "text": "unterminated',        # row 3: malformed JSON
        b'{"id": "latin1", "text": "caf\xe9"}',            # row 4: invalid UTF-8
        b'{"id": "notext", "url": "https://a.org"}',      # row 5: no text
        b'{"id": "number", "text": 42}',                  # row 6: wrong type
        b'["not", "an", "object"]',                       # row 7: not an object
        json.dumps(doc(1)).encode(),                      # row 8: duplicate id
        json.dumps(doc(20, meta="oops")).encode(),        # row 9: meta not an object
        json.dumps(doc(21)).encode(),                     # row 10: fine
    ]
    member1 = gzip.compress(b"\n".join(lines) + b"\n", mtime=0)
    member2 = gzip.compress(b"".join(json.dumps(doc(100 + i)).encode() + b"\n" for i in range(50)), mtime=0)
    path.write_bytes(member1 + member2[: len(member2) // 2])  # truncated second member
    return path


def test_every_damaged_row_is_quarantined_with_a_useful_error(ws, tmp_path):
    p = damaged_shard(tmp_path / "damaged.jsonl.gz")
    s = ws.ingest([str(p)])
    (r,) = s.shards
    # the truncated member still yields its complete lines (k of them) before the break
    k = r.documents - 4
    assert r.status == "partial" and r.quarantined == 8 and r.rows == 12 + k and 0 < k < 50
    q = {row: (raw, err) for row, raw, err in ws.sql(
        'SELECT "row", raw, error FROM quarantine ORDER BY "row"').iter_rows()}
    assert "malformed JSON" in q[3][1] and q[3][0].startswith('{"id": "broken"')
    assert "invalid UTF-8" in q[4][1] and "\\xe9" in q[4][0]
    assert 'no "text" field' in q[5][1]
    assert 'field "text" is a number' in q[6][1]
    assert "expected a JSON object" in q[7][1]
    assert "duplicate id" in q[8][1]
    assert 'field "meta" is a string, not an object' in q[9][1]
    assert "truncated" in q[11 + k][1] and q[11 + k][0] is None
    assert set(q) == {3, 4, 5, 6, 7, 8, 9, 11 + k}
    assert ws.sql("SELECT doc_id FROM documents ORDER BY seq")["doc_id"].to_list() == [
        "doc-0", "doc-1", "doc-2", "doc-21"] + [f"doc-{100 + i}" for i in range(k)]
    assert all(str(p) == u for u in ws.sql("SELECT uri FROM quarantine")["uri"])


def test_ids_already_ingested_are_quarantined_not_duplicated(ws, tmp_path):
    ws.ingest([str(write_jsonl(tmp_path / "one.jsonl", [doc(1), doc(2)]))])
    ws.ingest([str(write_jsonl(tmp_path / "two.jsonl", [doc(2), doc(3)]))])
    assert count(ws, "SELECT count(*) FROM documents") == 3
    assert "already ingested" in ws.sql("SELECT error FROM quarantine").item()


def test_unreadable_and_missing_files_do_not_stop_the_run(ws, tmp_path, shards):
    bad = tmp_path / "broken.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    s = ws.ingest([str(bad), str(tmp_path / "nowhere.jsonl"), str(shards / "a.jsonl")])
    assert [r.status for r in s.shards] == ["failed", "missing", "ingested"]
    assert "Parquet" in ws.sql("SELECT error FROM quarantine").item()
    assert count(ws, "SELECT count(*) FROM documents") == 4


def test_huge_and_empty_documents(ws, tmp_path):
    big = "word " * 400_000  # 2 MB
    p = write_jsonl(tmp_path / "sizes.jsonl", [doc(1, text=big), doc(2, text=""), doc(3, text="x" * 5000)])
    s = ws.ingest([str(p)], max_doc_bytes=1_000_000)
    assert s.shards[0].documents == 2
    assert "exceeds the limit" in ws.sql("SELECT error FROM quarantine").item() or \
        "longer than the limit" in ws.sql("SELECT error FROM quarantine").item()
    assert ws.sql("SELECT text FROM documents WHERE doc_id = 'doc-2'").item() == ""


def test_a_second_writer_gets_a_clear_error(ws, shards):
    with ws.connect(write=True):
        proc = subprocess.run([*CURATE, "ingest", str(ws.path), str(shards)], capture_output=True, text=True,
                              timeout=120)
    assert proc.returncode == 2
    assert "being written by another process" in proc.stderr


def test_killed_ingest_resumes_without_duplicates(ws, tmp_path):
    from conftest import run_until

    d = tmp_path / "big"
    d.mkdir()
    for k in range(6):
        write_jsonl(d / f"part{k}.jsonl", [doc(k * 20000 + i, text="lorem ipsum dolor " * 40) for i in range(20000)])
    proc, first = run_until(["ingest", "--no-progress", str(ws.path), str(d)], "shard_ingested", status="ingested")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert first["uri"].endswith("part0.jsonl")
    done = count(ws, "SELECT count(*) FROM shards")
    assert 1 <= done < 6 and count(ws, "SELECT count(*) FROM documents") == 20000 * done  # whole shards only
    s = ws.ingest([str(d)])
    assert [r.status for r in s.shards] == ["skipped"] * done + ["ingested"] * (6 - done)
    assert count(ws, "SELECT count(*) FROM documents") == 120000
    assert count(ws, "SELECT count(DISTINCT doc_id) FROM documents") == 120000
    assert count(ws, "SELECT count(*) FROM shards") == 6
    assert count(ws, "SELECT sum(documents) FROM shards") == 120000
    assert count(ws, "SELECT count(*) FROM quarantine") == 0


def test_wrong_types_are_caught_without_losing_lookalike_strings(ws, tmp_path):
    """DuckDB's fast reader coerces JSON values to text; curate re-reads suspects and keeps real strings."""
    rows = [doc(1, text="42"), doc(2, text=42), doc(3, text='{"a": 1}'), doc(4, text={"a": 1}),
            doc(5, text="true"), doc(6, text=True), doc(7, url=["x"]), {**doc(8), "id": 1.5}, {**doc(9), "text": None},
            {"id": 10, "text": "integer ids are fine"}]
    s = ws.ingest([str(write_jsonl(tmp_path / "types.jsonl", rows))])
    kept = ws.sql("SELECT doc_id, text FROM documents ORDER BY seq")
    assert kept.rows() == [("doc-1", "42"), ("doc-3", '{"a": 1}'), ("doc-5", "true"), ("10", "integer ids are fine")]
    q = dict(ws.sql('SELECT "row", error FROM quarantine ORDER BY "row"').iter_rows())
    assert q == {1: 'field "text" is a number, not a string', 3: 'field "text" is an object, not a string',
                 5: 'field "text" is a boolean, not a string', 6: 'field "url" is an array, not a string',
                 7: 'field "id" is a number, not a string or integer', 8: 'no "text" field (or it is null)'}
    raws = ws.sql('SELECT raw FROM quarantine ORDER BY "row"')["raw"].to_list()
    assert all(r and r.startswith("{") for r in raws)
    assert s.shards[0].rows == 10 and s.shards[0].quarantined == 6


def test_header_names_differing_only_in_case_are_kept(ws, tmp_path):
    """Real crawl metadata names one header in two spellings (`X-Robots-Tag` and `x-robots-tag`, even in one
    row). DuckDB's read_json with meta auto-detected as a struct refuses such a file ("Duplicate name ... in
    struct"); curate reads meta as JSON and keeps every key as written."""
    import duckdb

    metas = [{"headers": {"X-Robots-Tag": "noai"}}, {"headers": {"x-robots-tag": "noindex"}},
             {"headers": {"x-robots-tag": "noai", "X-Robots-Tag": "all"}, "Lang": "en", "lang": "de"}]
    p = write_jsonl(tmp_path / "crawl.jsonl", [doc(i, meta=m) for i, m in enumerate(metas)])
    with pytest.raises(duckdb.Error, match="[Dd]uplicate"):
        duckdb.connect().execute("SELECT * FROM read_json(?, format = 'newline_delimited')", [str(p)]).fetchall()
    (r,) = ws.ingest([str(p)]).shards
    assert (r.status, r.documents) == ("ingested", 3)
    assert [json.loads(m) for m in ws.sql("SELECT meta FROM documents ORDER BY seq")["meta"]] == metas


def test_bad_rows_are_found_after_the_single_read(ws, tmp_path, monkeypatch):
    """A shard DuckDB can parse is read once, into documents; rows that are bad (a wrong type, a repeated id, an
    id already ingested) are found afterwards and quarantined, without the Python row reader."""
    from curate.io import ingest as ingest_mod

    ws.ingest([str(write_jsonl(tmp_path / "first.jsonl", [doc(100)]))])

    def refuse(*a, **k):
        raise AssertionError("row by row for a shard DuckDB can read")

    monkeypatch.setattr(ingest_mod, "_load_lines", refuse)
    rows = [doc(1), doc(2, text=7), doc(3, text="7"), doc(1, text="again"), doc(100), doc(4, url=""),
            doc(5, meta=[1]), doc(6)]
    s = ws.ingest([str(write_jsonl(tmp_path / "mixed.jsonl", rows))])
    (r,) = s.shards
    assert (r.status, r.rows, r.documents, r.quarantined) == ("partial", 8, 4, 4)
    docs = ws.sql("SELECT doc_id, seq, \"row\", text, url FROM documents WHERE shard_id = ? ORDER BY seq",
                  [r.shard_id]).rows()
    first_seq = docs[0][1]
    assert [(d, q - first_seq, row, t) for d, q, row, t, _ in docs] == [
        ("doc-1", 0, 0, doc(1)["text"]), ("doc-3", 2, 2, "7"), ("doc-4", 5, 5, doc(4)["text"]),
        ("doc-6", 7, 7, doc(6)["text"])]
    assert docs[2][4] is None  # an empty url is no url
    q = ws.sql('SELECT "row", raw, error FROM quarantine WHERE shard_id = ? ORDER BY "row"', [r.shard_id]).rows()
    assert [(row, err) for row, _, err in q] == [
        (1, 'field "text" is a number, not a string'), (3, "duplicate id (first seen at row 0 of this shard)"),
        (4, "id already ingested from shard " + ws.sql("SELECT shard_id FROM shards WHERE name = 'first.jsonl'")
         .item() + " row 0"), (6, 'field "meta" is an array, not an object')]
    assert json.loads(q[0][1])["text"] == 7 and json.loads(q[1][1])["text"] == "again"
    for text, sha in ws.sql("SELECT text, sha256 FROM documents").rows():
        assert sha == hashlib.sha256(text.encode()).hexdigest()


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_compressed_shard_is_fed_to_duckdb_and_equals_the_plain_one(tmp_path, compress, monkeypatch):
    """A compressed JSONL shard reaches DuckDB decompressed through a pipe (ingest._Feed), not the row reader:
    the documents and quarantined rows are those of the same rows uncompressed."""
    from curate.io import ingest as ingest_mod

    def refuse(*a, **k):
        raise AssertionError("row by row for a shard DuckDB can read")

    monkeypatch.setattr(ingest_mod, "_load_lines", refuse)
    rows = [doc(i, text=f"{TEXTS[i % 5]} " * (1 + i % 40)) for i in range(3000)]
    rows[10]["text"], rows[20]["id"], rows[30] = 5, "doc-3", doc(3030, text="true")  # bad, repeated, suspect
    tables = []
    for name, c in (("plain.jsonl", None), ("packed.jsonl" + (".gz" if compress == "gzip" else ".zst"), compress)):
        w = Workspace.init(tmp_path / f"ws-{name}")
        (r,) = w.ingest([str(write_jsonl(tmp_path / name, rows, c))]).shards
        assert (r.status, r.rows, r.quarantined) == ("partial", 3000, 2)
        tables.append((w.sql('SELECT doc_id, seq, "row", url, domain, text, sha256, meta FROM documents ORDER BY seq'),
                       w.sql('SELECT "row", raw, error FROM quarantine ORDER BY "row"')))
    assert tables[0][0].equals(tables[1][0]) and tables[0][1].equals(tables[1][1])
