"""A read-only, in-memory mirror of a workspace, and "what if" policies evaluated in it.

`sandbox(ws)` gives an in-memory DuckDB connection in which every workspace table is a view of the same
name over the workspace attached read-only. Reports, validation and what-if questions run there: they
can build their own `signals` view or temp tables, and nothing reaches the workspace or a manifest.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from curate.audit.facts import columns, present_tables
from curate.core.errors import NotFound
from curate.core.workspace import DB_NAME, Workspace, WorkspaceBusy, _settings
from curate.util.sql import literal

if TYPE_CHECKING:
    import polars as pl

    from curate.core.policy import Ruleset

ALIAS = "curate_ws"


def mirror(con: duckdb.DuckDBPyConnection, db_path: str | os.PathLike[str]) -> list[str]:
    """Attach a workspace database read-only and create a view per table (and stored view) in `con`'s main."""
    try:
        con.execute(f"ATTACH {literal(db_path)} AS {ALIAS} (READ_ONLY)")
    except duckdb.IOException as e:
        if "lock" in str(e).lower():
            raise WorkspaceBusy(f"workspace {Path(db_path).parent} is being written by another process; "
                                "wait for it to finish and run the command again") from None
        raise
    tables = [r[0] for r in con.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' ORDER BY 1",
        [ALIAS]).fetchall()]
    views = [r[0] for r in con.execute(
        "SELECT view_name FROM duckdb_views() WHERE database_name = ? AND schema_name = 'main' AND NOT internal "
        "ORDER BY 1", [ALIAS]).fetchall()]
    for t in tables:
        con.execute(f'CREATE OR REPLACE VIEW main."{t}" AS SELECT * FROM {ALIAS}.main."{t}"')
    for v in views:
        try:
            con.execute(f'CREATE OR REPLACE VIEW main."{v}" AS SELECT * FROM {ALIAS}.main."{v}"')
        except duckdb.Error:  # a stored view over a table that is gone: rebuilt on demand, not mirrored
            continue
        tables.append(v)
    return tables


