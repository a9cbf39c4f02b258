"""Property tests over the readers: for any rows written as JSONL, CSV or Parquet (plain, gzip or zstd) and any
truncation or corruption point, ingest never raises, every row ends in `documents` or `quarantine` (rows =
documents + quarantined) and a row in `documents` has exactly the text written at its row number.

What "exactly" can promise depends on what the bytes carry: a truncated stream gives an exact prefix (except a
plain CSV cut inside its last row, which is still a valid row: CSV has no row terminator to check); corruption
is caught only where a checksum covers it (gzip's CRC-32, zstd frames written with a checksum). Corrupted plain
files, Parquet and unchecksummed zstd are held to conservation and "never raises" alone.

A failing example is saved under tests/crashers/ (name: what it is) and `test_crashers_replay` keeps it.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curate import Workspace

CRASHERS = Path(__file__).parent / "crashers"
SETTINGS = settings(max_examples=10, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

texts = st.text(st.characters(codec="utf-8"), max_size=30) | st.sampled_from(
    ["", " ", "a,b", 'say "hi"', "line\nbreak", "cr\r\nlf", "\ufeffbom", "tab\there", "\\", '"', "{}", "42"])
row_texts = st.lists(texts, max_size=8)


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    return Workspace.init(tmp_path_factory.mktemp("props") / "ws")


def encode(kind: str, compression: str | None, ids: list[str], texts: list[str], binary: bool = False) -> bytes:
    if kind == "parquet":
        col = pa.array([t.encode() for t in texts], pa.binary()) if binary else pa.array(texts, pa.string())
        out = io.BytesIO()
        pq.write_table(pa.table({"id": pa.array(ids, pa.string()), "text": col}), out)
        return out.getvalue()
    if kind == "jsonl":
        body = b"".join(json.dumps({"id": i, "text": t}).encode() + b"\n" for i, t in zip(ids, texts, strict=True))
    else:
        s = io.StringIO(newline="")
        w = csv.writer(s, lineterminator="\n")
        w.writerow(["id", "text"])
        w.writerows(zip(ids, texts, strict=True))
        body = s.getvalue().encode()
    if compression == "gzip":
        return gzip.compress(body, mtime=0)
    if compression == "zstd":
        return zstandard.ZstdCompressor(write_checksum=True).compress(body)
    return body


def suffix(kind: str, compression: str | None) -> str:
    return {"jsonl": ".jsonl", "csv": ".csv", "parquet": ".parquet"}[kind] + {None: "", "gzip": ".gz",
                                                                              "zstd": ".zst"}[compression]


def ingest_and_check(ws: Workspace, path: Path, ids: list[str] | None, texts: list[str] | None,
                     exact_last: bool = True) -> str | None:
    """Ingest one file; conservation, and (when the rows written are known) every document exact. Returns the
    shard's id, or None when the same bytes were ingested before (an empty file, a cut at byte 0)."""
    (r,) = ws.ingest([str(path)]).shards  # never raises
    if r.status == "skipped":
        return None
    shard = r.shard_id
    rows, docs, quarantined, status = ws.sql(
        f"SELECT rows, documents, quarantined, status FROM shards WHERE shard_id = '{shard}'").row(0)
    assert docs == ws.sql(f"SELECT count(*) FROM documents WHERE shard_id = '{shard}'").item()
    assert quarantined == ws.sql(f"SELECT count(*) FROM quarantine WHERE shard_id = '{shard}'").item()
    if status == "failed":
        assert (rows, docs, quarantined) == (0, 0, 1)
    else:
        assert rows == docs + quarantined and (status == "ok") == (quarantined == 0)
    if ids is None:
        return shard
    got = ws.sql(f'SELECT "row", doc_id, text FROM documents WHERE shard_id = \'{shard}\' ORDER BY "row"').rows()
    for row, doc_id, text in got:
        assert doc_id == ids[row]
        if exact_last or row < len(ids) - 1 or row != got[-1][0]:
            assert text == texts[row], (row, text, texts[row])
        else:
            assert texts[row].startswith(text)
    return shard


def write(tmp: Path, data: bytes, suf: str) -> Path:
    p = tmp / f"{uuid.uuid4().hex}{suf}"
    p.write_bytes(data)
    return p


def save_crasher(data: bytes, suf: str, what: str) -> None:
    """Keep a failing input for the replay test (only while a property fails)."""
    CRASHERS.mkdir(exist_ok=True)
    (CRASHERS / f"{what}-{uuid.uuid5(uuid.NAMESPACE_OID, data.hex()).hex[:12]}{suf}").write_bytes(data)


def check_or_save(ws, tmp, data, suf, what, ids, texts, exact_last=True):
    p = write(tmp, data, suf)
    try:
        return ingest_and_check(ws, p, ids, texts, exact_last)
    except BaseException:
        save_crasher(data, suf, what)
        raise


formats = st.sampled_from([("jsonl", None), ("jsonl", "gzip"), ("jsonl", "zstd"), ("csv", None), ("csv", "gzip"),
                           ("csv", "zstd"), ("parquet", None)])


@SETTINGS
@given(formats, row_texts, st.booleans())
def test_any_rows_round_trip(ws, tmp_path, fmt, texts, binary):
    kind, compression = fmt
    ids = [f"{uuid.uuid4().hex[:10]}-{i}" for i in range(len(texts))]
    data = encode(kind, compression, ids, texts, binary)
    shard = check_or_save(ws, tmp_path, data, suffix(kind, compression), "roundtrip", ids, texts)
    # a row is refused only for a reason it really has: CSV's empty field reads as absent
    refused = [] if shard is None else ws.sql(
        f'SELECT "row" FROM quarantine WHERE shard_id = \'{shard}\'').to_series().to_list()
    assert all(kind == "csv" and texts[r] == "" for r in refused)


@SETTINGS
@given(formats, row_texts, st.floats(0, 1))
def test_any_truncation(ws, tmp_path, fmt, texts, where):
    kind, compression = fmt
    ids = [f"{uuid.uuid4().hex[:10]}-{i}" for i in range(len(texts))]
    data = encode(kind, compression, ids, texts)
    cut = data[: int(len(data) * where)]
    exact_last = not (kind == "csv" and compression is None)
    check_or_save(ws, tmp_path, cut, suffix(kind, compression), "truncated", ids, texts, exact_last)


@SETTINGS
@given(formats, row_texts, st.floats(0, 1), st.integers(1, 255), st.integers(1, 8))
def test_any_corruption(ws, tmp_path, fmt, texts, where, xor, span):
    kind, compression = fmt
    ids = [f"{uuid.uuid4().hex[:10]}-{i}" for i in range(len(texts))]
    data = bytearray(encode(kind, compression, ids, texts))
    if not data:
        return
    at = min(int(len(data) * where), len(data) - 1)
    for i in range(at, min(at + span, len(data))):
        data[i] ^= xor
    checked = compression is not None  # gzip's CRC-32, zstd's frame checksum
    check_or_save(ws, tmp_path, bytes(data), suffix(kind, compression), "corrupt",
                  ids if checked else None, texts if checked else None)


def test_crashers_replay(ws, tmp_path):
    """Every input kept under tests/crashers/ ingests without raising, with every row accounted for."""
    files = sorted(p for p in CRASHERS.iterdir() if p.is_file() and p.name != "README.md")
    assert files
    for p in files:
        ingest_and_check(ws, p, None, None)
