"""Streaming ingest of shards into `documents`, one transaction per shard.

DuckDB reads a shard once with its own reader, straight into `documents` (the direct path): every row goes in,
the rows that are bad or may be (a value DuckDB may have turned into text, an id already taken) marked, and
only those are looked at again afterwards, moved to `quarantine` with their raw text and a plain error. A shard
DuckDB refuses as a whole (malformed JSON, damaged compression, a CSV header naming a field twice) is re-read
row by row in Python instead, so that every bad row reaches `quarantine` with its raw bytes; both paths feed
the same SQL, so validation rules exist once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import duckdb
import numpy as np
import pyarrow as pa

from curate.core.db import one
from curate.core.errors import UserError
from curate.io import lake
from curate.util import log
from curate.util.progress import Progress
from curate.util.sql import literal

if TYPE_CHECKING:
    from curate.core.workspace import Workspace

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet", ".csv": "csv"}
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd"}
MAX_DOC_BYTES = 64 * 1024 * 1024
RAW_CAP = 1024 * 1024  # quarantine keeps at most this much of a raw row
BATCH_ROWS = 20_000
BATCH_BYTES = 64 * 1024 * 1024
CHUNK = 1 << 20
PIPE_BYTES = 1 << 20  # the pipe a compressed shard is fed through (_Feed); Linux's default limit
# scheme://[userinfo@](host)  -- host lower-cased later; IPv6 literals keep their brackets
DOMAIN_RE = r"^[A-Za-z][A-Za-z0-9+.\-]*://(?:[^@/?#]*@)?(\[[^\]/]*\]|[^:/?#]+)"


@dataclass(frozen=True)
class Fields:
    """Names of the input fields holding each part of a document."""

    id: str = "id"
    text: str = "text"
    url: str = "url"
    meta: str = "meta"

    def __post_init__(self) -> None:
        names = [self.id, self.text, self.url, self.meta]
        for name in names:
            if not re.fullmatch(r"[A-Za-z0-9_.\- ]{1,128}", name):
                raise UserError(f"field name {name!r}: use letters, digits, '_', '.', '-' or spaces")
        if len(set(names)) != len(names):
            raise UserError(f"field names must differ: {names}")


@dataclass
class ShardReport:
    uri: str
    status: str  # ingested | partial | failed | skipped | missing
    shard_id: str | None = None
    rows: int = 0
    documents: int = 0
    quarantined: int = 0
    error: str | None = None


@dataclass
class IngestSummary:
    shards: list[ShardReport] = field(default_factory=list)
    retried: lake.RetryStats = field(default_factory=lake.RetryStats)  # transient store errors ridden out

    def count(self, attr: str) -> int:
        return sum(getattr(s, attr) for s in self.shards)

    @property
    def documents(self) -> int:
        return self.count("documents")

    @property
    def quarantined(self) -> int:
        return self.count("quarantined")

    def by_status(self, status: str) -> int:
        return sum(s.status == status for s in self.shards)


class CorruptStream(Exception):
    """The compressed stream ends early (`damaged` False: the bytes before are exact) or a member of it is damaged
    (`damaged` True: the bytes decoded from that member may be altered)."""

    def __init__(self, message: str, damaged: bool):
        super().__init__(message)
        self.damaged = damaged


def shard_format(path: str) -> tuple[str, str | None]:
    """('jsonl'|'parquet'|'csv', compression or None) from the file name."""
    name = os.path.basename(path).lower()
    compression = None
    for suffix, comp in COMPRESSIONS.items():
        if name.endswith(suffix):
            compression, name = comp, name[: -len(suffix)]
    for suffix, kind in SUFFIXES.items():
        if name.endswith(suffix):
            if kind == "parquet" and compression:
                break
            return kind, compression
    raise UserError(f"{path}: unsupported shard type (use .jsonl[.gz|.zst], .csv[.gz|.zst] or .parquet)")


def expand(paths: Sequence[str], endpoint: str | None = None) -> list[tuple[str, str | None]]:
    """(uri, None) for every shard named, found under a directory or prefix, or matched by a glob (the store is
    listed), sorted and each once; (argument, why) for an argument that gives no shard at all, so that nothing
    a user asked for vanishes."""
    out: dict[str, str | None] = {}
    for p in paths:
        found = lake.expand([p], endpoint)
        if not found:
            out.setdefault(p, "no file matches this pattern" if lake.has_glob(p) else "no shard files under it")
        for uri in found:
            out.setdefault(uri, None)
    return sorted(out.items())


def file_sha256(path: str, endpoint: str | None = None) -> tuple[str, int]:
    """SHA-256 and size of a shard's bytes, read from wherever it lives."""
    return lake.sha256_and_size(path, endpoint)


def ingest(
    ws: Workspace,
    paths: Sequence[str],
    fields: Fields = Fields(),
    max_doc_bytes: int = MAX_DOC_BYTES,
    progress: bool = False,
    endpoint: str | None = None,
) -> IngestSummary:
    """Ingest every shard once (a shard already present, by SHA-256, is skipped). Every input named ends in
    `shards`: missing ones with status `missing`, unreadable ones `failed` (and a `quarantine` row)."""
    before = lake.retry_stats()
    targets = expand(paths, endpoint)
    summary = IngestSummary()
    sizes = [_size(uri, endpoint) if why is None else 0 for uri, why in targets]
    with ws.connect(write=True) as con, Progress("ingest", sum(sizes), progress, unit="bytes") as bar:
        hooks = [_register_sha256] + ([_track_progress] if bar.active else [])
        for hook in hooks:
            if hasattr(con, "on_open"):
                con.on_open(hook)  # again whenever the file was let go for a reader
            else:
                hook(con)
        for (uri, why), size in zip(targets, sizes, strict=True):
            shard_before = lake.retry_stats()
            bar.describe(uri.rsplit("/", 1)[-1])
            with _WithinShard(con, bar, size):
                r = _record_missing(con, uri, why) if why else ingest_shard(con, uri, fields, max_doc_bytes,
                                                                            endpoint)
            summary.shards.append(r)
            log.event("shard_ingested", "warning" if r.status in ("missing", "failed") else "info", uri=r.uri,
                      status=r.status, bytes=size, rows=r.rows, documents=r.documents, quarantined=r.quarantined,
                      retries=lake.retry_stats().since(shard_before).retries, **({"error": r.error} if r.error else {}))
            if hasattr(con, "pause"):
                con.pause()  # a reader waiting for the file gets in between two shards
    summary.retried = lake.retry_stats().since(before)
    return summary


def _track_progress(con: duckdb.DuckDBPyConnection) -> None:
    """Let DuckDB report a running statement's progress (`query_progress()`), without printing it."""
    con.execute("SET enable_progress_bar = true")
    con.execute("SET enable_progress_bar_print = false")
    con.execute("SET progress_bar_time = 0")


