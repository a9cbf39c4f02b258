"""Shared fixtures: small shards written on the fly, and a workspace built from data/samples."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from s3server import s3  # noqa: F401  (the S3-compatible server fixture)

# Ray reads this once, when it is first imported, and without it rewrites 127.0.0.1 to the interface address
# before dialling (DESIGN.md). Tests that run stage actors' code in-process import Ray too: whichever test
# imports it first, the test cluster's loopback address must stay as given (a test order that imported it
# without this left a pytest process retrying the rewritten address after its last test, measured).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "data" / "samples"
CURATE = [sys.executable, "-m", "curate.cli"]

TEXTS = [
    "The quick brown fox jumps over the lazy dog. It was a bright cold day in April.",
    "Debian is a free operating system, developed and maintained by the Debian project.",
    "Permission is hereby granted, free of charge, to any person obtaining a copy of this software.",
    "This package provides a small command line tool to convert between file formats.",
    "A man page describes the options of a program, one paragraph per option.",
]


def v1_workspace(path: Path, *statements: str) -> Path:
    """A workspace as schema version 1 left it (before any migration), with `statements` run in it."""
    import duckdb

    from curate.core.schema import MIGRATIONS

    path.mkdir()
    con = duckdb.connect(str(path / "curate.duckdb"))
    for ddl in MIGRATIONS[0]:
        con.execute(ddl)
    con.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    for statement in statements:
        con.execute(statement)
    con.close()
    return path


def write_jsonl(path: Path, rows: list[dict] | list[bytes], compress: str | None = None) -> Path:
    body = b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)
    if compress == "gzip":
        body = gzip.compress(body, mtime=0)
    elif compress == "zstd":
        body = zstandard.ZstdCompressor().compress(body)
    path.write_bytes(body)
    return path


def doc(i: int, text: str | None = None, **extra) -> dict:
    return {"id": f"doc-{i}", "text": text if text is not None else f"{TEXTS[i % len(TEXTS)]} (copy {i})",
            "url": f"https://www.example.org/page/{i}", "meta": {"author": f"Author {i % 3}"}, **extra}


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    """A directory with one clean shard per format (12 documents, one exact duplicate)."""
    d = tmp_path / "shards"
    d.mkdir()
    write_jsonl(d / "a.jsonl", [doc(i) for i in range(4)])
    write_jsonl(d / "b.jsonl.gz", [doc(i) for i in range(4, 7)], "gzip")
    write_jsonl(d / "c.jsonl.zst", [doc(7), doc(8, text=doc(0)["text"].upper() + "  ")], "zstd")
    pq.write_table(pa.table({"id": ["doc-9", "doc-10"], "text": [TEXTS[1], TEXTS[2] + " parquet"],
                             "url": ["http://mirror.example.net/x", None],
                             "meta": ['{"html_meta": {"robots": "noai"}}', None]}), d / "d.parquet")
    (d / "e.csv").write_text('id,text,url,meta\ndoc-11,"A CSV row, with a comma",https://csv.example.com/1,\n')
    return d


@pytest.fixture
def ws(tmp_path: Path):
    from curate import Workspace

    return Workspace.init(tmp_path / "ws")


@pytest.fixture(scope="session")
def sample_ws(tmp_path_factory) -> Path:
    """A workspace with data/samples ingested and run once (shared, read it only)."""
    from curate import Workspace

    assert any(SAMPLES.glob("*.jsonl*")), "data/samples is empty: the committed samples are missing"
    path = tmp_path_factory.mktemp("sample") / "ws"
    w = Workspace.init(path)
    w.ingest([str(SAMPLES)])
    w.run(workers=int(os.environ.get("CURATE_TEST_WORKERS", "2")))
    return path


@pytest.fixture
def sample_copy(sample_ws: Path, tmp_path: Path) -> Path:
    """A private copy of the sample workspace that a test may change."""
    dst = tmp_path / "ws"
    shutil.copytree(sample_ws, dst)
    return dst


@pytest.fixture(scope="session")
def audit_ws(sample_ws: Path, tmp_path_factory) -> Path:
    """The sample workspace after two creators' opt-outs (`curate optout add` then `apply`, registry versions 1
    and 2), so that every stage's audit section has real rows: the report, card and validation tests read it
    (read it only)."""
    from curate import Workspace
    from curate.stages.optout import apply, registry

    path = tmp_path_factory.mktemp("audit") / "ws"
    shutil.copytree(sample_ws, path, symlinks=True)
    w = Workspace(path)
    registry.add(w, "domain", "www.gnu.org", "Free Software Foundation (test)", received_at="2026-11-01")
    apply(w)
    registry.add(w, "author", "Timo Aaltonen", "Timo Aaltonen (test)", received_at="2026-11-02")
    apply(w)
    return path


@pytest.fixture(scope="session")
def audit_pii_values(audit_ws: Path) -> set[str]:
    """The personal-data values the pii stage found in `audit_ws` (8+ characters, full names only, no bare
    numbers): none may appear in a report or a card."""
    import re

    import duckdb

    with duckdb.connect(str(audit_ws / "curate.duckdb"), read_only=True) as con:
        found = con.execute("""SELECT DISTINCT p.entity_type, substr(d.text, p."start" + 1, p."end" - p."start")
                               FROM pii_spans p JOIN documents d USING (doc_id)""").fetchall()
    return {v for kind, v in found if len(v) >= 8 and (kind != "PERSON" or " " in v.strip())
            and not re.fullmatch(r"[\d.\s]+", v)}


# -- killing a command at a point it has reached ------------------------------------------------------
def descendants(pid: int) -> set[int]:
    """Every process below `pid` (children, their children, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def alive(pids: set[int]) -> set[int]:
    """Those of `pids` still running (zombies count as gone)."""
    out = set()
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(p)
    return out


def run_until(args: list[str], event: str, timeout: float = 120, **match) -> tuple[subprocess.Popen, dict]:
    """Start `curate --log-format json ARGS` and read its events until `event` (with the `match` fields) is
    logged; returns the running process and that event. The command's work is then certainly under way."""
    proc = subprocess.Popen([*CURATE, "--log-format", "json", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + timeout
    for line in proc.stderr:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if e.get("event") == event and all(e.get(k) == v for k, v in match.items()):
            return proc, e
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"curate {' '.join(args)} ended or timed out before logging {event} {match}")
