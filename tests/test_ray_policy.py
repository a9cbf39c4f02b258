"""The policy and the manifest's rows per shard (curate/core/executors/ray_policy.py): the same decisions row for
row and the same manifest byte for byte as the local engine, with the shards' rows from the parts the workers
wrote, from files the driver exports (shards a local run processed), and from whole tables (dedup_exact). Without
a cluster: the Ray actors' code (`StageWorker.run`) and the tasks run in this process (`InProcess`);
tests/test_ray.py runs them on a real two-node cluster."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from conftest import ROOT, SAMPLES, write_jsonl

from curate import Workspace
from curate.core import pipeline
from curate.core.executors import ray_global, ray_policy
from curate.core.executors.ray import BATCH_ROWS, StageWorker
from curate.util import log

STAGES = ["dedup_exact", "dedup_fuzzy", "optout", "bias", "quality", "licenses", "brands"]


class RayHere:
    """The Ray executor's parts, global steps and policy step, with the actors' and tasks' code called in this
    process: the runner's parts path and the pipeline's hooks without a cluster."""

    name = "ray-here"
    writes_parts = True

    def __init__(self, parts_root: str, unit_rows: int = 300):
        self.parts_root, self.unit_rows = parts_root, unit_rows
        self.policies = 0

    def prepare(self, dets, work) -> None:
        pass

    def session(self, det, docs, chars):
        return _Session(self, det)

    def global_step(self, det):
        return ray_global.step_for(det, ray_global.InProcess(2), self.parts_root, 2)

    def policy_step(self, con, ruleset, root=None):
        self.policies += 1
        return ray_policy.policy_step(con, ruleset, ray_global.InProcess(2), self.parts_root, root)


class _Session:
    writes_parts = True

    def __init__(self, ex: RayHere, det):
        self.ex, self.det = ex, det
        self.worker = StageWorker.__new__(StageWorker)  # the actor's code, without Ray's runtime context
        self.worker.det, self.worker.root, self.worker.node = det, ex.parts_root, "here/0"

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
            table, unit.table = unit.table, None
            yield key, unit, self.worker.run(unit, table, fp, BATCH_ROWS)


def run_here(ws: Path, monkeypatch, stages=None, rules=None, root=None) -> tuple[RayHere, list[dict]]:
    ex = RayHere(str(ws / "parts"))
    seen: list[dict] = []
    with monkeypatch.context() as m:
        m.setattr(pipeline, "make_executor", lambda *a, **k: ex)
        m.setattr(log, "event", lambda name, *a, **kw: seen.append({"event": name, **kw}))
        pipeline.run(Workspace(ws), stages=stages, rules=rules, root=root, workers=1)
    return ex, seen


def run_local(ws: Path, stages=None, rules=None, root=None) -> None:
    pipeline.run(Workspace(ws), stages=stages, rules=rules, root=root, workers=1)


def decisions(ws: Path) -> list[tuple]:
    with duckdb.connect(str(ws / "curate.duckdb"), read_only=True) as con:
        return con.execute("SELECT * FROM decisions ORDER BY doc_id").fetchall()


def manifest(ws: Path) -> bytes:
    return (ws / "manifest" / "manifest.parquet").read_bytes()


def policy_event(seen: list[dict]) -> dict:
    (e,) = [e for e in seen if e["event"] == "policy"]
    return e


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, Path]:
    """data/samples ingested, and the local engine's run of STAGES on a copy."""
    d = tmp_path_factory.mktemp("samples")
    base = Workspace.init(d / "base")
    base.ingest([str(SAMPLES)])
    shutil.copytree(base.path, d / "local")
    run_local(d / "local", STAGES)
    return {"base": base.path, "local": d / "local"}


def test_samples_same_decisions_and_manifest(samples, tmp_path, monkeypatch):
    """Every shard's signals from its parts (quality, licenses, bias_terms, brands), the rest exported per shard
    (bias_docs, optout_signals, dedup_fuzzy) or whole (dedup_exact): the decisions and the manifest as local."""
    ws = shutil.copytree(samples["base"], tmp_path / "ws")
    ex, seen = run_here(ws, monkeypatch, STAGES)
    assert ex.policies == 1
    assert decisions(ws) == decisions(samples["local"])
    assert manifest(ws) == manifest(samples["local"])
    e = policy_event(seen)
    shards = e["shards"]
    assert e["engine"] == "tasks" and e["tasks"] == shards > 1
    for table in ("quality", "license_signals", "bias_terms"):
        assert e["from_parts"][table] == shards and e["exported"][table] == 0, (table, e)
    assert e["exported"]["dedup_fuzzy"] == e["exported"]["stage_errors"] == shards
    assert "dedup_exact" in e["global"] and "dedup_fuzzy" not in e["global"]
    assert not list((ws / "parts" / ray_global.GLOBAL_DIR).iterdir())  # the policy's files are gone


def test_mixed_sources_same_manifest(samples, tmp_path, monkeypatch):
    """Shards a local run processed have no parts: the driver exports their rows; the later shards' come from
    parts. Decisions and manifest as the local engine's after the same two runs."""
    files = sorted(p for p in SAMPLES.iterdir() if p.name != "README.md")
    a = Workspace.init(tmp_path / "a")
    a.ingest([str(p) for p in files[:3]])
    run_local(a.path, STAGES)
    b = Workspace(shutil.copytree(a.path, tmp_path / "b"))
    for w in (a, b):
        w.ingest([str(p) for p in files[3:]])
    run_local(a.path, STAGES)
    _, seen = run_here(b.path, monkeypatch, STAGES)
    e = policy_event(seen)
    assert 0 < e["from_parts"]["quality"] < e["shards"] and e["exported"]["quality"] == 3, e
    assert decisions(b.path) == decisions(a.path)
    assert manifest(b.path) == manifest(a.path)