class _WithinShard:
    """Progress inside one shard: DuckDB reads a shard in one statement (more when rows are bad or suspect);
    a thread polls the running statement's progress and moves the bar through the shard's bytes, so one big
    shard does not sit at 0 until it is done. At the end the bar stands at the shard's end exactly."""

    STATEMENTS = 1  # heavy statements per shard: one (the insert) unless rows are bad (see _insert_direct)

    def __init__(self, con: duckdb.DuckDBPyConnection, bar: Progress, size: int):
        self.con, self.bar, self.size = con, bar, size
        self.start, self.moved, self.stop = bar.done, 0, threading.Event()

    def __enter__(self) -> _WithinShard:
        if self.bar.active and self.size:
            self.thread = threading.Thread(target=self._poll, name="curate-ingest-progress", daemon=True)
            self.thread.start()
        return self

    def _poll(self) -> None:
        done, last = 0, -1.0
        while not self.stop.wait(0.1):  # DuckDB reads a shard in one statement or a few, of a second or so each
            try:
                p = self.con.query_progress()
            except Exception:  # noqa: BLE001 - no statement, or the connection is between files: try again
                continue
            if p < 0 or p < last - 50:  # a statement ended: the next one starts from 0
                done += 1 if last >= 0 else 0
            last = p
            fraction = min(0.99, (done + max(p, 0) / 100) / self.STATEMENTS)
            step = int(self.size * fraction) - self.moved
            if step > 0:
                self.moved += step
                self.bar(step)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if getattr(self, "thread", None):
            self.thread.join()
        self.bar(self.size - self.moved)


def _size(uri: str, endpoint: str | None) -> int:
    try:
        return lake.stat(uri, endpoint).size
    except lake.LakeError:
        return 0


def ingest_shard(con: duckdb.DuckDBPyConnection, uri: str, fields: Fields, max_doc_bytes: int,
                 endpoint: str | None = None) -> ShardReport:
    shown = os.path.abspath(uri) if lake.is_local(uri) and "://" not in uri else lake.redact_uri(uri)
    try:
        before = lake.stat(uri, endpoint)
        sha, size = file_sha256(uri, endpoint)
    except lake.Missing:
        return _record_missing(con, shown, "not found")
    except lake.Unreachable:
        raise  # the store is down: nothing else can be read from it either
    except lake.LakeError as e:
        return _record_failed(con, shown, None, None, str(e))
    shard_id = sha[:16]
    if one(con.execute("SELECT 1 FROM shards WHERE shard_id = ?", [shard_id])):
        return ShardReport(shown, "skipped", shard_id)
    try:
        kind, compression = shard_format(uri)
    except UserError as e:
        return _record_failed(con, shown, sha, size, str(e))
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    alias = _literal_alias(uri)
    source = Source(uri, endpoint, kind, compression, alias)
    try:
        con.execute("BEGIN")
        report = _insert_direct(con, source, shown, shard_id, name, fields, max_doc_bytes)
        if report is None:  # DuckDB cannot read it directly or whole: row by row, keeping each raw row
            _rollback(con)
            _drop_temp(con)
            whole_file_error = _fill_stage(con, source, name, fields, max_doc_bytes)
            con.execute("BEGIN")
            report = _commit_rows(con, shown, shard_id, name, fields, whole_file_error)
        after = lake.stat(uri, endpoint)
        if (after.size, after.etag, after.version_id) != (before.size, before.etag, before.version_id) \
                or after.size != size:
            _rollback(con)
            _drop_temp(con)
            return _record_failed(con, shown, sha, size, "the shard changed while it was being read "
                                  f"(size {size} -> {after.size}, etag {before.etag} -> {after.etag})")
        fmt = kind + (f"+{compression}" if compression else "")
        _insert_shard(con, shard_id, shown, name, fmt, sha, size, report.rows, report.documents, report.quarantined,
                      {"ingested": "ok"}.get(report.status, report.status), before, report.error)
        con.execute("DELETE FROM shards WHERE uri = ? AND status = 'missing'", [shown])
        con.execute("COMMIT")
    except (lake.Missing, FileNotFoundError, duckdb.IOException) as e:
        _rollback(con)
        _drop_temp(con)
        try:
            lake.stat(uri, endpoint)
        except lake.Missing:
            return _record_missing(con, shown, f"vanished while being read: {_first_line(e)}")
        raise
    except BaseException:
        _rollback(con)
        raise
    finally:
        _drop_temp(con)
        if alias:
            shutil.rmtree(os.path.dirname(alias), ignore_errors=True)
    return report


def _literal_alias(uri: str) -> str | None:
    """DuckDB's readers expand `*`, `?` and `[` in the path they are given, so a local file named `g*.jsonl` would
    swallow its siblings and `a[1].jsonl` would read `a1.jsonl`. Such a file is handed to DuckDB through a symlink
    without those characters (in a temporary directory, removed after the shard); None when none is needed."""
    if not lake.is_local(uri) or not lake.has_glob(path := lake.duckdb_path(None, uri)):
        return None
    d = tempfile.mkdtemp(prefix="curate-shard-")
    alias = os.path.join(d, "shard" + "".join(f".{p}" for p in os.path.basename(path).lower().split(".")[1:])
                         .translate({ord(c): "_" for c in lake.GLOB_CHARS}))
    os.symlink(path, alias)
    return alias


@dataclass(frozen=True)
class Source:
    """Where a shard's bytes are and how they are packed."""

    uri: str
    endpoint: str | None
    kind: str  # jsonl | csv | parquet
    compression: str | None  # gzip | zstd | None
    alias: str | None = None  # a glob-free symlink DuckDB reads instead of a local path with glob characters

    def duckdb_path(self, con: duckdb.DuckDBPyConnection) -> str | None:
        """The path DuckDB's own readers take, or None when DuckDB cannot read it directly: a compressed
        remote file (DuckDB does not decompress through a registered filesystem) goes row by row instead."""
        if self.compression and not lake.is_local(self.uri):
            return None
        return self.alias or lake.duckdb_path(con, self.uri, self.endpoint)

    def open(self):
        return lake.open_input(self.uri, self.endpoint)


def _insert_shard(con, shard_id, uri, name, fmt, sha, size, rows, documents, quarantined, status, info=None,
                  error=None) -> None:
    con.execute("""INSERT INTO shards (shard_id, uri, name, format, sha256, bytes, rows, documents, quarantined,
                                       status, ingested_at, etag, version_id, error)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now()::TIMESTAMP, ?, ?, ?)""",
                [shard_id, uri, name, fmt, sha, size, rows, documents, quarantined, status,
                 info.etag if info else None, info.version_id if info else None, error])


