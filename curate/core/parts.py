"""Parts: the immutable Parquet files a cluster engine's workers write a stage's rows to, and their catalog.

A worker never writes the workspace file. For each unit of work (a stage, a shard, its fingerprint and a
range of the shard's documents) it writes the unit's rows to `PARTS/<table>/.<name>.tmp-<random>` and hands
the driver a `Written`. The driver publishes it: it moves the file to its name,
`PARTS/<table>/<shard>-<fingerprint>-<n>.parquet`, then records it in `stage_parts` (one transaction). When
every unit of a shard is published, one transaction loads the shard's parts into the stage's table and
records the stage run (`stage_runs`). So a crash anywhere leaves at most files no catalog row names
(a temporary, or a part moved but not recorded): `sweep` removes them at the next run, and a rerun does only
the units not published. PARTS is `WS/parts` (or a store prefix: `curate.io.lake` writes both).
"""

from __future__ import annotations

import json
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curate.io import lake

CATALOG = """CREATE TABLE IF NOT EXISTS stage_parts (
    stage VARCHAR NOT NULL,
    schema_version INTEGER NOT NULL,   -- of the stage's tables when the part was written
    fingerprint VARCHAR NOT NULL,
    shard_id VARCHAR NOT NULL,
    unit INTEGER NOT NULL,             -- n: the unit's place in the shard
    first_seq BIGINT NOT NULL,         -- documents.seq of its first and last document
    last_seq BIGINT NOT NULL,
    documents BIGINT NOT NULL,
    "table" VARCHAR NOT NULL,
    uri VARCHAR,                       -- NULL when the unit gave no rows
    rows BIGINT NOT NULL,
    bytes BIGINT NOT NULL,
    errors JSON NOT NULL,              -- [[doc_id, error], ...]: documents the stage raised on
    node VARCHAR,                      -- the worker's node and process, for throughput per node
    seconds DOUBLE,
    published_at TIMESTAMP NOT NULL
)"""
_TMP = re.compile(r"^\..*\.tmp-[0-9a-f]+$")


@dataclass
class Unit:
    """A range of one shard's documents (contiguous in seq), with the stage's columns for them."""

    shard_id: str
    n: int
    first_seq: int
    last_seq: int
    documents: int
    table: pa.Table | None = None


@dataclass
class Written:
    """What a worker made of a unit: a part under a temporary name (or none for no rows), and its errors."""

    unit: Unit
    table: str
    tmp: str | None
    rows: int
    bytes: int
    errors: list[tuple[str, str]] = field(default_factory=list)
    node: str = ""
    seconds: float = 0.0


