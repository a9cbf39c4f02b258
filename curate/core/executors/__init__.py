"""Executors: where a stage's per-document work runs. The runner hands one a stage and a stream of batches;
it gives back one result per batch, in order. A new engine (Ray) is a new module here, not an edit of the
runner or of a stage.

An executor has two methods:
- `prepare(dets, work)`: called once before a run's stages, with each stage's pending (documents, chars),
  so it can start what takes time (a worker server, a cluster connection) while early stages run;
- `session(det, docs, chars)`: a context manager for one stage's pending work, with
  `batch_rows(shard_docs)` (rows per batch for a shard of that many documents) and
  `map(items)`: for each `(key, batch or None)` it yields `(key, batch, rows or the exception raised)`
  in input order; an item without a batch is a marker and passes through as `(key, None, None)`.

An executor (and its sessions) with `writes_parts = True` runs on machines that must not write the workspace
file (Ray): `map` takes `curate.core.parts.Unit`s (a range of a shard's documents) instead of batches and
yields `curate.core.parts.Written` (a Parquet part under a temporary name, and the documents that raised);
`batch_rows` is then documents per unit. The runner publishes the parts. Such an executor may also have
`close()` (leave the cluster), and its sessions `stats()` (throughput per node, for the stage's end event).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from curate.core.errors import CurateError

if TYPE_CHECKING:
    import pyarrow as pa

    from curate.core.stage import Detector

Item = tuple[str, "pa.RecordBatch | None"]
Result = tuple[str, "pa.RecordBatch | None", Any]


class Session(AbstractContextManager, Protocol):
    def batch_rows(self, docs: int) -> int: ...

    def map(self, items: Iterable[Item]) -> Iterator[Result]: ...


class Executor(Protocol):
    name: str

    def prepare(self, dets: Sequence[Detector], work: dict[str, tuple[int, int]]) -> None: ...

    def session(self, det: Detector, docs: int, chars: int) -> Session: ...


ENGINES = ("local", "ray")


class EngineError(CurateError):
    """An engine that cannot run the work (a cluster that cannot be joined, a unit that failed there): one
    line for the user; what was published is kept and a rerun completes it."""


def executor(engine: str = "local", workers: int | None = None, address: str | None = None,
             parts_root: str | None = None) -> Executor:
    """The executor for an engine name: `local` (a process pool on this machine) or `ray` (a Ray cluster at
    `address`, its workers writing parts under `parts_root`)."""
    if engine == "local":
        from curate.core.executors.local import LocalExecutor

        return LocalExecutor(workers)
    if engine == "ray":
        from curate.core.executors.ray import RayExecutor

        return RayExecutor(address, parts_root)
    from curate.core.errors import UserError

    raise UserError(f"unknown engine {engine!r}; available: {', '.join(ENGINES)}")
