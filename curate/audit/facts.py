"""Aggregate facts about a workspace, shared by the audit report, the dataset cards and validation.

Every function reads a `curate.audit.sandbox` connection and returns plain numbers and labels: counts,
distributions, categories. Nothing here returns document text or a personal-data value; free-text
columns of signal tables are summarised by counts only (a stage's `categories`, and the core columns in
`CATEGORIES`, are the columns whose values may be shown). Nothing here names a stage's table: the signal
tables are those of the registered stages, and what a stage adds to the report, the cards and validation
lives in the module its `audit` attribute names (`audit_modules`, `Context`; see `Detector`).
"""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import duckdb

from curate.core.db import one
from curate.core.policy import DECISIONS
from curate.util.sql import identifier

if TYPE_CHECKING:
    from curate.core.stage import Detector

# Core columns whose values are categories, in any table; a stage declares its own (`Detector.categories`).
CATEGORIES = frozenset({"action", "status", "format", "stage"})
NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
           "FLOAT", "DOUBLE", "REAL")
ACTIONS = DECISIONS  # the order of every by-action table and chart


def present_tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() "
        "AND table_schema = 'main'").fetchall()}


def stage_tables() -> dict[str, type[Detector]]:
    """Every registered stage's tables (table -> its stage class), stages by name, tables as declared."""
    from curate.core.stage import load_builtin

    return {t: cls for _, cls in sorted(load_builtin().items()) for t in cls.tables}


def signal_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The registered stages' tables that are present, in a stable order (`stage_tables`)."""
    present = present_tables(con)
    return [t for t in stage_tables() if t in present]


def audit_modules() -> list[ModuleType]:
    """The modules the registered stages name in `audit` (by stage name; a module named twice, once)."""
    from curate.core.stage import load_builtin

    names = dict.fromkeys(cls.audit for _, cls in sorted(load_builtin().items()) if cls.audit)
    return [importlib.import_module(n) for n in names]


def expectations() -> dict[str, dict[str, Any]]:
    """Table -> what the stages' audit modules promise of it beyond its column names (`EXPECTATIONS`)."""
    out: dict[str, dict[str, Any]] = {}
    for m in audit_modules():
        out.update(getattr(m, "EXPECTATIONS", {}))
    return out


@dataclass
class Context:
    """What a stage's audit module is handed, with the sandbox connection, by the report and the cards."""

    ws: Path  # the workspace directory
    run: dict[str, Any]  # run.json of the newest manifest ({} when none was written)
    rules: dict[str, RuleInfo]  # the rules behind the current decisions
    present: set[str]  # tables present in the workspace
    totals: dict[str, Any]  # `totals`: input rows, documents, by action


def columns(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, str]:
    return dict(con.execute("SELECT column_name, data_type FROM information_schema.columns "
                            "WHERE table_catalog = current_database() AND table_schema = 'main' AND table_name = ? "
                            "ORDER BY ordinal_position", [table]).fetchall())


def is_numeric(sql_type: str) -> bool:
    return sql_type.upper().startswith(NUMERIC) or sql_type.upper().startswith("DECIMAL")


def q(name: str) -> str:
    return identifier(name)


# -- the manifest ----------------------------------------------------------------------------------
def latest_manifest(ws_path: str | os.PathLike[str], manifest: str | os.PathLike[str] | None = None
                    ) -> tuple[Path, dict[str, Any]] | None:
    """The manifest directory given, else the newest `run.json` inside the workspace (by created_at)."""
    if manifest:
        d = Path(manifest)
        return d, json.loads((d / "run.json").read_text())
    found = []
    root = Path(ws_path)
    for p in sorted(set(root.glob("*/run.json")) | set(root.glob("*/*/run.json"))):
        try:
            run = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(run, dict) and "manifest" in run:
            found.append((str(run.get("created_at", "")), str(p.parent), p.parent, run))
    if not found:
        return None
    *_, d, run = max(found)
    return d, run


