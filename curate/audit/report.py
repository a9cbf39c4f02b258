"""The audit report: one self-contained HTML file (inline CSS and SVG, no script, nothing fetched).

Each section reads its tables through `curate.audit.facts`; a section whose table is absent says which stage
would fill it and is otherwise skipped, so the report grows as stages land. No document text and no
personal-data value is ever written: only counts, categories, distributions and hashes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from curate import __version__
from curate.audit import charts
from curate.audit import facts as F
from curate.audit.sandbox import sandbox
from curate.core.workspace import Workspace

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#222;background:#fafafa;line-height:1.45}
header{background:#1f3b57;color:#fff;padding:18px 32px}header h1{margin:0 0 4px;font-size:24px}
header p{margin:0;opacity:.85}nav{padding:8px 32px;background:#e9eef3;font-size:13px}
nav a{margin-right:12px;color:#1f3b57;text-decoration:none}main{padding:8px 32px 40px;max-width:1180px}
section{background:#fff;border:1px solid #dde3e9;border-radius:6px;padding:6px 20px 16px;margin:16px 0}
h2{font-size:19px;color:#1f3b57;border-bottom:1px solid #e4e8ec;padding-bottom:4px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;font-size:13px;margin:6px 0 10px}th,td{padding:3px 10px;border-bottom:1px solid #eceff2;
text-align:left;vertical-align:top}th{background:#f3f5f7}td.n{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:10px 0}.card{border:1px solid #dde3e9;border-radius:6px;
padding:8px 14px;min-width:120px}.card b{display:block;font-size:22px}.card span{font-size:12px;color:#555}
.grid{display:flex;flex-wrap:wrap;gap:10px}.fig{border:1px solid #eceff2;border-radius:4px;padding:4px 6px}
.fig p{margin:0;font-size:12px;color:#444}.note{color:#666;font-style:italic}.flag{color:#c8553d;font-weight:600}
code,.hash{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
.keep{color:#4c956c}.redact{color:#b07a2a}.drop{color:#c8553d}
"""


@dataclass
class ReportSummary:
    path: Path
    sections: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    plots: int = 0


class _Page:
    """Collects sections; each is (id, title, html)."""

    def __init__(self) -> None:
        self.sections: list[tuple[str, str, str]] = []
        self.skipped: list[str] = []

    def add(self, sid: str, title: str, parts: Sequence[str]) -> None:
        self.sections.append((sid, title, "".join(parts)))

    def skip(self, sid: str, title: str, why: str) -> None:
        self.skipped.append(sid)
        self.sections.append((sid, title, f'<p class="note">Not available: {escape(why)}</p>'))


def report(ws: Workspace | str | os.PathLike[str], out: str | os.PathLike[str],
           manifest: str | os.PathLike[str] | None = None) -> ReportSummary:
    """Write the audit report of a workspace to `out` (an .html file)."""
    w = ws if isinstance(ws, Workspace) else Workspace(ws)
    found = F.latest_manifest(w.path, manifest)
    run = found[1] if found else {}
    page = _Page()
    bias, bias_note = F.bias_report(w.path)  # opens the workspace itself: before the sandbox
    with sandbox(w) as con:
        present = F.present_tables(con)
        rules = F.rules_in_force(con, run)
        totals = F.totals(con)
        _overview(page, con, totals)
        _waterfall(page, con, totals, rules)
        for sid, title, table, fn in SECTIONS:
            if table in present:
                fn(page, con, rules)
            else:
                page.skip(sid, title, f"table `{table}` is absent: {STAGE_OF.get(table, 'its stage')} has not run "
                                      "on this workspace")
        _bias(page, bias, bias_note, present)
        _tables(page, con)
        _provenance(page, con, found, rules)
    html = _document(w, page, totals, run)
    path = Path(out)
    if path.parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return ReportSummary(path, [s for s, _, _ in page.sections if s not in page.skipped], page.skipped,
                         html.count('<svg class="plot"'))


