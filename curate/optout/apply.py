"""Re-apply the opt-out registry to a workspace: only the opt-out matches are recomputed (for the
entries added or revoked since the last application), then the policy, a new manifest, and a diff
naming, for every document newly excluded or re-included, the entries that caused it."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from ..db import one
from . import registry
from .stage import OptOut, matched_state

if TYPE_CHECKING:
    from ..workspace import Workspace

DIFF = "optout_diff.parquet"


@dataclass
class ApplyReport:
    before: registry.RegistryState | None  # the registry version the previous matches reflected
    after: registry.RegistryState
    diff: pa.Table  # doc_id, url, action_before, action_after, change, entries, kinds
    summary: dict[str, int]  # excluded / re-included counts
    manifest: Any
    diff_path: Path
    seconds: dict[str, float] = field(default_factory=dict)
    patched: dict[str, bool] = field(default_factory=dict)  # policy / manifest updated for changed documents only


def apply(ws: Workspace, rules: str | os.PathLike[str] | None = None,
          out: str | os.PathLike[str] | None = None) -> ApplyReport:
    """Match the registry's new entries and revocations, re-decide, write a manifest and its opt-out diff."""
    from ..manifest import write_manifest
    from ..policy import decide, load_rules
    from ..stages import run_stage

    ruleset = load_rules(rules)
    det = OptOut(ruleset.raw.get("stages", {}).get("optout", {}))
    out_dir = Path(out) if out else ws.path / "manifest"
    seconds: dict[str, float] = {}
    with ws.connect(write=True) as con:
        t = time.monotonic()
        before = matched_state(con)
        run_stage(con, det)  # new shards, if any, then the incremental match (finalize)
        after = registry.state(con)
        con.execute("""CREATE OR REPLACE TEMP TABLE _oo_before AS
                       SELECT c.doc_id, d.action FROM (SELECT DISTINCT doc_id FROM _oo_changes) c
                       LEFT JOIN decisions d USING (doc_id)""")
        seconds["match"] = time.monotonic() - t
        t = time.monotonic()
        patched = {"policy": _redecide(con, ruleset)}
        if not patched["policy"]:
            decide(ws, rules)
        seconds["policy"] = time.monotonic() - t
        diff = con.sql("""
            WITH changed AS (
                SELECT b.doc_id, b.action AS action_before, d.action AS action_after,
                       CASE WHEN d.action = 'drop' THEN 'excluded' ELSE 're-included' END AS change
                FROM _oo_before b JOIN decisions d USING (doc_id)
                WHERE (d.action = 'drop') <> (coalesce(b.action, '') = 'drop'))
            SELECT c.doc_id, x.url, c.action_before, c.action_after, c.change,
                   list(DISTINCT o.entry_id ORDER BY o.entry_id) AS entries,
                   list(DISTINCT e.kind ORDER BY e.kind) AS kinds
            FROM changed c JOIN documents x USING (doc_id)
            JOIN _oo_changes o ON o.doc_id = c.doc_id AND o.change = CASE c.change WHEN 'excluded' THEN '+' ELSE '-' END
            JOIN (SELECT DISTINCT entry_id, kind FROM optout_events) e USING (entry_id)
            GROUP BY ALL ORDER BY c.doc_id""").to_arrow_table()
        t = time.monotonic()
        base = _base(con, ws, out_dir, ruleset, before)
        patched["manifest"] = base is not None
        manifest = write_manifest(ws, out_dir, rules=rules, base=base, changed="_oo_before")
        seconds["manifest"] = time.monotonic() - t
        con.execute("DROP TABLE IF EXISTS _oo_before")
        con.execute("DROP TABLE IF EXISTS _oo_changes")
    diff_path = out_dir / DIFF
    pq.write_table(diff, diff_path, compression="zstd")
    changes = diff.column("change").to_pylist()
    summary = {"excluded": changes.count("excluded"), "re-included": changes.count("re-included")}
    return ApplyReport(before, after, diff, summary, manifest, diff_path, seconds, patched)


def _redecide(con: duckdb.DuckDBPyConnection, ruleset: Any) -> bool:
    """Re-decide only the documents whose opt-out matches changed (_oo_before). Valid when the stored
    decisions came from this rules file and cover every document: then nothing else can have changed.
    Returns False when a full `decide` is needed."""
    from ..policy import build_signals_view, decisions_sql

    last = one(con.execute("SELECT rules_sha256 FROM policy_runs ORDER BY decided_at DESC LIMIT 1"))
    n_docs, n_decided = one(con.execute("SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM decisions)"))
    if not last or last[0] != ruleset.sha256 or n_docs != n_decided:
        return False
    build_signals_view(con, ruleset.raw)  # the `signals` view analysts query stays current
    sql = decisions_sql(ruleset, build_signals_view(con, ruleset.raw, only="_oo_before"), source="signals_subset")
    con.execute("BEGIN")
    try:
        con.execute("DELETE FROM decisions WHERE doc_id IN (SELECT doc_id FROM _oo_before)")
        con.execute(f"INSERT INTO decisions {sql}")
        con.execute("INSERT INTO policy_runs VALUES (?, ?, now()::TIMESTAMP)", [ruleset.sha256, str(ruleset.path)])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("DROP VIEW IF EXISTS signals_subset")
    return True


def _base(con: duckdb.DuckDBPyConnection, ws: Workspace, out_dir: Path, ruleset: Any,
          before: registry.RegistryState | None) -> Path | None:
    """A manifest that can be patched: out_dir's, else the workspace's own, when it was written for the
    state just before this application (same rules, schema, documents, stage fingerprints and registry
    version); None means the manifest is written in full."""
    from ..manifest import MANIFEST, RUN
    from ..schema import SCHEMA_VERSION

    n_docs = one(con.execute("SELECT count(*) FROM documents"))[0]
    stages = dict(con.execute("""SELECT stage, list(DISTINCT fingerprint ORDER BY fingerprint)
                                 FROM stage_runs GROUP BY stage""").fetchall())
    for d in dict.fromkeys([out_dir, ws.path / "manifest"]):
        try:
            run = json.loads((d / RUN).read_text())
        except (OSError, ValueError):
            continue
        versions = [a.get("version") for s in run.get("stages", []) if s.get("name") == "optout"
                    for a in s.get("assets", []) if a.get("kind") == "optout-registry"]
        if ((d / MANIFEST).exists() and run.get("rules", {}).get("sha256") == ruleset.sha256
                and run.get("schema_version") == SCHEMA_VERSION and run.get("manifest", {}).get("rows") == n_docs
                and {s.get("name"): s.get("fingerprints") for s in run.get("stages", [])} == stages
                and versions == [str(before.version if before else 0)]):
            return d
    return None
