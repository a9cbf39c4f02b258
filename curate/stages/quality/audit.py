"""What the audit surface shows of the quality stage: metric histograms with the rules' thresholds, languages.

The audit module of `Quality` (`Detector.audit`): report sections, card facts and validation expectations.
"""

from __future__ import annotations

from html import escape
from typing import Any

from curate.audit import charts
from curate.audit import facts as F
from curate.audit.report import Section, absent, figure, html_table

TABLE = "quality"
STAGE = "the `quality` stage"
EXPECTATIONS = {TABLE: {"one_row_per_doc": True}}


def languages(con, n: int = 20) -> list[dict[str, Any]] | None:
    """Documents per language (the top `n`), by action; None when the table has no `lang` column."""
    if "lang" not in F.columns(con, TABLE):
        return None
    return F.records(con, """
        SELECT coalesce(q.lang, '(unknown)') AS lang, count(*) AS documents,
               count(*) FILTER (c.action = 'keep') AS keep, count(*) FILTER (c.action = 'redact') AS redact,
               count(*) FILTER (c.action = 'drop') AS drop
        FROM documents d LEFT JOIN (SELECT doc_id, any_value(lang) AS lang FROM quality GROUP BY 1) q USING (doc_id)
        LEFT JOIN decisions c USING (doc_id)
        GROUP BY 1 ORDER BY documents DESC, lang LIMIT ?""", [n])


def report_sections(con, ctx: F.Context) -> list[Section]:
    if TABLE not in ctx.present:
        return [absent("quality", "Quality metrics", 20, TABLE, STAGE), absent("languages", "Languages", 25, TABLE,
                                                                                STAGE)]
    return [_metrics(con, ctx.rules), _languages(con)]


def _metrics(con, rules: dict[str, F.RuleInfo]) -> Section:
    dists = F.metric_distributions(con, rules, TABLE)
    if not dists:
        return Section("quality", "Quality metrics", 20, note="the quality table has no numeric column")
    figs = []
    for d in dists:
        q = d.quantiles
        caption = (f"<b>{escape(d.column)}</b> · n {d.n:,}" + (f" · median {q['median']:.4g}" if q else "")
                   + (f" · {d.nulls:,} null" if d.nulls else "")
                   + "".join(f" · <span class=flag>{escape(lbl)}</span>" for _, lbl in d.thresholds))
        figs.append(figure(charts.histogram(d.lo, d.hi, d.counts, f"Distribution of {d.column}", d.thresholds),
                           caption))
    with_thr = sum(1 for d in dists if d.thresholds)
    return Section("quality", "Quality metrics", 20, [
        f"<p>{len(dists)} metric(s) of the <code>quality</code> table; {with_thr} with a threshold from the rules in "
        "force (red dashed line, clamped to the axis when outside the observed range).</p>",
        '<div class="grid">' + "".join(figs) + "</div>"])


def _languages(con) -> Section:
    langs = languages(con)
    if not langs:
        return Section("languages", "Languages", 25, note="the quality table has no `lang` column")
    return Section("languages", "Languages", 25, [
        figure(charts.stacked_bars([(r["lang"], {k: r[k] for k in F.ACTIONS}) for r in langs], F.ACTIONS,
                                   "Documents per language by action", charts.ACTION_COLORS),
               "Top languages (fastText language id), by action"),
        html_table(langs, ["lang", "documents", "keep", "redact", "drop"])])


def card_facts(con, ctx: F.Context) -> dict[str, Any]:
    if TABLE not in ctx.present:
        return {"limitations": [f"Quality and language were not measured on this workspace (no `{TABLE}` table)."]}
    return {"languages": languages(con)}
