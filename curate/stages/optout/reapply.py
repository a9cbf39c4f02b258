"""Re-applying the opt-out registry (the sequence is `curate.core.pipeline.apply_optouts`): which documents'
matches changed, whether the stored decisions and manifest can be patched for them, and the diff naming,
for every document newly excluded or re-included, the entries that caused it."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from curate.core.db import one
from curate.stages.optout import registry
from curate.stages.optout.stage import matched_state

if TYPE_CHECKING:
    from curate.core.workspace import Workspace

DIFF = "optout_diff.parquet"
__all__ = ["DIFF", "ApplyReport", "apply", "matched_state", "registry"]


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
    from curate.core.pipeline import apply_optouts

    return apply_optouts(ws, rules=rules, out=out)


def snapshot_changed(con: duckdb.DuckDBPyConnection) -> None:
    """`_oo_before`: the documents whose matches the last match changed (`_oo_changes`), with their action
    before this application."""
    con.execute("""CREATE OR REPLACE TEMP TABLE _oo_before AS
                   SELECT c.doc_id, d.action FROM (SELECT DISTINCT doc_id FROM _oo_changes) c
                   LEFT JOIN decisions d USING (doc_id)""")


def decisions_cover(con: duckdb.DuckDBPyConnection, ruleset: Any) -> bool:
    """Whether re-deciding only the changed documents is enough: the stored decisions came from this rules
    file and cover every document, so nothing else can have changed."""
    last = one(con.execute("SELECT rules_sha256 FROM policy_runs ORDER BY decided_at DESC LIMIT 1"))
    n_docs, n_decided = one(con.execute("SELECT (SELECT count(*) FROM documents), (SELECT count(*) FROM decisions)"))
    return bool(last) and last[0] == ruleset.sha256 and n_docs == n_decided


def changes(con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Every document newly excluded or re-included, with the entries (and their kinds) behind the change."""
    return con.sql("""
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


def patchable_manifest(con: duckdb.DuckDBPyConnection, ws: Workspace, out_dir: str | os.PathLike[str] | None,
                       ruleset: Any,
                       before: registry.RegistryState | None) -> Path | None:
    """A manifest that can be patched: out_dir's, else the workspace's own, when it was written for the
    state just before this application (same rules, schema, documents, stage fingerprints and registry
    version); None means the manifest is written in full."""
    from curate.core.manifest import MANIFEST, RUN
    from curate.core.schema import SCHEMA_VERSION

    n_docs = one(con.execute("SELECT count(*) FROM documents"))[0]
    stages = dict(con.execute("""SELECT stage, list(DISTINCT fingerprint ORDER BY fingerprint)
                                 FROM stage_runs GROUP BY stage""").fetchall())
    for d in dict.fromkeys(([Path(out_dir)] if out_dir else []) + [ws.path / "manifest"]):
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


def report(before: registry.RegistryState | None, after: registry.RegistryState, diff: pa.Table, manifest: Any,
           seconds: dict[str, float], patched: dict[str, bool]) -> ApplyReport:
    """Write the diff next to the manifest and sum it up."""
    diff_path = Path(manifest.path) / DIFF
    pq.write_table(diff, diff_path, compression="zstd")
    kinds = diff.column("change").to_pylist()
    summary = {"excluded": kinds.count("excluded"), "re-included": kinds.count("re-included")}
    return ApplyReport(before, after, diff, summary, manifest, diff_path, seconds, patched)
