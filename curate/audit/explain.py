"""Why a document was kept, redacted or dropped: its signals and the rules that fired.

Personal data appears as type and offsets only; a stage can hide columns from explain with
`explain_exclude` (text-bearing columns never appear: only signal tables are shown).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from curate.core.db import one
from curate.core.errors import NotFound

if TYPE_CHECKING:
    from curate.core.workspace import Workspace


def explain(ws: Workspace, doc_id: str) -> dict[str, Any]:
    from curate.core.policy import load_rules
    from curate.core.stage import load_builtin

    with ws.connect() as con:
        doc = one(con.execute("""
            SELECT d.doc_id, s.uri AS shard_uri, d."row", d.url, d.domain, d.chars,
                   d.sha256, d.seq
            FROM documents d JOIN shards s USING (shard_id) WHERE d.doc_id = ?""", [doc_id]))
        if doc is None:
            q = one(con.execute("""SELECT uri, "row", error FROM quarantine WHERE contains(raw, '"' || ? || '"')
                               ORDER BY uri, "row" LIMIT 1""", [doc_id]))
            if q:
                return {"doc_id": doc_id, "quarantined": {"uri": q[0], "row": q[1], "error": q[2]}}
            raise NotFound(f"no document {doc_id!r} in {ws.path}")
        info: dict[str, Any] = dict(zip(("doc_id", "shard_uri", "row", "url", "domain", "chars", "sha256", "seq"),
                                        doc, strict=True))
        decision = one(con.execute("SELECT action, rule_ids FROM decisions WHERE doc_id = ?", [doc_id]))
        used = one(con.execute("SELECT rules_path FROM policy_runs ORDER BY decided_at DESC LIMIT 1"))
        try:
            rules = {r.id: r for r in load_rules(used[0] if used else None).rules}
        except OSError:
            rules = {}
        if decision:
            info["action"] = decision[0]
            info["rules"] = [{"id": r, "action": rules[r].action if r in rules else None,
                              "description": rules[r].description if r in rules else None,
                              "when": rules[r].when if r in rules else None} for r in decision[1]]
        else:
            info["action"] = None
        present = {r[0] for r in con.execute(  # signal tables keyed by doc_id (not e.g. pair tables)
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'main' AND column_name = 'doc_id'"
        ).fetchall()}
        signals: dict[str, Any] = {}
        for _name, cls in sorted(load_builtin().items()):
            for table in cls.tables:
                if table not in present:
                    continue
                rel = con.sql(f'SELECT * FROM "{table}" WHERE doc_id = ?', params=[doc_id])
                hide = set(cls.explain_exclude) | {"doc_id"}
                rows = [{k: v for k, v in zip(rel.columns, r, strict=True) if k not in hide} for r in rel.fetchall()]
                if rows:
                    signals[table] = rows
            signals.update(cls.explain_extra(con, doc_id))
        info["signals"] = signals
        errors = con.execute("SELECT stage, error FROM stage_errors WHERE doc_id = ?", [doc_id]).fetchall()
        if errors:
            info["stage_errors"] = [{"stage": s, "error": e} for s, e in errors]
    return info
