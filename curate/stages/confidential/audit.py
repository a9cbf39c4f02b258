"""What the audit surface shows of the confidential stage: markers by kind and position, and what the policy did.

The audit module of `Confidential` (`Detector.audit`): report section, card facts and validation expectations.
Marker texts are classification labels, not personal data; the report still shows only kinds and counts.
"""

from __future__ import annotations

from typing import Any

from curate.audit import charts
from curate.audit import facts as F
from curate.audit.report import Section, absent, figure, html_table
from curate.stages.confidential.markers import KINDS, POSITIONS

TABLE = "confidential_markers"
TITLE = "Confidential documents"
EXPECTATIONS = {TABLE: {"required": ("marker", "kind", "position", "start", "end", "score"),
                        "value_sets": {"kind": list(KINDS), "position": list(POSITIONS)}}}


def by_kind(con) -> list[dict[str, Any]]:
    """Markers and documents per kind, where they stood, and how the policy decided those documents."""
    return F.records(con, """
        SELECT m.kind, count(*) AS markers, count(DISTINCT m.doc_id) AS documents,
               count(*) FILTER (m.position = 'header') AS header, count(*) FILTER (m.position = 'footer') AS footer,
               count(*) FILTER (m.position = 'body') AS body, count(*) FILTER (m.banner) AS banner_lines,
               count(DISTINCT m.doc_id) FILTER (c.action = 'drop') AS in_dropped,
               count(DISTINCT m.doc_id) FILTER (c.action IS DISTINCT FROM 'drop') AS in_kept
        FROM confidential_markers m LEFT JOIN decisions c USING (doc_id) GROUP BY 1 ORDER BY markers DESC, 1""")


def report_sections(con, ctx: F.Context) -> list[Section]:
    if TABLE not in ctx.present:
        return [absent("confidential", TITLE, 42, TABLE, "the `confidential` stage")]
    rows = by_kind(con)
    return [Section("confidential", TITLE, 42, [
        "<p>Classification banners and handling markers (rules/confidential/markers.toml), by kind and where they "
        "stood: header and footer are the first and last lines, banner lines hold little else than the marker.</p>",
        figure(charts.bars([(r["kind"], r["markers"]) for r in rows], "Confidentiality markers by kind"),
               "Markers by kind") if rows else '<p class="note">No confidentiality marker found.</p>',
        html_table(rows, ["kind", "markers", "documents", "header", "footer", "body", "banner_lines", "in_dropped",
                          "in_kept"])])]


def card_facts(con, ctx: F.Context) -> dict[str, Any]:
    if TABLE not in ctx.present:
        return {"limitations": [f"Confidentiality markers were not looked for on this workspace (no `{TABLE}` "
                                "table)."]}
    rows = by_kind(con)
    if not rows:
        return {"composition": ["No classification banner or handling marker (CONFIDENTIAL, INTERNAL USE ONLY, "
                                "NDA, ...) was found."]}
    kinds = ", ".join(f"{r['kind']} ({r['documents']:,} documents, {r['in_dropped']:,} dropped)" for r in rows)
    return {"composition": [f"Confidentiality markers found, by kind: {kinds}."],
            "limitations": ["Confidential documents are recognised by their markers only: an unmarked internal "
                            "document is not detected."]}
