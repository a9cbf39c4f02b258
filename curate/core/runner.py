"""Runs one stage over the shards it has not processed with its current fingerprint, on an executor.

Each shard is one transaction: the stage's earlier rows for it are removed, its new rows written, and
`stage_runs` records (stage, shard, fingerprint); a crash leaves a shard either done or untouched, and a
rerun does only the shards not done. A batch that fails is rerun document by document in this process,
so one bad document lands in `stage_errors` and the others are kept. Then `finalize` does the stage's
set work in SQL, in its own transaction.

On an executor that writes parts (Ray: its workers never open the workspace file), a shard is cut into
units; each unit's part is published as it arrives (`curate.core.parts`), and when all of a shard's units
are published one transaction loads them into the stage's table and records the stage run. A rerun skips
the units already published.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from curate.core import parts
from curate.core.db import one
from curate.core.executors import EngineError, Executor, Session
from curate.core.schema import ensure_stage_tables
from curate.core.stage import Detector
from curate.util import log
from curate.util.progress import Progress
from curate.util.sql import literal

WINDOW_ROWS = 10_000  # documents read (and sorted) at a time for a stage


@dataclass
class StageReport:
    name: str
    shards: int = 0
    documents: int = 0
    errors: int = 0
    rows: int = 0  # rows written to the stage's output table
    seconds: float = 0.0


def pending(con: duckdb.DuckDBPyConnection, det: Detector) -> list[tuple[str, int, int | None]]:
    """(shard_id, documents, chars) of the shards the stage has not processed with its fingerprint."""
    return con.execute(
        """SELECT s.shard_id, s.documents, (SELECT sum(chars) FROM documents d WHERE d.shard_id = s.shard_id)
           FROM shards s
           WHERE s.documents > 0 AND NOT EXISTS (
               SELECT 1 FROM stage_runs r WHERE r.stage = ? AND r.shard_id = s.shard_id AND r.fingerprint = ?)
           ORDER BY s.ingested_at, s.shard_id""",
        [det.name, det.fingerprint()],
    ).fetchall()


def pending_totals(con: duckdb.DuckDBPyConnection, det: Detector) -> tuple[int, int]:
    """(documents, chars) the stage has still to process."""
    todo = pending(con, det)
    return sum(n for _, n, _ in todo), sum(c or 0 for *_, c in todo)


def run_stage(con: duckdb.DuckDBPyConnection, det: Detector, executor: Executor | None = None,
              progress: bool = False) -> StageReport:
    """Process every shard this stage has not processed with its current fingerprint, one transaction each,
    then its set work."""
    if executor is None:
        from curate.core.executors import executor as make

        executor = make()
    ensure_stage_tables(con, det.name, det.schema_version, list(det.tables.values()), list(det.tables))
    report = StageReport(det.name)
    started = time.monotonic()
    fp = det.fingerprint()
    todo = pending(con, det)
    log.event("stage_start", stage=det.name, fingerprint=fp, shards=len(todo), documents=sum(n for _, n, _ in todo))
    nodes: dict[str, Any] = {}
    if getattr(executor, "writes_parts", False) and getattr(executor, "parts_root", None) is None:
        executor.parts_root = parts_root(con)  # type: ignore[attr-defined]
    if det.output is not None and todo:
        total = sum(n for _, n, _ in todo)
        with executor.session(det, total, sum(c or 0 for *_, c in todo)) as session, \
                Progress(det.name, total, progress) as bar:
            if getattr(session, "writes_parts", False):
                try:
                    _process_parts(con, det, todo, fp, session, bar, report)
                finally:
                    nodes = session.stats() if hasattr(session, "stats") else {}
            else:
                _process(con, det, todo, fp, session, bar, report)
    elif det.output is None:
        # SQL-only stage: nothing per document, but record that it saw these shards.
        con.execute("BEGIN")
        for shard_id, n, _ in todo:
            con.execute("DELETE FROM stage_runs WHERE stage = ? AND shard_id = ?", [det.name, shard_id])
            con.execute("INSERT INTO stage_runs VALUES (?, ?, ?, ?, 0, now()::TIMESTAMP)",
                        [det.name, shard_id, fp, n])
        con.execute("COMMIT")
    # The set work: the executor's distributed version of it when it has one (Ray: tasks over partitions),
    # else the stage's own finalize on this connection.
    global_step = getattr(executor, "global_step", None)
    finalize = (global_step(det) if global_step is not None else None) or det.finalize
    con.execute("BEGIN")
    try:
        finalize(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    report.seconds = time.monotonic() - started
    log.event("stage_end", stage=det.name, shards=report.shards, documents=report.documents, errors=report.errors,
              rows=report.rows, seconds=round(report.seconds, 3), **({"nodes": nodes} if nodes else {}))
    return report


def _forget(con: duckdb.DuckDBPyConnection, det: Detector, shard_id: str) -> None:
    """Drop this stage's earlier rows for a shard (stale fingerprint or interrupted run)."""
    docs = "(SELECT doc_id FROM documents WHERE shard_id = ?)"
    con.execute(f'DELETE FROM "{det.output}" WHERE doc_id IN {docs}', [shard_id])
    con.execute(f"DELETE FROM stage_errors WHERE stage = ? AND doc_id IN {docs}", [det.name, shard_id])
    con.execute("DELETE FROM stage_runs WHERE stage = ? AND shard_id = ?", [det.name, shard_id])


