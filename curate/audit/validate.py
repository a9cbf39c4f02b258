"""`curate validate`: Great Expectations suites over documents, every signal table present, and the manifest.

GX reaches DuckDB through SQLAlchemy (`duckdb-engine`). Out of the box every metric comes back empty:
GX runs a query inside `with engine.connect()`, leaves the block (SQLAlchemy then ends the implicit
transaction with ROLLBACK) and only then fetches the rows; duckdb-engine's cursor is the connection
itself, so the ROLLBACK discards the pending result. We register a read-only dialect (`duckdb+curate`)
whose connections never open or end a transaction: every statement autocommits, a result survives
the connection's return to the pool, and nothing can be written anyway. Each new connection is an
in-memory database that attaches the workspace read-only (`curate.audit.sandbox.mirror`) and sees the
manifest as a view, so GX reads the workspace without locking it for writing.

GX is imported lazily (it takes seconds); results go to the audit bundle: `validation.json` (ours,
small and stable) and GX's own data docs under `data_docs/`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from duckdb_engine import Dialect as _DuckDBDialect

from curate.audit import facts as F
from curate.core.manifest import MANIFEST, ROOT_HASH_SQL, ROW_HASH_SQL, ROW_HASH_SQL_V3, run_hash
from curate.core.policy import DECISIONS, SAFETY_STAGES
from curate.core.workspace import DB_NAME, Workspace
from curate.util.sql import literal

log = logging.getLogger("curate")
ACTIONS = list(DECISIONS)


class ReadOnlyDuckDB(_DuckDBDialect):
    """duckdb-engine without transactions (see the module docstring), set up as a workspace mirror."""

    supports_statement_cache = False

    def connect(self, *cargs: Any, **cparams: Any):
        workspace = cparams.pop("curate_workspace", None)
        manifest = cparams.pop("curate_manifest", None)
        con = super().connect(*cargs, **cparams)
        if workspace:
            from curate.audit.sandbox import mirror

            mirror(con, workspace)
        if manifest:
            con.execute(f"CREATE OR REPLACE VIEW manifest AS SELECT * FROM read_parquet({literal(manifest)})")
        return con

    def do_begin(self, dbapi_connection: Any) -> None:
        pass

    def do_rollback(self, dbapi_connection: Any) -> None:
        pass

    def do_commit(self, dbapi_connection: Any) -> None:
        pass


def _register_dialect() -> None:
    from sqlalchemy.dialects import registry

    registry.register("duckdb.curate", __name__, "ReadOnlyDuckDB")


# -- what to check ------------------------------------------------------------------------------------
@dataclass
class Check:
    """One expectation: GX class name and its arguments."""

    type: str
    kwargs: dict[str, Any]
    why: str


@dataclass
class Suite:
    """Expectations on one table or query (a GX data asset)."""

    name: str
    checks: list[Check]
    table: str | None = None
    query: str | None = None


def _c(kind: str, why: str, **kwargs: Any) -> Check:
    return Check(kind, kwargs, why)


def _hex(column: str, alias: str | None = None) -> str:
    return f"regexp_full_match({column}, '[0-9a-f]{{64}}') AS {alias or column.strip(chr(34)) + '_is_hex'}"


def _true(column: str, why: str) -> Check:
    return _c("ExpectColumnValuesToBeInSet", why, column=column, value_set=[True])


def suites(con, run: dict[str, Any] | None, rules: dict[str, F.RuleInfo]) -> list[Suite]:
    """Every suite for this workspace (`con` is a sandbox over it): core tables, each signal table, manifest.

    A table's own columns are checked on the table; checks that need a join or a function (hashes, offsets
    inside the text, unknown documents) on one query per table whose boolean columns must all be true.
    """
    shard_ids = [r[0] for r in con.execute("SELECT shard_id FROM shards ORDER BY 1").fetchall()]
    out = [
        Suite("documents", [
            _c("ExpectColumnValuesToNotBeNull", "every document has an id", column="doc_id"),
            _c("ExpectColumnValuesToBeUnique", "document ids are unique", column="doc_id"),
            _c("ExpectColumnValuesToNotBeNull", "every document has a hash", column="sha256"),
            _c("ExpectColumnValuesToBeInSet", "every document comes from a recorded shard", column="shard_id",
               value_set=shard_ids),
            _c("ExpectColumnValuesToBeBetween", "row numbers are 0-based", column="row", min_value=0),
            _c("ExpectCompoundColumnsToBeUnique", "one document per shard row", column_list=["shard_id", "row"]),
            _c("ExpectColumnValuesToBeUnique", "ingest order is a total order", column="seq"),
            _c("ExpectColumnValuesToNotBeNull", "every document has text", column="text"),
        ], table="documents"),
        Suite("documents.derived", [
            _true("sha256_is_hex", "text hashes are SHA-256 hex"),
            _true("hash_matches", "the stored hash is the SHA-256 of the stored text"),
            _true("has_decision", "every document has a decision"),
        ], query=f"""SELECT {_hex("sha256")}, sha256 = sha256(text) AS hash_matches,
                            EXISTS (SELECT 1 FROM decisions c WHERE c.doc_id = d.doc_id) AS has_decision
                     FROM documents d"""),
        Suite("shards", [
            _c("ExpectColumnValuesToBeUnique", "each shard once", column="shard_id"),
            _c("ExpectColumnValuesToBeInSet", "known shard status", column="status",
               value_set=["ok", "partial", "failed"]),
            _c("ExpectColumnValuesToBeBetween", "rows are counted", column="rows", min_value=0),
        ], table="shards"),
        Suite("shards.derived", [
            _true("sha256_is_hex", "shard hashes are SHA-256 hex"),
            _c("ExpectColumnPairValuesToBeEqual", "input rows = documents + quarantined rows, per shard",
               column_A="rows", column_B="placed"),
            _c("ExpectColumnPairValuesToBeEqual", "the shard's document count is what the documents table holds",
               column_A="documents", column_B="stored"),
        ], query=f"""SELECT s.shard_id, {_hex("s.sha256", "sha256_is_hex")}, s.rows,
                            coalesce(s.documents, 0) + coalesce(s.quarantined, 0) AS placed,
                            coalesce(s.documents, 0) AS documents,
                            (SELECT count(*) FROM documents d WHERE d.shard_id = s.shard_id) AS stored
                     FROM shards s WHERE s.status <> 'failed'"""),
        Suite("decisions", [
            _c("ExpectColumnValuesToNotBeNull", "every decision names its document", column="doc_id"),
            _c("ExpectColumnValuesToBeUnique", "one decision per document", column="doc_id"),
            _c("ExpectColumnValuesToBeInSet", "actions in the allowed set", column="action", value_set=ACTIONS),
            _c("ExpectTableRowCountToEqualOtherTable", "as many decisions as documents",
               other_table_name="documents"),
        ], table="decisions"),
    ]
    # Fail closed: no document a safety stage failed on may be kept (the default rule `stage-error` drops them).
    safety = ", ".join(literal(x) for x in SAFETY_STAGES)
    out.append(Suite("decisions.fail_closed", [
        _true("not_kept", "no document a safety stage failed on is kept or redacted (fail closed)")],
        query=f"""SELECT e.doc_id, coalesce(c.action, 'none') = 'drop' AS not_kept
                  FROM (SELECT DISTINCT doc_id FROM stage_errors WHERE stage IN ({safety})) e
                  LEFT JOIN decisions c USING (doc_id)"""))
    if rules:
        out.append(Suite("decisions.rules", [
            _c("ExpectColumnValuesToBeInSet", "every fired rule is in the rules file in force", column="rule_id",
               value_set=sorted(rules))],
            query="SELECT DISTINCT unnest(rule_ids) AS rule_id FROM decisions"))
    expect = F.expectations()
    for table in F.signal_tables(con):
        out += signal_suites(con, table, expect.get(table, {}))
    if run is not None:
        out += manifest_suites(con, run)
    return out


def signal_suites(con, table: str, expect: dict[str, Any] | None = None) -> list[Suite]:
    """Generic checks from a signal table's columns (ids, offsets, scores, counts, hashes, clusters), and what
    its stage's audit module promises of it (`expect`: one_row_per_doc, required, value_sets; see `Detector`)."""
    expect = expect or {}
    value_sets = expect.get("value_sets", {})
    cols = F.columns(con, table)
    t = F.q(table)
    checks, derived, derived_sql = [], [], []
    refs = [c for c in cols if c == "doc_id" or c in ("doc_a", "doc_b")]  # columns naming a document
    for c in refs:
        checks.append(_c("ExpectColumnValuesToNotBeNull", f"every row names its document ({c})", column=c))
        derived_sql.append(f"EXISTS (SELECT 1 FROM documents d WHERE d.doc_id = s.{F.q(c)}) AS {c}_known")
        derived.append(_true(f"{c}_known", f"no signal for an unknown document ({c})"))
    if expect.get("one_row_per_doc") and "doc_id" in cols:
        checks.append(_c("ExpectColumnValuesToBeUnique", "one row per document", column="doc_id"))
    for c in expect.get("required", ()):
        if c in cols:
            checks.append(_c("ExpectColumnValuesToNotBeNull", f"{c} is always set", column=c))
    for c, typ in cols.items():
        low = c.lower()
        if c in value_sets:
            checks.append(_c("ExpectColumnValuesToBeInSet", f"{c} in the documented set", column=c,
                             value_set=list(value_sets[c])))
        if not F.is_numeric(typ):
            if low.endswith("hash") and typ.upper() == "VARCHAR":
                derived_sql.append(_hex(f"s.{F.q(c)}", f"{c}_is_hex"))
                derived.append(_true(f"{c}_is_hex", f"{c} is SHA-256 hex"))
            continue
        if low in ("score", "jaccard", "similarity") or low.endswith(("_score", "_frac", "_fraction", "_prob",
                                                                       "_jaccard")):
            checks.append(_c("ExpectColumnValuesToBeBetween", f"{c} is in [0, 1]", column=c, min_value=0,
                             max_value=1))
        elif low in ("count", "start", "end", "words", "tokens") or low.startswith("n_") \
                or low.endswith(("_count", "_ratio", "_chars", "_words", "_tokens", "_size", "_lines")):
            checks.append(_c("ExpectColumnValuesToBeBetween", f"{c} is not negative", column=c, min_value=0))
    if "doc_id" in cols and "start" in cols and "end" in cols:
        derived_sql.append('s."start", s."end", '
                           "(SELECT max(d.chars) FROM documents d WHERE d.doc_id = s.doc_id) AS text_chars")
        derived += [
            _c("ExpectColumnPairValuesAToBeGreaterThanB", "spans are not empty", column_A="end", column_B="start",
               ignore_row_if="either_value_is_missing"),  # a licence notice may have no span
            _c("ExpectColumnPairValuesAToBeGreaterThanB", "spans end inside the text", column_A="text_chars",
               column_B="end", or_equal=True, ignore_row_if="either_value_is_missing")]
    out = [Suite(table, checks, table=table)] if checks else []
    if derived:
        out.append(Suite(f"{table}.derived", derived, query=f"SELECT {', '.join(derived_sql)} FROM {t} s"))
    if "cluster_id" in cols and "is_keeper" in cols:
        out.append(Suite(f"{table}.keepers", [
            _c("ExpectColumnValuesToBeBetween", "exactly one keeper per cluster", column="keepers", min_value=1,
               max_value=1)],
            query=f"SELECT cluster_id, count(*) FILTER (is_keeper) AS keepers FROM {t} "
                  "WHERE cluster_id IS NOT NULL GROUP BY 1"))
    return out


