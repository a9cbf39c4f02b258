"""The global steps on a cluster: a stage's set work after its per-document work, partitioned by key into
tasks instead of gathered on the driver. The runner asks the executor for a stage's distributed global step
(`step_for`); a stage without one runs its own `finalize` on the driver. Stages do not know which engine runs
them: the steps here read the stage's settings and its tables, and produce exactly what its `finalize` does.

Near duplicates (dedup_fuzzy), same rows as `FuzzyDedup.finalize`:
1. map, a task per group of signature sources (the parts the stage's actors wrote, or files the driver exports
   for signatures a local run made): the band rows (seq, band, bucket) of every document with words, split into
   P files by hash(band, bucket) % P, and the new documents' band rows apart (for `dedup_bands`);
2. a task per partition: the candidate pairs of its buckets that have a new document (in a bucket ordered by
   seq, member k pairs with every earlier member while k < max_bucket, after that with the first and the
   previous only), DISTINCT; the signatures fetched by seq from the sources; estimated Jaccard. Pairs within
   `exact_margin` of the threshold are "near"; the others at or above the threshold are edges;
3. near pairs (DISTINCT across partitions) need the exact Jaccard of their shingle sets: the driver exports the
   texts of their documents to one file, and tasks compute it;
4. the driver loads the new band rows and the DISTINCT edges, and computes the connected components of all
   edges by union-find over integer ids (seq) in numpy; the keepers are then the stage's SQL.
Exact duplicates (dedup_exact), same rows as `ExactDedup.finalize`: the driver exports (doc_id, seq,
content_hash) into P files by hash(content_hash); a task per partition picks each hash's keeper.

Workers never open the workspace file: tasks read parts and the files the driver exported, and write their
results to a directory of the run, `PARTS/_global/.<stage>-<random>.tmp/`, each file under a name of its own
attempt (a retried task writes new files; only the names a task returns are read). The driver loads the
results in the stage's finalize transaction and removes the directory; a crash leaves at most that directory,
which the next global step removes.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curate.core import parts
from curate.core.db import fetch_by_rowid, one
from curate.io import lake
from curate.util import log

GLOBAL_DIR = "_global"  # PARTS/_global/: the global steps' run directories (temporary)
PARTITION_ROWS = 2_000_000  # band (or content-hash) rows per partition: ~36 MB raw, well under 1 GB to group
MAP_DOCS = 100_000  # signatures read per map task (~60 MB of parts)
EXPORT_ROWS = 100_000  # rows per file the driver exports (signatures a local run made)
NEAR_PAIRS = 20_000  # near-threshold pairs per exact-Jaccard task
HOOK_EDGES = 4_000_000  # edges hooked at a time in the union-find: ~100 MB of temporaries whatever the edges
RETRIES = 3  # a task whose worker dies is retried this many times (it writes new files each attempt)
GOLDEN = np.uint64(0x9E3779B97F4A7C15)

Source = tuple[str, int, int]  # a Parquet file of signatures: (uri, first seq, last seq)


# -- where the tasks run -----------------------------------------------------------------------------------
class Tasks:
    """Runs a step's tasks: `submit(fn, *args)` gives a handle, `get(handles)` the results in order."""

    cpus: int = 1

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        raise NotImplementedError

    def get(self, handles: list[Any]) -> list[Any]:
        raise NotImplementedError


class InProcess(Tasks):
    """The tasks called in this process, one after the other: the same files, the same results (tests)."""

    def __init__(self, cpus: int = 2):
        self.cpus = cpus

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    def get(self, handles: list[Any]) -> list[Any]:
        return handles


class RayTasks(Tasks):
    """Ray tasks of 1 CPU each on the executor's cluster, retried when their worker dies. The cluster is joined
    at the first task (a step with nothing to distribute never joins it)."""

    def __init__(self, connect: Callable[[], Any], env: dict[str, str]):
        self._connect = connect
        self._ray: Any = None
        self.options = {"num_cpus": 1, "max_retries": RETRIES, "runtime_env": {"env_vars": env}}
        self._remote: dict[Callable[..., Any], Any] = {}

    @property
    def ray(self) -> Any:
        if self._ray is None:
            self._ray = self._connect()
        return self._ray

    @property
    def cpus(self) -> int:  # type: ignore[override]
        return max(1, int(self.ray.cluster_resources().get("CPU", 1)))

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        if fn not in self._remote:
            self._remote[fn] = self.ray.remote(fn).options(**self.options)
        return self._remote[fn].remote(*args)

    def get(self, handles: list[Any]) -> list[Any]:
        from curate.core.executors import EngineError

        try:
            return self.ray.get(handles)
        except Exception as e:  # noqa: BLE001 - one line; nothing of the step is committed
            text = str(e).strip().splitlines()
            raise EngineError(f"a global-step task failed on the cluster ({type(e).__name__}: "
                              f"{text[-1] if text else 'no message'}); nothing of the step was committed: "
                              "rerun to complete") from None


