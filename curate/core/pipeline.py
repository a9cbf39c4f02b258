"""The pipeline: the one place that chains stages -> policy -> manifest, and the one writer of `decisions`.

Three entry points share it:
- `run`: every enabled stage (or those named) on what it has not seen, then the policy, then the manifest;
- `dedup`: the two duplicate stages (and near copies of reference workspaces), then the policy;
- `apply_optouts`: the opt-out stage's incremental match, then the policy for the documents whose matches
  changed, then a manifest patched for them, and the opt-out diff.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import duckdb

from curate.core.db import one
from curate.core.errors import ConfigError
from curate.core.executors import executor as make_executor
from curate.core.policy import Ruleset, build_signals_view, check_rules, decisions_sql, load_rules
from curate.core.runner import StageReport, pending_totals, run_stage
from curate.core.schema import ensure_stage_tables
from curate.core.stage import detectors
from curate.util import log

if TYPE_CHECKING:
    from curate.core.workspace import Workspace


@dataclass
class DecideSummary:
    rules: Ruleset
    by_action: dict[str, int]
    by_rule: dict[str, int]


def write_decisions(con: duckdb.DuckDBPyConnection, ruleset: Ruleset, subset: str | None = None) -> DecideSummary:
    """Replace `decisions` with the policy's verdict, in one transaction: on every document, or (`subset`, a
    table of doc_ids) on those alone, when nothing else can have changed since the last decision."""
    started = time.monotonic()
    columns = build_signals_view(con, ruleset.raw)  # the `signals` view analysts query stays current
    if subset is not None:
        columns = build_signals_view(con, ruleset.raw, only=subset)
    sql = decisions_sql(ruleset, columns, source="signals" if subset is None else "signals_subset")
    delete = None if subset is None else f"doc_id IN (SELECT doc_id FROM {subset})"
    summary = replace_decisions(con, ruleset, lambda: con.execute(f"INSERT INTO decisions {sql}"), delete)
    con.execute("DROP VIEW IF EXISTS signals_subset")
    log.event("policy", rules=str(ruleset.path), rules_sha256=ruleset.sha256, subset=subset is not None,
              by_action=summary.by_action, seconds=round(time.monotonic() - started, 3))
    return summary


def replace_decisions(con: duckdb.DuckDBPyConnection, ruleset: Ruleset, fill: Callable[[], object],
                      where: str | None = None) -> DecideSummary:
    """In one transaction: delete the decisions (all, or those matching `where`), `fill()` inserts the new ones,
    check one decision per document and record the policy run. Every engine's policy ends here."""
    con.execute("BEGIN")
    try:
        con.execute("DELETE FROM decisions" + (f" WHERE {where}" if where else ""))
        fill()
        n_docs, n_dec, n_rows = one(con.execute(
            "SELECT (SELECT count(*) FROM documents), (SELECT count(DISTINCT doc_id) FROM decisions), "
            "(SELECT count(*) FROM decisions)"))
        if not n_docs == n_dec == n_rows:
            raise RuntimeError("the signals view does not give one row per document: a stage's signals "
                               "query must group by doc_id")
        con.execute("INSERT INTO policy_runs VALUES (?, ?, now()::TIMESTAMP)", [ruleset.sha256, str(ruleset.path)])
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    by_action = dict(con.execute("SELECT action, count(*) FROM decisions GROUP BY 1 ORDER BY 1").fetchall())
    by_rule = dict(con.execute(
        "SELECT r, count(*) FROM (SELECT unnest(rule_ids) AS r FROM decisions) GROUP BY 1 ORDER BY 1").fetchall())
    return DecideSummary(ruleset, by_action, by_rule)


def decide(ws: Workspace, rules: str | os.PathLike[str] | None = None) -> DecideSummary:
    """Re-run only the policy over the stored signals."""
    ruleset = load_rules(rules)
    with ws.connect(write=True) as con:
        check_rules(con, ruleset)
        return write_decisions(con, ruleset)


@dataclass
class RunSummary:
    stages: list[StageReport] = field(default_factory=list)
    decisions: DecideSummary | None = None
    manifest: Any = None


def engine_settings(ruleset: Ruleset, engine: str | None, address: str | None) -> tuple[str, str | None]:
    """(engine, address): the arguments, else the rules file's `[engine]` (name, address), else local."""
    section = ruleset.raw.get("engine", {})
    where = f"{ruleset.path}: [engine]"
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a table (name = \"ray\", address = \"host:port\")")
    unknown = sorted(set(section) - {"name", "address"})
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: address, name")
    for key in ("name", "address"):
        if key in section and not isinstance(section[key], str):
            raise ConfigError(f"{where}: {key} = {section[key]!r} is not a string")
    return engine or section.get("name") or "local", address or section.get("address")