PII_TEXTS = [
    "Please contact Maria Gonzalez at maria.gonzalez@example.org or call 415-555-0134 about the invoice.",
    "The meeting notes were sent by John Smith (john.smith@example.com) to the whole planning team.",
    "Our office at 1600 Amphitheatre Parkway is closed on Monday; write to help@example.net instead.",
    "The river rose after three days of rain, and the old bridge was closed to traffic until spring.",
    "Card 4111 1111 1111 1111 was charged twice; the customer, Ahmed Khan, asked for a refund by phone.",
    "A recipe for bread: flour, water, salt and yeast, kneaded for ten minutes and left to rise overnight.",
    "Reach Dr. Emily Chen on +44 20 7946 0958 or emily.chen@example.co.uk for the lab results.",
    "The committee approved the budget for the new library wing after a long debate on Thursday evening.",
]


@pytest.fixture(scope="module")
def pii_corpus(tmp_path_factory) -> list[Path]:
    """Three shards of short documents, half of them with personal data (emails, phones, names)."""
    d = tmp_path_factory.mktemp("pii")
    out = []
    for s in range(3):
        rows = [{"id": f"s{s}-{i}", "text": f"{PII_TEXTS[(i + s) % len(PII_TEXTS)]} Entry {s * 100 + i}."}
                for i in range(40)]
        out.append(write_jsonl(d / f"shard{s}.jsonl", rows))
    return out


def test_redacted_outputs_and_relative_uris(pii_corpus, tmp_path, monkeypatch):
    """`redact` documents with spans (their redacted texts hashed in the second round) and without (a rule
    redacting on length alone: the text unchanged), shard URIs relative to a root: the manifest byte for byte."""
    rules = tmp_path / "rules.toml"
    rules.write_text((ROOT / "rules" / "default.toml").read_text() + """
[[rules]]
id = "test-redact-long"
version = "1"
description = "redact long documents (no span: the text stays)"
when = "coalesce(pii_redact_spans, 0) = 0 AND text_chars % 2 = 0"
action = "redact"
""")
    base = Workspace.init(tmp_path / "base")
    base.ingest([str(p) for p in pii_corpus])
    stages = ["pii", "quality", "dedup_exact"]
    a, b = shutil.copytree(base.path, tmp_path / "a"), shutil.copytree(base.path, tmp_path / "b")
    root = str(pii_corpus[0].parent)
    run_local(a, stages, rules, root)
    _, seen = run_here(b, monkeypatch, stages, rules, root)
    assert decisions(b) == decisions(a)
    assert manifest(b) == manifest(a)
    rows = pq.read_table(b / "manifest" / "manifest.parquet").to_pylist()
    redacted = [r for r in rows if r["action"] == "redact"]
    with_spans = [r for r in redacted if r["redactions"]]
    assert with_spans and all(r["output_sha256"] != r["input_sha256"] for r in with_spans)
    plain = [r for r in redacted if not r["redactions"]]
    assert plain and all(r["output_sha256"] == r["input_sha256"] for r in plain)
    assert all(not r["shard_uri"].startswith("/") for r in rows)
    e = policy_event(seen)
    assert e["redacted_rows"] == len(with_spans)
    assert e["from_parts"]["pii_spans"] == 3 and e["exported"]["pii_docs"] == 3
    json.dumps(e)  # the event's fields are plain JSON


def test_signal_tables_read_after_from_or_join():
    """The tables a task needs: those the SQL reads, not a column of the same name (`d.meta` is not `meta`)."""
    con = duckdb.connect()
    for t in ("meta", "stage_runs", "quality", "documents", "dedup_exact", "unused"):
        con.execute(f"CREATE TABLE {t} (a INTEGER)")
    sql = """SELECT d.meta FROM documents d JOIN "quality" q USING (a) LEFT JOIN (SELECT * FROM dedup_exact) x
             WHERE d.shard_id IN (SELECT shard_id FROM main.stage_runs) AND unused_column = 1"""
    assert ray_policy.signal_tables(con, sql) == ["dedup_exact", "quality", "stage_runs"]


def test_cluster_across_shards_read_whole(tmp_path, monkeypatch):
    """A rule on `exact_copies` (dedup_exact's signals count a cluster's members in every shard): the copies of a
    text in two shards are counted in each shard's task as on the driver, since dedup_exact is read whole."""
    rules = tmp_path / "rules.toml"
    rules.write_text((ROOT / "rules" / "default.toml").read_text() + """
[[rules]]
id = "test-copies"
version = "1"
description = "a text with copies"
when = "exact_copies > 1"
action = "flag"
""")
    shards = [write_jsonl(tmp_path / f"s{s}.jsonl", [{"id": f"s{s}-{i}", "text": PII_TEXTS[3 + i * 2]
                                                      if i < 3 else f"{PII_TEXTS[3]} Note {s}-{i}."}
                                                     for i in range(12)]) for s in range(2)]
    base = Workspace.init(tmp_path / "base")
    base.ingest([str(p) for p in shards])
    a, b = shutil.copytree(base.path, tmp_path / "a"), shutil.copytree(base.path, tmp_path / "b")
    run_local(a, ["dedup_exact"], rules)
    run_here(b, monkeypatch, ["dedup_exact"], rules)
    flagged = [d for d in decisions(b) if "test-copies" in d[2]]
    assert len(flagged) == 6  # 3 texts, once in each shard
    assert decisions(b) == decisions(a)
    assert manifest(b) == manifest(a)
