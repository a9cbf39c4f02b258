"""Detectors and the runner that feeds them documents.

A detector is one small class: it names the tables it writes, turns a batch of documents (Arrow)
into rows with `__call__`, and may finish with set work in SQL (`finalize`). It never deletes or
decides anything; the policy does. New stages register themselves with `@register`; `run` needs no
edit to pick them up.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import forkserver, get_context
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import duckdb
import pyarrow as pa

from .db import one
from .schema import ensure_stage_tables

if TYPE_CHECKING:
    from .workspace import Workspace

log = logging.getLogger("curate")

# Modules whose detectors ship with curate; each registers its classes on import.
BUILTIN_MODULES = ("curate.dedup", "curate.quality", "curate.licenses", "curate.optout", "curate.bias", "curate.pii")
BATCH_ROWS = 1000
POOL_MIN_SECONDS = 3.0
MIN_BATCH_ROWS = 64
WINDOW_ROWS = 10 * BATCH_ROWS  # documents read (and sorted) at a time for a stage


class Detector:
    """Base class of a stage. Subclasses set the class attributes and override what they need."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"  # bump when the rows it writes would change: forces a recompute
    schema_version: ClassVar[int] = 1  # bump when its tables' DDL changes: forces a rebuild
    tables: ClassVar[dict[str, str]] = {}  # table name -> CREATE TABLE statement
    output: ClassVar[str | None] = None  # the table `__call__` rows go to (None: SQL-only stage)
    columns: ClassVar[tuple[str, ...]] = ("doc_id", "text")  # document columns a batch carries
    after: ClassVar[tuple[str, ...]] = ()  # stages whose signals this one reads
    lookups: ClassVar[dict[str, str]] = {}  # extra batch column -> "table.column" by doc_id (NULL if absent)
    signals: ClassVar[str | None] = None  # SELECT doc_id, ... feeding the policy's `signals` view
    # Rough chars per second of `__call__` on one core (0: unknown). A process pool costs about a second to
    # start: work this stage would finish in under POOL_MIN_SECONDS runs in-process instead.
    throughput: ClassVar[float] = 0.0
    # Modules its workers import (spaCy, Presidio, ...): the worker server imports them once, not each pool.
    preload: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: dict[str, Any] | None = None):
        self.config = dict(config or {})

    def fingerprint(self) -> str:
        """Identifies what this stage would compute: results with another fingerprint are stale."""
        blob = json.dumps({"version": self.version, "config": self.config}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def __call__(self, batch: pa.RecordBatch) -> pa.Table | None:
        """Per-document work over one batch; returns rows for `output`."""
        raise NotImplementedError

    def finalize(self, con: duckdb.DuckDBPyConnection) -> None:
        """Set work over all documents after new rows were written (e.g. clustering)."""

    def assets(self) -> list[dict[str, str]]:
        """Versions and hashes of lexicons, models and lists used; they go into run.json."""
        return []

    def workspace_assets(self, con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
        """Assets that live in the workspace (e.g. the opt-out registry snapshot); they go into run.json too."""
        return []

    def signals_sql(self, rules: dict[str, Any]) -> str | None:
        """SQL (one row per doc_id) for the `signals` view; may read policy settings from the rules file."""
        return self.signals

    def redactions(self, rules: dict[str, Any]) -> str | None:
        """SQL: SELECT doc_id, entity_type, "start", "end" -- spans to replace when a doc is redacted."""
        return None


REGISTRY: dict[str, type[Detector]] = {}


def register(cls: type[Detector]) -> type[Detector]:
    REGISTRY[cls.name] = cls
    return cls


def load_builtin() -> dict[str, type[Detector]]:
    for module in BUILTIN_MODULES:
        try:
            importlib.import_module(module)
        except ImportError as e:  # an optional dependency is missing: the stage is simply absent
            log.warning("stage module %s unavailable: %s", module, e)
    return REGISTRY


def ordered(names: Iterable[str]) -> list[str]:
    """Names in dependency order (a stage after those it reads), ties by name."""
    names = sorted(set(names))
    done: list[str] = []

    def visit(n: str, path: tuple[str, ...]) -> None:
        if n in done:
            return
        if n in path:
            raise ValueError(f"stage dependency cycle: {' -> '.join(path + (n,))}")
        for dep in sorted(REGISTRY[n].after):
            if dep in names:
                visit(dep, path + (n,))
        done.append(n)

    for n in names:
        visit(n, ())
    return done


def ensure_all_tables(con: duckdb.DuckDBPyConnection) -> None:
    for name, cls in load_builtin().items():
        ensure_stage_tables(con, name, cls.schema_version, list(cls.tables.values()), list(cls.tables))


def instances(rules: dict[str, Any]) -> list[Detector]:
    """Every registered stage, configured from the rules file, in dependency order."""
    load_builtin()
    config = rules.get("stages", {})
    return [REGISTRY[n](config.get(n, {})) for n in ordered(REGISTRY)]


def detectors(rules: dict[str, Any], names: Sequence[str] | None = None) -> list[Detector]:
    """Instantiate the selected stages (all registered by default) with their rules-file config."""
    load_builtin()
    config = rules.get("stages", {})
    wanted = list(names) if names else [n for n in REGISTRY if config.get(n, {}).get("enabled", True)]
    unknown = [n for n in wanted if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(unknown)}; available: {', '.join(sorted(REGISTRY))}")
    return [REGISTRY[n](config.get(n, {})) for n in ordered(wanted)]


# -- running -------------------------------------------------------------------------------------
@dataclass
class StageReport:
    name: str
    shards: int = 0
    documents: int = 0
    errors: int = 0
    seconds: float = 0.0


@dataclass
class RunSummary:
    stages: list[StageReport] = field(default_factory=list)
    decisions: Any = None
    manifest: Any = None


def run(
    ws: Workspace,
    stages: Sequence[str] | None = None,
    rules: str | os.PathLike[str] | None = None,
    workers: int | None = None,
    manifest: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> RunSummary:
    """Run the detectors over documents they have not seen, then the policy, then the manifest."""
    from .policy import decide, load_rules

    ruleset = load_rules(rules)
    summary = RunSummary()
    with ws.connect(write=True) as con:
        dets = detectors(ruleset.raw, stages)
        if any(det.output and _pool_size(det, workers, *_todo_totals(con, det)) > 1 for det in dets):
            start_worker_server(dets)  # its imports overlap the stages that run in-process
        for det in dets:
            summary.stages.append(run_stage(con, det, workers=workers, progress=progress))
    summary.decisions = decide(ws, rules)
    out = Path(manifest) if manifest else ws.path / "manifest"
    summary.manifest = ws.manifest(out, rules=rules)
    return summary


def run_stage(con: duckdb.DuckDBPyConnection, det: Detector, workers: int | None = None,
              progress: bool = False) -> StageReport:
    """Process every shard this stage has not processed with its current fingerprint, one transaction each."""
    ensure_stage_tables(con, det.name, det.schema_version, list(det.tables.values()), list(det.tables))
    report = StageReport(det.name)
    started = time.monotonic()
    fp = det.fingerprint()
    todo = _todo(con, det.name, fp)
    if det.output is not None and todo:
        total = sum(n for _, n, _ in todo)
        with _Pool(det, workers, total, sum(c or 0 for *_, c in todo)) as pool, \
                _bar(det.name, total, progress) as bar:
            _process(con, det, todo, fp, pool, bar, report)
    elif det.output is None:
        # SQL-only stage: nothing per document, but record that it saw these shards.
        con.execute("BEGIN")
        for shard_id, n, _ in todo:
            con.execute("DELETE FROM stage_runs WHERE stage = ? AND shard_id = ?", [det.name, shard_id])
            con.execute("INSERT INTO stage_runs VALUES (?, ?, ?, ?, 0, now()::TIMESTAMP)",
                        [det.name, shard_id, fp, n])
        con.execute("COMMIT")
    con.execute("BEGIN")
    try:
        det.finalize(con)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    report.seconds = time.monotonic() - started
    return report


def _todo(con: duckdb.DuckDBPyConnection, stage: str, fp: str) -> list[tuple[str, int, int | None]]:
    """(shard_id, documents, chars) of the shards the stage has not processed with this fingerprint."""
    return con.execute(
        """SELECT s.shard_id, s.documents, (SELECT sum(chars) FROM documents d WHERE d.shard_id = s.shard_id)
           FROM shards s
           WHERE s.documents > 0 AND NOT EXISTS (
               SELECT 1 FROM stage_runs r WHERE r.stage = ? AND r.shard_id = s.shard_id AND r.fingerprint = ?)
           ORDER BY s.ingested_at, s.shard_id""",
        [stage, fp],
    ).fetchall()


def _todo_totals(con: duckdb.DuckDBPyConnection, det: Detector) -> tuple[int, int]:
    todo = _todo(con, det.name, det.fingerprint())
    return sum(n for _, n, _ in todo), sum(c or 0 for *_, c in todo)


def _forget(con: duckdb.DuckDBPyConnection, det: Detector, shard_id: str) -> None:
    """Drop this stage's earlier rows for a shard (stale fingerprint or interrupted run)."""
    docs = "(SELECT doc_id FROM documents WHERE shard_id = ?)"
    con.execute(f'DELETE FROM "{det.output}" WHERE doc_id IN {docs}', [shard_id])
    con.execute(f"DELETE FROM stage_errors WHERE stage = ? AND doc_id IN {docs}", [det.name, shard_id])
    con.execute("DELETE FROM stage_runs WHERE stage = ? AND shard_id = ?", [det.name, shard_id])


def _lookup_columns(con, det: Detector) -> list[str]:
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


def _process(con, det: Detector, todo: list[tuple], fp: str, pool: _Pool, bar, report: StageReport) -> None:
    """Results of every shard, one transaction per shard. The workers run ahead into the next shard while
    a shard's last results are written, so a shard boundary never leaves them idle."""
    shard_id, t0, n, errors = None, 0.0, 0, 0
    try:
        for key, batch, result in pool.map(_batches(con, det, todo, pool)):
            if key != shard_id:
                con.execute("BEGIN")
                _forget(con, det, key)
                shard_id, t0, n, errors = key, time.monotonic(), 0, 0
            if batch is None:  # the shard is complete
                con.execute("INSERT INTO stage_runs VALUES (?, ?, ?, ?, ?, now()::TIMESTAMP)",
                            [det.name, shard_id, fp, n, time.monotonic() - t0])
                con.execute("COMMIT")
                shard_id = None
                report.shards += 1
                report.documents += n
                report.errors += errors
                continue
            n += batch.num_rows
            if isinstance(result, BaseException):
                errors += _isolate(con, det, batch)
            elif result is not None and result.num_rows:
                con.register("_rows", result)
                con.execute(f'INSERT INTO "{det.output}" BY NAME SELECT * FROM _rows')
                con.unregister("_rows")
            bar(batch.num_rows)
    except BaseException:
        if shard_id is not None:
            con.execute("ROLLBACK")
        raise


def _batches(con, det: Detector, todo: list[tuple], pool: _Pool) -> Iterator[tuple[str, pa.RecordBatch | None]]:
    """(shard_id, batch) for every batch of every shard, then (shard_id, None) when the shard is done."""
    cols = ", ".join([f'd."{c}"' for c in det.columns] + _lookup_columns(con, det))
    reader = con.cursor()
    try:
        for shard_id, docs, _ in todo:
            # Windows of seq (contiguous per shard): sorting a whole shard first would keep the workers
            # idle until all of its text is read. Literals, not parameters: DuckDB 1.5 pushes only
            # those into the scan, where zone maps skip other row groups (5 s instead of 0.6 s per 100k rows).
            lo, hi = one(reader.execute("SELECT min(seq), max(seq) FROM documents WHERE shard_id = ?", [shard_id]))
            shard = "'" + shard_id.replace("'", "''") + "'"
            for start in range(int(lo), int(hi) + 1, WINDOW_ROWS):
                for batch in reader.sql(f'SELECT {cols} FROM documents d WHERE shard_id = {shard} AND seq >= {start} '
                                        f'AND seq < {start + WINDOW_ROWS} ORDER BY "row"'
                                        ).to_arrow_reader(pool.batch_rows(docs)):
                    yield shard_id, batch
            yield shard_id, None
    finally:
        reader.close()


def _isolate(con, det: Detector, batch: pa.RecordBatch) -> int:
    """A batch failed: rerun its documents one by one here, recording the ones that fail."""
    errors = 0
    for i in range(batch.num_rows):
        one = batch.slice(i, 1)
        try:
            rows = det(one)
        except Exception as e:  # noqa: BLE001 - recorded per document, the run goes on
            errors += 1
            doc_id = one.column(det.columns.index("doc_id"))[0].as_py()
            con.execute("INSERT INTO stage_errors VALUES (?, ?, ?)", [det.name, doc_id, f"{type(e).__name__}: {e}"])
            log.warning("stage %s failed on document %s: %s", det.name, doc_id, type(e).__name__)
            continue
        if rows is not None and rows.num_rows:
            con.register("_rows", rows)
            con.execute(f'INSERT INTO "{det.output}" BY NAME SELECT * FROM _rows')
            con.unregister("_rows")
    return errors


# -- the process pool ----------------------------------------------------------------------------
_WORKER: Detector | None = None


def _pool_size(det: Detector, workers: int | None, total_docs: int, total_chars: int) -> int:
    """Worker processes for this much work: one (in-process) for a batch or less, or for work the stage would
    finish in under POOL_MIN_SECONDS, unless the user asked for workers (`--workers`, CURATE_WORKERS)."""
    asked = workers or int(os.environ.get("CURATE_WORKERS", 0))
    quick = not asked and det.throughput > 0 and total_chars / det.throughput < POOL_MIN_SECONDS
    return 1 if total_docs <= BATCH_ROWS or quick else asked or os.cpu_count() or 1


def worker_context(dets: Sequence[Detector]) -> BaseContext:
    """Workers fork from a server process that imports the stages' modules once (forkserver): the main
    process holds DuckDB's threads, so it must not fork, and spawning would import spaCy anew per pool.
    The modules to preload can only be set before the server starts."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one worker per core already: no BLAS threads
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload(sorted({"curate.stages", *BUILTIN_MODULES, *(m for d in dets for m in d.preload)}))
    return ctx


def start_worker_server(dets: Sequence[Detector]) -> None:
    """Start the worker server now, so that its imports run while this process works."""
    worker_context(dets)
    forkserver.ensure_running()


def _init_worker(det: Detector, env: dict[str, str]) -> None:
    global _WORKER
    _WORKER = det
    os.environ.clear()  # the pool's environment, not the server's (CURATE_RULES_DIR may have changed since)
    os.environ.update(env)


def _work(batch: pa.RecordBatch) -> pa.Table | None:
    assert _WORKER is not None
    return _WORKER(batch)


class _Pool:
    """Maps a detector over batches, in order; in-process for one worker or little work."""

    def __init__(self, det: Detector, workers: int | None, total_docs: int, total_chars: int = 0):
        self.det = det
        self.workers = _pool_size(det, workers, total_docs, total_chars)
        self.executor: ProcessPoolExecutor | None = None

    def batch_rows(self, docs: int) -> int:
        """Rows per batch for a shard of `docs` documents: shards commit one at a time, so a small shard
        is cut into at least two batches per worker, or it would keep one worker busy and the rest idle."""
        if self.workers == 1:
            return BATCH_ROWS
        return max(MIN_BATCH_ROWS, min(BATCH_ROWS, -(-docs // (2 * self.workers))))

    def __enter__(self) -> _Pool:
        if self.workers > 1:
            self.executor = ProcessPoolExecutor(self.workers, mp_context=worker_context([self.det]),
                                                initializer=_init_worker, initargs=(self.det, dict(os.environ)))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.executor:
            self.executor.shutdown(cancel_futures=True)

    def map(self, items: Iterable[tuple[str, pa.RecordBatch | None]]) -> Iterator[tuple[str, Any, Any]]:
        """Yields (key, batch, rows or the exception it raised) in order, keeping a bounded number in flight;
        an item without a batch (a marker) passes through as (key, None, None)."""
        if self.executor is None:
            for key, batch in items:
                try:
                    yield key, batch, None if batch is None else self.det(batch)
                except Exception as e:  # noqa: BLE001
                    yield key, batch, e
            return
        pending: deque[tuple[str, pa.RecordBatch | None, Future | None]] = deque()
        for key, batch in items:
            pending.append((key, batch, None if batch is None else self.executor.submit(_work, batch)))
            if len(pending) > 2 * self.workers:
                yield _result(*pending.popleft())
        while pending:
            yield _result(*pending.popleft())


def _result(key: str, batch: pa.RecordBatch | None, fut: Future | None) -> tuple[str, Any, Any]:
    try:
        return key, batch, None if fut is None else fut.result()
    except Exception as e:  # noqa: BLE001
        return key, batch, e


class _bar:
    """Progress over documents of one stage (rich, to stderr) when asked for."""

    def __init__(self, name: str, total: int, enabled: bool):
        self.progress = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn(f"{name:<12}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=Console(stderr=True))
            self.task = self.progress.add_task(name, total=total)

    def __enter__(self):
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.stop()

    def __call__(self, n: int) -> None:
        if self.progress:
            self.progress.advance(self.task, n)
