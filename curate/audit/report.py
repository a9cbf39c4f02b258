"""The audit report: one self-contained HTML file (inline CSS and SVG, no script, nothing fetched).

The core sections (totals, waterfall, domains, signal tables, provenance) read `curate.audit.facts`; every
other section comes from a registered stage's audit module (`report_sections`, see `Detector`), placed by its
`Section.order`. A section whose table is absent says which stage would fill it and is otherwise skipped.
No document text and no personal-data value is ever written: only counts, categories, distributions and hashes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
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


@dataclass
class Section:
    """One section of the report: its HTML `parts`, or `note` saying why it is not available (skipped).
    `order` places it: overview 0, waterfall 10, domains 30, signal tables 90, provenance 100."""

    id: str
    title: str
    order: float
    parts: Sequence[str] = ()
    note: str | None = None


def absent(sid: str, title: str, order: float, table: str, stage: str = "its stage") -> Section:
    """The section of a stage whose table is absent from the workspace."""
    return Section(sid, title, order, note=f"table `{table}` is absent: {stage} has not run on this workspace")


def report(ws: Workspace | str | os.PathLike[str], out: str | os.PathLike[str],
           manifest: str | os.PathLike[str] | None = None) -> ReportSummary:
    """Write the audit report of a workspace to `out` (an .html file)."""
    w = ws if isinstance(ws, Workspace) else Workspace(ws)
    found = F.latest_manifest(w.path, manifest)
    run = found[1] if found else {}
    with sandbox(w) as con:
        totals = F.totals(con)
        ctx = F.Context(w.path, run, F.rules_in_force(con, run), F.present_tables(con), totals)
        modules = F.audit_modules()
        sections = [_overview(con, totals), _waterfall(con, totals, ctx.rules), _domains(con), _tables(con),
                    _provenance(con, found, ctx, modules)]
        for m in modules:
            if hasattr(m, "report_sections"):
                sections += m.report_sections(con, ctx)
    sections.sort(key=lambda s: s.order)
    html = _document(w, sections, totals, run)
    path = Path(out)
    if path.parent:
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return ReportSummary(path, [s.id for s in sections if s.note is None], [s.id for s in sections if s.note],
                         html.count('<svg class="plot"'))


# -- sections ---------------------------------------------------------------------------------------
def _overview(con, t: dict[str, Any]) -> Section:
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
    parts.append(figure(charts.stacked_bars([(s["shard"], {k: s[k] for k in F.ACTIONS}) for s in shards],
                                            F.ACTIONS, "Documents per shard by action", charts.ACTION_COLORS),
                        "Documents per shard, by action"))
    parts.append(html_table(shards, ["shard", "format", "status", "rows", "documents", "quarantined", "keep",
                                     "redact", "drop"]))
    errs = F.stage_errors(con)
    if errs:
        parts.append("<h3>Stage failures</h3><p>Documents a stage could not process (see "
                     "<code>curate explain</code>):</p>" + html_table(errs, ["stage", "documents"]))
    return Section("overview", "Totals", 0, parts)


def _waterfall(con, t: dict[str, Any], rules: dict[str, F.RuleInfo]) -> Section:
    effects = F.rule_effects(con, rules)
    steps = []
    if t["quarantined_rows"]:
        steps.append(("quarantined at ingest", t["quarantined_rows"]))
    steps += [(f"rule {e['rule']}", e["dropped"]) for e in effects if e["dropped"]]
    kept = t["by_action"]["keep"] + t["by_action"]["redact"]
    accounted = t["input_rows"] - sum(v for _, v in steps) - kept
    if accounted > 0:
        steps.append(("dropped, no rule recorded", accounted))
    parts = [figure(charts.waterfall(("input rows", t["input_rows"]), steps, ("kept (incl. redacted)", kept),
                                     "Removal waterfall by rule"),
                    "Each dropped document is charged to the rule that decided it (the first drop/keep rule that "
                    "fired, in rules-file order); other rules that also fired are counted in the table.")]
    if effects:
        parts.append(html_table(effects, ["rule", "action", "fired", "dropped", "redacted", "description"]))
    else:
        parts.append('<p class="note">No rule fired on any document.</p>')
    return Section("waterfall", "Removal waterfall", 10, parts)


def _domains(con) -> Section:
    rows = F.top_domains(con)
    return Section("domains", "Top domains", 30, [
        f"<p>{F.domain_count(con):,} distinct domains; the {len(rows)} largest by documents:</p>",
        figure(charts.stacked_bars([(r["domain"], {k: r[k] for k in F.ACTIONS}) for r in rows], F.ACTIONS,
                                   "Documents per domain by action", charts.ACTION_COLORS),
               "Top domains by documents, by action"),
        html_table(rows, ["domain", "documents", "bytes", "keep", "redact", "drop"])])


def _tables(con) -> Section:
    stages = F.stage_tables()
    parts = ["<p>Every signal table present, column by column. Free-text columns are summarised by counts "
             "only.</p>"]
    names = F.signal_tables(con)
    for t in names:
        s = F.table_summary(con, t, set(stages[t].explain_exclude), set(stages[t].categories))
        docs = f", {s['documents']:,} documents" if s["documents"] is not None else ""
        parts.append(f"<h3><code>{escape(t)}</code>: {s['rows']:,} rows{docs}</h3>")
        parts.append(html_table(s["columns"], ["column", "type", "nulls", "distinct", "summary"]))
    if not names:
        parts.append('<p class="note">No signal table yet.</p>')
    return Section("tables", "Signal tables", 90, parts)


def _provenance(con, found: tuple[Path, dict[str, Any]] | None, ctx: F.Context, modules: list[Any]) -> Section:
    """The manifest in use (`found`, whose run.json is `ctx.run`), the stages' rows, versions and hashes."""
    title = "Provenance"
    if not found:
        return Section("provenance", title, 100, note="no manifest in the workspace yet (run `curate run` or "
                       "`curate manifest WS --out DIR`)")
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
    for mod in modules:
        if hasattr(mod, "report_provenance"):
            kv += mod.report_provenance(con, ctx)
    current = one_value(con, "SELECT rules_sha256 FROM policy_runs ORDER BY decided_at DESC LIMIT 1")
    parts = ["<table>" + "".join(f"<tr><th>{escape(k)}</th><td>{v}</td></tr>" for k, v in kv) + "</table>"]
    if current and current != r.get("sha256"):
        parts.append('<p class="flag">The current decisions used another rules file than this manifest: write a '
                     "new manifest before publishing.</p>")
    stages = [{"stage": s.get("name"), "version": s.get("version"), "current": s.get("current"),
               "fingerprints": ", ".join(s.get("fingerprints", []))} for s in run.get("stages", [])]
    parts += ["<h3>Stages</h3>", html_table(stages, ["stage", "version", "current", "fingerprints"])]
    assets = [{"stage": s.get("name"), **a} for s in run.get("stages", []) for a in s.get("assets", []) or []]
    parts.append("<h3>Models, lexicons and lists</h3>")
    parts.append(html_table(assets, ["stage", "kind", "path", "version", "sha256"]) if assets else
                 '<p class="note">No stage recorded a model, lexicon or list.</p>')
    inputs = [{"shard": Path(i.get("uri", "")).name, **i} for i in run.get("inputs", [])]
    parts += ["<h3>Input shards</h3>", html_table(inputs, ["shard", "format", "status", "rows", "bytes", "sha256"])]
    return Section("provenance", title, 100, parts)