def _record_missing(con: duckdb.DuckDBPyConnection, uri: str, why: str) -> ShardReport:
    """A named input that does not exist: a `missing` row in `shards` (once per URI; replaced when it is
    ingested later)."""
    shard_id = "missing-" + hashlib.sha256(uri.encode()).hexdigest()[:16]
    con.execute("DELETE FROM shards WHERE shard_id = ?", [shard_id])
    _insert_shard(con, shard_id, uri, uri.rstrip("/").rsplit("/", 1)[-1], "", None, None, 0, 0, 0, "missing",
                  error=why)
    return ShardReport(uri, "missing", shard_id, error=why)


def _record_failed(con: duckdb.DuckDBPyConnection, uri: str, sha: str | None, size: int | None,
                   why: str) -> ShardReport:
    """A shard that cannot be read at all: `failed` in `shards`, and one `quarantine` row (row NULL)."""
    shard_id = sha[:16] if sha else "failed-" + hashlib.sha256(uri.encode()).hexdigest()[:16]
    con.execute("BEGIN")
    con.execute("DELETE FROM shards WHERE shard_id = ?", [shard_id])
    con.execute('DELETE FROM quarantine WHERE shard_id = ? AND "row" IS NULL', [shard_id])
    con.execute("INSERT INTO quarantine VALUES (?, ?, NULL, NULL, ?)", [shard_id, uri, why])
    _insert_shard(con, shard_id, uri, uri.rstrip("/").rsplit("/", 1)[-1], "", sha, size, 0, 0, 1, "failed",
                  error=why)
    con.execute("COMMIT")
    return ShardReport(uri, "failed", shard_id, rows=0, quarantined=1, error=why)


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    try:
        con.execute("ROLLBACK")
    except duckdb.TransactionException:
        pass  # no transaction was open