@dataclass
class Step:
    """One stage's global step in one run: its tasks, partitions and run directory, and what it measured."""

    det: Any
    tasks: Tasks
    parts_root: str
    partitions: int | None = None  # P; None: from the rows (PARTITION_ROWS each), at least one per CPU
    dir: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    def partition_count(self, rows: int) -> int:
        if self.partitions:
            return self.partitions
        return max(self.tasks.cpus, -(-rows // PARTITION_ROWS), 1)

    def __enter__(self) -> Step:
        base = lake.join(self.parts_root, GLOBAL_DIR)
        sweep(base)
        self.dir = lake.join(base, f".{self.det.name}-{secrets.token_hex(6)}.tmp")
        return self

    def __exit__(self, *exc: object) -> None:
        remove_dir(self.dir)


def step_for(det: Any, tasks: Tasks, parts_root: str, partitions: int | None = None
             ) -> Callable[[duckdb.DuckDBPyConnection], None] | None:
    """The distributed global step of a stage (a function of the workspace connection, called inside the
    stage's finalize transaction), or None when the stage has none (its `finalize` then runs on the driver)."""
    run = STEPS.get(det.name)
    if run is None:
        return None

    def step(con: duckdb.DuckDBPyConnection) -> None:
        started = time.monotonic()
        with Step(det, tasks, parts_root, partitions) as s:
            run(s, con)
        log.event("global_step", stage=det.name, seconds=round(time.monotonic() - started, 3), **s.stats)

    return step


# -- files -------------------------------------------------------------------------------------------------
def sweep(base: str) -> None:
    """Remove what earlier global steps left under PARTS/_global (a crash before their cleanup). Only the run
    holding the workspace's writer lock gets here, so nothing else writes there."""
    fs, path = lake.resolve(base)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except OSError:
        return
    for info in infos:
        if info.base_name.startswith(".") and info.base_name.endswith(".tmp"):
            remove_dir(lake.join(base, info.base_name))


def remove_dir(uri: str) -> None:
    if not uri:
        return
    fs, path = lake.resolve(uri)
    try:
        fs.delete_dir(path)
    except (OSError, FileNotFoundError):
        pass


def write(directory: str, name: str, table: pa.Table) -> str:
    """`table` as a Parquet file in `directory` under a name of this attempt's own; returns its URI."""
    uri = lake.join(directory, f"{name}-{secrets.token_hex(4)}.parquet")
    fs, path = lake.resolve(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with fs.open_output_stream(path) as f:
        pq.write_table(table, f)
    return uri


def read(uri: str, columns: Sequence[str] | None = None) -> pa.Table:
    fs, path = lake.resolve(uri)
    return pq.read_table(path, filesystem=fs, columns=list(columns) if columns else None)


def read_all(uris: Sequence[str], schema: pa.Schema) -> pa.Table:
    tables = [read(u) for u in uris]
    return pa.concat_tables(tables).cast(schema) if tables else schema.empty_table()


def _node() -> str:
    """The Ray node a task runs on, or "driver". Never imports Ray: Ray reads its settings (the loopback switch,
    token auth) once, at import, and a driver that imported it here before joining a cluster was refused."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()[:12]
    return "driver"


# -- hashing -----------------------------------------------------------------------------------------------
def _fmix64(x: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (uint64 arithmetic wraps)."""
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xFF51AFD7ED558CCD)
    x = x ^ (x >> np.uint64(33))
    x = x * np.uint64(0xC4CEB9FE1A85EC53)
    return x ^ (x >> np.uint64(33))


def band_partition(band: np.ndarray, bucket: np.ndarray, partitions: int) -> np.ndarray:
    """hash(band, bucket) % P: the partition of a band row (the same in every process)."""
    with np.errstate(over="ignore"):
        x = _fmix64(bucket.astype(np.int64).view(np.uint64) ^ (band.astype(np.uint64) * GOLDEN))
    return (x % np.uint64(partitions)).astype(np.int32)


# -- near duplicates ---------------------------------------------------------------------------------------
BANDS = pa.schema([("seq", pa.int64()), ("band", pa.int16()), ("bucket", pa.int64())])
EDGES = pa.schema([("a", pa.int64()), ("b", pa.int64()), ("jaccard", pa.float64()), ("exact", pa.bool_())])
PAIRS = pa.schema([("a", pa.int64()), ("b", pa.int64())])
SIGNATURE_COLUMNS = ("seq", "shingles", "signature", "buckets", "banding")


@dataclass(frozen=True)
class Lsh:
    """What the fuzzy tasks need of the stage's settings (plain values: they travel to the workers)."""

    bands: int
    rows: int
    num_perm: int
    threshold: float
    exact_margin: float
    max_bucket: int
    shingle: str
    ngram: int

    @property
    def banding(self) -> str:
        return f"{self.bands}x{self.rows}"

    @classmethod
    def of(cls, det: Any) -> Lsh:
        s = det.settings
        return cls(det.bands, det.rows, s.num_perm, s.threshold, s.exact_margin, s.max_bucket,
                   det.shingling.kind, det.shingling.n)


def fuzzy(step: Step, con: duckdb.DuckDBPyConnection) -> None:
    """`FuzzyDedup.finalize`, with the candidates and their verification in tasks and the components by
    union-find: which documents are new, or everything again when the LSH settings changed, as there."""
    det = step.det
    params = json.dumps(det.lsh_params(), sort_keys=True)
    stored = one(con.execute("SELECT value FROM dedup_fuzzy_state WHERE key = 'lsh'"))
    first_new, last_old = one(con.execute(
        "SELECT min(seq) FILTER (NOT clustered), max(seq) FILTER (clustered) FROM dedup_signatures"))
    full = bool(stored and stored[0] != params) or (first_new is not None and last_old is not None
                                                     and first_new <= last_old)
    if full:
        con.execute("UPDATE dedup_signatures SET clustered = false WHERE clustered")
        con.execute("DELETE FROM dedup_bands")
        con.execute("DELETE FROM dedup_pairs")
        first_new = one(con.execute("SELECT min(seq) FROM dedup_signatures"))[0]
    if not stored or stored[0] != params:
        con.execute("DELETE FROM dedup_fuzzy_state WHERE key = 'lsh'")
        con.execute("INSERT INTO dedup_fuzzy_state VALUES ('lsh', ?)", [params])
    if first_new is not None:
        if one(con.execute("SELECT count(*) FROM dedup_bands WHERE seq >= ?", [first_new]))[0]:
            con.execute("DELETE FROM dedup_bands WHERE seq >= ?", [first_new])
            con.execute("DELETE FROM dedup_pairs WHERE doc_b IN "
                        "(SELECT doc_id FROM dedup_signatures WHERE seq >= ?)", [first_new])
        new_edges(step, con, int(first_new))
        con.execute("UPDATE dedup_signatures SET clustered = true WHERE NOT clustered")
    t = time.monotonic()
    clusters(con, det)
    step.stats["components_seconds"] = round(time.monotonic() - t, 3)


def signature_sources(step: Step, con: duckdb.DuckDBPyConnection) -> list[tuple[str, int, int, int]]:
    """(uri, first seq, last seq, rows) of Parquet files holding every row of `dedup_signatures` once: the
    published parts of the stage's current fingerprint whose rows the table holds, and, for the rows no such
    part holds (signatures a local run made), files the driver exports."""
    det = step.det
    parts.ensure_catalog(con)
    candidates = con.execute("""
        SELECT p.uri, p.first_seq, p.last_seq, p.rows,
               (SELECT count(*) FROM dedup_signatures s WHERE s.seq BETWEEN p.first_seq AND p.last_seq) AS held
        FROM stage_parts p JOIN stage_runs r ON r.stage = p.stage AND r.shard_id = p.shard_id
                                            AND r.fingerprint = p.fingerprint
        WHERE p.stage = ? AND p.fingerprint = ? AND p.schema_version = ? AND p."table" = 'dedup_signatures'
          AND p.uri IS NOT NULL ORDER BY p.first_seq""",
        [det.name, det.fingerprint(), det.schema_version]).fetchall()
    sources = [(u, int(lo), int(hi), int(n)) for u, lo, hi, n, held in candidates if n == held]
    con.execute("CREATE OR REPLACE TEMP TABLE _covered (lo BIGINT, hi BIGINT)")
    if sources:
        con.executemany("INSERT INTO _covered VALUES (?, ?)", [[lo, hi] for _, lo, hi, _ in sources])
    # Exported with literals of a seq window per file: DuckDB pushes those into the scan (see runner._batches).
    cols = ", ".join(SIGNATURE_COLUMNS)
    rest = con.execute("""SELECT seq FROM dedup_signatures s
                          WHERE NOT EXISTS (SELECT 1 FROM _covered c WHERE s.seq BETWEEN c.lo AND c.hi)
                          ORDER BY seq""").fetchnumpy()["seq"]
    for i in range(0, len(rest), EXPORT_ROWS):
        lo, hi = int(rest[i]), int(rest[min(i + EXPORT_ROWS, len(rest)) - 1])
        t = con.sql(f"""SELECT {cols} FROM dedup_signatures s WHERE seq >= {lo} AND seq <= {hi}
                        AND NOT EXISTS (SELECT 1 FROM _covered c WHERE s.seq BETWEEN c.lo AND c.hi)
                        ORDER BY seq""").to_arrow_table()
        sources.append((write(lake.join(step.dir, "signatures"), f"s{i // EXPORT_ROWS}", t), lo, hi, t.num_rows))
    con.execute("DROP TABLE _covered")
    step.stats["signature_parts"] = len(candidates)
    step.stats["signatures_exported"] = len(rest)
    return sorted(sources, key=lambda s: s[1])


def new_edges(step: Step, con: duckdb.DuckDBPyConnection, first_new: int) -> None:
    """Band rows, candidates and verified edges of the documents from `first_new` on, in tasks; loaded into
    `dedup_bands` and `dedup_pairs`."""
    lsh = Lsh.of(step.det)
    tasks = step.tasks
    sources = signature_sources(step, con)
    rows = sum(s[3] for s in sources)
    p_count = step.partition_count(rows * lsh.bands)
    started = time.monotonic()
    groups: list[list[Source]] = [[]]
    held = 0
    for uri, lo, hi, n in sources:
        if held and held + n > MAP_DOCS:
            groups.append([])
            held = 0
        groups[-1].append((uri, lo, hi))
        held += n
    spread = max(1, min(len(sources), tasks.cpus))
    if len(groups) < spread:  # at least a task per CPU when there are enough sources
        flat = [s for g in groups for s in g]
        groups = [flat[i::spread] for i in range(spread)]
    mapped = tasks.get([tasks.submit(map_bands, g, step.dir, p_count, lsh, first_new) for g in groups if g])
    by_partition: list[list[str]] = [[] for _ in range(p_count)]
    sizes = [0] * p_count
    for m in mapped:
        for p, uri, n in m["partitions"]:
            by_partition[p].append(uri)
            sizes[p] += n
    t_map = time.monotonic()
    sigs = [(u, lo, hi) for u, lo, hi, _ in sources]
    done = tasks.get([tasks.submit(partition_pairs, p, by_partition[p], sigs, first_new, lsh, step.dir)
                      for p in range(p_count) if by_partition[p]])
    t_pairs = time.monotonic()
    near = read_all([d["near"] for d in done if d["near"]], PAIRS)
    exact_uris: list[str] = []
    if near.num_rows:
        con.register("_near_rows", near)
        near = con.sql("SELECT DISTINCT a, b FROM _near_rows ORDER BY a, b").to_arrow_table()
        con.unregister("_near_rows")
        a, b = near.column("a").to_numpy(), near.column("b").to_numpy()
        # located by seq, then fetched by rowid: a plain filter reads every text of the table (db.fetch_by_rowid)
        rows = list(fetch_by_rowid(con, "documents", "seq, text", "seq = ANY(?)",
                                   [np.unique(np.concatenate([a, b])).tolist()]))
        texts = pa.table({"seq": pa.array([r[0] for r in rows], pa.int64()),
                          "text": pa.array([r[1] for r in rows], pa.string())})
        texts_uri = write(step.dir, "texts", texts)
        chunk = max(1, min(NEAR_PAIRS, -(-len(a) // tasks.cpus)))
        exact_uris = tasks.get([tasks.submit(exact_pairs, a[i:i + chunk], b[i:i + chunk], texts_uri, lsh, step.dir)
                                for i in range(0, len(a), chunk)])
        step.stats["near_texts_bytes"] = texts.nbytes
    t_exact = time.monotonic()
    # Publish: the new band rows and the edges (DISTINCT: a pair sharing buckets in two partitions is
    # verified in both), in the finalize transaction.
    for m in mapped:
        if m["new"]:
            con.register("_band_rows", read(m["new"]))
            con.execute("INSERT INTO dedup_bands SELECT seq, band, bucket FROM _band_rows")
            con.unregister("_band_rows")
    edges = read_all([d["edges"] for d in done if d["edges"]] + [u for u in exact_uris if u], EDGES)
    con.register("_edge_rows", edges)
    con.execute("""INSERT INTO dedup_pairs BY NAME
        SELECT sa.doc_id AS doc_a, sb.doc_id AS doc_b, e.jaccard, e.exact
        FROM (SELECT DISTINCT a, b, jaccard, exact FROM _edge_rows) e
        JOIN dedup_signatures sa ON sa.seq = e.a JOIN dedup_signatures sb ON sb.seq = e.b ORDER BY e.a, e.b""")
    con.unregister("_edge_rows")
    step.stats.update({
        "partitions": p_count, "map_tasks": len(mapped), "band_rows": sum(sizes),
        "partition_rows": {"min": min(sizes), "max": max(sizes)},
        "candidates": sum(d["candidates"] for d in done),  # DISTINCT per partition; a pair may be in several
        "edges_found": edges.num_rows, "near_pairs": near.num_rows,
        "nodes": sorted({d["node"] for d in [*mapped, *done]}),
        "map_seconds": round(t_map - started, 3), "pairs_seconds": round(t_pairs - t_map, 3),
        "exact_seconds": round(t_exact - t_pairs, 3), "load_seconds": round(time.monotonic() - t_exact, 3),
    })


def map_bands(sources: list[Source], out: str, p_count: int, lsh: Lsh, first_new: int) -> dict[str, Any]:
    """A task: the band rows of the documents with words in `sources`, one file per partition, and the rows of
    documents from `first_new` on in a file of their own. Buckets as the stage's workers computed them, or,
    computed with other LSH settings (another banding), again from the signature as the stage does."""
    from curate.stages.dedup_fuzzy import minhash

    seqs, buckets = [], []
    for uri, _, _ in sources:
        t = read(uri, SIGNATURE_COLUMNS)
        t = t.filter(pc.greater(t.column("shingles"), 0))
        current = pc.fill_null(pc.equal(t.column("banding"), lsh.banding), False)
        for keep, recompute in ((current, False), (pc.invert(current), True)):
            part = t.filter(keep)
            if not part.num_rows:
                continue
            if recompute:
                b = minhash.band_hashes(signature_matrix(part.column("signature"), lsh.num_perm), lsh.bands, lsh.rows)
            else:
                flat = pc.list_flatten(part.column("buckets").combine_chunks())
                b = flat.to_numpy(zero_copy_only=False).astype(np.int64).reshape(part.num_rows, lsh.bands)
            seqs.append(part.column("seq").to_numpy())
            buckets.append(b)
    seq = np.concatenate(seqs) if seqs else np.zeros(0, np.int64)
    bucket = np.concatenate(buckets) if buckets else np.zeros((0, lsh.bands), np.int64)
    rows = pa.table({"seq": np.repeat(seq, lsh.bands), "band": np.tile(np.arange(lsh.bands, dtype=np.int16), len(seq)),
                     "bucket": bucket.ravel()}, schema=BANDS)
    p = band_partition(rows.column("band").to_numpy(), rows.column("bucket").to_numpy(), p_count)
    order = np.argsort(p, kind="stable")
    bounds = np.searchsorted(p[order], np.arange(p_count + 1))
    rows = rows.take(order)
    out_parts = []
    for i in range(p_count):
        if bounds[i + 1] > bounds[i]:
            piece = rows.slice(int(bounds[i]), int(bounds[i + 1] - bounds[i]))
            out_parts.append((i, write(lake.join(out, f"bands/p{i}"), "m", piece), piece.num_rows))
    new = rows.filter(pc.greater_equal(rows.column("seq"), first_new))
    return {"partitions": out_parts, "new": write(lake.join(out, "new_bands"), "m", new) if new.num_rows else None,
            "node": _node()}


# The stage's candidate rule (FuzzyDedup._add_pairs), on one partition's band rows.
MEMBERS_SQL = """CREATE TABLE _members AS
    WITH shared AS (SELECT band, bucket FROM bands GROUP BY band, bucket
                    HAVING count(*) > 1 AND max(seq) >= $first)
    SELECT b.band, b.bucket, b.seq, b.seq >= $first AS is_new,
           row_number() OVER (PARTITION BY b.band, b.bucket ORDER BY b.seq) - 1 AS pos
    FROM bands b SEMI JOIN shared USING (band, bucket)"""
CANDIDATES_SQL = """SELECT DISTINCT a, b FROM (
        SELECT y.seq AS a, x.seq AS b FROM _members x JOIN _members y
            ON x.band = y.band AND x.bucket = y.bucket AND y.pos < x.pos
        WHERE x.is_new AND x.pos < $cap AND y.pos < $cap
        UNION ALL  -- past the cap: the first member and the previous one (two equi-joins, never k^2)
        SELECT y.seq, x.seq FROM _members x JOIN _members y
            ON x.band = y.band AND x.bucket = y.bucket AND y.pos = 0
        WHERE x.is_new AND x.pos >= $cap
        UNION ALL
        SELECT y.seq, x.seq FROM _members x JOIN _members y
            ON x.band = y.band AND x.bucket = y.bucket AND y.pos = x.pos - 1
        WHERE x.is_new AND x.pos >= $cap)
    ORDER BY a, b"""


def partition_pairs(p: int, band_uris: list[str], sources: list[Source], first_new: int, lsh: Lsh,
                    out: str) -> dict[str, Any]:
    """A task: one partition's candidate pairs, verified on the signatures fetched by seq from `sources`.
    Writes the edges (estimate at or above the threshold, outside the margin) and the near pairs (within
    `exact_margin` of the threshold: their exact Jaccard is decided later, from the texts)."""
    from curate.stages.dedup_fuzzy import minhash

    started = time.monotonic()
    con = duckdb.connect()
    con.execute("SET threads = 1")  # a task has one CPU
    con.register("bands", read_all(band_uris, BANDS))
    con.execute(MEMBERS_SQL, {"first": first_new})
    cand = con.execute(CANDIDATES_SQL, {"cap": lsh.max_bucket}).fetchnumpy()
    con.close()
    a, b = cand["a"].astype(np.int64), cand["b"].astype(np.int64)
    seqs = np.unique(np.concatenate([a, b]))
    sig = fetch_signatures(sources, seqs, lsh.num_perm)
    ia, ib = np.searchsorted(seqs, a), np.searchsorted(seqs, b)
    j = np.empty(len(a))
    for lo in range(0, len(a), 100_000):  # bounded memory: two (chunk, num_perm) matrices at a time
        j[lo:lo + 100_000] = minhash.estimate_jaccard(sig[ia[lo:lo + 100_000]], sig[ib[lo:lo + 100_000]])
    near = np.abs(j - lsh.threshold) < lsh.exact_margin
    edge = ~near & (j >= lsh.threshold)
    edges = pa.table({"a": a[edge], "b": b[edge], "jaccard": j[edge], "exact": np.zeros(int(edge.sum()), bool)},
                     schema=EDGES)
    near_pairs = pa.table({"a": a[near], "b": b[near]}, schema=PAIRS)
    return {"partition": p, "candidates": len(a), "edges": write(lake.join(out, "edges"), f"p{p}", edges)
            if edges.num_rows else None, "near": write(lake.join(out, "near"), f"p{p}", near_pairs)
            if near_pairs.num_rows else None, "signatures": len(seqs), "node": _node(),
            "seconds": round(time.monotonic() - started, 3)}


def fetch_signatures(sources: list[Source], seqs: np.ndarray, num_perm: int) -> np.ndarray:
    """The signatures of `seqs` (sorted, unique) as a (len(seqs), num_perm) matrix in that order, read from the
    sources whose seq range holds some of them."""
    out = np.zeros((len(seqs), num_perm), np.uint32)
    found = np.zeros(len(seqs), bool)
    for uri, lo, hi in sources:
        i, k = np.searchsorted(seqs, lo, "left"), np.searchsorted(seqs, hi, "right")
        if i == k:
            continue
        t = read(uri, ("seq", "signature"))
        t = t.filter(pc.is_in(t.column("seq"), pa.array(seqs[i:k])))
        at = np.searchsorted(seqs, t.column("seq").to_numpy())
        out[at] = signature_matrix(t.column("signature"), num_perm)
        found[at] = True
    if not found.all():
        raise RuntimeError(f"{int((~found).sum())} signatures not found in the sources (seq {seqs[~found][:3]})")
    return out


def signature_matrix(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """A column of signature BLOBs (little-endian uint32 values, minhash.py) as an (n, width) array."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, width), np.uint32)
    arr = arr.cast(pa.large_binary())
    offsets = np.frombuffer(arr.buffers()[1], np.int64, count=len(arr) + 1, offset=arr.offset * 8)
    if not (np.diff(offsets) == width * 4).all():
        raise ValueError(f"signatures of another length than {width} permutations")
    values = np.frombuffer(arr.buffers()[2], "<u4", count=len(arr) * width, offset=int(offsets[0]))
    return values.astype(np.uint32).reshape(len(arr), width)


def exact_pairs(a: np.ndarray, b: np.ndarray, texts_uri: str, lsh: Lsh, out: str) -> str | None:
    """A task: the exact Jaccard of the shingle sets (32-bit shingle hashes, as the stage's `_exact_jaccard`)
    of near pairs; writes those at or above the threshold as edges."""
    from curate.stages.dedup_fuzzy import minhash

    seqs = np.unique(np.concatenate([a, b]))
    t = read(texts_uri)
    t = t.filter(pc.is_in(t.column("seq"), pa.array(seqs)))
    docs = t.column("seq").to_pylist()
    hashes, counts = minhash.shingle_hashes(t.column("text").to_pylist(), lsh.shingle, lsh.ngram)
    keys = np.sort((np.repeat(np.arange(len(docs), dtype=np.uint64), counts) << np.uint64(32)) | hashes)
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if len(keys) else keys
    bounds = np.searchsorted(keys >> np.uint64(32), np.arange(len(docs) + 1, dtype=np.uint64))
    values = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    sets = {d: values[bounds[i]:bounds[i + 1]] for i, d in enumerate(docs)}
    j = np.empty(len(a))
    for i, (x, y) in enumerate(zip(a.tolist(), b.tolist(), strict=True)):
        sx, sy = sets[x], sets[y]
        inter = len(np.intersect1d(sx, sy, assume_unique=True))
        j[i] = inter / (len(sx) + len(sy) - inter) if len(sx) + len(sy) else 1.0
    keep = j >= lsh.threshold
    edges = pa.table({"a": a[keep], "b": b[keep], "jaccard": j[keep], "exact": np.ones(int(keep.sum()), bool)},
                     schema=EDGES)
    return write(lake.join(out, "exact"), "x", edges) if edges.num_rows else None


def components(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of the edges (a[i], b[i]) over non-negative integer ids (seq: dense, at most the
    number of documents): (nodes, label), the nodes of the edges sorted and each one's label the smallest node
    of its component. Union-find in numpy over a parent array indexed by id (4 bytes per id below 2^31, no
    sort or id map: np.unique alone took 20 s for 12M ids here, measured): every root of an edge whose ends have
    different roots is hooked under the smaller root (np.minimum.at), then every id jumps to its root; repeated
    until no edge crosses two trees (6 rounds for 6M edges, measured)."""
    if not len(a):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    size = int(max(a.max(), b.max())) + 1
    kind = np.int32 if size < 2**31 else np.int64
    a, b = a.astype(kind, copy=False), b.astype(kind, copy=False)
    parent = np.arange(size, dtype=kind)
    while True:
        crossing = 0
        for lo in range(0, len(a), HOOK_EDGES):  # the temporaries of a chunk of edges at a time
            ra, rb = parent[a[lo:lo + HOOK_EDGES]], parent[b[lo:lo + HOOK_EDGES]]
            cross = ra != rb
            ra, rb = ra[cross], rb[cross]
            crossing += len(ra)
            np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
        if not crossing:
            break
        while True:  # pointer jumping: every id to its root
            up = parent[parent]
            if np.array_equal(up, parent):
                break
            parent = up
    seen = np.zeros(size, bool)
    seen[a] = True
    seen[b] = True
    nodes = np.flatnonzero(seen)
    del seen
    return nodes, parent[nodes]


def clusters(con: duckdb.DuckDBPyConnection, det: Any) -> None:
    """The components of every edge in `dedup_pairs`, then `dedup_fuzzy`: one keeper per component by the
    stage's ordering (the SQL of `FuzzyDedup._cluster` from its `_label` table on)."""
    top = one(con.execute("SELECT max(seq) FROM dedup_signatures"))[0] or 0
    kind = "INTEGER" if top < 2**31 else "BIGINT"  # 8 bytes an edge, not 16, below 2^31 documents
    e = con.execute(f"""SELECT sa.seq::{kind} AS a, sb.seq::{kind} AS b FROM dedup_pairs p
                        JOIN dedup_signatures sa ON sa.doc_id = p.doc_a
                        JOIN dedup_signatures sb ON sb.doc_id = p.doc_b""").fetchnumpy()
    nodes, label = components(e["a"], e["b"])
    con.register("_label_rows", pa.table({"node": nodes, "label": label}))
    con.execute("CREATE OR REPLACE TEMP TABLE _label AS SELECT node, label FROM _label_rows")
    con.unregister("_label_rows")
    order = det._keeper_order(con)
    con.execute("DELETE FROM dedup_fuzzy")
    con.execute(f"""INSERT INTO dedup_fuzzy
        WITH m AS (
            SELECT s.doc_id, s.seq, r.doc_id AS cluster_id, count(*) OVER (PARTITION BY l.label) AS cluster_size,
                   row_number() OVER (PARTITION BY l.label ORDER BY {order}) = 1 AS is_keeper
            FROM _label l JOIN dedup_signatures s ON s.seq = l.node
            JOIN dedup_signatures r ON r.seq = l.label {det._keeper_joins(con)})
        SELECT doc_id, cluster_id, cluster_size,
               max(CASE WHEN is_keeper THEN doc_id END) OVER (PARTITION BY cluster_id), is_keeper
        FROM m ORDER BY cluster_id, seq""")
    con.execute("DROP TABLE _label")


# -- exact duplicates --------------------------------------------------------------------------------------
KEEPERS = pa.schema([("doc_id", pa.string()), ("cluster_id", pa.string()), ("is_keeper", pa.bool_())])


def exact(step: Step, con: duckdb.DuckDBPyConnection) -> None:
    """`ExactDedup.finalize`: each content hash's keeper (the first ingested copy: lowest seq, then doc_id), a
    task per partition of hash(content_hash); the driver exports the rows and loads the keepers."""
    started = time.monotonic()
    rows = one(con.execute("SELECT count(*) FROM dedup_exact"))[0]
    if not rows:
        return
    p_count = step.partition_count(rows)
    files = list(_export_partitions(con, step, p_count))
    t_export = time.monotonic()
    tasks = step.tasks
    done = tasks.get([tasks.submit(exact_keepers, uri, step.dir) for _, uri, _ in files])
    t_tasks = time.monotonic()
    for d in done:
        con.register("_keeper_rows", read(d["uri"]))
        con.execute("""UPDATE dedup_exact SET cluster_id = k.cluster_id, is_keeper = k.is_keeper
                       FROM _keeper_rows k WHERE dedup_exact.doc_id = k.doc_id""")
        con.unregister("_keeper_rows")
    sizes = [n for _, _, n in files]
    step.stats.update({"partitions": p_count, "rows": rows, "partition_rows": {"min": min(sizes), "max": max(sizes)},
                       "nodes": sorted({d["node"] for d in done}), "export_seconds": round(t_export - started, 3),
                       "tasks_seconds": round(t_tasks - t_export, 3),
                       "load_seconds": round(time.monotonic() - t_tasks, 3)})


def _export_partitions(con: duckdb.DuckDBPyConnection, step: Step, p_count: int) -> Iterator[tuple[int, str, int]]:
    """(partition, uri, rows): the (doc_id, seq, content_hash) rows by hash(content_hash) % P, a file each."""
    t = con.sql(f"""SELECT x.doc_id, d.seq, x.content_hash, (hash(x.content_hash) % {int(p_count)})::INTEGER AS p
                    FROM dedup_exact x JOIN documents d USING (doc_id) ORDER BY p""").to_arrow_table()
    p = t.column("p").to_numpy()
    bounds = np.searchsorted(p, np.arange(p_count + 1))
    t = t.drop_columns(["p"])
    for i in range(p_count):
        n = int(bounds[i + 1] - bounds[i])
        if n:
            yield i, write(lake.join(step.dir, "exact"), f"p{i}", t.slice(int(bounds[i]), n)), n


def exact_keepers(uri: str, out: str) -> dict[str, Any]:
    """A task: for each content hash in one partition, its cluster id and keeper."""
    con = duckdb.connect()
    con.execute("SET threads = 1")
    con.register("x", read(uri))
    t = con.sql("""SELECT DISTINCT doc_id, substr(content_hash, 1, 16) AS cluster_id,
                          doc_id = arg_min(doc_id, (seq, doc_id)) OVER (PARTITION BY content_hash) AS is_keeper
                   FROM x""").to_arrow_table().cast(KEEPERS)
    con.close()
    return {"uri": write(lake.join(out, "keepers"), "k", t), "node": _node()}


STEPS: dict[str, Callable[[Step, duckdb.DuckDBPyConnection], None]] = {"dedup_fuzzy": fuzzy, "dedup_exact": exact}
