"""What the audit surface shows of the PHI stage: spans by type and clinical context, never a value.

The audit module of `Phi` (`Detector.audit`): report section, card facts and validation expectations.
"""

from __future__ import annotations

from typing import Any

from curate.audit import charts
from curate.audit import facts as F
from curate.audit.report import Section, absent, figure, html_table

TABLE = "phi_spans"
TITLE = "Health data (PHI)"
EXPECTATIONS = {TABLE: {"required": ("entity_type", "start", "end", "score")}}


def by_type(con) -> list[dict[str, Any]]:
    """Spans and documents per PHI type, how many in clinical context, and how the policy decided them."""
    return F.records(con, """
        SELECT p.entity_type, count(*) AS spans, count(*) FILTER (p.clinical) AS clinical_spans,
               count(DISTINCT p.doc_id) AS documents,
               count(DISTINCT p.doc_id) FILTER (c.action = 'drop') AS in_dropped,
               count(DISTINCT p.doc_id) FILTER (c.action IS DISTINCT FROM 'drop') AS in_kept
        FROM phi_spans p LEFT JOIN decisions c USING (doc_id) GROUP BY 1 ORDER BY spans DESC, 1""")


def clinical_docs(con) -> dict[str, int]:
    row = con.execute("""SELECT count(DISTINCT doc_id), count(DISTINCT doc_id) FILTER (c.action = 'drop')
                         FROM phi_spans p LEFT JOIN decisions c USING (doc_id) WHERE p.clinical""").fetchone()
    return {"documents": row[0], "dropped": row[1]}


def report_sections(con, ctx: F.Context) -> list[Section]:
    if TABLE not in ctx.present:
        return [absent("phi", TITLE, 41, TABLE, "the `phi` stage")]
    rows, docs = by_type(con), clinical_docs(con)
    return [Section("phi", TITLE, 41, [
        f"<p>Health identifiers, patient cues and health terms by type (values are never shown). "
        f"{docs['documents']:,} document(s) hold PHI in clinical context (an identifier or patient cue near a "
        f"diagnosis, medication or ICD-10 code); {docs['dropped']:,} of them were dropped.</p>",
        figure(charts.bars([(r["entity_type"], r["spans"]) for r in rows], "PHI spans by type"),
               "PHI spans by type") if rows else '<p class="note">No health data found.</p>',
        html_table(rows, ["entity_type", "spans", "clinical_spans", "documents", "in_dropped", "in_kept"])])]


def card_facts(con, ctx: F.Context) -> dict[str, Any]:
    if TABLE not in ctx.present:
        return {"limitations": [f"Health data (PHI) were not looked for on this workspace (no `{TABLE}` table)."]}
    docs = clinical_docs(con)
    types = ", ".join(f"{r['entity_type']} ({r['spans']:,})" for r in by_type(con))
    return {"composition": [f"Health data: {docs['documents']:,} document(s) with PHI in clinical context, "
                            f"{docs['dropped']:,} dropped; spans by type: {types or 'none'}. Values are never "
                            "written to reports or cards."],
            "limitations": ["Health data are found by identifiers, patient cues and a small lexicon of conditions "
                            "and drugs: a clinical note with none of them is not detected."]}