def one_value(con, sql: str) -> Any:
    rows = con.execute(sql).fetchall()
    return rows[0][0] if rows else None


# -- html helpers -----------------------------------------------------------------------------------
def figure(svg: str, caption: str) -> str:
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


def html_table(rows: Sequence[dict[str, Any]], cols: Sequence[str]) -> str:
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


def any_html(value: Any, depth: int = 0) -> str:
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
        return "<table>" + "".join(f"<tr><th>{escape(str(k))}</th><td>{any_html(v, depth + 1)}</td></tr>"
                                   for k, v in value.items()) + "</table>"
    if isinstance(value, list | tuple):
        if value and all(isinstance(x, dict) for x in value):
            cols = list(dict.fromkeys(k for x in value for k in x))
            return html_table(list(value)[:100], cols)
        return escape(", ".join(str(x) for x in value[:100]))
    return _cell(value)[1]


def _document(w: Workspace, sections: list[Section], totals: dict[str, Any], run: dict[str, Any]) -> str:
    nav = "".join(f'<a href="#{s.id}">{escape(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.id}"><h2>{escape(s.title)}</h2>'
                   + (f'<p class="note">Not available: {escape(s.note)}</p>' if s.note else "".join(s.parts))
                   + "</section>" for s in sections)
    root = run.get("manifest", {}).get("root_hash", "")
    sub = f"Workspace <code>{escape(str(w.path))}</code> · {totals['documents']:,} documents" + \
        (f" · manifest root <code>{escape(root[:16])}…</code>" if root else "")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
            f'content="width=device-width, initial-scale=1"><title>Curate audit report</title>'
            f'<style>{CSS}</style></head><body><header><h1>Curate audit report</h1><p>{sub}</p></header>'
            f"<nav>{nav}</nav><main>{body}<p class=\"note\">Generated by curate {escape(__version__)}. Contains "
            "counts, categories, distributions and hashes only: no document text and no personal-data value."
            "</p></main></body></html>\n")
