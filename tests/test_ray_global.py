"""The global steps partitioned by key (curate/core/executors/ray_global.py): the same rows as the stages' own
finalize, whatever the number of partitions, whether the signatures come from parts the workers wrote or from
the workspace, on a first run and an incremental one. Without a cluster: the tasks run in this process through
the same files (`InProcess`); tests/test_ray.py runs them on a real two-node Ray cluster."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from conftest import SAMPLES
from test_ray import planted_corpus

from curate import Workspace
from curate.core import parts
from curate.core.executors import ray_global
from curate.core.executors.local import LocalExecutor
from curate.core.policy import load_rules
from curate.core.runner import run_stage
from curate.core.stage import detectors

TABLES = ("dedup_pairs", "dedup_fuzzy", "dedup_exact", "dedup_bands", "dedup_fuzzy_state")


class PartsHere:
    """An executor that writes parts like the Ray one, but runs the stage in this process, and whose global
    steps are `ray_global`'s with their tasks called here: the runner's parts path and its global-step hook,
    without a cluster."""

    name = "parts-here"
    writes_parts = True

    def __init__(self, parts_root: str, partitions: int | None = None, unit_rows: int = 700):
        self.parts_root, self.partitions, self.unit_rows = parts_root, partitions, unit_rows
        self.steps = 0

    def prepare(self, dets, work) -> None:
        pass

    def session(self, det, docs, chars):
        return _Session(self, det)

    def global_step(self, det):
        step = ray_global.step_for(det, ray_global.InProcess(2), self.parts_root, self.partitions)
        self.steps += step is not None
        return step


class _Session:
    writes_parts = True

    def __init__(self, ex: PartsHere, det):
        self.ex, self.det = ex, det

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def batch_rows(self, docs: int) -> int:
        return self.ex.unit_rows

    def map(self, items):
        fp = self.det.fingerprint()
        for key, unit in items:
            if unit is None:
                yield key, None, None
                continue
            rows = self.det(unit.table.combine_chunks().to_batches()[0])
            tmp, size = parts.write(self.ex.parts_root, self.det.output, unit.shard_id, fp, unit.n, rows)
            yield key, unit, parts.Written(unit, self.det.output, tmp, rows.num_rows, size)


def run(ws: Path, executor) -> None:
    with Workspace(ws).connect(write=True) as con:
        for det in detectors(load_rules().raw, ["dedup_exact", "dedup_fuzzy"]):
            run_stage(con, det, executor)


def tables(ws: Path) -> dict[str, list]:
    with duckdb.connect(str(ws / "curate.duckdb"), read_only=True) as con:
        return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TABLES}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[Path]:
    """3,000 documents of 300 words, 300 of them near copies (planted), in 4 shards."""
    return planted_corpus(tmp_path_factory.mktemp("planted") / "corpus", 3000, 300)


@pytest.fixture(scope="module")
def local(corpus, tmp_path_factory) -> dict[str, list]:
    """The local engine's tables on the planted corpus plus the samples (real text)."""
    ws = Workspace.init(tmp_path_factory.mktemp("local") / "ws")
    ws.ingest([str(p) for p in corpus] + [str(SAMPLES)])
    run(ws.path, LocalExecutor(1))
    found = tables(ws.path)
    assert len(found["dedup_pairs"]) > 300 and any(exact for *_, exact in found["dedup_pairs"])
    return found


@pytest.mark.parametrize("partitions", [1, 3, 8])
def test_partitioned_steps_same_rows_as_finalize(corpus, local, tmp_path, partitions):
    """Signatures from the parts the per-document work wrote; every table row for row as the local run's."""
    ws = Workspace.init(tmp_path / "ws")
    ws.ingest([str(p) for p in corpus] + [str(SAMPLES)])
    ex = PartsHere(str(ws.path / "parts"), partitions)
    run(ws.path, ex)
    assert ex.steps == 2
    assert tables(ws.path) == local
    assert not list((ws.path / "parts" / ray_global.GLOBAL_DIR).iterdir())  # the run's files are gone


def test_incremental_mixed_sources_same_rows(corpus, tmp_path):
    """Shards 1-2 processed locally (no parts: the driver exports their signatures), shards 3-4 and the samples
    then with parts and the distributed steps: the same rows as two local runs."""
    first, second = [str(p) for p in corpus[:2]], [str(p) for p in corpus[2:]] + [str(SAMPLES)]
    a = Workspace.init(tmp_path / "a")
    a.ingest(first)
    run(a.path, LocalExecutor(1))
    shutil.copytree(a.path, tmp_path / "b")
    b = Workspace(tmp_path / "b")
    a.ingest(second)
    b.ingest(second)
    run(a.path, LocalExecutor(1))
    run(b.path, PartsHere(str(b.path / "parts"), 4))
    assert tables(b.path) == tables(a.path)


