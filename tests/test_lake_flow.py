"""The demo flow against a real S3 server (SeaweedFS on 127.0.0.1): shards read from s3://, manifest and export
written back to it, verified from it; the same data gives the same manifest root wherever it lives; faults."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import CURATE, SAMPLES, doc, write_jsonl

from curate import Workspace


@pytest.fixture
def lake_env(s3, monkeypatch):
    """The server's credentials and endpoint in this process's environment (as a user would set them)."""
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return s3


def upload(s3, local: Path, prefix: str) -> str:
    """Copy a local directory's files under s3://lake/<prefix>/; returns the prefix URI."""
    fs = s3.filesystem()
    for f in sorted(local.iterdir()):
        with open(f, "rb") as src, fs.open_output_stream(f"lake/{prefix}/{f.name}", compression=None) as dst:
            shutil.copyfileobj(src, dst)
    return f"s3://lake/{prefix}"


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CURATE, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def root_of(ws: Workspace) -> str:
    return json.loads((ws.path / "manifest" / "run.json").read_text())["manifest"]["root_hash"]


@pytest.mark.slow
def test_demo_flow_from_and_to_s3_gives_the_local_root(lake_env, tmp_path):
    s3 = lake_env
    prefix = upload(s3, SAMPLES, f"samples-{uuid.uuid4().hex[:8]}")
    # the same samples from two local directories and from the store
    copy = tmp_path / "elsewhere" / "samples"
    shutil.copytree(SAMPLES, copy)
    roots = []
    for i, source in enumerate([str(SAMPLES), str(copy), prefix]):  # a prefix: its shard files
        ws = Workspace.init(tmp_path / f"ws{i}")
        s = ws.ingest([source])
        assert {r.status for r in s.shards} <= {"ingested", "partial"} and len(s.shards) == 6
        ws.run(stages=["dedup_exact", "dedup_fuzzy", "optout", "licenses"], workers=1)
        roots.append(root_of(ws))
    assert roots[0] == roots[1] == roots[2]
    remote = Workspace(tmp_path / "ws2")
    uris = remote.sql("SELECT uri, etag FROM shards ORDER BY uri").rows()
    assert all(u.startswith(prefix + "/") and etag for u, etag in uris)
    # manifest and export to the store, verify from it (shards re-read from the store)
    release = f"{prefix}-releases/r7"
    assert cli("manifest", str(remote.path), "--out", release).returncode == 0
    v = cli("verify", release, "--workspace", str(remote.path), "--shards")
    assert v.returncode == 0, v.stdout + v.stderr
    e = cli("export", str(remote.path), "--out", f"{prefix}-export", "--format", "parquet",
            "--max-bytes", "2000000")
    assert e.returncode == 0, e.stderr
    fs = s3.filesystem()
    index = json.loads(fs.open_input_stream(f"{prefix[5:]}-export/export.json").read())
    assert len(index["files"]) >= 2
    rows = sum(pq.read_table(f"{prefix[5:]}-export/{f['file']}", filesystem=fs).num_rows for f in index["files"])
    assert rows == index["documents"] == remote.sql("SELECT count(*) FROM decisions WHERE action <> 'drop'").item()
    # run.json and logs carry no credential
    run = fs.open_input_stream(f"{release[5:]}/run.json").read().decode()
    assert s3.secret not in run and s3.key not in run and s3.secret not in v.stdout + v.stderr
    # a shard deleted from the store is a failure of verify --shards, found again by hash under --root
    gone = f"{prefix[5:]}/docs.csv"
    moved = f"{prefix[5:]}-moved/docs.csv"
    fs.copy_file(gone, moved)
    fs.delete_file(gone)
    v = cli("verify", release, "--shards")
    assert v.returncode == 1 and "docs.csv: not found" in v.stdout
    v = cli("verify", release, "--shards", "--root", f"{prefix}-moved")
    assert v.returncode == 0 and "found by its hash" in v.stdout


def test_shard_deleted_between_listing_and_reading_is_missing(lake_env, tmp_path, monkeypatch):
    s3 = lake_env
    d = tmp_path / "src"
    d.mkdir()
    for k in range(3):
        write_jsonl(d / f"p{k}.jsonl", [doc(k * 10 + i) for i in range(10)])
    prefix = upload(s3, d, f"del-{uuid.uuid4().hex[:8]}")
    from curate.io import ingest as ingest_module

    real = ingest_module.ingest_shard

    def delete_then_read(con, uri, *args, **kwargs):
        if uri.endswith("p1.jsonl"):
            s3.filesystem().delete_file(uri[5:])
        return real(con, uri, *args, **kwargs)

    monkeypatch.setattr(ingest_module, "ingest_shard", delete_then_read)
    ws = Workspace.init(tmp_path / "ws")
    s = ws.ingest([f"{prefix}/*.jsonl"])
    assert [r.status for r in s.shards] == ["ingested", "missing", "ingested"]
    assert ws.sql("SELECT status, error FROM shards WHERE uri LIKE '%p1.jsonl'").row(0) == ("missing", "not found")
    assert ws.sql("SELECT count(*) FROM documents").item() == 20


@pytest.mark.slow
def test_store_down_is_one_line_exit_2_and_a_restart_finishes_the_job(lake_env, tmp_path):
    s3 = lake_env
    d = tmp_path / "src"
    d.mkdir()
    for k in range(2):
        write_jsonl(d / f"p{k}.jsonl", [doc(k * 10 + i) for i in range(10)])
    prefix = upload(s3, d, f"down-{uuid.uuid4().hex[:8]}")
    ws = Workspace.init(tmp_path / "ws")
    s3.stop()
    try:
        r = cli("ingest", str(ws.path), f"{prefix}/*.jsonl")
    finally:
        s3.start()
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "unreachable" in lines[0] and "Traceback" not in r.stderr
    assert ws.sql("SELECT count(*) FROM shards").item() == 0
    r = cli("ingest", str(ws.path), f"{prefix}/*.jsonl")
    assert r.returncode == 0, r.stdout + r.stderr
    assert ws.sql("SELECT count(*), count(DISTINCT doc_id) FROM documents").row(0) == (20, 20)