def _lookup_columns(con: duckdb.DuckDBPyConnection, det: Detector) -> list[str]:
    """SQL for a stage's `lookups`: another stage's column by doc_id, or NULL while that table is absent."""
    present = {(t, c) for t, c in con.execute(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'").fetchall()}
    out = []
    for alias, ref in sorted(det.lookups.items()):
        table, column = ref.split(".", 1)
        value = (f'(SELECT any_value(x."{column}") FROM "{table}" x WHERE x.doc_id = d.doc_id)'
                 if (table, column) in present else "NULL")
        out.append(f'{value} AS "{alias}"')
    return out


def _process(con: duckdb.DuckDBPyConnection, det: Detector, todo: list[tuple], fp: str, session: Session,
             bar: Progress, report: StageReport) -> None:
    """Results of every shard, one transaction per shard. The workers run ahead into the next shard while
    a shard's last results are written, so a shard boundary never leaves them idle."""
    shard_id, t0, n, errors = None, 0.0, 0, 0
    try:
        for key, batch, result in session.map(_batches(con, det, todo, session)):
            if key != shard_id:
                con.execute("BEGIN")
                _forget(con, det, key)
                shard_id, t0, n, errors = key, time.monotonic(), 0, 0
            if batch is None:  # the shard is complete
                con.execute("INSERT INTO stage_runs VALUES (?, ?, ?, ?, ?, now()::TIMESTAMP)",
                            [det.name, shard_id, fp, n, time.monotonic() - t0])
                con.execute("COMMIT")
                _let_readers_in(con)
                log.event("shard_committed", stage=det.name, shard_id=shard_id, documents=n, errors=errors,
                          seconds=round(time.monotonic() - t0, 3))
                shard_id = None
                report.shards += 1
                report.documents += n
                report.errors += errors
                continue
            n += batch.num_rows
            if isinstance(result, BaseException):
                failed, written = _isolate(con, det, batch)
                errors += failed
                report.rows += written
            else:
                report.rows += _insert(con, det, result)
            bar(batch.num_rows)
    except BaseException:
        if shard_id is not None:
            con.execute("ROLLBACK")
        raise


def _insert(con: duckdb.DuckDBPyConnection, det: Detector, rows: pa.Table | None) -> int:
    if rows is None or not rows.num_rows:
        return 0
    con.register("_rows", rows)
    con.execute(f'INSERT INTO "{det.output}" BY NAME SELECT * FROM _rows')
    con.unregister("_rows")
    return rows.num_rows


def _batches(con: duckdb.DuckDBPyConnection, det: Detector, todo: list[tuple], session: Session
             ) -> Iterator[tuple[str, pa.RecordBatch | None]]:
    """(shard_id, batch) for every batch of every shard, then (shard_id, None) when the shard is done.

    A window of documents is read whole before its batches are handed out: no result stays open between
    two batches, so the connection can be let go at a commit (readers in other processes get in)."""
    cols = ", ".join([f'd."{c}"' for c in det.columns] + _lookup_columns(con, det))
    for shard_id, docs, _ in todo:
        # Windows of seq (contiguous per shard): sorting a whole shard first would keep the workers
        # idle until all of its text is read. Literals, not parameters: DuckDB 1.5 pushes only
        # those into the scan, where zone maps skip other row groups (5 s instead of 0.6 s per 100k rows).
        lo, hi = one(con.execute("SELECT min(seq), max(seq) FROM documents WHERE shard_id = ?", [shard_id]))
        for start in range(int(lo), int(hi) + 1, WINDOW_ROWS):
            window = con.sql(f'SELECT {cols} FROM documents d WHERE shard_id = {literal(shard_id)} '
                             f'AND seq >= {start} AND seq < {start + WINDOW_ROWS} ORDER BY "row"').to_arrow_table()
            for batch in window.to_batches(max_chunksize=session.batch_rows(docs)):
                yield shard_id, batch
        yield shard_id, None


def _let_readers_in(con: duckdb.DuckDBPyConnection) -> None:
    """After a commit: let a waiting reader in (a workspace's write connection; a plain one has no pause)."""
    pause = getattr(con, "pause", None)
    if pause is not None:
        pause()


def _isolate(con: duckdb.DuckDBPyConnection, det: Detector, batch: pa.RecordBatch) -> tuple[int, int]:
    """A batch failed: rerun its documents one by one here, recording the ones that fail.
    Returns (documents failed, rows written)."""
    errors = written = 0
    for i in range(batch.num_rows):
        single = batch.slice(i, 1)
        try:
            rows = det(single)
        except Exception as e:  # noqa: BLE001 - recorded per document, the run goes on
            errors += 1
            doc_id = single.column(det.columns.index("doc_id"))[0].as_py()
            con.execute("INSERT INTO stage_errors VALUES (?, ?, ?)", [det.name, doc_id, f"{type(e).__name__}: {e}"])
            log.event("document_failed", "warning", stage=det.name, doc_id=doc_id, error=type(e).__name__)
            continue
        written += _insert(con, det, rows)
    return errors, written


# -- executors that write parts (Ray) ----------------------------------------------------------------
def parts_root(con: duckdb.DuckDBPyConnection) -> str:
    """The workspace's parts directory: `parts/` beside its database file."""
    path = one(con.execute("SELECT file FROM pragma_database_list WHERE name = current_database()"))[0]
    return os.path.join(os.path.dirname(os.path.abspath(path)), "parts")


def executor_parts_root(session: Session) -> str | None:
    return getattr(getattr(session, "ex", None), "parts_root", None)


def _units(con: duckdb.DuckDBPyConnection, det: Detector, todo: list[tuple], fp: str, session: Session,
           bar: Progress) -> Iterator[tuple[str, parts.Unit | None]]:
    """(shard_id, unit) for every unit of every shard not published yet, then (shard_id, None) when the shard
    is done. A unit is the next `batch_rows` documents of the shard in seq (= row) order, so a rerun cuts the
    shard the same way and finds its published units by number and range."""
    cols = ", ".join([f'd."{c}"' for c in det.columns] + _lookup_columns(con, det))
    for shard_id, docs, _ in todo:
        seqs = [s for (s,) in con.execute("SELECT seq FROM documents WHERE shard_id = ? ORDER BY seq",
                                          [shard_id]).fetchall()]
        done = parts.published(con, det.name, det.schema_version, fp, shard_id)
        size = session.batch_rows(docs)
        for n, start in enumerate(range(0, len(seqs), size)):
            chunk = seqs[start:start + size]
            if done.get(n) == (chunk[0], chunk[-1]):
                bar(len(chunk))
                continue
            # Literals, not parameters: DuckDB pushes only those into the scan (see _batches).
            table = con.sql(f'SELECT {cols} FROM documents d WHERE shard_id = {literal(shard_id)} '
                            f'AND seq >= {int(chunk[0])} AND seq <= {int(chunk[-1])} ORDER BY seq').to_arrow_table()
            yield shard_id, parts.Unit(shard_id, n, int(chunk[0]), int(chunk[-1]), len(chunk), table)
        yield shard_id, None


def _process_parts(con: duckdb.DuckDBPyConnection, det: Detector, todo: list[tuple], fp: str, session: Session,
                   bar: Progress, report: StageReport) -> None:
    """Publish each unit's part as it comes back; load a shard's parts and record its run in one transaction
    when all are in. A unit that failed on the cluster stops the run (what was published stays)."""
    assert det.output is not None
    root = executor_parts_root(session) or parts_root(con)
    parts.ensure_catalog(con)
    swept = parts.sweep(con, root, det.output)
    if swept:
        log.event("parts_swept", stage=det.name, files=len(swept))
    started: dict[str, float] = {}
    for key, unit, result in session.map(_units(con, det, todo, fp, session, bar)):
        started.setdefault(key, time.monotonic())
        if unit is None:
            con.execute("BEGIN")
            try:
                _forget(con, det, key)
                n, rows, errors, old = parts.load_shard(con, det.name, det.schema_version, fp, key, det.output)
                con.execute("INSERT INTO stage_runs VALUES (?, ?, ?, ?, ?, now()::TIMESTAMP)",
                            [det.name, key, fp, n, time.monotonic() - started[key]])
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            parts.remove(old)
            _let_readers_in(con)
            log.event("shard_committed", stage=det.name, shard_id=key, documents=n, errors=errors,
                      seconds=round(time.monotonic() - started.pop(key), 3))
            report.shards += 1
            report.documents += n
            report.errors += errors
            report.rows += rows
            continue
        if isinstance(result, BaseException):
            raise EngineError(
                f"stage {det.name}: unit {unit.n} of shard {key} failed on the cluster ({type(result).__name__}: "
                f"{str(result).strip().splitlines()[0] if str(result).strip() else 'no message'}); the parts "
                "published so far are kept: rerun to complete") from None
        parts.publish(con, det.name, det.schema_version, fp, result)
        log.event("part_published", "debug", stage=det.name, shard_id=key, unit=unit.n, documents=unit.documents,
                  rows=result.rows, bytes=result.bytes, errors=len(result.errors), node=result.node,
                  seconds=round(result.seconds, 3))
        bar(unit.documents)