@contextmanager
def sandbox(ws: Workspace | str | os.PathLike[str]) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory connection mirroring the workspace read-only (see the module docstring)."""
    w = ws if isinstance(ws, Workspace) else Workspace(ws)
    con = duckdb.connect(config=_settings())
    try:
        try:
            con.execute("SET enable_progress_bar = false")
        except duckdb.Error:  # in Jupyter without ipywidgets DuckDB refuses to touch the setting at all
            pass
        mirror(con, w.path / DB_NAME)
        yield con
    finally:
        con.close()


# -- what if -------------------------------------------------------------------------------------
def edit(ruleset: Ruleset, rule_id: str, when: str | None = None, action: str | None = None,
         **raw: Any) -> Ruleset:
    """A copy of `ruleset` with one rule's `when`/`action` changed (and top-level TOML sections replaced).

    The copy's sha256 is marked as edited: it describes no file, so it can never pass for a rules file.
    """
    if rule_id not in {r.id for r in ruleset.rules}:
        raise NotFound(f"no rule {rule_id!r} in {ruleset.path} (rules: {', '.join(r.id for r in ruleset.rules)})")
    rules = [replace(r, when=when if when is not None else r.when, action=action or r.action)
             if r.id == rule_id else r for r in ruleset.rules]
    data = copy.deepcopy(ruleset.raw)
    data.update(raw)
    for r in data.get("rules", []):
        if r.get("id") == rule_id:
            r.update({k: v for k, v in (("when", when), ("action", action)) if v is not None})
    return replace(ruleset, rules=rules, raw=data, sha256=f"edited:{ruleset.sha256}")


def set_threshold(ruleset: Ruleset, rule_id: str, column: str, value: float) -> Ruleset:
    """A copy of `ruleset` in which the number compared with `column` in rule `rule_id` is `value`."""
    from curate.core.policy import tokenize

    rule = next((r for r in ruleset.rules if r.id == rule_id), None)
    if rule is None:
        raise NotFound(f"no rule {rule_id!r} in {ruleset.path}")
    toks = tokenize(rule.when, rule.id)
    for i in range(len(toks) - 2):
        a, op, b = toks[i], toks[i + 1], toks[i + 2]
        if op[0] != "op":
            continue
        num = b if a[:2] == ("name", column) and b[0] == "num" else \
            a if b[:2] == ("name", column) and a[0] == "num" else None
        if num:
            start = num[2] - 1
            return edit(ruleset, rule_id, when=rule.when[:start] + repr(float(value)).removesuffix(".0")
                        + rule.when[start + len(num[1]):])
    raise NotFound(f"rule {rule_id!r} compares no number with {column!r}: {rule.when}")


@dataclass
class WhatIf:
    """What a different policy would do: every document whose action would change, and where they are."""

    changes: pl.DataFrame  # doc_id, action_now, action_new, rules_now, rules_new, domain, shard[, lang]
    groups: pl.DataFrame | None  # axis, group_name, action_now, action_new, documents (when bias_terms exists)
    documents: int

    @property
    def summary(self) -> pl.DataFrame:
        import polars as pl

        return (self.changes.group_by("action_now", "action_new").agg(pl.len().alias("documents"))
                .sort("documents", "action_now", "action_new", descending=[True, False, False]))

    def by(self, column: str, top: int = 20) -> pl.DataFrame:
        """Changed documents per value of a column (domain, shard, lang), with their share of that value."""
        import polars as pl

        return (self.changes.group_by(column, "action_now", "action_new").agg(pl.len().alias("documents"))
                .sort("documents", column, descending=[True, False]).head(top))


def what_if(ws: Workspace | str | os.PathLike[str], ruleset: Ruleset, rebuild_signals: bool = True) -> WhatIf:
    """Evaluate `ruleset` against the stored signals in memory and compare with the current decisions.

    The `signals` view is rebuilt from the stages with `ruleset`'s settings; `rebuild_signals=False` uses the
    view the last `curate decide` stored instead.
    """
    from curate.core.policy import build_signals_view, decisions_sql

    with sandbox(ws) as con:
        present = present_tables(con)
        if rebuild_signals or "signals" not in present:
            cols = build_signals_view(con, ruleset.raw)
        else:
            cols = {n: t for n, t, *_ in con.execute("DESCRIBE signals").fetchall()}
        con.execute(f"CREATE TEMP TABLE _new AS {decisions_sql(ruleset, cols)}")
        lang = ", q.lang" if "quality" in present and "lang" in columns(con, "quality") else ""
        join = " LEFT JOIN (SELECT doc_id, any_value(lang) AS lang FROM quality GROUP BY 1) q USING (doc_id)" \
            if lang else ""
        changes = con.sql(f"""
            SELECT d.doc_id, c.action AS action_now, n.action AS action_new, c.rule_ids AS rules_now,
                   n.rule_ids AS rules_new, d.domain, s.name AS shard{lang}
            FROM _new n JOIN documents d USING (doc_id) JOIN shards s USING (shard_id)
            LEFT JOIN decisions c USING (doc_id){join}
            WHERE c.action IS DISTINCT FROM n.action ORDER BY d.doc_id""").pl()
        groups = None
        if "bias_terms" in present:
            groups = con.sql("""
                SELECT b.axis, b.group_name, c.action AS action_now, n.action AS action_new,
                       count(DISTINCT b.doc_id) AS documents
                FROM bias_terms b JOIN _new n USING (doc_id) LEFT JOIN decisions c USING (doc_id)
                WHERE c.action IS DISTINCT FROM n.action
                GROUP BY ALL ORDER BY documents DESC, axis, group_name""").pl()
        total = con.execute("SELECT count(*) FROM documents").fetchall()[0][0]
    return WhatIf(changes, groups, total)

