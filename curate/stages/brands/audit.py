"""What the audit surface shows of the brands stage: the brand mix before and after the policy, and associations.

The audit module of `Brands` (`Detector.audit`): report section, card facts and validation expectations. Brand
names and listed terms come from the profiles (rules/brands/*.toml); no document text is shown.
"""

from __future__ import annotations

from html import escape
from typing import Any

from curate.audit import charts
from curate.audit import facts as F
from curate.audit.report import Section, absent, figure, html_table
from curate.stages.brands.profile import KINDS

TABLE = "brand_hits"
TITLE = "Brand mix"
ORDER = 43
EXPECTATIONS = {TABLE: {"required": ("profile", "kind", "brand", "mark", "start", "end"),
                        "value_sets": {"kind": list(KINDS)}}}


def brand_mix(con) -> list[dict[str, Any]]:
    """Per profile and brand mentioned (own or competitor): documents and mentions before the policy (every
    document) and after it (documents not dropped), and the share of the profile's mentions each brand holds."""
    return F.records(con, """
        WITH m AS (SELECT h.profile, h.kind AS role, h.brand, h.doc_id, count(*) AS mentions,
                          any_value(c.action) AS action
                   FROM brand_hits h LEFT JOIN decisions c USING (doc_id)
                   WHERE h.kind IN ('own', 'competitor') GROUP BY ALL),
             b AS (SELECT profile, role, brand, count(*) AS docs_before,
                          count(*) FILTER (action IS DISTINCT FROM 'drop') AS docs_after,
                          sum(mentions)::BIGINT AS mentions_before,
                          coalesce(sum(mentions) FILTER (action IS DISTINCT FROM 'drop'), 0)::BIGINT AS mentions_after
                   FROM m GROUP BY ALL)
        SELECT *, mentions_before / sum(mentions_before) OVER (PARTITION BY profile) AS share_before,
               mentions_after / nullif(sum(mentions_after) OVER (PARTITION BY profile), 0) AS share_after
        FROM b ORDER BY profile, role DESC, mentions_before DESC, brand""")


def associations(con) -> list[dict[str, Any]]:
    """Per profile, listed-term group (`avoid`) and toxicity group (`toxic`): documents mentioning the brand
    with such a term anywhere and near a mention, and how many of those near ones the policy dropped."""
    return F.records(con, """
        WITH d AS (SELECT h.profile, h.kind, h.brand AS term_group, h.doc_id, bool_or(h.near) AS near,
                          count(*) AS terms, any_value(c.action) AS action
                   FROM brand_hits h LEFT JOIN decisions c USING (doc_id)
                   WHERE h.kind IN ('avoid', 'toxic') GROUP BY ALL)
        SELECT profile, kind, term_group, count(*) AS documents, sum(terms)::BIGINT AS terms,
               count(*) FILTER (near) AS documents_near,
               count(*) FILTER (near AND action = 'drop') AS near_dropped
        FROM d GROUP BY ALL ORDER BY profile, kind, documents DESC, term_group""")


def report_sections(con, ctx: F.Context) -> list[Section]:
    if TABLE not in ctx.present:
        return [absent("brands", TITLE, ORDER, TABLE, "the `brands` stage")]
    mix, assoc = brand_mix(con), associations(con)
    parts = ["<p>Mentions of each profile's brand and of its competitors (rules/brands/*.toml, named by "
             "<code>[stages.brands] profiles</code>), counted with each mark's case rule and the context or alias it "
             "needs, before the policy (every document) and after it (documents not dropped).</p>"]
    if not mix:
        parts.append('<p class="note">No brand mention found: no profile is configured in this rules file, or '
                     "none of its marks occurs.</p>")
    for profile in dict.fromkeys(r["profile"] for r in mix):
        rows = [r for r in mix if r["profile"] == profile]
        parts.append(f"<h3>Profile <code>{escape(profile)}</code></h3>")
        parts.append(figure(charts.paired_bars([(f"{r['brand']} ({r['role']})", r["docs_before"], r["docs_after"])
                                                for r in rows], ("before", "after"),
                                               f"Documents mentioning each brand, profile {profile}"),
                            f"Brand mix of profile {escape(profile)}: documents before and after the policy"))
        parts.append(html_table(rows, ["brand", "role", "docs_before", "docs_after", "mentions_before",
                                       "mentions_after", "share_before", "share_after"]))
    if assoc:
        parts.append("<h3>Associations</h3><p>Documents that mention a profile's brand together with a term the "
                     "profile lists (<code>avoid</code>) or a toxicity term of the bias lexicon (<code>toxic</code>); "
                     "<i>near</i>: within the profile's window of a mention.</p>")
        parts.append(html_table(assoc, ["profile", "kind", "term_group", "documents", "terms", "documents_near",
                                        "near_dropped"]))
    return [Section("brands", TITLE, ORDER, parts)]


def card_facts(con, ctx: F.Context) -> dict[str, Any]:
    if TABLE not in ctx.present:
        return {"limitations": [f"Brand mentions were not counted on this workspace (no `{TABLE}` table)."]}
    mix = brand_mix(con)
    if not mix:
        return {"composition": ["Brand mix: no brand profile configured, or no mention of its marks."]}
    lines = []
    for profile in dict.fromkeys(r["profile"] for r in mix):
        brands = ", ".join(f"{r['brand']} ({r['role']}: {r['docs_before']:,} documents, {r['docs_after']:,} after "
                           "the policy)" for r in mix if r["profile"] == profile)
        lines.append(f"Brand mix, profile {profile}: {brands}.")
    near = sum(r["documents_near"] for r in associations(con))
    if near:
        lines.append(f"{near:,} document(s) mention a profile's brand near a term the profile lists or a toxicity "
                     "term.")
    return {"composition": lines,
            "limitations": ["Brands are recognised by the marks their profile lists, with case and context rules: "
                            "a misspelt or unlisted name is not counted, and a listed word used in another sense "
                            "with context words nearby can be."]}
