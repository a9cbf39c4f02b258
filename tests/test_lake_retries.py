"""Transient store errors are retried by curate.io.lake with backoff, and counted.

The faults are real: a proxy on 127.0.0.1 (s3server.FaultProxy) sits in front of the SeaweedFS server and
answers chosen requests with 503 SlowDown, or resets the connection (before the answer, or halfway through its
body). Every count below is checked against the requests the proxy saw, so a retry made out of curate's sight
(the AWS SDK's own) would show up as a mismatch.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
from conftest import CURATE, doc, write_jsonl
from s3server import FaultProxy

from curate import Workspace
from curate.io import lake
from curate.io.lake import Unreachable

DATA = bytes(range(256)) * 4096 * 3  # 3 MiB


@pytest.fixture
def proxy(s3, monkeypatch):
    """A fault-injecting proxy in front of the test server; the lake layer's endpoint points at it."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    with FaultProxy(s3.port) as p:
        for name, value in {**s3.env(), "AWS_ENDPOINT_URL_S3": p.endpoint}.items():
            monkeypatch.setenv(name, value)
        yield p


@pytest.fixture
def fast(monkeypatch):
    """Short waits between attempts: what is under test is that they happen and are counted."""
    monkeypatch.setattr(lake, "RETRY_BASE", 0.01)


@pytest.fixture
def prefix(proxy):
    return f"s3://lake/retries-{uuid.uuid4().hex[:12]}"


def failed(proxy: FaultProxy) -> list[tuple[str, str]]:
    """(method, fault) of each request the proxy failed."""
    return [(method, what) for method, _, what, _ in proxy.log if what != "ok"]


def injected(errors: dict[str, int]) -> dict[str, int]:
    """The retries by kind, less real timeouts: on a loaded machine a request now and then outlives the AWS SDK's
    3 s low-speed limit (measured: 1 clean export of 6 under load average 3.5 on 2 cores). Those are transient
    errors too, retried and counted as "timeout"; the tests compare the rest with the faults they injected."""
    return {k: n for k, n in errors.items() if k != "timeout"}


def unseen(proxy: FaultProxy) -> int:
    """Faults libcurl absorbed by resending on a new connection: resets, before any answer, of a reused one."""
    return sum(what == "reset" and reused for _, _, what, reused in proxy.log)


@pytest.mark.parametrize("fault", ["503", "reset", "reset-body"])
def test_a_read_is_retried_and_counted(fault, proxy, prefix, fast):
    uri = f"{prefix}/obj.bin"
    lake.write_atomic(uri, DATA)
    proxy.log.clear()
    proxy.fail("obj.bin", 2, fault, "GET")
    before = lake.retry_stats()
    with lake.counting() as counted:
        assert lake.sha256_and_size(uri) == (hashlib.sha256(DATA).hexdigest(), len(DATA))
    assert lake.retry_stats().since(before) == counted  # the process-wide count moved by as much
    assert failed(proxy) == [("GET", fault)] * 2
    kind = {"503": "HTTP 503", "reset": "connection reset", "reset-body": "connection reset"}[fault]
    # every fault is counted but those libcurl resent unseen (a reset before any answer, on a reused
    # connection: here the GET that follows the HEAD which opened the object, for "reset" only)
    assert unseen(proxy) == (fault == "reset")
    n = 2 - unseen(proxy)
    assert injected(counted.errors) == {kind: n} and counted.gave_up == 0
    # the SDK itself sent each failed request once (it is told to make one attempt): one GET per fault, then
    # the 3 MiB in one GET (an 8 MiB buffer); the HEADs are the open and the ETag check at the end
    gets = [what for method, _, what, _ in proxy.log if method == "GET"]
    assert gets == [fault, fault] + ["ok"] * (1 + counted.errors.get("timeout", 0)), proxy.log


def test_each_kind_of_request_is_retried(proxy, prefix, fast):
    """HEAD (stat), ListObjects (a glob), the upload's requests and the move's copy and delete."""
    lake.write_atomic(f"{prefix}/a.jsonl", b"{}\n")
    cases = [
        (lambda: lake.stat(f"{prefix}/a.jsonl").size == 3, "a.jsonl", "HEAD", "503", "HTTP 503"),
        (lambda: lake.expand([f"{prefix}/*.jsonl"]) == [f"{prefix}/a.jsonl"], "list-type=2", "GET", "503",
         "HTTP 503"),
        (lambda: lake.write_atomic(f"{prefix}/b.jsonl", b"b\n") is None, "partNumber=1", "PUT", "reset-body",
         "connection reset"),  # the part was stored, its answer lost: the upload is made again
        (lambda: lake.write_atomic(f"{prefix}/c.jsonl", b"c\n") is None, "c.jsonl.tmp-", "DELETE", "503",
         "HTTP 503"),
        (lambda: lake.write_atomic(f"{prefix}/d.jsonl", b"d\n") is None, "/d.jsonl", "PUT", "503", "HTTP 503"),
    ]
    for call, match, method, fault, kind in cases:
        proxy.fail(match, 1, fault, method)
        with lake.counting() as counted:
            assert call()
        assert injected(counted.errors) == {kind: 1} and counted.gave_up == 0, (match, proxy.log[-4:])
    assert proxy.faults() == len(cases)
    for name in "bcd":
        with lake.open_input(f"{prefix}/{name}.jsonl") as f:
            assert f.read() == f"{name}\n".encode()
    assert lake.expand([prefix]) == [f"{prefix}/{n}.jsonl" for n in "abcd"]  # no temporary left behind


