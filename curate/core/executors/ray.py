"""The Ray executor: a stage's per-document work on a Ray cluster, one stage instance per actor, rows to parts.

The driver (the `curate run` process) reads a unit of documents (a range of one shard) from the workspace and
hands it to an actor; the actor runs the stage over it batch by batch, writes the rows to a Parquet part under
a temporary name (`curate.core.parts`) and returns what it wrote. The driver publishes parts and loads them
into the workspace: workers never open the workspace file. An actor is created per stage with the CPUs and
memory the stage declares (`Detector.cpus`, `Detector.batch_memory`), so its models load once per actor.
A worker process that dies is restarted by Ray and its unit retried (`max_restarts`, `max_task_retries`); a
unit that still fails stops the run with one message, and a rerun does only the units not published.

Actors rather than Ray Data's `map_batches`: the units come from the workspace through the driver, which
publishes them in order per shard; Ray Data would add its own scheduler (and, measured in DESIGN.md, needs a
whole CPU for its file listing, which 1-CPU nodes cannot spare).
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa

from curate.core import parts
from curate.core.executors import EngineError
from curate.core.stage import Detector

UNIT_ROWS = 5000  # documents per unit (one part): 100,000 documents are 20 parts per table
BATCH_ROWS = 1000  # documents per call of the stage inside a unit, as the local engine's batches
MIN_ACTOR_DOCS = 200
IN_FLIGHT = 2  # units queued per actor: one running, one waiting, so an actor never idles between units
MAX_RESTARTS = 3  # a killed worker process: its actor restarts and the unit is retried this many times
ENV_PREFIXES = ("CURATE_",)  # the driver's settings the actors see (store credentials belong to the nodes)
LOOPBACK = ("127.", "localhost")
CONNECT_SECONDS = 5.0


class RayExecutor:
    name = "ray"
    writes_parts = True

    def __init__(self, address: str | None = None, parts_root: str | None = None, unit_rows: int = UNIT_ROWS,
                 partitions: int | None = None):
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.parts_root = parts_root
        self.unit_rows = unit_rows
        self.partitions = partitions  # of the global steps; None: from their rows (ray_global.PARTITION_ROWS)
        self._connected_here = False

    # -- the cluster ---------------------------------------------------------------------------------
    def connect(self) -> Any:
        """Join the cluster at `address` (or start a local Ray when there is none); returns the ray module."""
        if self.address and self.address.split(":", 1)[0].startswith(LOOPBACK):
            # A cluster on loopback: without this Ray rewrites 127.0.0.1 to the interface address before
            # dialling, where nothing listens (measured, Ray 2.60). Read by Ray when it is imported.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        try:
            import ray
        except ImportError:
            raise EngineError("the ray engine needs Ray: pip install 'ray[data]' (see the README)") from None
        if not ray.is_initialized():
            if self.address:
                self._reachable()
            try:
                ray.init(address=self.address, namespace="curate", log_to_driver=False, logging_level="WARNING",
                         **({} if self.address else {"include_dashboard": False}))
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise EngineError(f"cannot join the Ray cluster at {self.address or 'a new local instance'}: "
                                  f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
            self._connected_here = True
        return ray

    def _reachable(self) -> None:
        """Refuse at once an address where nothing listens: ray.init waits on it for over ten minutes
        (measured, Ray 2.60)."""
        host, _, port = self.address.rpartition(":") if "://" not in self.address else ("", "", "")
        if not host or not port.isdigit():
            return  # "auto", "ray://...": Ray's own resolution
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_SECONDS).close()
        except OSError as e:
            raise EngineError(f"cannot join the Ray cluster at {self.address}: {e.strerror or e} (start its head "
                              "with `ray start --head`, see the README's Scale section)") from None

    def close(self) -> None:
        if self._connected_here:
            import ray

            ray.shutdown()
            self._connected_here = False

    def prepare(self, dets: Sequence[Detector], work: dict[str, tuple[int, int]]) -> None:
        """Join the cluster now if a stage has per-document work (joining takes ~1 s)."""
        if any(det.output and work.get(det.name, (0, 0))[0] for det in dets):
            self.connect()

    def session(self, det: Detector, docs: int, chars: int) -> _Session:
        return _Session(self, det, docs)

    def global_step(self, det: Detector) -> Callable[[Any], None] | None:
        """The stage's set work as Ray tasks over partitions (`ray_global`), or None: its own `finalize`."""
        from curate.core.executors import ray_global

        if self.parts_root is None:
            raise EngineError("the ray engine needs a parts location (the workspace's parts/ or a store prefix)")
        tasks = ray_global.RayTasks(self.connect, _actor_env())
        return ray_global.step_for(det, tasks, self.parts_root, self.partitions)

    def policy_step(self, con: Any, ruleset: Any, root: str | None = None) -> tuple[Any, pa.Table]:
        """The policy and the manifest's rows as a Ray task per shard (`ray_policy`): (DecideSummary, rows)."""
        from curate.core.executors import ray_global, ray_policy

        if self.parts_root is None:
            raise EngineError("the ray engine needs a parts location (the workspace's parts/ or a store prefix)")
        tasks = ray_global.RayTasks(self.connect, _actor_env())
        return ray_policy.policy_step(con, ruleset, tasks, self.parts_root, root)


def _actor_env() -> dict[str, str]:
    """The environment of actors and tasks: the driver's CURATE_* settings (store credentials belong to the
    nodes), and no BLAS threads (one actor or task per CPU already)."""
    env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


