"""Disk full: a clear one-line error, the workspace still opens, and the rerun completes once space is freed
(a small tmpfs holds the workspace)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from conftest import CURATE, doc, write_jsonl

from curate import Workspace


@pytest.fixture
def small_disk(tmp_path):
    """A 40 MB tmpfs mounted for the test and unmounted whatever happens (needs root, as CI and the tests run)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    d = tmp_path / "small"
    d.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(d)], check=True)
    try:
        yield d
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_rerun_completes_after_freeing_space(small_disk, tmp_path):
    shard = write_jsonl(tmp_path / "big.jsonl", [doc(i, text=f"lorem ipsum dolor sit amet {i} " * 20)
                                                 for i in range(20000)])
    ws = small_disk / "ws"
    assert subprocess.run([*CURATE, "init", str(ws)], capture_output=True).returncode == 0
    free = shutil.disk_usage(small_disk).free
    filler = small_disk / "filler"
    with open(filler, "wb") as f:  # leave 3 MB: the shard's documents do not fit
        f.truncate(free - 3 * 1024 * 1024)
        os.posix_fallocate(f.fileno(), 0, free - 3 * 1024 * 1024)
    r = subprocess.run([*CURATE, "ingest", str(ws), str(shard)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.strip() and not x.startswith("20")]  # event lines start with ts
    assert len(lines) == 1 and "no space left on the device" in lines[0] and "Traceback" not in r.stderr
    assert Workspace(ws).sql("SELECT count(*) FROM documents").item() == 0  # it opens; nothing half-written
    filler.unlink()
    r = subprocess.run([*CURATE, "ingest", str(ws), str(shard)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    w = Workspace(ws)
    assert w.sql("SELECT count(*), count(DISTINCT doc_id) FROM documents").row(0) == (20000, 20000)
    assert w.sql("SELECT status FROM shards").item() == "ok"