def manifest_suites(con, run: dict[str, Any]) -> list[Suite]:
    """The manifest rows against their hashes, the decisions, and run.json's counts."""
    c = run.get("counts", {})
    root = str(run.get("manifest", {}).get("root_hash", ""))
    by_action = c.get("by_action", {})

    def n(v: Any) -> int:
        return int(v or 0)  # numbers from run.json are spliced as integers only

    literal_root = "'" + root + "'" if re.fullmatch(r"[0-9a-f]{64}", root) else "NULL"
    rows_root = f"(SELECT {ROOT_HASH_SQL} FROM manifest)"
    if run.get("manifest", {}).get("format", 1) >= 2:  # the root covers run.json too (as `curate verify`)
        digest = run_hash(run)
        rows_root = f"sha256({rows_root} || {literal(digest)})"
    row_hash = ROW_HASH_SQL if n(run.get("schema_version")) >= 4 else ROW_HASH_SQL_V3  # as `curate verify`
    counts_sql = f"""SELECT {n(c.get('input_rows'))} AS input_rows,
        {n(c.get('documents'))} + {n(c.get('quarantined_rows'))} AS placed,
        (SELECT count(*) FROM manifest) AS manifest_rows, {n(c.get('documents'))} AS run_documents,
        (SELECT count(*) FROM quarantine WHERE "row" IS NOT NULL) AS quarantine_rows,
        {n(c.get('quarantined_rows'))} AS run_quarantined,
        {" + ".join(str(n(v)) for v in by_action.values()) or "0"} AS run_by_action_total,
        {rows_root} = {literal_root} AS root_matches"""
    per_action = " UNION ALL ".join(
        f"SELECT '{a}' AS action, (SELECT count(*) FROM manifest WHERE action = '{a}') AS rows, {n(by_action.get(a))} "
        "AS recorded" for a in ACTIONS)
    return [
        Suite("manifest", [
            _c("ExpectColumnValuesToNotBeNull", "every manifest row names a document", column="doc_id"),
            _c("ExpectColumnValuesToBeUnique", "one manifest row per document", column="doc_id"),
            _c("ExpectColumnValuesToBeInSet", "actions in the allowed set", column="action", value_set=ACTIONS),
            _c("ExpectTableRowCountToEqualOtherTable", "one manifest row per document",
               other_table_name="documents"),
        ], table="manifest"),
        Suite("manifest.derived", [
            _true("input_sha256_is_hex", "input hashes are SHA-256 hex"),
            _true("output_sha256_is_hex", "output hashes are SHA-256 hex"),
            _true("row_hash_is_hex", "row hashes are SHA-256 hex"),
            _true("row_hash_ok", "each row hash covers its row's fields"),
            _true("output_ok", "an output hash exactly when the document is exported"),
            _true("decision_ok", "the manifest's action is the workspace's decision"),
        ], query=f"""SELECT {_hex("input_sha256")}, {_hex("output_sha256")}, {_hex("row_hash")},
                            row_hash = {row_hash} AS row_hash_ok,
                            (action = 'drop') = (output_sha256 IS NULL) AS output_ok,
                            coalesce((SELECT bool_and(c.action = m.action) FROM decisions c
                                      WHERE c.doc_id = m.doc_id), false) AS decision_ok
                     FROM manifest m"""),
        Suite("manifest.counts", [
            _c("ExpectColumnPairValuesToBeEqual", "input rows = documents + quarantined rows (run.json)",
               column_A="input_rows", column_B="placed"),
            _c("ExpectColumnPairValuesToBeEqual", "manifest rows = documents counted in run.json",
               column_A="manifest_rows", column_B="run_documents"),
            _c("ExpectColumnPairValuesToBeEqual", "per-action counts add up to the documents",
               column_A="run_by_action_total", column_B="run_documents"),
            _c("ExpectColumnPairValuesToBeEqual", "quarantined rows = the workspace's quarantine",
               column_A="quarantine_rows", column_B="run_quarantined"),
            _true("root_matches", "the root hash recomputes"),
        ], query=counts_sql),
        Suite("manifest.by_action", [
            _c("ExpectColumnPairValuesToBeEqual", "manifest rows per action = run.json's counts",
               column_A="rows", column_B="recorded")], query=per_action),
    ]


