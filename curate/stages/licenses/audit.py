"""What the audit surface shows of the licences stage: documents per use class, the most frequent licences.

The audit module of `Licenses` (`Detector.audit`): report section, card facts and validation expectations.
"""

from __future__ import annotations

from typing import Any

from curate.audit import charts
from curate.audit import facts as F
from curate.audit.card import absent_text, md_table, pct
from curate.audit.report import Section, absent, figure, html_table
from curate.stages.licenses.expressions import CLASSES

TABLE = "license_signals"
EXPECTATIONS = {TABLE: {"required": ("use_class", "evidence"), "value_sets": {"use_class": list(CLASSES)}}}


def classes(con) -> list[dict[str, Any]]:
    """Documents per licence use class (a document with several classes counts in each), and all others."""
    return F.records(con, """
        WITH u AS (SELECT DISTINCT doc_id, coalesce(use_class, 'unknown') AS use_class FROM license_signals)
        SELECT coalesce(u.use_class, '(no licence signal)') AS use_class, count(*) AS documents,
               sum(strlen(d.text)) AS bytes,
               count(*) FILTER (c.action = 'keep') AS keep, count(*) FILTER (c.action = 'redact') AS redact,
               count(*) FILTER (c.action = 'drop') AS drop
        FROM documents d LEFT JOIN u USING (doc_id) LEFT JOIN decisions c USING (doc_id)
        GROUP BY 1 ORDER BY documents DESC, 1""")


def top(con, n: int = 15) -> list[dict[str, Any]]:
    return F.records(con, """
        SELECT coalesce(license, '(unknown)') AS license, coalesce(any_value(use_class), 'unknown') AS use_class,
               count(DISTINCT doc_id) AS documents
        FROM license_signals GROUP BY 1 ORDER BY documents DESC, 1 LIMIT ?""", [n])


def report_sections(con, ctx: F.Context) -> list[Section]:
    if TABLE not in ctx.present:
        return [absent("licences", "Licences", 50, TABLE, "the `licenses` stage")]
    rows = classes(con)
    return [Section("licences", "Licences", 50, [
        figure(charts.stacked_bars([(r["use_class"], {k: r[k] for k in F.ACTIONS}) for r in rows], F.ACTIONS,
                                   "Documents per licence use class by action", charts.ACTION_COLORS),
               "Documents per licence use class (a document with several classes counts in each), by action"),
        html_table(rows, ["use_class", "documents", "bytes", "keep", "redact", "drop"]),
        "<h3>Most frequent licences</h3>", html_table(top(con), ["license", "use_class", "documents"])])]


def card_facts(con, ctx: F.Context) -> dict[str, Any]:
    if TABLE not in ctx.present:
        return {"licences": absent_text(TABLE), "licence_shares": absent_text(TABLE),
                "limitations": [f"Licences were not measured on this workspace (no `{TABLE}` table)."]}
    rows = classes(con)
    docs = ctx.totals["documents"] or 1
    kept = ctx.totals["by_action"]["keep"] + ctx.totals["by_action"]["redact"]
    out: dict[str, Any] = {
        "licences": "Licence use classes found in the documents (a document with several notices counts in "
                    "each): " + "; ".join(f"{r['use_class']}: {r['documents']:,} documents "
                                          f"({pct(r['documents'], docs)}), {r['keep'] + r['redact']:,} kept"
                                          for r in rows) + ".",
        "licence_shares": md_table([{"use_class": r["use_class"], "documents": r["keep"] + r["redact"],
                                     "share": pct(r["keep"] + r["redact"], kept)} for r in rows],
                                   ["use_class", "documents", "share"]) if rows else absent_text(TABLE)}
    listed = top(con)
    if listed:
        out["licence_table"] = md_table(listed[:10], ["license", "use_class", "documents"])
    if rows:
        shares = [(r["use_class"], r["keep"] + r["redact"]) for r in rows if r["keep"] + r["redact"]]
        out["licence_statement"] = ("Mixed: the licences of the source documents apply. Kept documents by licence "
                                    "use class: " + ", ".join(f"{c} {n:,}" for c, n in shares) + ".")
    return out
