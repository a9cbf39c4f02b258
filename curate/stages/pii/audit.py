"""What the audit surface shows of the personal-data stage: spans by entity type, never a value.

The audit module of `PiiDetector` (`Detector.audit`): report section, card facts and validation expectations.
"""

from __future__ import annotations

from typing import Any

from curate.audit import charts
from curate.audit import facts as F
from curate.audit.card import absent_text
from curate.audit.report import Section, absent, figure, html_table

TABLE = "pii_spans"
EXPECTATIONS = {TABLE: {"required": ("entity_type", "start", "end")}}


def by_type(con) -> list[dict[str, Any]]:
    """Spans and documents per entity type, and how the policy decided those documents."""
    return F.records(con, """
        SELECT coalesce(p.entity_type, '(none)') AS entity_type, count(*) AS spans,
               count(DISTINCT p.doc_id) AS documents,
               count(DISTINCT p.doc_id) FILTER (c.action = 'redact') AS in_redacted,
               count(DISTINCT p.doc_id) FILTER (c.action = 'drop') AS in_dropped,
               count(DISTINCT p.doc_id) FILTER (c.action = 'keep') AS in_kept_unredacted
        FROM pii_spans p LEFT JOIN decisions c USING (doc_id) GROUP BY 1 ORDER BY spans DESC, 1""")


def report_sections(con, ctx: F.Context) -> list[Section]:
    if TABLE not in ctx.present:
        return [absent("pii", "Personal data", 40, TABLE, "the personal-data stage (`pii`)")]
    rows = by_type(con)
    return [Section("pii", "Personal data", 40, [
        "<p>Spans found, by entity type. Values are never shown: only types and counts.</p>",
        figure(charts.bars([(r["entity_type"], r["spans"]) for r in rows], "Personal-data spans by type"),
               "Spans by entity type") if rows else '<p class="note">No personal data found.</p>',
        html_table(rows, ["entity_type", "spans", "documents", "in_redacted", "in_dropped", "in_kept_unredacted"])])]


def card_facts(con, ctx: F.Context) -> dict[str, Any]:
    if TABLE not in ctx.present:
        return {"personal_data": absent_text(TABLE),
                "limitations": [f"Personal data were not measured on this workspace (no `{TABLE}` table)."]}
    rows = by_type(con)
    if not rows:
        return {"personal_data": "No personal data was detected."}
    spans = sum(r["spans"] for r in rows)
    kinds = ", ".join(f"{r['entity_type']} ({r['spans']:,} spans in {r['documents']:,} documents)" for r in rows)
    left = sum(r["in_kept_unredacted"] for r in rows)
    return {"personal_data": (
        f"{spans:,} personal-data spans were detected: {kinds}. Documents containing them were redacted "
        f"(each span replaced by a `<ENTITY_TYPE>` placeholder) or removed as the policy decided; "
        f"{left:,} document(s) with a detected span were kept without redaction. Detection is automatic and "
        "can miss personal data. Values are never written to reports or cards.")}