STAGE_OF = {"quality": "the `quality` stage", "pii_spans": "the personal-data stage (`pii`)",
            "license_signals": "the `licenses` stage", "optout_matches": "the opt-out stage",
            "bias_terms": "the `bias` stage", "dedup_fuzzy": "near-duplicate detection (`dedup_fuzzy`)"}


# -- sections ---------------------------------------------------------------------------------------
def _overview(page: _Page, con, t: dict[str, Any]) -> None:
    a = t["by_action"]
    cards = [("input rows", t["input_rows"]), ("documents", t["documents"]),
             ("quarantined rows", t["quarantined_rows"]), ("kept", a["keep"]),
             ("redacted", a["redact"]), ("dropped", a["drop"])]
    if t["unreadable_files"]:
        cards.append(("unreadable files", t["unreadable_files"]))
    parts = ['<div class="cards">' + "".join(f'<div class="card"><b>{v:,}</b><span>{escape(k)}</span></div>'
                                             for k, v in cards) + "</div>"]
    kept_chars = t["chars"]["keep"] + t["chars"]["redact"]
    all_chars = sum(t["chars"].values()) or 1
    placed = t["documents"] + t["quarantined_rows"]
    mismatch = "" if placed == t["input_rows"] else ' <span class="flag">(mismatch)</span>'
    parts.append(f"<p>{t['shards']} shard(s). Every input row ends in exactly one place: "
                 f"{t['documents']:,} documents + {t['quarantined_rows']:,} quarantined rows = "
                 f"{placed:,} of {t['input_rows']:,} input rows{mismatch}. "
                 f"Kept or redacted text is {kept_chars / all_chars:.1%} of all characters.</p>")
    shards = F.by_shard(con)
    parts.append(_fig(charts.stacked_bars([(s["shard"], {k: s[k] for k in F.ACTIONS}) for s in shards], F.ACTIONS,
                                          "Documents per shard by action", charts.ACTION_COLORS),
                      "Documents per shard, by action"))
    parts.append(_table(shards, ["shard", "format", "status", "rows", "documents", "quarantined", "keep", "redact",
                                 "drop"]))
    errs = F.stage_errors(con)
    if errs:
        parts.append("<h3>Stage failures</h3><p>Documents a stage could not process (see "
                     "<code>curate explain</code>):</p>" + _table(errs, ["stage", "documents"]))
    page.add("overview", "Totals", parts)


def _waterfall(page: _Page, con, t: dict[str, Any], rules: dict[str, F.RuleInfo]) -> None:
    effects = F.rule_effects(con, rules)
    steps = []
    if t["quarantined_rows"]:
        steps.append(("quarantined at ingest", t["quarantined_rows"]))
    steps += [(f"rule {e['rule']}", e["dropped"]) for e in effects if e["dropped"]]
    kept = t["by_action"]["keep"] + t["by_action"]["redact"]
    accounted = t["input_rows"] - sum(v for _, v in steps) - kept
    if accounted > 0:
        steps.append(("dropped, no rule recorded", accounted))
    parts = [_fig(charts.waterfall(("input rows", t["input_rows"]), steps, ("kept (incl. redacted)", kept),
                                   "Removal waterfall by rule"),
                  "Each dropped document is charged to the rule that decided it (the first drop/keep rule that "
                  "fired, in rules-file order); other rules that also fired are counted in the table.")]
    if effects:
        parts.append(_table(effects, ["rule", "action", "fired", "dropped", "redacted", "description"]))
    else:
        parts.append('<p class="note">No rule fired on any document.</p>')
    page.add("waterfall", "Removal waterfall", parts)


