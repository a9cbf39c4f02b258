"""The local executor: a process pool on this machine, forked from a server that preloads the stages' modules.

Workers fork from a server process (multiprocessing's `forkserver`) that imports the stages' modules once:
the main process holds DuckDB's threads, so it must not fork itself, and spawning would import spaCy anew
per pool. Work a stage would finish in under POOL_MIN_SECONDS on one core runs in-process: starting the
pool costs about a second. Workers die with the run: a killed `curate run` leaves no process behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import forkserver, get_context
from multiprocessing.context import BaseContext
from typing import Any

import pyarrow as pa

from curate.core.stage import BUILTIN_MODULES, Detector

BATCH_ROWS = 1000
POOL_MIN_SECONDS = 3.0
MIN_BATCH_ROWS = 64
PARENT_POLL_SECONDS = 1.0


class LocalExecutor:
    name = "local"

    def __init__(self, workers: int | None = None):
        self.workers = workers

    def prepare(self, dets: Sequence[Detector], work: dict[str, tuple[int, int]]) -> None:
        """Start the worker server now if a stage will use a pool, so that its imports overlap the stages
        that run in-process."""
        if any(det.output and pool_size(det, self.workers, *work.get(det.name, (0, 0))) > 1 for det in dets):
            start_worker_server(dets)

    def session(self, det: Detector, docs: int, chars: int) -> _Pool:
        return _Pool(det, self.workers, docs, chars)


def pool_size(det: Detector, workers: int | None, total_docs: int, total_chars: int) -> int:
    """Worker processes for this much work: one (in-process) for a batch or less, or for work the stage would
    finish in under POOL_MIN_SECONDS, unless the user asked for workers (`--workers`, CURATE_WORKERS)."""
    asked = workers or int(os.environ.get("CURATE_WORKERS", 0))
    quick = not asked and det.throughput > 0 and total_chars / det.throughput < POOL_MIN_SECONDS
    return 1 if total_docs <= BATCH_ROWS or quick else asked or os.cpu_count() or 1


def worker_context(dets: Sequence[Detector]) -> BaseContext:
    """The forkserver context; the modules to preload can only be set before its server starts."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one worker per core already: no BLAS threads
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload(sorted({__name__, *BUILTIN_MODULES, *(m for d in dets for m in d.preload)}))
    return ctx


def start_worker_server(dets: Sequence[Detector]) -> None:
    """Start the worker server now, so that its imports run while this process works."""
    worker_context(dets)
    forkserver.ensure_running()


# -- in the worker -----------------------------------------------------------------------------------
_WORKER: Detector | None = None


def _init_worker(det: Detector, env: dict[str, str], run_pid: int) -> None:
    global _WORKER
    _WORKER = det
    os.environ.clear()  # the pool's environment, not the server's (CURATE_RULES_DIR may have changed since)
    os.environ.update(env)
    _die_with(run_pid)


def _die_with(run_pid: int) -> None:
    """End this worker when the run's process ends, however it ends (kill -9 included). A worker's parent is
    the fork server, which exits when the run does; the kernel then kills the worker (PR_SET_PDEATHSIG).
    A thread also watches the run's process itself, for systems without prctl."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while True:
            try:
                os.kill(run_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass
            time.sleep(PARENT_POLL_SECONDS)

    threading.Thread(target=watch, name="curate-parent-watch", daemon=True).start()


def _work(batch: pa.RecordBatch) -> pa.Table | None:
    assert _WORKER is not None
    return _WORKER(batch)


# -- the pool ----------------------------------------------------------------------------------------
class _Pool:
    """Maps a detector over batches, in order; in-process for one worker or little work."""

    def __init__(self, det: Detector, workers: int | None, total_docs: int, total_chars: int = 0):
        self.det = det
        self.workers = pool_size(det, workers, total_docs, total_chars)
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
                                                initializer=_init_worker,
                                                initargs=(self.det, dict(os.environ), os.getpid()))
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