def test_a_store_that_keeps_failing_gives_up_in_one_line(proxy, prefix, fast):
    uri = f"{prefix}/obj.bin"
    lake.write_atomic(uri, b"x")
    proxy.fail("obj.bin", 100, "503")
    before = lake.retry_stats()
    with pytest.raises(Unreachable) as e:
        lake.stat(uri)
    assert str(e.value).startswith(f"s3 endpoint {proxy.endpoint} unavailable: HTTP 503 on every attempt at {uri} "
                                   "(6 attempts over ")
    assert str(e.value).endswith(" s)") and "\n" not in str(e.value)
    after = lake.retry_stats()
    assert (after.retries - before.retries, after.gave_up - before.gave_up) == (lake.RETRY_ATTEMPTS - 1, 1)
    assert failed(proxy) == [("HEAD", "503")] * lake.RETRY_ATTEMPTS


def test_a_write_that_keeps_failing_publishes_nothing(proxy, prefix, fast):
    lake.write_atomic(f"{prefix}/keep.jsonl", b"old\n")
    proxy.fail("partNumber=", 100, "reset-body", "PUT")
    with pytest.raises(Unreachable, match=r"unreachable: Failure when receiving data from the peer \(6 attempts"):
        lake.write_atomic(f"{prefix}/keep.jsonl", b"new\n")
    proxy.rules.clear()
    with lake.open_input(f"{prefix}/keep.jsonl") as f:
        assert f.read() == b"old\n"
    assert lake.expand([prefix]) == [f"{prefix}/keep.jsonl"]


def test_retry_stats_arithmetic_and_words():
    a = lake.RetryStats(2, 0, {"HTTP 503": 2})
    b = lake.RetryStats(5, 1, {"HTTP 503": 3, "connection reset": 2})
    assert b.since(a) == lake.RetryStats(3, 1, {"HTTP 503": 1, "connection reset": 2})
    assert b.since(b) == lake.RetryStats() and lake.RetryStats().describe() == ""
    assert lake.RetryStats(1, 0, {"timeout": 1}).describe() == "1 transient store error retried (timeout: 1)"
    assert b.describe() == ("5 transient store errors retried (HTTP 503: 3, connection reset: 2); gave up on 1 "
                            "operation(s)")


def test_backoff_doubles_within_bounds(monkeypatch):
    monkeypatch.setattr(lake, "RETRY_BASE", 0.25)
    monkeypatch.setattr(lake, "RETRY_CAP", 8.0)
    for attempt, ceiling in [(1, 0.25), (2, 0.5), (3, 1.0), (5, 4.0), (6, 8.0), (9, 8.0)]:
        waits = [lake._backoff(attempt) for _ in range(200)]
        assert ceiling / 2 <= min(waits) and max(waits) <= ceiling


def test_transient_errors_are_told_apart():
    said = {
        "AWS Error SLOW_DOWN during GetObject operation: Please reduce your request rate.": "HTTP 503",
        "AWS Error UNKNOWN (HTTP status 503) during HeadObject operation: No response body.": "HTTP 503",
        "AWS Error SERVICE_UNAVAILABLE during GetObject operation: ": "HTTP 503",
        "AWS Error INTERNAL_FAILURE during GetObject operation: We encountered an internal error, please try again. "
        "(Request ID: 18ED6D22EB59BE3B5DF86DA2)": "internal error",  # SeaweedFS, just restarted
        "AWS Error UNKNOWN (HTTP status 502) during GetObject operation: No response body.": "HTTP 502",
        "AWS Error NETWORK_CONNECTION during GetObject operation: curlCode: 56, Failure when receiving data from "
        "the peer; Details: Recv failure: Connection reset by peer": "connection reset",
        "AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 7, Could not connect to server": (
            "connection refused"),
        "AWS Error NETWORK_CONNECTION during HeadObject operation: curlCode: 52, Server returned nothing": (
            "empty reply"),
        "AWS Error ACCESS_DENIED during HeadObject operation: Access Denied (HTTP status 403)": None,
        "AWS Error NO_SUCH_KEY during GetObject operation: The specified key does not exist.": None,
    }
    for message, kind in said.items():
        assert lake.transient(OSError(message)) == kind, message
    assert lake.transient(FileNotFoundError("curlCode: 7")) is None
    assert lake.transient(ValueError("HTTP status 503")) is None


