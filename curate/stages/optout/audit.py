"""What the audit surface shows of the opt-out stage: registry matches and reservations, and removals.

The audit module of `OptOut` (`Detector.audit`): report section and provenance, card facts, expectations.
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from curate.audit import charts
from curate.audit import facts as F
from curate.audit.card import absent_text, md_table
from curate.audit.report import Section, absent, any_html, figure, html_table
from curate.stages.optout.evidence import by_standard

TABLE = "optout_matches"
EXPECTATIONS = {TABLE: {"required": ("entry_id", "match_kind")}}
# Match kinds of site files: their documents are listed once, as reservations (from optout_signals).
SITE_MATCH_KINDS = {"robots_txt", "ai_txt", "tdmrep", "content_usage", "content_signal"}


def registry_info(run: dict[str, Any]) -> dict[str, Any]:
    """Whatever run.json says about the opt-out registry (a top-level key or a stage asset)."""
    out = {k: v for k, v in run.items() if "registry" in k.lower() or "optout" in k.lower()}
    for s in run.get("stages", []):
        for a in s.get("assets", []) or []:
            if "registry" in str(a.get("kind", "")).lower():
                out.setdefault("assets", []).append(a)
    return out


def matches(con) -> list[dict[str, Any]]:
    """Registry matches by kind and version, then machine-readable reservations (the opt-out stage keeps
    those per document in `optout_signals`); `source` tells them apart."""
    rows = F.records(con, """
        SELECT 'registry' AS source, coalesce(o.match_kind, '?') AS match_kind,
               coalesce(CAST(o.registry_version AS VARCHAR), '?') AS registry_version,
               count(DISTINCT o.entry_id) AS entries, count(DISTINCT o.doc_id) AS matched,
               count(DISTINCT o.doc_id) FILTER (c.action = 'drop') AS removed
        FROM optout_matches o LEFT JOIN decisions c USING (doc_id)
        GROUP BY ALL ORDER BY registry_version, matched DESC, match_kind""")
    if "optout_signals" in F.present_tables(con):
        rows += F.records(con, """
            SELECT 'reservation' AS source, r AS match_kind, '-' AS registry_version, NULL AS entries,
                   count(DISTINCT doc_id) AS matched, count(DISTINCT doc_id) FILTER (c.action = 'drop') AS removed
            FROM (SELECT doc_id, unnest(optout_reservations) AS r FROM optout_signals) LEFT JOIN decisions c
              USING (doc_id)
            GROUP BY ALL ORDER BY matched DESC, match_kind""")
    return rows


def report_sections(con, ctx: F.Context) -> list[Section]:
    if TABLE not in ctx.present:
        return [absent("optout", "Opt-outs", 60, TABLE, "the opt-out stage")]
    rows = matches(con)
    parts = ["<p>Documents matched by opt-out registry entries and machine-readable reservations, by match kind "
             "and registry version; <i>removed</i> counts those the policy dropped.</p>"]
    if rows:
        labels = [f"{r['match_kind']} (reservation)" if r.get("source") == "reservation"
                  else f"{r['match_kind']} · v{r['registry_version']}" for r in rows]
        parts.append(figure(charts.bars([(label, r["removed"]) for label, r in zip(labels, rows, strict=True)],
                                        "Opt-out removals by kind and registry version", charts.ACTION_COLORS["drop"]),
                            "Documents removed, by match kind and registry version"))
    else:
        parts.append('<p class="note">No document matches an opt-out entry.</p>')
    parts.append(html_table(rows, ["match_kind", "registry_version", "entries", "matched", "removed"]))
    std = by_standard(con)
    if std:
        parts.append("<p>Reservations honoured, by standard and by where the evidence came from (a site file the "
                     "crawl team fetched, or the document's own header or meta value; <code>curate optout evidence"
                     "</code> lists each piece with its hash and date). Standards still in draft are marked "
                     "<i>(draft)</i>.</p>")
        parts.append(html_table(std, ["standard", "status", "source", "documents", "removed"]))
    return [Section("optout", "Opt-outs", 60, parts)]


def report_provenance(con, ctx: F.Context) -> list[tuple[str, str]]:
    reg = registry_info(ctx.run)
    versions = []
    if TABLE in ctx.present:
        versions = [v for v, in con.execute("SELECT DISTINCT CAST(registry_version AS VARCHAR) FROM optout_matches "
                                            "ORDER BY 1").fetchall()]
    return [("opt-out registry", (any_html(reg) if reg else "not recorded in run.json")
             + (f" · versions matched: {escape(', '.join(map(str, versions)))}" if versions else ""))]


def card_facts(con, ctx: F.Context) -> dict[str, Any]:
    if TABLE not in ctx.present:
        return {"optout": absent_text(TABLE),
                "limitations": [f"Opt-outs were not measured on this workspace (no `{TABLE}` table)."]}
    rows = matches(con)
    reg = registry_info(ctx.run)
    versions = sorted({str(r["registry_version"]) for r in rows if r.get("source") != "reservation"})
    lines = [(f"reservation {r['match_kind']}" if r.get("source") == "reservation" else
              f"{r['match_kind']} (registry version {r['registry_version']})")
             + f": {r['matched']:,} documents matched, {r['removed']:,} removed" for r in rows]
    head = ("Opt-out requests (creator registry entries) and machine-readable reservations (robots `noai`, "
            "`tdm-reservation`, `X-Robots-Tag`, the `Content-Usage` header, CAWG training-and-data-mining assertions "
            "in content credentials, and robots.txt (agent groups, Content-Usage and Content-Signal lines), ai.txt "
            "and TDMRep where the crawl team supplied them) are matched against every document; the policy removes "
            "matched documents. ")
    tail = f" Registry versions applied: {', '.join(versions) or 'none'}."
    if reg:
        tail += f" run.json records: {json.dumps(reg, sort_keys=True, default=str)}."
    out: dict[str, Any] = {"optout": head + ("; ".join(lines) + "." if lines else "No document matched an opt-out.")
                           + tail}
    if rows:
        res = [r for r in rows if r.get("source") == "reservation"]
        entries = [r for r in rows if r.get("source") != "reservation" and r["match_kind"] not in SITE_MATCH_KINDS]
        std = by_standard(con)
        out["reservations"] = ["Machine-readable reservations honoured, by standard (standards still in draft are "
                               "marked as drafts; the evidence is a site file kept with its SHA-256 and the date it "
                               "was fetched, or the document's own header or meta value):", "",
                               md_table(std, ["standard", "status", "source", "documents", "removed"])
                               if std else "None.", "",
                               "Machine-readable reservations honoured, by marker:", "",
                               md_table(res, ["match_kind", "registry_version", "matched", "removed"]), "",
                               "Opt-out registry entries honoured:", "",
                               md_table(entries, ["match_kind", "registry_version", "entries", "matched", "removed"]),
                               ""]
    return out