def _quality(page: _Page, con, rules: dict[str, F.RuleInfo]) -> None:
    dists = F.metric_distributions(con, rules)
    if not dists:
        page.skip("quality", "Quality metrics", "the quality table has no numeric column")
        return
    figs = []
    for d in dists:
        q = d.quantiles
        caption = (f"<b>{escape(d.column)}</b> · n {d.n:,}" + (f" · median {q['median']:.4g}" if q else "")
                   + (f" · {d.nulls:,} null" if d.nulls else "")
                   + "".join(f" · <span class=flag>{escape(lbl)}</span>" for _, lbl in d.thresholds))
        figs.append(_fig(charts.histogram(d.lo, d.hi, d.counts, f"Distribution of {d.column}", d.thresholds),
                         caption))
    with_thr = sum(1 for d in dists if d.thresholds)
    page.add("quality", "Quality metrics", [
        f"<p>{len(dists)} metric(s) of the <code>quality</code> table; {with_thr} with a threshold from the rules in "
        "force (red dashed line, clamped to the axis when outside the observed range).</p>",
        '<div class="grid">' + "".join(figs) + "</div>"])


def _languages(page: _Page, con, rules: dict[str, F.RuleInfo]) -> None:
    langs = F.languages(con)
    if not langs:
        page.skip("languages", "Languages", "the quality table has no `lang` column")
        return
    page.add("languages", "Languages", [
        _fig(charts.stacked_bars([(r["lang"], {k: r[k] for k in F.ACTIONS}) for r in langs], F.ACTIONS,
                                 "Documents per language by action", charts.ACTION_COLORS),
             "Top languages (fastText language id), by action"),
        _table(langs, ["lang", "documents", "keep", "redact", "drop"])])


def _pii(page: _Page, con, rules: dict[str, F.RuleInfo]) -> None:
    rows = F.pii_by_type(con)
    page.add("pii", "Personal data", [
        "<p>Spans found, by entity type. Values are never shown: only types and counts.</p>",
        _fig(charts.bars([(r["entity_type"], r["spans"]) for r in rows], "Personal-data spans by type"),
             "Spans by entity type") if rows else '<p class="note">No personal data found.</p>',
        _table(rows, ["entity_type", "spans", "documents", "in_redacted", "in_dropped", "in_kept_unredacted"])])


def _licences(page: _Page, con, rules: dict[str, F.RuleInfo]) -> None:
    classes = F.licence_classes(con)
    top = F.top_licences(con)
    page.add("licences", "Licences", [
        _fig(charts.stacked_bars([(r["use_class"], {k: r[k] for k in F.ACTIONS}) for r in classes], F.ACTIONS,
                                 "Documents per licence use class by action", charts.ACTION_COLORS),
             "Documents per licence use class (a document with several classes counts in each), by action"),
        _table(classes, ["use_class", "documents", "bytes", "keep", "redact", "drop"]),
        "<h3>Most frequent licences</h3>", _table(top, ["license", "use_class", "documents"])])


def _optout(page: _Page, con, rules: dict[str, F.RuleInfo]) -> None:
    rows = F.optout(con)
    parts = ["<p>Documents matched by opt-out registry entries and machine-readable reservations, by match kind "
             "and registry version; <i>removed</i> counts those the policy dropped.</p>"]
    if rows:
        labels = [f"{r['match_kind']} (reservation)" if r.get("source") == "reservation"
                  else f"{r['match_kind']} · v{r['registry_version']}" for r in rows]
        parts.append(_fig(charts.bars([(label, r["removed"]) for label, r in zip(labels, rows, strict=True)],
                                      "Opt-out removals by kind and registry version", charts.ACTION_COLORS["drop"]),
                          "Documents removed, by match kind and registry version"))
    else:
        parts.append('<p class="note">No document matches an opt-out entry.</p>')
    parts.append(_table(rows, ["match_kind", "registry_version", "entries", "matched", "removed"]))
    page.add("optout", "Opt-outs", parts)