class _Session:
    """One stage's actors; `map` runs units on them, in order."""

    writes_parts = True

    def __init__(self, ex: RayExecutor, det: Detector, docs: int):
        self.ex, self.det, self.docs = ex, det, docs
        self.actors: list[Any] = []
        self.load: list[int] = []
        self.nodes: dict[str, list[float]] = {}  # node -> [documents, busy seconds]

    def batch_rows(self, docs: int) -> int:
        """Documents per unit."""
        return self.ex.unit_rows

    def __enter__(self) -> _Session:
        if self.ex.parts_root is None:
            raise EngineError("the ray engine needs a parts location (the workspace's parts/ or a store prefix)")
        ray = self.ex.connect()
        cpus = ray.cluster_resources().get("CPU", 1)
        slots = int(cpus // self.det.cpus) if self.det.cpus > 0 else len([n for n in ray.nodes() if n["Alive"]])
        # Units are cut per shard, so even a small stage has one per shard: an actor per slot, unless there
        # are fewer than MIN_ACTOR_DOCS documents per actor (an actor costs ~1 s to start, measured).
        count = max(1, min(slots, -(-self.docs // MIN_ACTOR_DOCS)))
        env = _actor_env()
        options: dict[str, Any] = {"num_cpus": self.det.cpus, "max_restarts": MAX_RESTARTS,
                                   "max_task_retries": MAX_RESTARTS, "runtime_env": {"env_vars": env}}
        if self.det.batch_memory:
            options["memory"] = self.det.batch_memory
        worker = ray.remote(StageWorker).options(**options)
        self.actors = [worker.remote(self.det, self.ex.parts_root) for _ in range(count)]
        self.load = [0] * count
        return self

    def __exit__(self, *exc: object) -> None:
        if self.actors:
            import ray

            for a in self.actors:
                ray.kill(a, no_restart=True)
            self.actors = []

    def pids(self) -> list[tuple[int, str]]:
        """(pid, node) of each actor's worker process (the fault tests kill one)."""
        import ray

        return ray.get([a.where.remote() for a in self.actors])

    def map(self, items: Iterable[tuple[str, parts.Unit | None]]) -> Iterator[tuple[str, Any, Any]]:
        """Yields (key, unit, `parts.Written` or the exception) in input order, IN_FLIGHT units per actor; a
        marker (key, None) passes through as (key, None, None)."""
        import ray

        fp = self.det.fingerprint()
        pending: deque[tuple[str, parts.Unit | None, Any, int]] = deque()
        limit = IN_FLIGHT * len(self.actors)

        def result(key: str, unit: parts.Unit | None, ref: Any, i: int) -> tuple[str, Any, Any]:
            if ref is None:
                return key, None, None
            self.load[i] -= 1
            try:
                w = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - the runner names the unit and stops the run
                return key, unit, e
            n = self.nodes.setdefault(w.node.split("/", 1)[0], [0, 0.0])
            n[0] += w.unit.documents
            n[1] += w.seconds
            return key, unit, w

        for key, unit in items:
            if unit is None:
                pending.append((key, None, None, -1))
            else:
                i = min(range(len(self.actors)), key=self.load.__getitem__)
                self.load[i] += 1
                table, unit.table = unit.table, None  # the rows travel once, as their own argument
                pending.append((key, unit, self.actors[i].run.remote(unit, table, fp, BATCH_ROWS), i))
            while sum(self.load) >= limit and pending:
                yield result(*pending.popleft())
        while pending:
            yield result(*pending.popleft())

    def stats(self) -> dict[str, dict[str, float]]:
        """Per node: documents, busy seconds, documents per busy second."""
        return {node: {"documents": int(d), "seconds": round(s, 3), "rate": round(d / s, 1) if s else 0.0}
                for node, (d, s) in sorted(self.nodes.items())}


class StageWorker:
    """A Ray actor holding one stage instance: it turns units into parts and never opens the workspace."""

    def __init__(self, det: Detector, parts_root: str):
        import ray

        self.det = det
        self.root = parts_root
        self.node = f"{ray.get_runtime_context().get_node_id()[:12]}/{os.getpid()}"

    def where(self) -> tuple[int, str]:
        return os.getpid(), self.node

    def run(self, unit: parts.Unit, table: pa.Table, fingerprint: str, batch_rows: int) -> parts.Written:
        started = time.monotonic()
        det = self.det
        out: list[pa.Table] = []
        errors: list[tuple[str, str]] = []
        for batch in table.combine_chunks().to_batches(max_chunksize=batch_rows):
            try:
                rows = det(batch)
            except Exception:  # noqa: BLE001 - isolated below, as the local engine does
                rows = self._isolate(batch, errors)
            if rows is not None and rows.num_rows:
                out.append(rows)
        tmp, size, n = None, 0, 0
        if out:
            rows = pa.concat_tables(out, promote_options="default")
            n = rows.num_rows
            tmp, size = parts.write(self.root, det.output, unit.shard_id, fingerprint, unit.n, rows)
        return parts.Written(unit, det.output, tmp, n, size, errors, self.node, time.monotonic() - started)

    def _isolate(self, batch: pa.RecordBatch, errors: list[tuple[str, str]]) -> pa.Table | None:
        """A batch raised: its documents one by one; those that raise are recorded, the others kept."""
        kept = []
        ids = batch.column(self.det.columns.index("doc_id"))
        for i in range(batch.num_rows):
            try:
                rows = self.det(batch.slice(i, 1))
            except Exception as e:  # noqa: BLE001 - recorded per document, the run goes on
                errors.append((ids[i].as_py(), f"{type(e).__name__}: {e}"))
                continue
            if rows is not None and rows.num_rows:
                kept.append(rows)
        return pa.concat_tables(kept, promote_options="default") if kept else None