def shards(tmp_path: Path) -> Path:
    d = tmp_path / "src"
    d.mkdir()
    write_jsonl(d / "p0.jsonl", [doc(i) for i in range(10)])
    write_jsonl(d / "p1.jsonl", [doc(10 + i) for i in range(10)])  # read by DuckDB through the store
    write_jsonl(d / "p2.jsonl.gz", [doc(20 + i) for i in range(10)], compress="gzip")  # read row by row
    return d


def upload(local: Path, prefix: str) -> None:
    for f in sorted(local.iterdir()):
        lake.write_atomic(f"{prefix}/{f.name}", f.read_bytes())


def test_ingest_rides_out_faults_and_counts_them(proxy, prefix, fast, tmp_path):
    upload(shards(tmp_path), prefix)
    proxy.log.clear()
    proxy.fail("p1.jsonl", 2, "503", "GET")  # DuckDB's ranged reads (and the hashing before them)
    proxy.fail("p2.jsonl.gz", 1, "reset-body", "GET")
    proxy.fail("p0.jsonl", 1, "503", "HEAD")
    ws = Workspace.init(tmp_path / "ws")
    with lake.counting() as counted:
        s = ws.ingest([f"{prefix}/*"])
    assert [(r.uri.rsplit("/", 1)[1], r.status, r.documents) for r in s.shards] == [
        ("p0.jsonl", "ingested", 10), ("p1.jsonl", "ingested", 10), ("p2.jsonl.gz", "ingested", 10)]
    assert injected(counted.errors) == {"HTTP 503": 3, "connection reset": 1} and proxy.faults() == 4
    assert ws.sql("SELECT count(*), count(DISTINCT doc_id) FROM documents").row(0) == (30, 30)
    assert injected(s.retried.errors) == injected(counted.errors)  # what ingest reports is what happened


def test_ingest_rides_out_a_server_restart(s3, monkeypatch, tmp_path):
    """No proxy: the server itself goes away between two shards and comes back; the backoff (real lengths)
    covers the restart, so the ingest finishes and the retries it took are counted."""
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    prefix = f"s3://lake/restart-{uuid.uuid4().hex[:12]}"
    upload(shards(tmp_path), prefix)
    from curate.io import ingest as ingest_module

    real = ingest_module.ingest_shard
    restarted = []

    def restart_then_read(con, uri, *args, **kwargs):
        if uri.endswith("p1.jsonl") and not restarted:
            s3.stop()
            restarted.append(threading.Thread(target=s3.start))
            restarted[0].start()
        return real(con, uri, *args, **kwargs)

    monkeypatch.setattr(ingest_module, "ingest_shard", restart_then_read)
    ws = Workspace.init(tmp_path / "ws")
    try:
        with lake.counting() as counted:
            s = ws.ingest([prefix])
    finally:
        restarted[0].join()
    assert [r.status for r in s.shards] == ["ingested"] * 3
    assert counted.retries >= 1 and counted.gave_up == 0
    # refused while it is down; then, measured now and then, "internal error" (a 500) for GETs while its volumes
    # re-register
    assert set(counted.errors) <= {"connection refused", "empty reply", "connection reset", "internal error"}
    assert ws.sql("SELECT count(*) FROM documents").item() == 30


def exported_workspace(tmp_path: Path) -> Workspace:
    d = tmp_path / "local"
    d.mkdir()
    write_jsonl(d / "a.jsonl", [doc(i) for i in range(40)])
    ws = Workspace.init(tmp_path / "ws")
    ws.ingest([str(d)])
    ws.run(stages=["dedup_exact"], workers=1)
    return ws


def test_export_rides_out_faults_and_counts_them(proxy, prefix, fast, tmp_path):
    ws = exported_workspace(tmp_path)
    clean = ws.export(f"{prefix}/clean", format="parquet")
    assert injected(clean.retried.errors) == {}
    proxy.fail("part-00000.parquet", 2, "503", "PUT")  # the temporary's upload, then the copy into place
    proxy.fail("export.json", 1, "reset-body", "PUT")
    s = ws.export(f"{prefix}/faulty", format="parquet")
    assert injected(s.retried.errors) == {"connection reset": 1, "HTTP 503": 2} and proxy.faults() == 3
    assert s.retried.retries == sum(s.retried.errors.values()) and s.retried.gave_up == 0
    if s.retried.retries == 3:
        assert s.retried.describe() == "3 transient store errors retried (HTTP 503: 2, connection reset: 1)"
    index = {}
    for name in ("clean", "faulty"):
        with lake.open_input(f"{prefix}/{name}/export.json") as f:
            index[name] = f.read()
    assert index["clean"] == index["faulty"]  # the retries are not in export.json: same documents, same bytes
    assert json.loads(index["faulty"])["documents"] == 40


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([*CURATE, *args], capture_output=True, text=True, timeout=600, env={**os.environ, **env})