# -- decisions -------------------------------------------------------------------------------------
def totals(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    input_rows, docs = one(con.execute("SELECT coalesce(sum(rows), 0), coalesce(sum(documents), 0) FROM shards"))
    quarantined, unreadable = one(con.execute(
        'SELECT count(*) FILTER ("row" IS NOT NULL), count(*) FILTER ("row" IS NULL) FROM quarantine'))
    by_action = dict(con.execute("SELECT action, count(*) FROM decisions GROUP BY 1").fetchall())
    chars = dict(con.execute("""SELECT c.action, sum(d.chars) FROM decisions c JOIN documents d USING (doc_id)
                                GROUP BY 1""").fetchall())
    return {"input_rows": int(input_rows), "documents": int(docs), "quarantined_rows": quarantined,
            "unreadable_files": unreadable, "shards": one(con.execute("SELECT count(*) FROM shards"))[0],
            "by_action": {a: by_action.get(a, 0) for a in ACTIONS},
            "chars": {a: int(chars.get(a) or 0) for a in ACTIONS}}


@dataclass
class RuleInfo:
    id: str
    action: str
    description: str
    when: str
    order: int


def rules_in_force(con: duckdb.DuckDBPyConnection, run: dict[str, Any] | None = None) -> dict[str, RuleInfo]:
    """The rules behind the current decisions (policy_runs), else those recorded in run.json."""
    from curate.core.policy import current_rules

    try:
        rules = [(r.id, r.action, r.description, r.when) for r in current_rules(con).rules]
    except (OSError, ValueError):
        rules = []
    if not rules and run:
        rules = [(r["id"], r["action"], r.get("description", ""), r.get("when", ""))
                 for r in run.get("rules", {}).get("rules", [])]
    return {rid: RuleInfo(rid, a, d, w, i) for i, (rid, a, d, w) in enumerate(rules)}


def rule_effects(con: duckdb.DuckDBPyConnection, rules: dict[str, RuleInfo]) -> list[dict[str, Any]]:
    """Per rule: documents on which it fired, and documents it decided (first fired drop/keep rule)."""
    terminal = [r.id for r in sorted(rules.values(), key=lambda r: r.order) if r.action in ("drop", "keep")]
    rows = con.execute("""
        WITH d AS (SELECT doc_id, action, rule_ids,
                          list_filter(rule_ids, lambda x: list_contains(?::VARCHAR[], x))[1] AS decider
                   FROM decisions)
        SELECT r, count(*) AS fired, count(*) FILTER (r = decider AND action = 'drop') AS dropped,
               count(*) FILTER (action = 'redact') AS redacted
        FROM (SELECT unnest(rule_ids) AS r, decider, action FROM d) GROUP BY r""", [terminal]).fetchall()
    out = []
    for rid, fired, dropped, redacted in rows:
        info = rules.get(rid)
        out.append({"rule": rid, "action": info.action if info else "?", "fired": fired, "dropped": dropped,
                    "redacted": redacted if info and info.action == "redact" else 0,
                    "description": info.description if info else "(not in the rules file in force)",
                    "order": info.order if info else 10**6})
    return sorted(out, key=lambda r: (r["order"], r["rule"]))


def by_shard(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return records(con, """
        SELECT s.name AS shard, s.format, s.status, s.rows, s.documents, s.quarantined,
               count(*) FILTER (c.action = 'keep') AS keep, count(*) FILTER (c.action = 'redact') AS redact,
               count(*) FILTER (c.action = 'drop') AS drop
        FROM shards s LEFT JOIN documents d USING (shard_id) LEFT JOIN decisions c USING (doc_id)
        GROUP BY s.shard_id, s.name, s.uri, s.format, s.status, s.rows, s.documents, s.quarantined
        ORDER BY s.name, s.uri""")


def top_domains(con: duckdb.DuckDBPyConnection, n: int = 20) -> list[dict[str, Any]]:
    return records(con, """
        SELECT coalesce(d.domain, '(no url)') AS domain, count(*) AS documents, sum(strlen(d.text)) AS bytes,
               count(*) FILTER (c.action = 'keep') AS keep, count(*) FILTER (c.action = 'redact') AS redact,
               count(*) FILTER (c.action = 'drop') AS drop
        FROM documents d LEFT JOIN decisions c USING (doc_id)
        GROUP BY 1 ORDER BY documents DESC, domain LIMIT ?""", [n])


def domain_count(con: duckdb.DuckDBPyConnection) -> int:
    return one(con.execute("SELECT count(DISTINCT domain) FROM documents"))[0]


# -- distributions and thresholds ------------------------------------------------------------------
@dataclass
class Distribution:
    table: str
    column: str
    n: int
    nulls: int
    lo: float
    hi: float
    counts: list[int]
    quantiles: dict[str, float] = field(default_factory=dict)
    thresholds: list[tuple[float, str]] = field(default_factory=list)


def distribution(con: duckdb.DuckDBPyConnection, table: str, column: str, bins: int = 24) -> Distribution:
    """Equal-width histogram of a numeric column (non-finite values count as nulls)."""
    c = f"CAST({q(column)} AS DOUBLE)"
    ok = f"{c} IS NOT NULL AND isfinite({c})"
    n, nulls, lo, hi, p5, p50, p95 = one(con.execute(f"""
        SELECT count(*) FILTER ({ok}), count(*) FILTER (NOT ({ok}) OR {c} IS NULL), min({c}) FILTER ({ok}),
               max({c}) FILTER ({ok}), quantile_cont({c}, 0.05) FILTER ({ok}), median({c}) FILTER ({ok}),
               quantile_cont({c}, 0.95) FILTER ({ok})
        FROM {q(table)}"""))
    counts = [0] * bins
    if n:
        width = (hi - lo) / bins if hi > lo else 1.0
        for b, k in con.execute(f"""
                SELECT least(CAST(floor(({c} - ?) / ?) AS INTEGER), ?) AS b, count(*) FROM {q(table)}
                WHERE {ok} GROUP BY 1""", [lo, width, bins - 1]).fetchall():
            counts[b] = k
    quant = {"p5": p5, "median": p50, "p95": p95} if n else {}
    return Distribution(table, column, n, nulls, lo if n else 0.0, hi if n else 0.0, counts, quant)


COMPARISON = {"<", "<=", ">", ">=", "=", "==", "!=", "<>"}


def thresholds(rules: dict[str, RuleInfo]) -> list[tuple[str, str, float, str]]:
    """(signal column, operator, value, rule id) for every `column OP number` comparison in a rule's `when`."""
    from curate.core.policy import RuleError, tokenize

    found = []
    for r in sorted(rules.values(), key=lambda r: r.order):
        try:
            toks = tokenize(r.when, r.id)
        except RuleError:
            continue
        for i in range(len(toks) - 2):
            a, op, b = toks[i], toks[i + 1], toks[i + 2]
            if op[0] != "op" or op[1] not in COMPARISON:
                continue
            neg = b[0] == "op" and b[1] == "-" and i + 3 < len(toks) and toks[i + 3][0] == "num"
            if a[0] == "name" and (b[0] == "num" or neg):
                value = -float(toks[i + 3][1]) if neg else float(b[1])
                found.append((a[1], op[1], value, r.id))
            elif a[0] == "num" and b[0] == "name" and (i == 0 or toks[i - 1][1] != "-"):
                flip = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}.get(op[1], op[1])
                found.append((b[1], flip, float(a[1]), r.id))
    return found


def match_column(signal: str, cols: list[str]) -> str | None:
    """The table column a signals-view name refers to: same name, or the name with a topic prefix."""
    hits = [c for c in cols if signal == c or signal.endswith("_" + c)]
    return max(hits, key=len) if hits else None


def metric_distributions(con: duckdb.DuckDBPyConnection, rules: dict[str, RuleInfo],
                         table: str) -> list[Distribution]:
    """A histogram per numeric column of `table`, with the rule thresholds that apply to it."""
    cols = [c for c, t in columns(con, table).items() if is_numeric(t) and c != "doc_id"]
    dists = {c: distribution(con, table, c) for c in cols}
    for signal, op, value, rid in thresholds(rules):
        col = match_column(signal, cols)
        if col:
            dists[col].thresholds.append((value, f"{rid}: {op} {value:g}"))
    return list(dists.values())


# -- clusters ---------------------------------------------------------------------------------------
SIZE_BUCKETS = ((2, 2), (3, 3), (4, 4), (5, 5), (6, 10), (11, 20), (21, 50), (51, 100), (101, None))


def cluster_sizes(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, Any]:
    """Clusters of two or more documents, bucketed by size; with the documents they hold."""
    rows = con.execute(f"""SELECT size, count(*) FROM (SELECT cluster_id, count(*) AS size FROM {q(table)}
                           WHERE cluster_id IS NOT NULL GROUP BY 1 HAVING count(*) > 1) GROUP BY 1""").fetchall()
    buckets = []
    for lo, hi in SIZE_BUCKETS:
        k = sum(c for s, c in rows if s >= lo and (hi is None or s <= hi))
        buckets.append((str(lo) if lo == hi else f"{lo}+" if hi is None else f"{lo}–{hi}", k))
    return {"clusters": sum(c for _, c in rows), "documents": sum(s * c for s, c in rows),
            "largest": max((s for s, _ in rows), default=0), "buckets": buckets}


# -- any table ----------------------------------------------------------------------------------------
def table_summary(con: duckdb.DuckDBPyConnection, table: str, hide: set[str] = frozenset(),
                  categories: set[str] = frozenset()) -> dict[str, Any]:
    """Rows, documents, and per column: numeric range, true counts, or (for category columns: `categories`
    and the core `CATEGORIES`) top values."""
    cols = columns(con, table)
    rows = one(con.execute(f"SELECT count(*) FROM {q(table)}"))[0]
    docs = one(con.execute(f"SELECT count(DISTINCT doc_id) FROM {q(table)}"))[0] if "doc_id" in cols else None
    out = []
    for c, t in cols.items():
        if c == "doc_id" or c in hide:
            continue
        nested = t.upper().endswith("]") or t.upper().startswith(("STRUCT", "MAP", "UNION", "BLOB"))
        nulls, distinct = one(con.execute(
            f"SELECT count(*) - count({q(c)}), {'NULL' if nested else f'approx_count_distinct({q(c)})'} "
            f"FROM {q(table)}"))
        info: dict[str, Any] = {"column": c, "type": t, "nulls": nulls, "distinct": distinct}
        if is_numeric(t):
            mn, md, mx = one(con.execute(f"SELECT min({q(c)}), median({q(c)}), max({q(c)}) FROM {q(table)}"))
            info["summary"] = f"min {_fmt(mn)} · median {_fmt(md)} · max {_fmt(mx)}"
        elif t.upper() == "BOOLEAN":
            k = one(con.execute(f"SELECT count(*) FILTER ({q(c)}) FROM {q(table)}"))[0]
            info["summary"] = f"{k:,} true"
        elif c in (categories | CATEGORIES) and t.upper() in ("VARCHAR", "INTEGER", "BIGINT"):
            top = con.execute(f"SELECT {q(c)}, count(*) FROM {q(table)} GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 8"
                              ).fetchall()
            info["summary"] = ", ".join(f"{v} ({k:,})" for v, k in top)
        else:
            info["summary"] = "values not shown"
        out.append(info)
    return {"table": table, "rows": rows, "documents": docs, "columns": out}


def stage_errors(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    return records(con, "SELECT stage, count(*) AS documents FROM stage_errors GROUP BY 1 ORDER BY 1")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def records(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
    """A query's rows as dicts (read to the end)."""
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
