"""What the audit surface shows of the bias stage: representation before/after the policy, disparate removal.

The audit module of `BiasTerms` (`Detector.audit`): report section, card facts and validation expectations.
All of it comes from the stage's own report (`curate.stages.bias.stage.report`).
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from curate.audit import charts
from curate.audit import facts as F
from curate.audit.card import absent_text
from curate.audit.report import Section, absent, figure, html_table

TABLE = "bias_terms"
TITLE = "Bias: representation and disparate removal"
EXPECTATIONS = {TABLE: {"required": ("axis", "group_name")}}


def bias_report(ws_path: Path) -> tuple[Any, str | None]:
    """The bias stage's report: (report or None, why it is missing)."""
    from curate.core.workspace import Workspace
    from curate.stages.bias.stage import report

    try:
        return report(Workspace(ws_path)), None
    except Exception as e:  # noqa: BLE001 - the report shows what exists and names what failed
        return None, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def report_sections(con, ctx: F.Context) -> list[Section]:
    if TABLE not in ctx.present:
        return [absent("bias", TITLE, 80, TABLE, "the `bias` stage")]
    bias, note = bias_report(ctx.ws)
    if bias is None:
        return [Section("bias", TITLE, 80, note=f"the bias report could not be computed: {note}")]
    rep = bias.representation.to_dicts()
    removal = bias.removal.to_dicts()
    parts = ["<p>From <code>curate.bias.report</code>: mentions of each group's lexicon terms per million tokens, "
             "before the policy (all documents) and after it (documents not dropped).</p>"]
    for axis in dict.fromkeys(r["axis"] for r in rep):
        rows = [r for r in rep if r["axis"] == axis and (r["per_million_before"] or r["per_million_after"])]
        if rows:
            parts.append(figure(charts.paired_bars([(r["group_name"], r["per_million_before"] or 0,
                                                     r["per_million_after"] or 0) for r in rows],
                                                   ("before", "after"), f"Representation: {axis}"),
                                f"<b>{escape(axis)}</b>: mentions per million tokens, before and after the policy"))
    seen = [r for r in rep if r["docs_before"]]
    parts.append(html_table(seen, ["axis", "group_name", "docs_before", "docs_after", "per_million_before",
                                   "per_million_after", "change"]))
    if len(seen) < len(rep):
        parts.append(f'<p class="note">{len(rep) - len(seen)} lexicon group(s) occur in no document.</p>')
    policy = [r for r in removal if r["rule_id"] == "(policy)" and r["docs"] and r["ci_low"] is not None]
    parts.append("<h3>Disparate removal</h3><p>For every rule, the removal rate among documents mentioning each "
                 "group, with its Wilson interval, against the rule's overall rate; flagged where the interval "
                 "excludes it. The chart shows the final decision (all drop rules together).</p>")
    if policy:
        parts.append(figure(charts.intervals([(f"{r['axis']}: {r['group_name']}", r["rate"], r["ci_low"],
                                               r["ci_high"], bool(r["flag"])) for r in policy],
                                             policy[0]["overall_rate"] or 0.0, "Removal rate by group, final decision"),
                            "Removal rate by group (dot) with its confidence interval; red: disparate"))
    flagged = [r for r in removal if r["flag"]]
    parts.append(f"<p>{len(flagged)} flag(s) over {len(removal)} rule × group comparisons.</p>")
    if flagged:
        parts.append(html_table(flagged, ["rule_id", "measure", "axis", "group_name", "docs", "removed", "rate",
                                          "ci_low", "ci_high", "overall_rate", "flag"]))
    co = [r for r in bias.cooccurrence.to_dicts() if r["flag"]]
    if co:
        parts += ["<h3>Co-occurrence with toxic terms (flagged)</h3>",
                  html_table(co, ["axis", "group_name", "docs", "toxic_docs", "rate", "overall_rate", "lift", "flag"])]
    parts += ["<h3>Lexicons</h3>", html_table(bias.lexicons.to_dicts(), ["axis", "version", "file", "groups", "terms",
                                                                         "sha256"])]
    return [Section("bias", TITLE, 80, parts)]


def card_facts(con, ctx: F.Context) -> dict[str, Any]:
    if TABLE not in ctx.present:
        return {"biases": absent_text(TABLE),
                "limitations": [f"Bias were not measured on this workspace (no `{TABLE}` table)."]}
    bias, note = bias_report(ctx.ws)
    if bias is None:
        return {"biases": f"Not measured: the bias report could not be computed ({note})."}
    rep = [r for r in bias.representation.to_dicts() if r["docs_before"]]
    if not rep:
        return {"biases": "No lexicon term of any group occurs in the documents."}
    lex = ", ".join(f"{r['axis']} {r['version']}" for r in bias.lexicons.to_dicts())
    text = "; ".join(f"{r['axis']}/{r['group_name']}: {r['per_million_before']:.1f} → "
                     f"{(r['per_million_after'] or 0):.1f} mentions per million tokens" for r in rep)
    flags = [r for r in bias.removal.to_dicts() if r["flag"]]
    flagged = ("; ".join(f"{r['axis']}/{r['group_name']} under {r['rule_id']}: {r['measure']} rate {r['rate']:.1%} "
                         f"(CI {r['ci_low']:.1%}–{r['ci_high']:.1%}) against {r['overall_rate']:.1%} overall "
                         f"({r['flag']})" for r in flags) if flags else "none")
    return {"biases": f"Measured with the lexicons {lex} (`curate bias`). Representation before → after the policy: "
                      f"{text}. Disparate removal (the confidence interval of a group's removal rate excludes the "
                      f"rule's overall rate): {flagged}."}
