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


def thresholds(con) -> str:
    """SQL (entity_type, action, min_score, secret) of the `[pii]` policy behind the current decisions (the
    default rules file before any decision)."""
    from curate.core.policy import current_rules, load_rules
    from curate.stages.pii.spec import load_recognizers, recognizers_path
    from curate.stages.pii.stage import entity_policy, policy_values

    try:
        raw = current_rules(con).raw
    except (OSError, ValueError):  # the rules file behind the decisions is gone or was edited: the default's
        raw = load_rules().raw
    return policy_values(entity_policy(raw, load_recognizers(recognizers_path(raw.get("stages", {}).get("pii")))))


def by_type(con) -> list[dict[str, Any]]:
    """Spans and documents per entity type at or above the policy's `min_score` for the type (what the policy
    acts on), how the policy decided those documents, and apart, the spans below it (recorded, not acted on)."""
    return F.records(con, f"""
        WITH s AS (SELECT p.*, p.score >= coalesce(m.min_score, 0.5) AS counted
                   FROM pii_spans p LEFT JOIN ({thresholds(con)}) m USING (entity_type))
        SELECT coalesce(s.entity_type, '(none)') AS entity_type, count(*) FILTER (counted) AS spans,
               count(DISTINCT s.doc_id) FILTER (counted) AS documents,
               count(DISTINCT s.doc_id) FILTER (counted AND c.action = 'redact') AS in_redacted,
               count(DISTINCT s.doc_id) FILTER (counted AND c.action = 'drop') AS in_dropped,
               count(DISTINCT s.doc_id) FILTER (counted AND c.action = 'keep') AS in_kept_unredacted,
               count(*) FILTER (NOT counted) AS below_min_score
        FROM s LEFT JOIN decisions c USING (doc_id) GROUP BY 1 ORDER BY spans DESC, 1""")


def report_sections(con, ctx: F.Context) -> list[Section]:
    if TABLE not in ctx.present:
        return [absent("pii", "Personal data", 40, TABLE, "the personal-data stage (`pii`)")]
    rows = by_type(con)
    counted = [r for r in rows if r["spans"]]
    below = sum(r["below_min_score"] for r in rows)
    return [Section("pii", "Personal data", 40, [
        "<p>Spans found, by entity type, counting only those at or above the policy's minimum score for their "
        "type (<code>[pii.entities]</code> <code>min_score</code>: the spans the policy acts on); "
        f"{below:,} spans below it are recorded in <code>pii_spans</code> and shown apart "
        "(<code>below_min_score</code>), not acted on. Values are never shown: only types and counts.</p>",
        figure(charts.bars([(r["entity_type"], r["spans"]) for r in counted], "Personal-data spans by type"),
               "Spans by entity type") if counted else '<p class="note">No personal data found.</p>',
        html_table(rows, ["entity_type", "spans", "documents", "in_redacted", "in_dropped", "in_kept_unredacted",
                          "below_min_score"])])]


def card_facts(con, ctx: F.Context) -> dict[str, Any]:
    if TABLE not in ctx.present:
        return {"personal_data": absent_text(TABLE),
                "limitations": [f"Personal data were not measured on this workspace (no `{TABLE}` table)."]}
    rows = by_type(con)
    below = sum(r["below_min_score"] for r in rows)
    rows = [r for r in rows if r["spans"]]
    apart = (f" A further {below:,} span(s) scored below their type's minimum and were recorded only (not counted "
             "above, not redacted).") if below else ""
    if not rows:
        return {"personal_data": "No personal data was detected at or above the policy's minimum scores." + apart}
    spans = sum(r["spans"] for r in rows)
    kinds = ", ".join(f"{r['entity_type']} ({r['spans']:,} spans in {r['documents']:,} documents)" for r in rows)
    left = sum(r["in_kept_unredacted"] for r in rows)
    return {"personal_data": (
        f"{spans:,} personal-data spans were detected at or above the policy's minimum score for their type: "
        f"{kinds}. Documents containing them were redacted "
        f"(each span replaced by a `<ENTITY_TYPE>` placeholder) or removed as the policy decided; "
        f"{left:,} document(s) with a detected span were kept without redaction.{apart} Detection is automatic "
        "and can miss personal data. Values are never written to reports or cards.")}
