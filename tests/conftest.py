"""Shared fixtures: small shards written on the fly, and a workspace built from data/samples."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

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

    if not any(SAMPLES.glob("*.jsonl*")):
        pytest.skip("data/samples is empty")
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
def full_ws(sample_ws: Path, tmp_path_factory) -> Path:
    """The sample workspace with every DESIGN.md signal table filled (tests/surface_data.py); read it only."""
    from surface_data import plant_signals

    path = tmp_path_factory.mktemp("full") / "ws"
    shutil.copytree(sample_ws, path)
    plant_signals(path)
    return path