def _duplicates(page: _Page, con, rules: dict[str, F.RuleInfo]) -> None:
    parts, present = [], F.present_tables(con)
    for table, what in (("dedup_exact", "Exact duplicates"), ("dedup_fuzzy", "Near duplicates")):
        if table not in present:
            parts.append(f'<h3>{what}</h3><p class="note">Not available: table `{table}` is absent.</p>')
            continue
        c = F.cluster_sizes(con, table)
        parts.append(f"<h3>{what} (<code>{table}</code>)</h3><p>{c['clusters']:,} clusters of two or more holding "
                     f"{c['documents']:,} documents; largest {c['largest']:,}.</p>")
        if c["clusters"]:
            parts.append(_fig(charts.bars(c["buckets"], f"{what}: clusters by size", charts.PALETTE[4]),
                              "Clusters by size (documents per cluster)"))
    page.add("duplicates", "Duplicate clusters", parts)


SECTIONS: list[tuple[str, str, str, Callable[..., None]]] = [
    ("quality", "Quality metrics", "quality", _quality),
    ("languages", "Languages", "quality", _languages),
    ("domains", "Top domains", "documents", lambda page, con, rules: _domains(page, con)),
    ("pii", "Personal data", "pii_spans", _pii),
    ("licences", "Licences", "license_signals", _licences),
    ("optout", "Opt-outs", "optout_matches", _optout),
    ("duplicates", "Duplicate clusters", "dedup_exact", _duplicates),
]


def _domains(page: _Page, con) -> None:
    rows = F.top_domains(con)
    page.add("domains", "Top domains", [
        f"<p>{F.domain_count(con):,} distinct domains; the {len(rows)} largest by documents:</p>",
        _fig(charts.stacked_bars([(r["domain"], {k: r[k] for k in F.ACTIONS}) for r in rows], F.ACTIONS,
                                 "Documents per domain by action", charts.ACTION_COLORS),
             "Top domains by documents, by action"),
        _table(rows, ["domain", "documents", "bytes", "keep", "redact", "drop"])])


def _bias(page: _Page, bias: Any, note: str | None, present: set[str]) -> None:
    title = "Bias: representation and disparate removal"
    if "bias_terms" not in present:
        page.skip("bias", title, "table `bias_terms` is absent: the `bias` stage has not run on this workspace")
        return
    if bias is None:
        page.skip("bias", title, f"the bias report could not be computed: {note}")
        return
    rep = bias.representation.to_dicts()
    removal = bias.removal.to_dicts()
    parts = ["<p>From <code>curate.bias.report</code>: mentions of each group's lexicon terms per million tokens, "
             "before the policy (all documents) and after it (documents not dropped).</p>"]
    for axis in dict.fromkeys(r["axis"] for r in rep):
        rows = [r for r in rep if r["axis"] == axis and (r["per_million_before"] or r["per_million_after"])]
        if rows:
            parts.append(_fig(charts.paired_bars([(r["group_name"], r["per_million_before"] or 0,
                                                   r["per_million_after"] or 0) for r in rows],
                                                 ("before", "after"), f"Representation: {axis}"),
                              f"<b>{escape(axis)}</b>: mentions per million tokens, before and after the policy"))
    seen = [r for r in rep if r["docs_before"]]
    parts.append(_table(seen, ["axis", "group_name", "docs_before", "docs_after", "per_million_before",
                               "per_million_after", "change"]))
    if len(seen) < len(rep):
        parts.append(f'<p class="note">{len(rep) - len(seen)} lexicon group(s) occur in no document.</p>')
    policy = [r for r in removal if r["rule_id"] == "(policy)" and r["docs"] and r["ci_low"] is not None]
    parts.append("<h3>Disparate removal</h3><p>For every rule, the removal rate among documents mentioning each "
                 "group, with its Wilson interval, against the rule's overall rate; flagged where the interval "
                 "excludes it. The chart shows the final decision (all drop rules together).</p>")
    if policy:
        parts.append(_fig(charts.intervals([(f"{r['axis']}: {r['group_name']}", r["rate"], r["ci_low"], r["ci_high"],
                                             bool(r["flag"])) for r in policy], policy[0]["overall_rate"] or 0.0,
                                           "Removal rate by group, final decision"),
                          "Removal rate by group (dot) with its confidence interval; red: disparate"))
    flagged = [r for r in removal if r["flag"]]
    parts.append(f"<p>{len(flagged)} flag(s) over {len(removal)} rule × group comparisons.</p>")
    if flagged:
        parts.append(_table(flagged, ["rule_id", "measure", "axis", "group_name", "docs", "removed", "rate", "ci_low",
                                      "ci_high", "overall_rate", "flag"]))
    co = [r for r in bias.cooccurrence.to_dicts() if r["flag"]]
    if co:
        parts += ["<h3>Co-occurrence with toxic terms (flagged)</h3>",
                  _table(co, ["axis", "group_name", "docs", "toxic_docs", "rate", "overall_rate", "lift", "flag"])]
    parts += ["<h3>Lexicons</h3>", _table(bias.lexicons.to_dicts(), ["axis", "version", "file", "groups", "terms",
                                                                     "sha256"])]
    page.add("bias", title, parts)