def ensure_catalog(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(CATALOG)


def part_name(shard_id: str, fingerprint: str, n: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", shard_id)
    return f"{safe}-{fingerprint}-{n}.parquet"


def write(root: str, table: str, shard_id: str, fingerprint: str, n: int, rows: pa.Table) -> tuple[str, int]:
    """In a worker: `rows` as a Parquet file under a temporary name beside the part's; (its URI, its bytes).
    Never the part's own name: only the driver publishes."""
    final = lake.join(lake.join(root, table), part_name(shard_id, fingerprint, n))
    fs, path = lake.resolve(final)
    parent, _, name = path.rpartition("/")
    tmp = f"{parent}/.{name}.tmp-{secrets.token_hex(8)}"
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(parent, exist_ok=True)
        with open(tmp, "xb") as f:
            pq.write_table(rows, f)
            f.flush()
            os.fsync(f.fileno())  # durable before the driver can publish it
        size = os.path.getsize(tmp)
    else:
        with fs.open_output_stream(tmp) as f:
            pq.write_table(rows, f)
        size = fs.get_file_info(tmp).size
    return _uri(final, tmp), size


def _uri(final: str, tmp_path: str) -> str:
    """The temporary's URI, in the same form (local path or scheme://) as the part's."""
    if "://" in final:
        scheme = final.split("://", 1)[0]
        return f"{scheme}://{tmp_path}"
    return tmp_path


def final_uri(tmp: str) -> str:
    parent, _, name = tmp.rpartition("/")
    return f"{parent}/{name[1:].rsplit('.tmp-', 1)[0]}"


def publish(con: duckdb.DuckDBPyConnection, stage: str, schema_version: int, fingerprint: str, w: Written) -> None:
    """Move the part into place, then record it: one catalog row, one transaction. A crash between the two
    leaves a part no row names, which `sweep` removes."""
    uri = None
    if w.tmp is not None:
        uri = final_uri(w.tmp)
        fs, src = lake.resolve(w.tmp)
        _, dst = lake.resolve(uri)
        fs.move(src, dst)
    u = w.unit
    con.execute("BEGIN")
    try:
        con.execute("DELETE FROM stage_parts WHERE stage = ? AND shard_id = ? AND fingerprint = ? AND unit = ?",
                    [stage, u.shard_id, fingerprint, u.n])
        con.execute("INSERT INTO stage_parts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, now()::TIMESTAMP)",
                    [stage, schema_version, fingerprint, u.shard_id, u.n, u.first_seq, u.last_seq, u.documents,
                     w.table, uri, w.rows, w.bytes, json.dumps(w.errors), w.node, w.seconds])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def published(con: duckdb.DuckDBPyConnection, stage: str, schema_version: int, fingerprint: str,
              shard_id: str) -> dict[int, tuple[int, int]]:
    """Units of a shard already published for this fingerprint: n -> (first_seq, last_seq)."""
    rows = con.execute("""SELECT unit, first_seq, last_seq FROM stage_parts WHERE stage = ? AND schema_version = ?
                          AND fingerprint = ? AND shard_id = ?""",
                       [stage, schema_version, fingerprint, shard_id]).fetchall()
    return {n: (a, b) for n, a, b in rows}


def load_shard(con: duckdb.DuckDBPyConnection, stage: str, schema_version: int, fingerprint: str, shard_id: str,
               output: str) -> tuple[int, int, int, list[str]]:
    """Inside the shard's transaction: its published parts' rows into `output` (unit order) and their errors
    into `stage_errors`; the catalog rows of its older parts dropped. Returns (documents, rows, errors, the
    older parts' URIs, to delete after the commit)."""
    parts = con.execute("""SELECT uri, documents, errors FROM stage_parts WHERE stage = ? AND schema_version = ?
                           AND fingerprint = ? AND shard_id = ? ORDER BY unit""",
                        [stage, schema_version, fingerprint, shard_id]).fetchall()
    docs = rows = errors = 0
    for uri, n, errs in parts:
        docs += n
        if uri is not None:
            fs, path = lake.resolve(uri)
            t = pq.read_table(path, filesystem=fs)
            con.register("_part_rows", t)
            con.execute(f'INSERT INTO "{output}" BY NAME SELECT * FROM _part_rows')
            con.unregister("_part_rows")
            rows += t.num_rows
        for doc_id, message in json.loads(errs):
            con.execute("INSERT INTO stage_errors VALUES (?, ?, ?)", [stage, doc_id, message])
            errors += 1
    old = [u for (u,) in con.execute(
        """SELECT uri FROM stage_parts WHERE stage = ? AND shard_id = ? AND uri IS NOT NULL
           AND (fingerprint <> ? OR schema_version <> ?)""", [stage, shard_id, fingerprint, schema_version]).fetchall()]
    con.execute("""DELETE FROM stage_parts WHERE stage = ? AND shard_id = ?
                   AND (fingerprint <> ? OR schema_version <> ?)""", [stage, shard_id, fingerprint, schema_version])
    return docs, rows, errors, old


def remove(uris: Iterable[str]) -> None:
    for uri in uris:
        try:
            lake.remove(uri)
        except OSError:
            pass


def sweep(con: duckdb.DuckDBPyConnection, root: str, table: str) -> list[str]:
    """Remove what a crash left under PARTS/<table>: temporaries, and parts no catalog row names. Only the
    run holding the workspace's writer lock calls it, so nothing else is writing there. Returns what went."""
    directory = lake.join(root, table)
    fs, path = lake.resolve(directory)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError:
        return []
    known = {u for (u,) in con.execute('SELECT uri FROM stage_parts WHERE "table" = ? AND uri IS NOT NULL',
                                       [table]).fetchall()}
    known_paths = {lake.resolve(u)[1] for u in known}
    gone = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        if _TMP.match(info.base_name) or (info.base_name.endswith(".parquet") and info.path not in known_paths):
            try:
                fs.delete_file(info.path)
                gone.append(info.path)
            except OSError:
                pass
    return gone


def parts_bytes(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Parts published per table: count, rows, bytes (for the benchmark and the run's events)."""
    return {t: {"parts": n, "rows": r, "bytes": b} for t, n, r, b in con.execute(
        'SELECT "table", count(uri), sum(rows), sum(bytes) FROM stage_parts GROUP BY 1 ORDER BY 1').fetchall()}