# -- running ------------------------------------------------------------------------------------------
@dataclass
class SuiteResult:
    name: str
    evaluated: int
    failed: int
    results: list[dict[str, Any]]


@dataclass
class ValidationReport:
    path: Path
    suites: list[SuiteResult] = field(default_factory=list)
    docs_index: Path | None = None

    @property
    def ok(self) -> bool:
        return all(s.failed == 0 for s in self.suites)

    @property
    def failures(self) -> list[str]:
        return [f"{s.name}: {r['why']} ({r['expectation']}{_args(r['kwargs'])}){_observed(r)}"
                for s in self.suites for r in s.results if not r["success"]]


def _args(kwargs: dict[str, Any]) -> str:
    keys = [k for k in ("column", "column_A", "column_B", "column_list", "other_table_name") if k in kwargs]
    return "" if not keys else " " + ", ".join(f"{k}={kwargs[k]}" for k in keys)


def _observed(r: dict[str, Any]) -> str:
    parts = [f"{k} {r[k]}" for k in ("unexpected_count", "observed_value") if r.get(k) is not None]
    if r.get("exception"):
        parts.append(r["exception"])
    return ": " + ", ".join(parts) if parts else ""


def validate(ws: Workspace | str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
             manifest: str | os.PathLike[str] | None = None) -> ValidationReport:
    """Run every suite; write `validation.json` and GX data docs into `out` (default WS/audit/validation)."""
    from curate.audit.sandbox import sandbox

    w = ws if isinstance(ws, Workspace) else Workspace(ws)
    bundle = (Path(out) if out else w.path / "audit" / "validation").resolve()  # GX wants an absolute path
    found = F.latest_manifest(w.path, manifest)
    mdir, run = (found if found else (None, None))
    with sandbox(w) as con:
        rules = F.rules_in_force(con, run)
        plan = suites(con, run, rules)
    report = ValidationReport(bundle)
    results, docs = _run_gx(plan, w.path / DB_NAME, (mdir / MANIFEST) if mdir else None, bundle)
    report.docs_index = docs
    for s, res in zip(plan, results, strict=True):
        report.suites.append(SuiteResult(s.name, len(res), sum(not r["success"] for r in res), res))
    summary = {"workspace": str(w.path), "manifest": str(mdir) if mdir else None,
               "manifest_root": (run or {}).get("manifest", {}).get("root_hash"),
               "success": report.ok, "failures": report.failures,
               "suites": [{"name": s.name, "evaluated": s.evaluated, "failed": s.failed, "results": s.results}
                          for s in report.suites],
               "data_docs": str(docs) if docs else None}
    if run is None:
        summary["note"] = "no manifest in the workspace: the manifest suites did not run"
    (bundle / "validation.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return report


def _run_gx(plan: list[Suite], db: Path, manifest: Path | None, bundle: Path
            ) -> tuple[list[list[dict[str, Any]]], Path | None]:
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
    _register_dialect()
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    for name, logger in list(logging.root.manager.loggerDict.items()):  # some GX modules log at INFO
        if name.startswith("great_expectations") and isinstance(logger, logging.Logger):
            logger.setLevel(logging.ERROR)
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    docs_dir = bundle / "data_docs"
    if docs_dir.exists():
        shutil.rmtree(docs_dir)
    bundle.mkdir(parents=True, exist_ok=True)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.add_data_docs_site("audit", {
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    connect_args: dict[str, Any] = {"curate_workspace": str(db)}
    if manifest:
        connect_args["curate_manifest"] = str(manifest)
    source = context.data_sources.add_sql(name="workspace", connection_string="duckdb+curate:///:memory:",
                                          kwargs={"connect_args": connect_args})
    definitions, ids = [], {}
    for i, s in enumerate(plan):
        asset_name = f"{i:03d}_{s.name}"
        asset = source.add_table_asset(asset_name, table_name=s.table) if s.table else \
            source.add_query_asset(asset_name, query=s.query)
        batch = asset.add_batch_definition_whole_table("all")
        suite = context.suites.add(gx.ExpectationSuite(name=s.name))
        for c in s.checks:
            ids[suite.add_expectation(getattr(gx.expectations, c.type)(**c.kwargs)).id] = c
        definitions.append(context.validation_definitions.add(gx.ValidationDefinition(
            name=s.name, data=batch, suite=suite)))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name="curate-validate", validation_definitions=definitions, actions=[],
        result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5}))
    result = checkpoint.run()
    context.build_data_docs(site_names=["audit"])  # once: an UpdateDataDocsAction rebuilds it per suite
    by_name = {vr.suite_name: vr for vr in result.run_results.values()}
    out = []
    for s in plan:
        vr = by_name[s.name]
        rows = []
        for r in sorted(vr.results, key=lambda r: s.checks.index(ids[r.expectation_config.id])):
            check = ids[r.expectation_config.id]
            res = r.result or {}
            exc = None
            if not r.success and r.exception_info:
                infos = r.exception_info.values() if "raised_exception" not in r.exception_info \
                    else [r.exception_info]
                msgs = [str(i.get("exception_message", "")) for i in infos if i.get("raised_exception", True)]
                exc = next((m.splitlines()[0] for m in msgs if m), None)
            rows.append({"expectation": r.expectation_config.type, "why": check.why, "kwargs": check.kwargs,
                         "success": bool(r.success), "observed_value": res.get("observed_value"),
                         "unexpected_count": res.get("unexpected_count"),
                         "element_count": res.get("element_count"), "exception": exc})
        out.append(rows)
    index = docs_dir / "index.html"
    return out, index if index.exists() else None