def _tables(page: _Page, con) -> None:
    from curate.core.stage import load_builtin

    hide: dict[str, set[str]] = {}
    for cls in load_builtin().values():
        for t in cls.tables:
            hide[t] = set(getattr(cls, "explain_exclude", ()))
    parts = ["<p>Every signal table present, column by column. Free-text columns are summarised by counts "
             "only.</p>"]
    names = F.signal_tables(con)
    for t in names:
        s = F.table_summary(con, t, hide.get(t, set()))
        docs = f", {s['documents']:,} documents" if s["documents"] is not None else ""
        parts.append(f"<h3><code>{escape(t)}</code>: {s['rows']:,} rows{docs}</h3>")
        parts.append(_table(s["columns"], ["column", "type", "nulls", "distinct", "summary"]))
    if not names:
        parts.append('<p class="note">No signal table yet.</p>')
    page.add("tables", "Signal tables", parts)


def _provenance(page: _Page, con, found: tuple[Path, dict[str, Any]] | None, rules: dict[str, F.RuleInfo]) -> None:
    if not found:
        page.skip("provenance", "Provenance", "no manifest in the workspace yet (run `curate run` or "
                  "`curate manifest WS --out DIR`)")
        return
    d, run = found
    m, r, tool = run.get("manifest", {}), run.get("rules", {}), run.get("tool", {})
    policy = r.get("policy", {})
    kv = [("manifest", f"<code>{escape(str(d))}</code> ({m.get('rows', 0):,} rows, written "
                       f"{escape(str(run.get('created_at', '?')))})"),
          ("root hash", f'<span class="hash">{escape(str(m.get("root_hash", "")))}</span>'),
          ("rules", f"<code>{escape(str(r.get('path', '')))}</code> · policy {escape(str(policy.get('name', '')))} "
                    f"{escape(str(policy.get('version', '')))}"),
          ("rules sha256", f'<span class="hash">{escape(str(r.get("sha256", "")))}</span>'),
          ("tool", escape(", ".join(f"{k} {v}" for k, v in tool.items())))]
    reg = F.registry_info(run)
    versions = []
    if "optout_matches" in F.present_tables(con):
        versions = [v for v, in con.execute("SELECT DISTINCT CAST(registry_version AS VARCHAR) FROM optout_matches "
                                            "ORDER BY 1").fetchall()]
    kv.append(("opt-out registry", (_any(reg) if reg else "not recorded in run.json")
               + (f" · versions matched: {escape(', '.join(map(str, versions)))}" if versions else "")))
    current = one_value(con, "SELECT rules_sha256 FROM policy_runs ORDER BY decided_at DESC LIMIT 1")
    parts = ["<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in kv) + "</table>"]
    if current and current != r.get("sha256"):
        parts.append('<p class="flag">The current decisions used another rules file than this manifest: write a '
                     "new manifest before publishing.</p>")
    stages = [{"stage": s.get("name"), "version": s.get("version"), "current": s.get("current"),
               "fingerprints": ", ".join(s.get("fingerprints", []))} for s in run.get("stages", [])]
    parts += ["<h3>Stages</h3>", _table(stages, ["stage", "version", "current", "fingerprints"])]
    assets = [{"stage": s.get("name"), **a} for s in run.get("stages", []) for a in s.get("assets", []) or []]
    parts.append("<h3>Models, lexicons and lists</h3>")
    parts.append(_table(assets, ["stage", "kind", "path", "version", "sha256"]) if assets else
                 '<p class="note">No stage recorded a model, lexicon or list.</p>')
    inputs = [{"shard": Path(i.get("uri", "")).name, **i} for i in run.get("inputs", [])]
    parts += ["<h3>Input shards</h3>", _table(inputs, ["shard", "format", "status", "rows", "bytes", "sha256"])]
    page.add("provenance", "Provenance", parts)


def one_value(con, sql: str) -> Any:
    rows = con.execute(sql).fetchall()
    return rows[0][0] if rows else None


# -- html helpers -----------------------------------------------------------------------------------
def _fig(svg: str, caption: str) -> str:
    return f'<div class="fig">{svg}<p>{caption}</p></div>'


def _cell(v: Any) -> tuple[str, str]:
    if v is None:
        return "", "–"
    if isinstance(v, bool):
        return "", "yes" if v else "no"
    if isinstance(v, int):
        return ' class="n"', f"{v:,}"
    if isinstance(v, float):
        return ' class="n"', f"{v:.4g}"
    s = str(v)
    return ("", f'<span class="hash">{escape(s)}</span>') if len(s) == 64 and all(c in "0123456789abcdef" for c in s) \
        else ("", escape(s))


def _table(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
    if not rows:
        return '<p class="note">(no rows)</p>'
    head = "".join(f"<th>{escape(c)}</th>" for c in cols)
    body = []
    for r in rows:
        cells = []
        for c in cols:
            cls, txt = _cell(r.get(c))
            cells.append(f"<td{cls}>{txt}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _any(value: Any, depth: int = 0) -> str:
    """Render a result of unknown shape (dict, list of dicts, data frame, dataclass) as HTML tables."""
    if hasattr(value, "to_dicts"):  # polars
        value = value.to_dicts()
    elif hasattr(value, "to_dict") and hasattr(value, "columns"):  # pandas
        value = value.to_dict(orient="records")
    elif hasattr(value, "__dataclass_fields__"):
        value = {k: getattr(value, k) for k in value.__dataclass_fields__}
    if isinstance(value, dict):
        if depth > 3:
            return escape(str(value))
        return "<table>" + "".join(f"<tr><th>{escape(str(k))}</th><td>{_any(v, depth + 1)}</td></tr>"
                                   for k, v in value.items()) + "</table>"
    if isinstance(value, list | tuple):
        if value and all(isinstance(x, dict) for x in value):
            cols = list(dict.fromkeys(k for x in value for k in x))
            return _table(list(value)[:100], cols)
        return escape(", ".join(str(x) for x in value[:100]))
    return _cell(value)[1]


def _document(w: Workspace, page: _Page, totals: dict[str, Any], run: dict[str, Any]) -> str:
    nav = "".join(f'<a href="#{sid}">{escape(title)}</a>' for sid, title, _ in page.sections)
    body = "".join(f'<section id="{sid}"><h2>{escape(title)}</h2>{html}</section>'
                   for sid, title, html in page.sections)
    root = run.get("manifest", {}).get("root_hash", "")
    sub = f"Workspace <code>{escape(str(w.path))}</code> · {totals['documents']:,} documents" + \
        (f" · manifest root <code>{escape(root[:16])}…</code>" if root else "")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>Curate audit report</title>'
            f'<style>{CSS}</style></head><body><header><h1>Curate audit report</h1><p>{sub}</p></header>'
            f"<nav>{nav}</nav><main>{body}<p class=\"note\">Generated by curate {escape(__version__)}. Contains "
            "counts, categories, distributions and hashes only: no document text and no personal-data value."
            "</p></main></body></html>\n")
