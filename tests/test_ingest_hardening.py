"""No row lost or altered without a record: damaged compression, CSV and JSONL quirks, Parquet types, file names.

Each test states the contract for one way a shard can go wrong: every row ends in `documents` or `quarantine`
(rows = documents + quarantined), a row in `documents` has exactly the text written, a shard whose rows cannot
all be read is `partial` or `failed`, never `ok`.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from conftest import CURATE

from curate import Workspace

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa"]


def rows(n: int, start: int = 0, seed: int = 1) -> list[dict]:
    """Varied rows (so that compressed blocks hold a few hundred rows each, as in real shards)."""
    rnd = random.Random(seed + start)
    return [{"id": f"d{start + i}", "text": " ".join(f"{rnd.choice(WORDS)}{rnd.randint(0, 9999)}" for _ in range(25))}
            for i in range(n)]


def jsonl(rs: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rs)


def shard_state(ws: Workspace) -> list[tuple]:
    return ws.sql("SELECT name, status, rows, documents, quarantined FROM shards ORDER BY name").rows()


def check_conservation(ws: Workspace) -> None:
    """Per shard: rows = documents + quarantined, and the tables hold exactly those counts."""
    for sid, r, d, q, status in ws.sql("SELECT shard_id, rows, documents, quarantined, status FROM shards").rows():
        assert d == ws.sql(f"SELECT count(*) FROM documents WHERE shard_id = '{sid}'").item()
        assert q == ws.sql(f"SELECT count(*) FROM quarantine WHERE shard_id = '{sid}'").item()
        assert (status == "failed" and r == 0 and q == 1) or r == d + q
        assert status != "ok" or q == 0


def check_texts(ws: Workspace, written: list[dict]) -> None:
    """Every document is the row written at its row number, unaltered."""
    for row, doc_id, text in ws.sql('SELECT "row", doc_id, text FROM documents').rows():
        assert (doc_id, text) == (written[row]["id"], written[row]["text"])


# -- compressed streams -------------------------------------------------------------------------------------------
def test_truncated_single_frame_zst_is_never_ok(ws, tmp_path):
    written = rows(3000)
    c = zstandard.ZstdCompressor().compress(jsonl(written))
    early, late = tmp_path / "early.jsonl.zst", tmp_path / "late.jsonl.zst"
    early.write_bytes(c[: len(c) // 10])  # inside the first block: not one row can be decoded
    late.write_bytes(c[: len(c) * 2 // 3])
    s = ws.ingest([str(early), str(late)])
    # before: early.jsonl.zst "ingested" with 0 rows (DuckDB's read_json stops quietly when no block is whole)
    assert [(r.status, r.quarantined) for r in s.shards] == [("failed", 1), ("partial", 1)]
    assert 0 < s.shards[1].documents < 3000
    errors = ws.sql("SELECT error FROM quarantine ORDER BY uri").to_series().to_list()
    assert errors == ["zstd data ends early, inside frame 1 (the file is truncated)",
                      "zstd data ends early, inside frame 1 (the file is truncated); rows after this point are lost"]
    check_texts(ws, written)
    check_conservation(ws)


def test_truncated_multi_frame_zst_is_partial(ws, tmp_path):
    written = rows(4000)
    c = b"".join(zstandard.ZstdCompressor().compress(jsonl(written[k : k + 1000])) for k in range(0, 4000, 1000))
    p = tmp_path / "multi.jsonl.zst"
    p.write_bytes(c[:-500])
    (r,) = ws.ingest([str(p)]).shards
    # before: "ingested" with the first three frames' 3,000 rows and no word of the rest
    assert r.status == "partial" and 3000 <= r.documents < 4000 and r.quarantined == 1
    assert "inside frame 4" in ws.sql("SELECT error FROM quarantine").item()
    check_texts(ws, written)
    check_conservation(ws)


def test_gzip_crc_is_checked(ws, tmp_path):
    written = rows(200)
    c = bytearray(gzip.compress(jsonl(written), mtime=0))
    c[-6] ^= 0xFF  # the CRC-32 in the trailer
    p = tmp_path / "crc.jsonl.gz"
    p.write_bytes(bytes(c))
    (r,) = ws.ingest([str(p)]).shards
    # before: "ingested", 200 documents, the failed check unnoticed
    assert r.status == "partial" and r.documents == 0
    errors = ws.sql("SELECT error FROM quarantine").to_series().to_list()
    assert all("gzip member 1 is damaged (incorrect data check)" in e for e in errors)
    raws = ws.sql('SELECT raw FROM quarantine WHERE raw IS NOT NULL ORDER BY "row"').to_series().to_list()
    assert raws == [json.dumps(w) for w in written]  # nothing lost: each row kept with its raw text
    check_conservation(ws)


def test_altered_bytes_in_a_gzip_member_never_reach_documents(ws, tmp_path):
    """A flipped bit in a stored deflate block decodes to another character: only the CRC says so."""
    written = rows(50)
    body = jsonl(written)
    c = bytearray(gzip.compress(body, compresslevel=0, mtime=0))  # stored blocks: the bytes as written
    c[bytes(c).index(b"alpha")] ^= 0x01  # 'a' -> '`': still valid JSON, another text
    p = tmp_path / "flip.jsonl.gz"
    p.write_bytes(bytes(c))
    (r,) = ws.ingest([str(p)]).shards
    assert r.status == "partial" and r.documents == 0
    check_texts(ws, written)
    check_conservation(ws)


def test_corrupt_middle_keeps_the_good_members_before_it(ws, tmp_path):
    written = rows(4000)
    members = [gzip.compress(jsonl(written[k : k + 1000]), mtime=0) for k in range(0, 4000, 1000)]
    bad = bytearray(members[2])
    bad[len(bad) // 2 : len(bad) // 2 + 64] = b"\x00" * 64
    p = tmp_path / "mid.jsonl.gz"
    p.write_bytes(members[0] + members[1] + bytes(bad) + members[3])
    (r,) = ws.ingest([str(p)]).shards
    # before: one quarantine row and not one document (the failed call's output was dropped with it)
    assert r.status == "partial" and r.documents == 2000
    q = ws.sql('SELECT "row", raw, error FROM quarantine ORDER BY "row"').rows()
    assert q[0][0] == 2000 and all("gzip member 3 is damaged" in e for _, _, e in q)
    assert [raw for _, raw, _ in q[:100]] == [json.dumps(w) for w in written[2000:2100]]  # decoded, held back
    assert q[-1][1] is None and "rows after this point are lost" in q[-1][2]
    check_texts(ws, written)
    check_conservation(ws)


def test_corrupt_middle_of_a_zst_keeps_the_good_frames_before_it(ws, tmp_path):
    written = rows(3000)
    frames = [zstandard.ZstdCompressor(write_checksum=True).compress(jsonl(written[k : k + 1000]))
              for k in range(0, 3000, 1000)]
    bad = bytearray(frames[1])
    bad[len(bad) // 2 : len(bad) // 2 + 64] = b"\xff" * 64
    p = tmp_path / "mid.jsonl.zst"
    p.write_bytes(frames[0] + bytes(bad) + frames[2])
    (r,) = ws.ingest([str(p)]).shards
    assert r.status == "partial" and r.documents == 1000
    assert "zstd frame 2 is damaged" in ws.sql('SELECT error FROM quarantine ORDER BY "row" LIMIT 1').item()
    check_texts(ws, written)
    check_conservation(ws)


@pytest.mark.parametrize("name", ["empty.jsonl.gz", "empty.jsonl.zst", "empty.csv.gz"])
def test_zero_byte_compressed_file_is_failed(ws, tmp_path, name):
    p = tmp_path / name
    p.write_bytes(b"")
    (r,) = ws.ingest([str(p)]).shards
    # before: "ingested" with 0 rows, though no gzip or zstd stream is there at all
    assert r.status == "failed" and r.quarantined == 1
    assert ws.sql('SELECT "row" IS NULL AND error LIKE \'empty file%\' FROM quarantine').item()
    check_conservation(ws)


def test_compressed_empty_content_is_ok(ws, tmp_path):
    p = tmp_path / "nothing.jsonl.gz"
    p.write_bytes(gzip.compress(b"", mtime=0))
    assert ws.ingest([str(p)]).shards[0].status == "ingested"
    assert shard_state(ws) == [("nothing.jsonl.gz", "ok", 0, 0, 0)]


def test_clean_compressed_shards_take_the_fast_path(ws, tmp_path, monkeypatch):
    from curate.io import ingest as ingest_mod

    def refuse(*a, **k):
        raise AssertionError("row by row for a clean shard")

    monkeypatch.setattr(ingest_mod, "_load_lines", refuse)
    written = rows(500)
    (tmp_path / "a.jsonl.gz").write_bytes(gzip.compress(jsonl(written[:250]), mtime=0))
    (tmp_path / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(jsonl(written[250:])))
    s = ws.ingest([str(tmp_path / "a.jsonl.gz"), str(tmp_path / "b.jsonl.zst")])
    assert [r.status for r in s.shards] == ["ingested", "ingested"] and s.documents == 500


# -- CSV ----------------------------------------------------------------------------------------------------------
def test_one_stray_csv_quote_does_not_leave_quotes_in_every_row(ws, tmp_path):
    p = tmp_path / "stray.csv"
    p.write_bytes(b'id,text\na,"hello"\nb,"two"\nc,"unterminated\nd,"last"\n')
    (r,) = ws.ingest([str(p)]).shards
    # before: "ingested", texts '"hello"', '"two"', ... (the sniffer chose no quoting)
    assert ws.sql("SELECT doc_id, text FROM documents ORDER BY seq").rows() == [("a", "hello"), ("b", "two")]
    assert r.status == "partial" and "unreadable CSV" in ws.sql("SELECT error FROM quarantine").item()
    check_conservation(ws)


def test_csv_bom_and_one_bad_row_keep_every_id(ws, tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbfid,text\na,hello\nb,x,extra\nc,world\n")
    (r,) = ws.ingest([str(p)]).shards
    # before: ids "bom.csv:0" and "bom.csv:2" (the header's first name was "\ufeffid")
    assert ws.sql("SELECT doc_id FROM documents ORDER BY seq").to_series().to_list() == ["a", "c"]
    assert ws.sql("SELECT raw FROM quarantine").item() == '{"id": "b", "text": "x"}'
    assert r.status == "partial"
    check_conservation(ws)


def test_duplicate_text_header_is_refused_row_by_row(ws, tmp_path):
    p = tmp_path / "dup.csv"
    p.write_bytes(b"id,text,text\na,one,two\nb,three,four\n")
    (r,) = ws.ingest([str(p)]).shards
    # before: "ingested" with the first column silently ("one", "three")
    assert r.status == "partial" and r.documents == 0 and r.quarantined == 2
    assert set(ws.sql("SELECT error FROM quarantine").to_series()) == {'the header names "text" 2 times'}
    check_conservation(ws)


def test_a_row_of_empty_fields_is_a_row_on_both_paths(ws, tmp_path):
    p = tmp_path / "empty_fields.csv"
    p.write_bytes(b'id,text\na,hello\n,\n\nb,"x""\n')  # the last row is unreadable: row by row
    (r,) = ws.ingest([str(p)]).shards
    q = ws.sql('SELECT "row", error FROM quarantine ORDER BY "row"').rows()
    assert q[0] == (1, 'no "text" field (or it is null)')
    check_conservation(ws)


# -- JSONL --------------------------------------------------------------------------------------------------------
def test_jsonl_bom_is_not_part_of_the_first_row(ws, tmp_path):
    written = rows(3)
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + jsonl(written))
    (r,) = ws.ingest([str(p)]).shards
    # before: "partial", row 0 quarantined as malformed JSON
    assert r.status == "ingested" and r.documents == 3
    check_texts(ws, written)


# -- Parquet ------------------------------------------------------------------------------------------------------
def test_parquet_binary_text_is_decoded_as_utf8(ws, tmp_path):
    p = tmp_path / "bin.parquet"
    pq.write_table(pa.table({"id": ["a", "b"], "text": pa.array(["café".encode(), b"bad\xff"], pa.binary())}), p)
    (r,) = ws.ingest([str(p)]).shards
    # before: "ingested" with texts 'caf\xC3\xA9' and 'bad\xFF' (DuckDB's escapes of the bytes)
    assert ws.sql("SELECT doc_id, text FROM documents").rows() == [("a", "café")]
    assert ws.sql("SELECT error FROM quarantine").item() == 'field "text" is binary data that is not valid UTF-8'
    assert r.status == "partial"
    check_conservation(ws)


def test_parquet_list_of_strings_is_not_text(ws, tmp_path):
    p = tmp_path / "list.parquet"
    pq.write_table(pa.table({"id": ["a"], "text": pa.array([["x", "y"]], pa.list_(pa.string()))}), p)
    (r,) = ws.ingest([str(p)]).shards
    # before: "ingested" with the text "[x, y]"
    assert r.status == "partial" and r.documents == 0
    assert ws.sql("SELECT error FROM quarantine").item() == 'field "text" is an array, not a string'


# -- file names ---------------------------------------------------------------------------------------------------
def test_file_names_with_glob_characters_end_to_end(tmp_path):
    """`curate ingest` on a file literally named g*.jsonl or a[1].jsonl reads that file and nothing else."""
    d = tmp_path / "lake"
    d.mkdir()
    (d / "g*.jsonl").write_text('{"id": "star", "text": "the file named g*"}\n')
    (d / "good.jsonl").write_text('{"id": "sibling", "text": "not asked for"}\n')
    (d / "a[1].jsonl").write_text('{"id": "bracket", "text": "the file named a[1]"}\n')
    (d / "a1.jsonl").write_text('{"id": "a1", "text": "not asked for"}\n')
    ws = tmp_path / "ws"
    subprocess.run([*CURATE, "init", str(ws)], check=True, capture_output=True)
    proc = subprocess.run([*CURATE, "ingest", "--no-progress", str(ws), str(d / "g*.jsonl"), str(d / "a[1].jsonl")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    w = Workspace(ws)
    # before: g*.jsonl gave 2 rows (it and good.jsonl); a[1].jsonl gave a1.jsonl's row
    assert sorted(w.sql("SELECT doc_id FROM documents").to_series().to_list()) == ["bracket", "star"]
    assert shard_state(w) == [("a[1].jsonl", "ok", 1, 1, 0), ("g*.jsonl", "ok", 1, 1, 0)]
    assert not list(Path("/tmp").glob("curate-shard-*/shard.jsonl"))  # the alias is removed


def test_glob_in_a_compressed_name(ws, tmp_path):
    (tmp_path / "x*.jsonl.gz").write_bytes(gzip.compress(b'{"id": "q", "text": "asked for"}\n', mtime=0))
    (tmp_path / "xy.jsonl.gz").write_bytes(gzip.compress(b'{"id": "o", "text": "not asked for"}\n', mtime=0))
    ws.ingest([str(tmp_path / "x*.jsonl.gz")])
    # before: both files' rows, as one shard
    assert ws.sql("SELECT doc_id FROM documents").to_series().to_list() == ["q"]


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_symlink_loops_under_a_double_star_glob_do_not_hang(ws, tmp_path):
    d = tmp_path / "lake" / "sub"
    d.mkdir(parents=True)
    (d / "a.jsonl").write_text('{"id": "a", "text": "once"}\n')
    for name, target in [("up", ".."), ("top", "../.."), ("self", "."), ("again", "../sub")]:
        os.symlink(target, d / name)
    from curate.io import lake

    # before: pyarrow's listing follows every loop (4 of them: not done after minutes)
    assert lake.expand([str(tmp_path / "lake" / "**" / "*.jsonl")]) == [str(d / "a.jsonl")]
    assert lake.expand([str(tmp_path / "lake")]) == [str(d / "a.jsonl")]
    s = ws.ingest([str(tmp_path / "lake" / "**" / "*.jsonl")])
    assert [r.status for r in s.shards] == ["ingested"]