def _drop_temp(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("DROP VIEW IF EXISTS _src")
    for t in ("_lines", "_stage", "_check", "_suspects"):
        con.execute(f"DROP TABLE IF EXISTS {t}")


# -- reading ---------------------------------------------------------------------------------------
# Every reader defines the temp view _src in one shape: "row", then for each of id/text/url its value
# (VARCHAR) and its JSON type (<role>_type: NULL when absent), meta (JSON) and meta_type, raw (the row
# as read, or NULL) and pre_error (why the row could not even be parsed). _stage materialises it once,
# validated by `_field_error`, so the validation rules exist in one place.
ROLES = ("id", "text", "url")


def _fill_stage(con, source: Source, name: str, fields: Fields, max_doc_bytes: int) -> str | None:
    """Fill _stage from the row-by-row readers (a shard _insert_direct could not take); returns an error when not
    a single row could be read from the file."""
    kind = source.kind
    if kind == "parquet":  # DuckDB is the Parquet reader: read again keeping each row's values as raw text
        _fast_source(con, source.duckdb_path(con), kind, fields, max_doc_bytes, with_raw=True)
    else:
        reading = _Reading()
        rows = (_jsonl_rows(source, max_doc_bytes, reading) if kind == "jsonl"
                else _csv_rows(source, fields, max_doc_bytes, reading))
        _load_lines(con, rows)
        if reading.stream_error and one(con.execute("SELECT count(line) FROM _lines"))[0] == 0:
            return reading.stream_error  # not a single row before the break: the file is unreadable
        con.execute(f"""CREATE TEMP VIEW _src AS
            SELECT "row", {_from_object("j", fields)}, left(line, {RAW_CAP}) AS raw,
                   CASE WHEN pre_error IS NOT NULL THEN pre_error
                        WHEN j IS NULL THEN 'malformed JSON'
                        WHEN json_type(j) <> 'OBJECT' THEN 'expected a JSON object, found ' || {_kind("json_type(j)")}
                   END AS pre_error
            FROM (SELECT *, CASE WHEN pre_error IS NULL AND json_valid(line) THEN line::JSON END AS j FROM _lines)""")
    _build_stage(con, name, fields, max_doc_bytes)
    return None


def _insert_direct(con, source: Source, uri: str, shard_id: str, name: str, fields: Fields,
                   max_doc_bytes: int) -> ShardReport | None:
    """Read the shard once, with DuckDB's reader, straight into `documents` (inside the open transaction). Rows
    that are bad, or may be, go in too, with a negative seq, so that one parse also numbers and counts every
    row; they are looked at again afterwards (_settle_flagged), and so are repeated ids (_refuse_repeated_ids).
    None when the row-by-row readers must take the shard instead: DuckDB cannot read it directly (a compressed
    remote file), its stream is damaged (DuckDB would stop quietly at the break), a CSV header names a field
    twice (DuckDB would rename the second column), or DuckDB refuses a row (malformed JSON: the whole read
    fails). The transaction is then rolled back by the caller."""
    kind = source.kind
    if kind == "jsonl" and source.compression:
        with _Feed(source) as feed:
            return _insert_read(con, source, feed.path, feed, uri, shard_id, name, fields, max_doc_bytes)
    path = source.duckdb_path(con)
    if path is None or (source.compression and _stream_error(source)) or \
            (kind == "csv" and _csv_header_error(source, fields, max_doc_bytes)):
        return None
    return _insert_read(con, source, path, None, uri, shard_id, name, fields, max_doc_bytes)


def _insert_read(con, source: Source, path: str, feed: _Feed | None, uri: str, shard_id: str, name: str,
                 fields: Fields, max_doc_bytes: int) -> ShardReport | None:
    """_insert_direct's reading, from `path` (a file DuckDB reads, or the named pipe `feed` fills)."""
    kind = source.kind
    base = one(con.execute("SELECT coalesce(max(seq), 0) FROM documents"))[0]
    # JSONL values are read as VARCHAR, which DuckDB also makes of a number, boolean, array or object: a value
    # that could have been one is "suspect" and checked against the row's JSON afterwards (see _settle_flagged).
    suspect = _suspect(fields) if kind == "jsonl" else "false"
    try:
        _fast_source(con, path, kind, fields, max_doc_bytes, with_raw=False)
        with _feeding(feed):
            rows = one(con.execute(f"""INSERT INTO documents
                SELECT doc_id, CASE WHEN ok THEN {base} + "row" + 1 ELSE -1 - "row" END, ?, "row",
                       nullif(url, ''), {domain_sql("nullif(url, '')")}, text,
                       sha256_hex(CASE WHEN ok THEN text ELSE '' END),
                       CASE WHEN meta_type = 'OBJECT' THEN meta END,
                       length(text), strlen(text), regexp_full_match(text, '\\s*')
                FROM (SELECT "row", url, meta, meta_type, {_doc_id(name)} AS doc_id, ok,
                             CASE WHEN error IS NULL THEN text ELSE '' END AS text
                      FROM (SELECT *, error IS NULL AND NOT ({suspect}) AS ok
                            FROM (SELECT *, {_field_error(fields, max_doc_bytes)} AS error FROM _src)))""",
                                      [shard_id]))[0]
    except duckdb.Error as e:
        _rollback(con)
        lake.stat(source.uri, source.endpoint)  # lake.Missing when it vanished
        if kind != "parquet":
            return None
        con.execute("BEGIN")  # DuckDB is the only Parquet reader: a file it refuses is unreadable
        return _commit_rows(con, uri, shard_id, name, fields, f"cannot read Parquet file: {_first_line(e)}")
    if feed and feed.refused:  # damaged or truncated (DuckDB saw the bytes up to the break), or read twice
        return None
    bad = _settle_flagged(con, source, path, feed, uri, shard_id, base, fields, max_doc_bytes)
    if bad is None:
        return None
    bad += _refuse_repeated_ids(con, feed, uri, shard_id, fields)
    status = "partial" if bad else "ingested"
    return ShardReport(uri, status, shard_id, rows=rows, documents=rows - bad, quarantined=bad)


def _suspect(fields: Fields) -> str:
    """SQL over _src: a value read as VARCHAR that DuckDB may have made of a non-string JSON value."""
    text, url, doc_id = _coerced("text", NUMBER), _coerced("url", NUMBER), _coerced("id", NON_INTEGER)
    return f"coalesce(({text}) OR ({url}) OR ({doc_id}), false)"


def _settle_flagged(con, source: Source, path: str, feed: _Feed | None, uri: str, shard_id: str, base: int,
                    fields: Fields, max_doc_bytes: int) -> int | None:
    """The rows _insert_direct flagged (negative seq) read again, each with its raw text: a JSONL row as a JSON
    object with its values' true types (read_json_objects), a CSV or Parquet row from the typed reader. Good
    ones get their place in seq; bad ones go to quarantine. Returns how many were bad, or None when a flagged
    row could not be read again (the row-by-row readers then take the shard)."""
    flagged = [r for (r,) in con.execute('SELECT "row" FROM documents WHERE seq < 0 AND shard_id = ?',
                                         [shard_id]).fetchall()]
    if not flagged:
        return 0
    con.execute('CREATE OR REPLACE TEMP TABLE _suspects AS SELECT unnest(?::BIGINT[]) AS "row"', [flagged])
    if source.kind == "jsonl":
        with _feeding(feed):
            con.execute(f"""CREATE OR REPLACE TEMP TABLE _check AS
                SELECT "row", {_from_object("j", fields)}, left(j::VARCHAR, {RAW_CAP}) AS raw,
                       NULL::VARCHAR AS pre_error
                FROM (SELECT ordinality - 1 AS "row", json AS j
                      FROM read_json_objects({literal(path)}, format = 'newline_delimited',
                                             maximum_object_size = {max_doc_bytes + 65536}) WITH ORDINALITY)
                WHERE "row" IN (SELECT "row" FROM _suspects)""")
        if feed and feed.refused:
            return None
    else:
        _fast_source(con, path, source.kind, fields, max_doc_bytes, with_raw=True)
        con.execute('CREATE OR REPLACE TEMP TABLE _check AS SELECT * FROM _src WHERE "row" IN (SELECT "row" FROM '
                    "_suspects)")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _stage AS
        SELECT "row", raw, {_field_error(fields, max_doc_bytes)} AS error FROM _check""")
    found, unraw = one(con.execute("SELECT count(*), count(*) FILTER (error IS NOT NULL AND raw IS NULL) FROM _stage"))
    if found != len(flagged) or unraw:
        return None
    con.execute(f"""UPDATE documents SET seq = {base} + "row" + 1, sha256 = sha256_hex(text)
        WHERE seq < 0 AND shard_id = ? AND "row" IN (SELECT "row" FROM _stage WHERE error IS NULL)""", [shard_id])
    con.execute("""INSERT INTO quarantine SELECT ?, ?, "row", raw, error FROM _stage WHERE error IS NOT NULL
                   ORDER BY "row" """, [shard_id, uri])
    con.execute("DELETE FROM documents WHERE seq < 0 AND shard_id = ?", [shard_id])
    return one(con.execute("SELECT count(*) FROM _stage WHERE error IS NOT NULL"))[0]


def _refuse_repeated_ids(con, feed: _Feed | None, uri: str, shard_id: str, fields: Fields) -> int:
    """An id may appear once: later rows of this shard with an id seen earlier in it, and rows whose id another
    shard brought in already, leave `documents` for quarantine (their raw text rebuilt from _src, read once more
    only when there is such a row). Returns how many."""
    con.execute("""CREATE OR REPLACE TEMP TABLE _stage AS
        SELECT m."row", m.doc_id,
               CASE WHEN m."row" > m.first_row
                    THEN 'duplicate id (first seen at row ' || m.first_row || ' of this shard)'
                    ELSE 'id already ingested from shard ' || o.shard_id || ' row ' || o."row" END AS error
        FROM (SELECT doc_id, "row", min("row") OVER (PARTITION BY doc_id) AS first_row
              FROM documents WHERE shard_id = ?) m
        LEFT JOIN (SELECT doc_id, shard_id, "row" FROM documents WHERE shard_id <> ?) o USING (doc_id)
        WHERE m."row" > m.first_row OR o.doc_id IS NOT NULL""", [shard_id, shard_id])
    n = one(con.execute("SELECT count(*) FROM _stage"))[0]
    if n:
        with _feeding(feed):
            con.execute(f"""INSERT INTO quarantine
                SELECT ?, ?, b."row", left(json_object({literal(fields.id)}, b.doc_id, {literal(fields.text)}, s.text,
                                                       {literal(fields.url)}, s.url, {literal(fields.meta)}, s.meta
                                                       )::VARCHAR, {RAW_CAP}), b.error
                FROM _stage b JOIN _src s USING ("row") ORDER BY b."row" """, [shard_id, uri])
        con.execute('DELETE FROM documents WHERE shard_id = ? AND "row" IN (SELECT "row" FROM _stage)', [shard_id])
    return n


def _from_object(j: str, fields: Fields) -> str:
    """SQL: the _src columns taken from a JSON object column `j`."""
    cols = [f"{j}->>{_path(getattr(fields, r))} AS {r}, json_type({j}, {_path(getattr(fields, r))}) AS {r}_type"
            for r in ROLES]
    cols.append(f"{j}->{_path(fields.meta)} AS meta, json_type({j}, {_path(fields.meta)}) AS meta_type")
    return ", ".join(cols)


# JSON numbers as DuckDB's VARCHAR cast writes them; integer ids are valid, so only a non-integer one is suspect
NUMBER, NON_INTEGER = r"-?\d+(\.\d+)?([eE][+-]?\d+)?", r"-?\d+(\.\d*)?[.eE][-+\d]*"


def _doc_id(name: str) -> str:
    """SQL over _src: the document id (DESIGN.md: the id field, else shard file name and row)."""
    return f"""CASE WHEN id IS NULL THEN {literal(name)} || ':' || "row" ELSE id END"""


def _build_stage(con, name: str, fields: Fields, max_doc_bytes: int) -> None:
    """_stage: per row its id, error and (for a bad row) raw text, but not the document: that is read from _src once
    more when good rows are inserted, so a shard's text is never held in a temporary table."""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _stage AS
        SELECT "row", raw, error, {_doc_id(name)} AS doc_id,
               error IS NULL AND coalesce(({_coerced('text', NUMBER)}) OR ({_coerced('url', NUMBER)})
                                          OR ({_coerced('id', NON_INTEGER)}), false) AS suspect
        FROM (SELECT *, {_field_error(fields, max_doc_bytes)} AS error FROM _src)""")


def _coerced(col: str, scalar: str) -> str:
    """SQL: the value looks like DuckDB's VARCHAR cast of a non-string JSON value (see _settle_flagged)."""
    return (f"regexp_full_match({col}, '{scalar}|true|false') OR "
            f"((starts_with({col}, '[') OR starts_with({col}, '{{')) AND json_valid({col}))")


def _path(name: str) -> str:
    """SQL: the JSON path of a top-level field."""
    return literal('$."' + name.replace('"', '\\"') + '"')


def _fast_source(con, path, kind, fields, max_doc_bytes, with_raw) -> None:
    """_src straight from DuckDB's readers (values typed VARCHAR; see _settle_flagged for JSONL)."""
    roles = [(r, getattr(fields, r)) for r in ROLES]
    src = literal(path)
    if kind == "jsonl":
        columns = "{" + ", ".join(f"{literal(f)}: 'VARCHAR'" for _, f in roles) + f", {literal(fields.meta)}: 'JSON'}}"
        select = ", ".join(f's."{f}" AS {r}, CASE WHEN s."{f}" IS NOT NULL THEN \'VARCHAR\' END AS {r}_type'
                           for r, f in roles)
        con.execute(f"""CREATE OR REPLACE TEMP VIEW _src AS
            SELECT ordinality - 1 AS "row", {select},
                   s."{fields.meta}" AS meta, json_type(s."{fields.meta}") AS meta_type,
                   NULL::VARCHAR AS raw, NULL::VARCHAR AS pre_error
            FROM read_json({src}, format = 'newline_delimited', columns = {columns},
                           maximum_object_size = {max_doc_bytes + 65536}) WITH ORDINALITY AS s""")
        return
    if kind == "csv":
        # The dialect is fixed (RFC 4180, as the row-by-row reader reads it): left to the sniffer, one stray quote
        # made it choose "no quoting" and keep literal quotes in every row.
        scan = (f"read_csv({src}, header = true, all_varchar = true, strict_mode = true, delim = ',', "
                f"quote = '\"', escape = '\"', comment = '', skip = 0, "
                f"max_line_size = {max_doc_bytes + 65536}) WITH ORDINALITY AS s")
        row = "ordinality - 1"
    else:
        scan, row = f"read_parquet({src}, file_row_number = true) AS s", "file_row_number"
    types = {n: t for n, t, *_ in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()}
    cols, errors = [], []
    for r, f in roles:
        if f not in types:
            cols.append(f"NULL::VARCHAR AS {r}, NULL::VARCHAR AS {r}_type")
        elif types[f] == "BLOB":  # Parquet BINARY without the UTF-8 annotation: text when it decodes as UTF-8
            text = f'try(decode(s."{f}"))'
            cols.append(f"{text} AS {r}, CASE WHEN s.\"{f}\" IS NOT NULL THEN 'VARCHAR' END AS {r}_type")
            errors.append(f"CASE WHEN s.\"{f}\" IS NOT NULL AND {text} IS NULL "
                          f"THEN 'field \"{f}\" is binary data that is not valid UTF-8' END")
        else:
            value = f"nullif(s.\"{f}\", '')" if kind == "csv" else f's."{f}"::VARCHAR'
            jtype = _json_type_of(types[f])
            cols.append(f"{value} AS {r}, CASE WHEN s.\"{f}\" IS NOT NULL THEN '{jtype}' END AS {r}_type")
    m = fields.meta
    if m not in types:
        cols.append("NULL::JSON AS meta, NULL::VARCHAR AS meta_type")
    elif types[m] == "VARCHAR":  # metadata as a JSON string (CSV, most Parquet writers)
        present = f"nullif(s.\"{m}\", '') IS NOT NULL"
        cols.append(f"CASE WHEN {present} AND json_valid(s.\"{m}\") THEN s.\"{m}\"::JSON END AS meta, "
                    f"CASE WHEN {present} AND json_valid(s.\"{m}\") THEN json_type(s.\"{m}\"::JSON) END AS meta_type")
        errors.append(f"CASE WHEN {present} AND NOT json_valid(s.\"{m}\") THEN 'field \"{m}\" is not valid JSON' END")
    else:
        cols.append(f"to_json(s.\"{m}\") AS meta, json_type(to_json(s.\"{m}\")) AS meta_type")
    pre_error = f"coalesce({', '.join(errors)})" if errors else "NULL::VARCHAR"
    original = ", ".join(f'{literal(c)}, s."{c}"' for c in types if c != "file_row_number")
    raw = f"left(json_object({original})::VARCHAR, {RAW_CAP})" if with_raw else "NULL::VARCHAR"
    con.execute(f"""CREATE OR REPLACE TEMP VIEW _src AS SELECT {row} AS "row", {", ".join(cols)},
                    {raw} AS raw, {pre_error} AS pre_error FROM {scan}""")


def _json_type_of(duckdb_type: str) -> str:
    """The JSON type a typed (Parquet) column's values would have, for the shared validation."""
    t = duckdb_type.upper()
    if t.endswith("]") or t.startswith("LIST"):  # VARCHAR[] is a list, not text
        return "ARRAY"
    if t in ("VARCHAR", "BLOB"):
        return "VARCHAR"
    if t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"):
        return "BIGINT"
    if t == "BOOLEAN":
        return "BOOLEAN"
    if t.startswith(("STRUCT", "MAP", "JSON")):
        return "OBJECT"
    return "DOUBLE"


def _kind(json_type: str) -> str:
    """SQL: a JSON type name in words, for error messages."""
    return (f"CASE WHEN {json_type} IN ('BIGINT', 'UBIGINT', 'HUGEINT', 'DOUBLE') THEN 'a number' "
            f"WHEN {json_type} = 'VARCHAR' THEN 'a string' WHEN {json_type} = 'BOOLEAN' THEN 'a boolean' "
            f"WHEN {json_type} = 'ARRAY' THEN 'an array' ELSE 'an object' END")


def _field_error(fields: Fields, max_doc_bytes: int) -> str:
    """SQL over _src: why a row cannot become a document (NULL when it can)."""
    t, i, u, m = fields.text, fields.id, fields.url, fields.meta
    return f"""coalesce(pre_error, CASE
        WHEN text_type IS NULL OR text_type = 'NULL' THEN 'no "{t}" field (or it is null)'
        WHEN text_type <> 'VARCHAR' THEN 'field "{t}" is ' || {_kind('text_type')} || ', not a string'
        WHEN id_type NOT IN ('NULL', 'VARCHAR', 'BIGINT', 'UBIGINT')
             THEN 'field "{i}" is ' || {_kind('id_type')} || ', not a string or integer'
        WHEN id_type = 'VARCHAR' AND id = '' THEN 'field "{i}" is empty'
        WHEN url_type NOT IN ('NULL', 'VARCHAR') THEN 'field "{u}" is ' || {_kind('url_type')} || ', not a string'
        WHEN meta_type NOT IN ('NULL', 'OBJECT') THEN 'field "{m}" is ' || {_kind('meta_type')} || ', not an object'
        WHEN strlen(text) > {max_doc_bytes}
             THEN 'document of ' || strlen(text) || ' bytes exceeds the limit of {max_doc_bytes} bytes'
    END)"""


def _commit_rows(con, uri, shard_id, name, fields, whole_file_error) -> ShardReport:
    """Move the good rows of _stage into documents and the rest into quarantine."""
    if whole_file_error:
        con.execute("INSERT INTO quarantine VALUES (?, ?, NULL, NULL, ?)", [shard_id, uri, whole_file_error])
        return ShardReport(uri, "failed", shard_id, rows=0, quarantined=1, error=whole_file_error)
    # An id may appear once: later rows of this shard, and rows whose id is already in, are quarantined.
    dups = con.execute("""SELECT doc_id, min("row") FROM _stage WHERE error IS NULL
                          GROUP BY doc_id HAVING count(*) > 1""").fetchall()
    if dups:
        con.execute("""UPDATE _stage SET error = 'duplicate id (first seen at row ' || f.first_row || ' of this shard)'
            FROM (SELECT doc_id, min("row") AS first_row FROM _stage WHERE error IS NULL
                  GROUP BY doc_id HAVING count(*) > 1) f
            WHERE _stage.doc_id = f.doc_id AND _stage."row" > f.first_row AND _stage.error IS NULL""")
    if one(con.execute("SELECT count(*) FROM _stage JOIN documents USING (doc_id) WHERE error IS NULL"))[0]:
        con.execute("""UPDATE _stage SET error = 'id already ingested from shard ' || d.shard_id || ' row ' || d."row"
            FROM documents d WHERE _stage.doc_id = d.doc_id AND _stage.error IS NULL""")
    # seq follows ingest order; gaps where rows were quarantined are harmless. The text is read from _src
    # again here (see _build_stage); the few bad rows are left out by row number.
    bad = '(SELECT "row" FROM _stage WHERE error IS NOT NULL)'
    con.execute(f"""INSERT INTO documents
        SELECT {_doc_id(name)}, (SELECT coalesce(max(seq), 0) FROM documents) + "row" + 1,
               ?, "row", nullif(url, ''), {domain_sql("nullif(url, '')")}, text, sha256_hex(text),
               CASE WHEN meta_type = 'OBJECT' THEN meta END,
               length(text), strlen(text), regexp_full_match(text, '\\s*')
        FROM _src WHERE "row" NOT IN {bad}""", [shard_id])
    # A bad row keeps its raw text when it has one; a good row refused here (a repeated id) is written out
    # from _src (read a third time only when there is such a row).
    unread = one(con.execute("SELECT count(*) FROM _stage WHERE error IS NOT NULL AND raw IS NULL"))[0]
    source = "_src" if unread else "(SELECT * FROM _src LIMIT 0)"
    con.execute(f"""INSERT INTO quarantine
        SELECT ?, ?, b."row",
               coalesce(b.raw, CASE WHEN s.pre_error IS NULL AND s.text IS NOT NULL THEN left(json_object(
                   {literal(fields.id)}, b.doc_id, {literal(fields.text)}, s.text, {literal(fields.url)}, s.url,
                   {literal(fields.meta)}, s.meta)::VARCHAR, {RAW_CAP}) END),
               b.error
        FROM _stage b LEFT JOIN {source} s USING ("row")
        WHERE b.error IS NOT NULL""", [shard_id, uri])
    rows, docs = one(con.execute("SELECT count(*), count(*) FILTER (error IS NULL) FROM _stage"))
    status = "ingested" if rows == docs else "partial"
    return ShardReport(uri, status, shard_id, rows=rows, documents=docs, quarantined=rows - docs)


def _sha256_hex(texts: pa.Array) -> pa.Array:
    """SHA-256 of each UTF-8 text, by hashlib over slices of the Arrow buffer: with the CPU's SHA
    instructions it is three times DuckDB's own sha256() here, and it leaves the GIL while it hashes.
    Do not wrap its result in coalesce(): DuckDB 1.5 then reads the returned strings after their Arrow buffer
    is gone (seen: NUL bytes in place of the first 16 hex digits); tests/test_ingest.py checks every hash."""
    arr = texts.cast(pa.large_binary())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    offsets = np.frombuffer(arr.buffers()[1], np.int64, len(arr) + 1, arr.offset * 8).tolist()
    data = memoryview(arr.buffers()[2] or b"")
    out = [hashlib.sha256(data[a:b]).hexdigest() for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
    return pa.array(out, pa.string(), mask=arr.is_null().to_numpy(zero_copy_only=False) if arr.null_count else None)


def _register_sha256(con: duckdb.DuckDBPyConnection) -> None:
    """`sha256_hex(VARCHAR)` for this connection (see _sha256_hex)."""
    try:
        con.create_function("sha256_hex", _sha256_hex, ["VARCHAR"], "VARCHAR", type="arrow", side_effects=False)
    except duckdb.NotImplementedException:
        pass  # already there


def domain_sql(url: str) -> str:
    """SQL: the lower-cased host of a URL column, without a trailing dot; NULL when there is none."""
    return f"nullif(rtrim(lower(regexp_extract({url}, '{DOMAIN_RE}', 1)), '.'), '')"


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


class _Feed:
    """A compressed JSONL shard's bytes, decompressed by `_chunks` in a thread and written into a named pipe that
    DuckDB's read_json reads as a stream: one decompression that also checks the stream (gzip's CRC and length,
    zstd's checksum, truncation), instead of a checking pass before DuckDB's own, and the way a compressed
    remote shard reaches DuckDB at all (it does not decompress through a registered filesystem). Nothing is
    written to disk.

    Each statement that reads the shard runs inside `session()`, which feeds the pipe once. DuckDB 1.5 opens a
    JSON file once per scan (a CSV file several times, so CSV is not fed this way). The read is `refused` (the
    caller then reads the shard row by row) when the stream turns out damaged (DuckDB read the bytes up to the
    break) or when DuckDB let go of the pipe before its end while its statement succeeded (it read part of the
    stream in one open); an open after the stream's end finds the pipe empty rather than waiting for ever."""

    def __init__(self, source: Source):
        self.source = source
        self.dir = tempfile.mkdtemp(prefix="curate-feed-")
        self.path = os.path.join(self.dir, "shard.jsonl")
        os.mkfifo(self.path, 0o600)
        self.refused = False

    def __enter__(self) -> _Feed:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    @contextmanager
    def session(self) -> Iterator[None]:
        done = threading.Event()
        state: dict = {"opened": False, "cut": False, "error": None, "raise": None}
        writer = threading.Thread(target=self._write, args=(done, state), name="curate-ingest-feed", daemon=True)
        writer.start()
        try:
            yield
        finally:
            done.set()
            if not state["opened"]:  # DuckDB never opened the pipe (its statement failed first): let the writer go
                with contextlib.suppress(OSError):
                    os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK))
            writer.join()
        if state["raise"] is not None:
            raise state["raise"]  # e.g. lake.Missing: the object vanished while it was being read
        self.refused = self.refused or state["error"] is not None or state["cut"]

    def _write(self, done: threading.Event, state: dict) -> None:
        try:
            with open(self.path, "wb") as pipe:  # waits until DuckDB opens the pipe
                state["opened"] = True
                with contextlib.suppress(OSError):  # 64 KiB by default: 1 MiB took 1.05 s to 0.74 s per 200 MB
                    fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
                if not done.is_set():
                    for chunk in _chunks(self.source):
                        pipe.write(chunk)
        except BrokenPipeError:
            state["cut"] = True  # DuckDB stopped reading before the end
        except CorruptStream as e:
            state["error"] = str(e)
        except Exception as e:  # noqa: BLE001 - raised again in the statement's thread
            state["raise"] = e
        while not done.wait(0.005):  # a reader opening the pipe now gets its end at once
            try:
                os.close(os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                continue  # ENXIO: no reader


def _feeding(feed: _Feed | None):
    return feed.session() if feed else contextlib.nullcontext()


# -- the row-by-row readers -----------------------------------------------------------------------
Row = tuple[int, "str | None", "str | None"]  # (row, line, pre_error)
BOM = b"\xef\xbb\xbf"
ZSTD_PIECE = 1 << 15  # zstd input fed per call: bounds the output one call can hold (zlib has max_length)


@dataclass(frozen=True)
class Taint:
    """Rows from `first` on were read from a damaged gzip member or zstd frame: their bytes may be altered."""

    first: int
    error: str


@dataclass
class _Reading:
    """What a row-by-row read learnt about the file as a whole."""

    stream_error: str | None = None  # the file's bytes end early or are damaged (rows after it are lost)
    taint_from: int = 0  # rows yielded before the current member's first byte was decoded


def _chunks(source: Source, on_member=None) -> Iterator[bytes]:
    """Decompressed bytes of a file. `on_member()` is called before the first bytes of each gzip member or zstd
    frame. Raises CorruptStream when the data ends inside a member (truncated: what came before is exact) or a
    member is damaged (its bytes fail to decode or fail the member's check: gzip's CRC-32 and length, zstd's
    checksum when the frame has one); a zero-byte compressed file is damaged too."""
    compression = source.compression
    with source.open() as f:
        if compression is None:
            while chunk := f.read(CHUNK):
                yield chunk
            return
        gzip = compression == "gzip"
        if gzip:
            new = lambda: zlib.decompressobj(wbits=31)  # noqa: E731
            errors: tuple[type[BaseException], ...] = (zlib.error,)
        else:
            import zstandard

            new = zstandard.ZstdDecompressor().decompressobj
            errors = (zstandard.ZstdError,)
        unit = "member" if gzip else "frame"
        dec, member, fed, produced, more, total = new(), 1, False, False, False, 0
        while (data := f.read(CHUNK)) or more:
            total += len(data)
            while data or more:
                try:
                    if gzip:  # at most CHUNK bytes out per call, the rest of the input waits in unconsumed_tail
                        before = dec.copy()
                        out = dec.decompress(data, CHUNK)
                        rest, more = dec.unconsumed_tail, len(out) == CHUNK and not dec.eof
                    else:
                        out, rest = dec.decompress(data[:ZSTD_PIECE]), data[ZSTD_PIECE:]
                except errors as e:
                    if gzip:  # what this call decoded before the error: fed again in small pieces
                        yield from _salvage(before, data, on_member if not produced else None)
                    why = _first_line(e).removeprefix("Error -3 while decompressing data: ")
                    raise CorruptStream(f"{compression} {unit} {member} is damaged ({why})", damaged=True) from None
                fed = fed or bool(data)
                if out:
                    if not produced and on_member:
                        on_member()
                    produced = True
                    yield out
                if dec.eof:
                    data, more = dec.unused_data + rest, False
                    dec, member, fed, produced = new(), member + 1, False, False
                else:
                    data = rest
        if total == 0:
            raise CorruptStream(f"empty file: no {compression} data in it", damaged=True)
        if fed and not dec.eof:
            raise CorruptStream(f"{compression} data ends early, inside {unit} {member} (the file is truncated)",
                                damaged=False)


def _salvage(dec, data: bytes, on_member) -> Iterator[bytes]:
    """The bytes a zlib decompressor gives for `data` before the error it raises on it: fed in pieces, and the
    piece that fails once more byte by byte."""
    step = 256
    i = 0
    while i < len(data):
        before = dec.copy()
        try:
            out = dec.decompress(data[i : i + step])
        except zlib.error:
            if step == 1:
                return
            dec, step = before, 1
            continue
        i += step
        if out:
            if on_member:
                on_member()
                on_member = None
            yield out


def _stream_error(source: Source) -> str | None:
    """Why a compressed file's data is not whole (decompressing it once, output discarded), or None: DuckDB's own
    readers stop quietly at a truncated stream and check no CRC, so the fast path is taken only after this."""
    try:
        for _ in _chunks(source):
            pass
    except CorruptStream as e:
        return str(e)
    return None


def _lines(source: Source, max_bytes: int, reading: _Reading) -> Iterator[tuple[bytes | None, str | None] | Taint]:
    """Non-blank lines as bytes, or (None, error) for an oversized line or a damaged stream; a Taint when a member
    turns out damaged after its rows were given out."""
    buf = bytearray()
    skipping, first, n = False, True, 0

    def on_member() -> None:
        reading.taint_from = n  # every line given out so far was complete before this member's first byte

    try:
        for chunk in _chunks(source, on_member):
            if first:  # a UTF-8 byte order mark starts the file, not its first row
                first = False
                if chunk.startswith(BOM):
                    chunk = chunk[len(BOM):]
            start = 0
            while True:
                nl = chunk.find(b"\n", start)
                if nl < 0:
                    if not skipping:
                        buf += chunk[start:]
                        if len(buf) > max_bytes:
                            yield None, f"row longer than the limit of {max_bytes} bytes"
                            n += 1
                            buf.clear()
                            skipping = True
                    break
                if skipping:
                    skipping = False
                else:
                    buf += chunk[start:nl]
                    if buf.strip():
                        yield bytes(buf), None
                        n += 1
                buf.clear()
                start = nl + 1
    except CorruptStream as e:
        reading.stream_error = str(e)
        if e.damaged and n > reading.taint_from:
            yield Taint(reading.taint_from, f"{e}: this row was decoded from it and may be altered")
        yield None, f"{e}; rows after this point are lost"
        return
    if buf.strip() and not skipping:
        yield bytes(buf), None


def _jsonl_rows(source: Source, max_bytes: int, reading: _Reading) -> Iterator[Row | Taint]:
    row = 0
    for item in _lines(source, max_bytes, reading):
        if isinstance(item, Taint):
            yield item
            continue
        line, error = item
        if line is None:
            yield row, None, error
        else:
            yield row, *_check_json(line)
        row += 1


def _check_json(line: bytes) -> tuple[str, str | None]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        return line.decode("utf-8", "backslashreplace"), f"invalid UTF-8 at byte {e.start}"
    try:
        json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        return text, f"malformed JSON: {e}"
    return text, None


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _csv_reader(source: Source, max_bytes: int, on_member=None):
    import csv

    raw = io.BufferedReader(_IterStream(_chunks(source, on_member)))
    # utf-8-sig: a byte order mark before the header is not part of the first column's name
    text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
    csv.field_size_limit(max_bytes + 65536)
    return csv.reader(text, strict=True)


def _csv_duplicates(header: list[str], fields: Fields) -> str | None:
    """Why the rows cannot be read unambiguously: a field curate reads is named twice in the header."""
    twice = [f for f in (fields.id, fields.text, fields.url, fields.meta) if header.count(f) > 1]
    return f'the header names "{twice[0]}" {header.count(twice[0])} times' if twice else None


def _csv_header_error(source: Source, fields: Fields, max_bytes: int) -> str | None:
    """_csv_duplicates of the file's header (read here, since DuckDB renames a repeated column quietly)."""
    import csv

    try:
        return _csv_duplicates(next(_csv_reader(source, max_bytes)), fields)
    except (StopIteration, csv.Error, CorruptStream, UnicodeError):
        return None  # the full read reports it


def _csv_rows(source: Source, fields: Fields, max_bytes: int, reading: _Reading) -> Iterator[Row | Taint]:
    """CSV rows as JSON objects; invalid UTF-8 is caught per row (surrogateescape)."""
    import csv

    row = 0

    def on_member() -> None:
        reading.taint_from = row  # rows given out so far were parsed before this member was decompressed

    reader = _csv_reader(source, max_bytes, on_member)
    try:
        header = next(reader)
        duplicate = _csv_duplicates(header, fields)
        for values in reader:
            if not values:
                continue  # a blank line (a row of empty fields is a row)
            line = json.dumps(dict(zip(header, values, strict=False)), ensure_ascii=False)
            error = None
            if duplicate:
                error = duplicate
            elif len(values) != len(header):
                error = f"{len(values)} fields where the header has {len(header)}"
            elif any(_has_surrogate(v) for v in values):
                error = "invalid UTF-8"
                line = line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            else:
                obj = {k: v for k, v in zip(header, values, strict=True) if v != ""}
                meta = obj.get(fields.meta)
                if meta:
                    try:
                        obj[fields.meta] = json.loads(meta)
                    except ValueError:
                        error = f'field "{fields.meta}" is not valid JSON'
                line = json.dumps(obj, ensure_ascii=False)
            if error and _has_surrogate(line):
                line = line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            yield row, line, error
            row += 1
    except (csv.Error, CorruptStream) as e:
        reading.stream_error = str(e)
        if isinstance(e, CorruptStream) and e.damaged and row > reading.taint_from:
            yield Taint(reading.taint_from, f"{e}: this row was decoded from it and may be altered")
        yield row, None, f"unreadable CSV after row {row - 1}: {e}; rows after this point are lost"
    except StopIteration:
        return


def _has_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


class _IterStream(io.RawIOBase):
    """A raw stream over an iterator of bytes, so that csv can read decompressed chunks."""

    def __init__(self, it: Iterator[bytes]):
        self.it, self.left = it, b""

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self.left:
            try:
                self.left = next(self.it)
            except StopIteration:
                return 0
        n = min(len(b), len(self.left))
        b[:n], self.left = self.left[:n], self.left[n:]
        return n


def _load_lines(con: duckdb.DuckDBPyConnection, rows: Iterator[Row | Taint]) -> None:
    """Stream rows into the temp table _lines in bounded Arrow batches; a Taint marks rows already in as bad."""
    con.execute('CREATE TEMP TABLE _lines ("row" BIGINT, line VARCHAR, pre_error VARCHAR)')
    schema = pa.schema([("row", pa.int64()), ("line", pa.string()), ("pre_error", pa.string())])
    batch: list[Row] = []
    size = 0

    def flush() -> None:
        if batch:
            cols = list(zip(*batch, strict=True))
            tbl = pa.Table.from_arrays([pa.array(c, t.type) for c, t in zip(cols, schema, strict=True)],
                                       schema=schema)
            con.register("_batch", tbl)
            con.execute("INSERT INTO _lines SELECT * FROM _batch")
            con.unregister("_batch")
            batch.clear()

    for r in rows:
        if isinstance(r, Taint):
            flush()
            con.execute('UPDATE _lines SET pre_error = ? WHERE "row" >= ?', [r.error, r.first])
            continue
        batch.append(r)
        size += len(r[1] or "")
        if len(batch) >= BATCH_ROWS or size >= BATCH_BYTES:
            flush()
            size = 0
    flush()