def test_changed_lsh_settings_redo_from_signatures(corpus, tmp_path, monkeypatch):
    """Other LSH settings (bands x rows, and buckets capped at 3 members so that the first-and-previous rule
    past the cap is used): the buckets are recomputed from the stored signatures in the map tasks and
    everything is redone, as finalize does."""
    rules = tmp_path / "rules.toml"
    text = Path(load_rules().path).read_text()
    assert "\nbands = 21\nrows = 6\ncatch_probability" in text
    rules.write_text(text.replace("\nbands = 21\nrows = 6\ncatch_probability", "\nbands = 16\nrows = 8\n# catch")
                     .replace("\nmax_bucket = 50 ", "\nmax_bucket = 3 "))
    out = {}
    for name, second in (("local", LocalExecutor(1)), ("parts", None)):
        ws = Workspace.init(tmp_path / name)
        ws.ingest([str(p) for p in corpus])
        run(ws.path, LocalExecutor(1))
        with ws.connect(write=True) as con:
            for det in detectors(load_rules(rules).raw, ["dedup_fuzzy"]):
                run_stage(con, det, second or PartsHere(str(ws.path / "parts"), 3))
        out[name] = tables(ws.path)
    assert out["parts"] == out["local"]
    assert any('"bands": 16' in v and '"max_bucket": 3' in v for _, v in out["local"]["dedup_fuzzy_state"])


def reference_components(a: list[int], b: list[int]) -> dict[int, int]:
    """Node -> smallest node of its component, by a plain union-find with a dict."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for x, y in zip(a, b, strict=True):
        rx, ry = find(x), find(y)
        if rx != ry:
            parent[max(rx, ry)] = min(rx, ry)
    return {x: find(x) for x in parent}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_components_smallest_node_per_component(seed):
    rng = np.random.default_rng(seed)
    n = 5000
    a = rng.integers(0, n, 3000) * 7 + 11  # sparse ids, not 0..n
    b = rng.integers(0, n, 3000) * 7 + 11
    # a long chain too: the worst case for label propagation
    chain = np.arange(1000, 1400) * 7 + 11
    a, b = np.concatenate([a, chain[:-1]]), np.concatenate([b, chain[1:]])
    nodes, label = ray_global.components(a, b)
    assert dict(zip(nodes.tolist(), label.tolist(), strict=True)) == reference_components(a.tolist(), b.tolist())


def test_components_no_edges():
    nodes, label = ray_global.components(np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert len(nodes) == len(label) == 0


def test_band_partition_stable_and_even():
    rng = np.random.default_rng(3)
    bucket = rng.integers(-2**63, 2**63 - 1, 200_000, dtype=np.int64)
    band = rng.integers(0, 21, 200_000).astype(np.int16)
    p = ray_global.band_partition(band, bucket, 7)
    assert p.min() == 0 and p.max() == 6
    assert (ray_global.band_partition(band, bucket, 7) == p).all()
    counts = np.bincount(p, minlength=7)
    assert counts.min() > 0.95 * counts.mean()  # uniform buckets: partitions within 5% of each other
    # the same bucket in two bands is two keys (usually two partitions)
    same = ray_global.band_partition(np.array([0, 1], np.int16), np.array([42, 42], np.int64), 1 << 20)
    assert same[0] != same[1]


def test_sweep_removes_left_over_run_dirs(tmp_path):
    base = tmp_path / "parts" / ray_global.GLOBAL_DIR
    left = base / ".dedup_fuzzy-abc.tmp"
    (left / "bands").mkdir(parents=True)
    (left / "bands" / "m.parquet").write_bytes(b"x")
    other = base / "keep"
    other.mkdir()
    ray_global.sweep(str(base))
    assert not left.exists() and other.exists()


def test_signature_matrix_round_trip():
    sigs = np.arange(12, dtype=np.uint32).reshape(3, 4)
    blobs = pa.array([r.astype("<u4").tobytes() for r in sigs], pa.binary())
    assert (ray_global.signature_matrix(blobs, 4) == sigs).all()
    with pytest.raises(ValueError):
        ray_global.signature_matrix(blobs, 5)
