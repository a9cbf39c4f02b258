"""The Ray engine on a real two-node cluster (tests/raycluster.py): the same manifest as the local engine, parts
published by the driver only, and faults (a worker killed, the driver killed, a stage raising on a batch)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from conftest import CURATE, ROOT, SAMPLES, alive, write_jsonl
from raycluster import ray_cluster  # noqa: F401  (the cluster fixture)

from curate import Workspace
from curate.core import parts
from curate.core.errors import ConfigError
from curate.core.executors.local import LocalExecutor
from curate.core.executors.ray import RayExecutor
from curate.core.runner import run_stage
from curate.core.stage import Detector

STAGES = "dedup_exact,dedup_fuzzy,optout,bias"  # the samples' stages here; all of them: README "Scale"
LOOPBACK = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


@pytest.fixture(scope="module")
def frozen_rules(tmp_path_factory) -> dict[str, str]:
    """A copy of the rules directory, so that both engines' runs read the same rules file."""
    d = tmp_path_factory.mktemp("rules") / "rules"
    shutil.copytree(ROOT / "rules", d, symlinks=False)
    return {"CURATE_RULES_DIR": str(d)}


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    """data/samples ingested, no stage run yet (copy it before running)."""
    ws = Workspace.init(tmp_path_factory.mktemp("ingested") / "ws")
    ws.ingest([str(SAMPLES)])
    return ws.path


def copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def curate(args: list[str], env: dict[str, str], check: bool = True, timeout: float = 300
           ) -> subprocess.CompletedProcess:
    done = subprocess.run([*CURATE, "--log-format", "json", "-vv", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout)
    if check and done.returncode:
        raise AssertionError(f"curate {' '.join(args)} exited {done.returncode}:\n{done.stderr[-4000:]}")
    return done


def events(stderr: str, name: str | None = None) -> list[dict]:
    out = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            e = json.loads(line)
            if name is None or e["event"] == name:
                out.append(e)
    return out


def manifest_bytes(ws: Path) -> bytes:
    return (ws / "manifest" / "manifest.parquet").read_bytes()


def root_hash(ws: Path) -> str:
    return (ws / "manifest" / "ROOT").read_text()


def assert_parts_clean(ws: Path) -> None:
    """Every file under WS/parts is a published part, and every published part's file exists."""
    import duckdb

    with duckdb.connect(str(ws / "curate.duckdb"), read_only=True) as con:
        known = {u for (u,) in con.execute("SELECT uri FROM stage_parts WHERE uri IS NOT NULL").fetchall()}
    files = {str(p) for p in (ws / "parts").rglob("*") if p.is_file()}
    assert files == known, (sorted(files - known)[:5], sorted(known - files)[:5])


@pytest.fixture(scope="module")
def local_samples(ingested: Path, frozen_rules, tmp_path_factory) -> Path:
    """The samples' reference: the local engine's run of STAGES."""
    ws = copy(ingested, tmp_path_factory.mktemp("local") / "ws")
    curate(["run", str(ws), "--workers", "2", "--stages", STAGES], frozen_rules)
    return ws


# -- the cluster itself ----------------------------------------------------------------------------------
NO_TOKEN: list[subprocess.Popen] = []  # a driver without the token, started first, read by the last test


def test_cluster_is_two_nodes_on_loopback(ray_cluster):  # noqa: F811
    """Both nodes joined, every process listens on loopback only (ss -ltn)."""
    NO_TOKEN.append(ray_cluster.driver_without_token())
    assert len(ray_cluster.nodes) == 2 and all(n.proc and n.proc.poll() is None for n in ray_cluster.nodes)
    ports = ray_cluster.listening()
    assert ports, "no listening socket found for the cluster's processes"
    assert ray_cluster.gcs_port in {p for _, p in ports}
    assert all(host in LOOPBACK or host.startswith("127.") for host, _ in ports), ports


# -- the same manifest ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_samples_same_manifest_on_two_nodes(ray_cluster, ingested, local_samples, frozen_rules,  # noqa: F811
                                            tmp_path):
    ws = copy(ingested, tmp_path / "ws")
    env = {**frozen_rules, **ray_cluster.driver_env()}
    done = curate(["run", str(ws), "--engine", "ray", "--ray-address", ray_cluster.address, "--stages", STAGES], env)
    assert manifest_bytes(ws) == manifest_bytes(local_samples)
    assert root_hash(ws) == root_hash(local_samples)
    # per-node throughput on the driver; both nodes worked, and every document was counted once
    ends = {e["stage"]: e for e in events(done.stderr, "stage_end")}
    nodes = {n for e in ends.values() for n in e.get("nodes", {})}
    assert len(nodes) == 2, ends
    for e in ends.values():
        assert sum(n["documents"] for n in e["nodes"].values()) == e["documents"] == 2240
    published = events(done.stderr, "part_published")
    assert published and all(p["bytes"] > 0 for p in published if p["rows"])
    # the policy and the manifest's rows ran as a task per shard (ray_policy), bias_terms read from the parts
    (policy,) = events(done.stderr, "policy")
    assert policy["engine"] == "tasks" and policy["tasks"] == policy["shards"] > 1, policy
    assert policy["from_parts"]["bias_terms"] == policy["shards"] and "dedup_exact" in policy["global"], policy
    assert_parts_clean(ws)
    # a rerun has nothing to do, and the engine can also come from the rules file's [engine]
    rules = Path(frozen_rules["CURATE_RULES_DIR"]) / "default.toml"
    engine_rules = tmp_path / "engine.toml"
    engine_rules.write_text(rules.read_text() + f'\n[engine]\nname = "ray"\naddress = "{ray_cluster.address}"\n')
    again = curate(["run", str(ws), "--stages", STAGES, "--rules", str(engine_rules)], env)
    assert not events(again.stderr, "part_published")
    redone = {e["stage"]: e["documents"] for e in events(again.stderr, "stage_end")}
    assert redone == dict.fromkeys(STAGES.split(","), 0)