def run(ws: Workspace, stages: Sequence[str] | None = None, rules: str | os.PathLike[str] | None = None,
        workers: int | None = None, manifest: str | os.PathLike[str] | None = None, progress: bool = False,
        engine: str | None = None, name: str | None = None, root: str | None = None,
        ray_address: str | None = None) -> RunSummary:
    """Run the detectors over documents they have not seen, then the policy, then the manifest. `engine`
    (`local` or `ray`, with `ray_address`) is where per-document work runs; default: the rules file's
    `[engine]`, else local. The manifest is the same whichever engine ran."""
    from curate.core.manifest import write_manifest

    ruleset = load_rules(rules)
    summary = RunSummary()
    rows = None  # the manifest's rows, when the executor's policy step computed them
    engine, ray_address = engine_settings(ruleset, engine, ray_address)
    executor = make_executor(engine, workers, address=ray_address, parts_root=str(ws.path / "parts"))
    try:
        with ws.connect(write=True) as con:
            dets = detectors(ruleset.raw, stages, source=str(ruleset.path))
            for det in dets:
                ensure_stage_tables(con, det.name, det.schema_version, list(det.tables.values()), list(det.tables))
            check_rules(con, ruleset)  # a rule that cannot be used fails now, before any detector runs
            executor.prepare(dets, {det.name: pending_totals(con, det) for det in dets})
            for det in dets:
                summary.stages.append(run_stage(con, det, executor, progress=progress))
            # The executor's distributed policy when it has one (Ray: a task per shard gives its decisions and
            # manifest rows), else the policy on this connection and the manifest's rows from the workspace.
            policy_step = getattr(executor, "policy_step", None)
            if policy_step is not None:
                summary.decisions, rows = policy_step(con, ruleset, root)
            else:
                summary.decisions = write_decisions(con, ruleset)
    finally:
        close = getattr(executor, "close", None)
        if close is not None:
            close()
    summary.manifest = write_manifest(ws, manifest, name=name, root=root, rows=rows)
    return summary


@dataclass
class DedupSummary:
    stages: list[StageReport] = field(default_factory=list)
    clusters: int = 0
    clustered: int = 0  # documents in clusters of 2 or more
    duplicates: int = 0  # of them, not the keeper
    against: dict[str, int] = field(default_factory=dict)  # reference workspace -> documents matching it
    decisions: DecideSummary | None = None


def dedup(ws: Workspace, against: Sequence[str | os.PathLike[str]] = (), rules: str | os.PathLike[str] | None = None,
          workers: int | None = None, progress: bool = False) -> DedupSummary:
    """Run exact and near-duplicate detection on what they have not seen, mark documents that near-copy a
    reference workspace (read-only), then re-apply the policy."""
    ruleset = load_rules(rules)
    summary = DedupSummary()
    executor = make_executor("local", workers)
    with ws.connect(write=True) as con:
        for det in detectors(ruleset.raw, ["dedup_exact", "dedup_fuzzy"], source=str(ruleset.path)):
            summary.stages.append(run_stage(con, det, executor, progress=progress))
            if det.name == "dedup_fuzzy":
                for ref in against:
                    summary.against[str(ref)] = det.match_against(con, ref)
        summary.clusters, summary.clustered, summary.duplicates = one(con.execute(
            "SELECT count(DISTINCT cluster_id), count(*), count(*) FILTER (NOT is_keeper) FROM dedup_fuzzy"))
        summary.decisions = write_decisions(con, ruleset)
    return summary


def apply_optouts(ws: Workspace, rules: str | os.PathLike[str] | None = None,
                  out: str | os.PathLike[str] | None = None):
    """Match the registry's new entries and revocations, re-decide the documents whose matches changed,
    write a manifest (patched when one for the state just before exists) and its opt-out diff."""
    from curate.core.manifest import write_manifest
    from curate.stages.optout import reapply as oo

    ruleset = load_rules(rules)
    det = detectors(ruleset.raw, ["optout"], source=str(ruleset.path))[0]
    seconds: dict[str, float] = {}
    with ws.connect(write=True) as con:
        t = time.monotonic()
        before = oo.matched_state(con)
        run_stage(con, det)  # new shards, if any, then the incremental match (finalize)
        after = oo.registry.state(con)
        oo.snapshot_changed(con)
        seconds["match"] = time.monotonic() - t
        t = time.monotonic()
        patched = {"policy": oo.decisions_cover(con, ruleset)}
        write_decisions(con, ruleset, subset="_oo_before" if patched["policy"] else None)
        seconds["policy"] = time.monotonic() - t
        diff = oo.changes(con)
        t = time.monotonic()
        base = oo.patchable_manifest(con, ws, out, ruleset, before)
        patched["manifest"] = base is not None
        manifest = write_manifest(ws, out, base=base, changed="_oo_before")
        seconds["manifest"] = time.monotonic() - t
        con.execute("DROP TABLE IF EXISTS _oo_before")
        con.execute("DROP TABLE IF EXISTS _oo_changes")
    return oo.report(before, after, diff, manifest, seconds, patched)