def test_cli_reports_retries_in_the_json_log_and_a_store_down_in_one_line(proxy, prefix, tmp_path):
    """Real backoff lengths, in a fresh process each time."""
    ws = exported_workspace(tmp_path)
    env = {"AWS_ENDPOINT_URL_S3": proxy.endpoint}
    proxy.fail("part-00000.jsonl", 2, "503", "PUT")
    r = cli("--log-format", "json", "export", str(ws.path), "--out", f"{prefix}/out", env=env)
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    done = [e for e in events if e["event"] == "export"]
    assert len(done) == 1 and injected(done[0]["retry_errors"]) == {"HTTP 503": 2}
    assert done[0]["retries"] == sum(done[0]["retry_errors"].values())
    assert proxy.faults() == 2
    # a store that answers 503 to everything: one line, exit 2, after RETRY_ATTEMPTS attempts of the first
    # request (the HEAD that asks whether the glob names an object)
    proxy.log.clear()
    proxy.fail("/lake", 10_000, "503")
    r = cli("ingest", str(ws.path), f"{prefix}/out/*.jsonl", env=env)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"error: s3 endpoint {proxy.endpoint} unavailable: HTTP 503 on every attempt at "
                               f"{prefix}/out/*.jsonl ({lake.RETRY_ATTEMPTS} attempts over "), lines[0]
    assert len(proxy.log) == lake.RETRY_ATTEMPTS  # the SDK added none
    # and a store that resets every connection: the same, said as unreachable
    proxy.rules.clear()
    proxy.fail("/lake", 10_000, "reset")
    r = cli("ingest", str(ws.path), f"{prefix}/out/*.jsonl", env=env)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith(f"error: s3 endpoint {proxy.endpoint} unreachable: "), lines[0]


def test_the_filesystem_from_resolve_retries_for_pyarrow_and_duckdb_users(proxy, prefix, fast):
    """What curate.core.parts and DuckDB do with `resolve()`: a Parquet file written through the filesystem,
    sized, moved into place, read back by pyarrow and by DuckDB (through fsspec), each with a fault."""
    import duckdb
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, path = lake.resolve(f"{prefix}/part.parquet")
    table = pa.table({"id": [f"d{i}" for i in range(1000)], "n": list(range(1000))})
    proxy.fail(r"part\.parquet\.tmp\?partNumber", 1, "503", "PUT")  # the upload
    proxy.fail(r"part\.parquet\.tmp$", 1, "reset-body", "HEAD")  # get_file_info's HEAD
    proxy.fail(r"/part\.parquet$", 1, "503", "PUT")  # the move's copy
    with lake.counting() as counted:
        with fs.open_output_stream(path + ".tmp") as f:
            pq.write_table(table, f)
        size = fs.get_file_info(path + ".tmp").size
        fs.move(path + ".tmp", path)
    assert size > 0 and sum(injected(counted.errors).values()) == proxy.faults() == 3
    proxy.fail(r"/part\.parquet$", 2, "reset-body", "GET")
    with lake.counting() as counted:
        assert pq.read_table(path, filesystem=fs).equals(table)
    assert sum(injected(counted.errors).values()) == 2
    proxy.fail(r"/part\.parquet$", 2, "503", "GET")
    con = duckdb.connect()
    where = lake.duckdb_path(con, f"{prefix}/part.parquet")
    with lake.counting() as counted:
        assert con.sql(f"SELECT count(*), sum(n) FROM read_parquet('{where}')").fetchone() == (1000, 499500)
    assert sum(injected(counted.errors).values()) == 2 and proxy.faults() == 7


def test_manifest_to_the_store_rides_out_faults_and_counts_them(proxy, prefix, fast, tmp_path):
    ws = exported_workspace(tmp_path)
    clean = ws.manifest(f"{prefix}/r1")
    assert injected(clean.retried.errors) == {}
    proxy.fail("manifest.parquet", 1, "503", "PUT")
    proxy.fail("ROOT", 1, "reset-body", "PUT")
    m = ws.manifest(f"{prefix}/r2")
    assert injected(m.retried.errors) == {"HTTP 503": 1, "connection reset": 1} and proxy.faults() == 2
    assert m.root_hash == clean.root_hash  # the count is not in run.json: the same decisions, the same root
    for name in ("r1", "r2"):
        with lake.open_input(f"{prefix}/{name}/ROOT") as f:
            assert f.read().decode().strip() == clean.root_hash