def planted_corpus(d: Path, docs: int = 20_000, copies: int = 2_000) -> list[Path]:
    """`docs` documents of 300 words drawn from the samples' vocabulary (seeded), `copies` of them near copies of
    another (2 words replaced: shingle Jaccard ~0.93), in 4 shards."""
    import re

    words = sorted({w for p in SAMPLES.glob("*.jsonl") for w in re.findall(r"[a-z]{3,12}", p.read_text().lower())})
    rng = np.random.default_rng(7)
    texts: list[str] = []
    for _ in range(docs - copies):
        texts.append(" ".join(rng.choice(words, 300)))
    for _ in range(copies):
        w = texts[int(rng.integers(0, docs - copies))].split()
        for k in rng.choice(len(w), 2, replace=False):
            w[k] = str(rng.choice(words))
        texts.insert(int(rng.integers(0, len(texts) + 1)), " ".join(w))
    d.mkdir()
    out = []
    for s in range(4):
        rows = [{"id": f"p{i}", "text": texts[i]} for i in range(s * docs // 4, (s + 1) * docs // 4)]
        out.append(write_jsonl(d / f"shard{s}.jsonl", rows))
    return out


@pytest.mark.slow
def test_dedup_20k_planted_same_manifest(ray_cluster, frozen_rules, tmp_path):  # noqa: F811
    """Per-document work in actors and the global steps (candidates, verification, exact keepers) in tasks over
    partitions: the manifest byte for byte the local engine's."""
    shards = planted_corpus(tmp_path / "corpus")
    base = Workspace.init(tmp_path / "base")
    base.ingest([str(p) for p in shards])
    env = {**frozen_rules, **ray_cluster.driver_env()}
    local = copy(base.path, tmp_path / "local")
    curate(["run", str(local), "--workers", "2", "--stages", "dedup_exact,dedup_fuzzy"], frozen_rules)
    on_ray = copy(base.path, tmp_path / "ray")
    done = curate(["run", str(on_ray), "--engine", "ray", "--ray-address", ray_cluster.address,
                   "--stages", "dedup_exact,dedup_fuzzy"], env)
    assert manifest_bytes(on_ray) == manifest_bytes(local)
    # the set work ran as tasks on both nodes (ray_global), the signatures read from the workers' parts
    steps = {e["stage"]: e for e in events(done.stderr, "global_step")}
    fuzzy, exact = steps["dedup_fuzzy"], steps["dedup_exact"]
    assert fuzzy["partitions"] >= 2 and fuzzy["band_rows"] == 20_000 * 21, fuzzy
    assert fuzzy["signatures_exported"] == 0 and fuzzy["signature_parts"] == 4, fuzzy
    assert len(fuzzy["nodes"]) == 2 and fuzzy["near_pairs"] > 0, fuzzy
    assert exact["partitions"] >= 2 and exact["rows"] == 20_000, exact
    # the policy and the manifest's rows: a task per shard (short tasks: Ray may run all four on one node)
    (policy,) = events(done.stderr, "policy")
    assert policy["engine"] == "tasks" and policy["tasks"] == 4 and policy["nodes"], policy
    assert policy["exported"]["dedup_fuzzy"] == 4 and "dedup_exact" in policy["global"], policy
    dropped = Workspace(on_ray).sql("SELECT count(*) AS n FROM decisions WHERE list_contains(rule_ids, "
                                    "'near-duplicate')")["n"][0]
    assert dropped >= 1_900, dropped  # the planted copies were found (recall 0.998 at Jaccard 0.8)


# -- faults --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_driver_killed_then_rerun_converges(ray_cluster, ingested, local_samples, frozen_rules,  # noqa: F811
                                            tmp_path):
    ws = copy(ingested, tmp_path / "ws")
    env = {**os.environ, **frozen_rules, **ray_cluster.driver_env()}
    args = [*CURATE, "--log-format", "json", "-vv", "run", str(ws), "--engine", "ray", "--ray-address",
            ray_cluster.address, "--stages", STAGES]
    proc = subprocess.Popen(args, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    seen = []
    try:
        for line in proc.stderr:  # kill -9 once dedup_fuzzy (the third stage) has published a part
            if line.startswith("{"):
                e = json.loads(line)
                seen.append(e)
                if e["event"] == "part_published" and e["stage"] == "dedup_fuzzy":
                    proc.send_signal(signal.SIGKILL)
                    break
    finally:
        proc.kill()
        proc.wait()
    assert any(e["event"] == "part_published" and e["stage"] == "dedup_fuzzy" for e in seen), seen[-5:]
    assert not (ws / "manifest").exists()
    assert_parts_clean_or_unpublished(ws)
    done = curate(["run", str(ws), "--engine", "ray", "--ray-address", ray_cluster.address, "--stages", STAGES],
                  {**frozen_rules, **ray_cluster.driver_env()})
    assert manifest_bytes(ws) == manifest_bytes(local_samples)
    redone = [e for e in events(done.stderr, "part_published") if e["stage"] == "dedup_fuzzy"]
    assert len(redone) < 6  # the dedup_fuzzy units published before the kill were not redone
    assert_parts_clean(ws)


def assert_parts_clean_or_unpublished(ws: Path) -> None:
    """After a kill: every published part's file exists; other files are temporaries or unrecorded parts."""
    import duckdb

    with duckdb.connect(str(ws / "curate.duckdb"), read_only=True) as con:
        known = {u for (u,) in con.execute("SELECT uri FROM stage_parts WHERE uri IS NOT NULL").fetchall()}
    assert known and all(Path(u).is_file() for u in known)


class Probe(Detector):
    """A test stage: one row per document (its length), slow enough to be caught mid-stage, raising on every
    document whose text contains `Copyright (C) 2009` (a whole batch fails, then each document is retried)."""

    name = "ray_probe"
    tables = {"ray_probe": "CREATE TABLE ray_probe (doc_id VARCHAR NOT NULL, chars BIGINT NOT NULL)"}
    output = "ray_probe"

    def __call__(self, batch: pa.RecordBatch) -> pa.Table:
        # 6 ms a document: ~7 s on two 1-CPU nodes, a window the kill loop below cannot miss on a loaded machine
        # (at 2 ms it was missed in 2 of ~10 runs with the load average at 5)
        time.sleep(0.006 * batch.num_rows)
        texts = batch.column("text").to_pylist()
        if any("Copyright (C) 2009" in t for t in texts):
            raise ValueError("planted failure")
        return pa.table({"doc_id": batch.column("doc_id"), "chars": pa.array([len(t) for t in texts], pa.int64())})


def probe_result(ws: Path) -> tuple[list, list]:
    w = Workspace(ws)
    rows = w.sql("SELECT doc_id, chars FROM ray_probe ORDER BY doc_id").rows()
    errors = w.sql("SELECT doc_id, error FROM stage_errors WHERE stage = 'ray_probe' ORDER BY doc_id").rows()
    return rows, errors


@pytest.fixture(scope="module")
def probe_local(ingested: Path, tmp_path_factory) -> tuple[list, list]:
    ws = copy(ingested, tmp_path_factory.mktemp("probe") / "ws")
    with Workspace(ws).connect(write=True) as con:
        run_stage(con, Probe(), LocalExecutor(1))
    rows, errors = probe_result(ws)
    assert errors and rows and len(rows) + len(errors) == 2240
    return rows, errors


def worker_pids(cluster) -> list[int]:
    """The cluster's processes that run a curate stage actor (Ray names them after the actor class)."""
    out = []
    for pid in cluster.pids():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"StageWorker" in cmd:
            out.append(pid)
    return out


@pytest.mark.slow
def test_worker_killed_mid_stage_and_failing_batches(ray_cluster, ingested, probe_local, tmp_path,  # noqa: F811
                                                    monkeypatch):
    """A stage actor's process is killed while it works: Ray restarts it and retries the unit; the rows are
    those of the local engine, every document once, and the documents the stage raised on are in stage_errors
    as locally."""
    for k, v in ray_cluster.driver_env().items():
        monkeypatch.setenv(k, v)
    ws = copy(ingested, tmp_path / "ws")
    ex = RayExecutor(ray_cluster.address, str(ws / "parts"), unit_rows=100)
    outcome: dict = {}

    def run() -> None:
        try:
            with Workspace(ws).connect(write=True) as con:
                outcome["report"] = run_stage(con, Probe(), ex)
        except BaseException as e:  # noqa: BLE001
            outcome["error"] = e

    t = threading.Thread(target=run)
    t.start()
    killed = None
    try:
        deadline = time.monotonic() + 60
        while killed is None and t.is_alive() and time.monotonic() < deadline:
            pids = worker_pids(ray_cluster)
            published = len(list((ws / "parts" / "ray_probe").glob("*.parquet"))) if (ws / "parts").exists() else 0
            if pids and published >= 2:
                killed = pids[0]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.05)
        t.join(120)
    finally:
        ex.close()
    assert killed is not None, f"the stage ended before a worker could be killed: {outcome}"
    assert not alive({killed})
    assert "error" not in outcome, outcome
    assert outcome["report"].documents == 2240
    assert probe_result(ws) == probe_local
    assert_parts_clean(ws)


def test_parts_sweep_removes_only_unpublished(tmp_path):
    """A crash leaves a temporary, or a part moved into place but not recorded: the next run's sweep removes
    both and keeps the published part."""
    import duckdb

    root = str(tmp_path / "parts")
    con = duckdb.connect()
    parts.ensure_catalog(con)
    rows = pa.table({"doc_id": ["a", "b"], "chars": [1, 2]})
    unit = parts.Unit("s1", 0, 1, 2, 2)
    tmp, size = parts.write(root, "t", "s1", "fp", 0, rows)
    assert Path(tmp).name.startswith(".") and ".tmp-" in Path(tmp).name and size > 0
    parts.publish(con, "st", 1, "fp", parts.Written(unit, "t", tmp, 2, size))
    kept = parts.final_uri(tmp)
    crashed_tmp, _ = parts.write(root, "t", "s1", "fp", 1, rows)  # the worker wrote it, nobody published it
    moved, _ = parts.write(root, "t", "s1", "fp", 2, rows)
    os.replace(moved, parts.final_uri(moved))  # moved, then the driver died before recording it
    gone = parts.sweep(con, root, "t")
    assert sorted(gone) == sorted([crashed_tmp, parts.final_uri(moved)])
    assert [str(p) for p in (tmp_path / "parts" / "t").iterdir()] == [kept]
    assert parts.published(con, "st", 1, "fp", "s1") == {0: (1, 2)}


def test_engine_from_rules_file_checked(tmp_path):
    from curate.core.pipeline import engine_settings
    from curate.core.policy import load_rules

    base = (ROOT / "rules" / "default.toml").read_text()
    f = tmp_path / "r.toml"
    f.write_text(base + '\n[engine]\nname = "ray"\naddress = "127.0.0.1:1"\n')
    assert engine_settings(load_rules(f), None, None) == ("ray", "127.0.0.1:1")
    assert engine_settings(load_rules(f), "local", None) == ("local", "127.0.0.1:1")
    f.write_text(base + '\n[engine]\nname = "ray"\nworkers = 3\n')
    with pytest.raises(ConfigError, match="unknown setting"):
        engine_settings(load_rules(f), None, None)


def test_unreachable_cluster_is_one_line(ingested, frozen_rules, tmp_path):
    """--engine ray with an address nothing listens on: one line, exit 2, nothing written."""
    from raycluster import free_ports

    ws = copy(ingested, tmp_path / "ws")
    port = free_ports(1)[0]
    done = curate(["run", str(ws), "--engine", "ray", "--ray-address", f"127.0.0.1:{port}", "--stages",
                   "dedup_exact"], frozen_rules, check=False, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot join the Ray cluster" in done.stderr and "Traceback" not in done.stderr
    assert not (ws / "manifest").exists()



def test_driver_without_token_is_refused(ray_cluster):  # noqa: F811
    """Token auth is on: the driver started by the first test without the token was refused."""
    assert NO_TOKEN, "run with test_cluster_is_two_nodes_on_loopback"
    proc = NO_TOKEN.pop()
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert "REFUSED" in out and "JOINED" not in out, out[-2000:]
