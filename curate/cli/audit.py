"""Commands of the audit surface: explain, stages, signals, sql, report, validate, card, bias."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from curate.cli.app import WS, Format, app, emit, friendly, out, table
from curate.core.errors import UserError
from curate.core.workspace import Workspace


@app.command()
@friendly
def explain(ws: WS, doc_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A document's signals and the rules that decided it (personal data as type and offsets only)."""
    info = Workspace(ws).explain(doc_id)
    if as_json:
        out.print_json(json.dumps(info, default=str))
        return
    if "quarantined" in info:
        q = info["quarantined"]
        out.print(f"{doc_id}: quarantined at ingest ({q['uri']} row {q['row']}): {q['error']}", markup=False,
                  highlight=False)
        return
    out.print(f"[bold]{escape(str(info['doc_id']))}[/bold]  {escape(str(info['shard_uri']))} row {info['row']}",
              highlight=False)
    out.print(f"url {info['url']}  domain {info['domain']}  {info['chars']} chars  sha256 {info['sha256'][:16]}…",
              markup=False, highlight=False)
    out.print(f"action: [bold]{info['action']}[/bold]")
    for r in info.get("rules", []):
        out.print(f"  rule {r['id']} ({r['action']}): {r['description']}\n    when {r['when']}", markup=False,
                  highlight=False)
    for name, rows in info["signals"].items():
        cols = list(rows[0])
        if len(rows) == 1 and len(cols) > 8:  # one wide row (e.g. quality's metrics): one line per column
            out.print(table(name, ["column", "value"], [[c, rows[0][c]] for c in cols]))
            continue
        out.print(table(name, cols, [[r[c] for c in cols] for r in rows[:50]]))
    for e in info.get("stage_errors", []):
        out.print(f"[yellow]stage {e['stage']} failed on this document:[/yellow] {escape(str(e['error']))}",
                  highlight=False)



@app.command()
@friendly
def stages() -> None:
    """The registered detectors and the tables they write."""
    from curate.core.stage import load_builtin, ordered

    reg = load_builtin()
    out.print(table("stages", ["stage", "version", "writes", "after"],
                     [[n, reg[n].version, ", ".join(reg[n].tables), ", ".join(reg[n].after)] for n in ordered(reg)]))


@app.command()
@friendly
def signals(ws: WS, fmt: Format = None) -> None:
    """The columns of the `signals` view that rules can use."""
    from curate.core.policy import build_signals_view

    w = Workspace(ws)
    with w.connect() as con:  # a temporary view: no write lock, so it works while a run writes
        cols = build_signals_view(con, temp=True)
    emit("signals", ["column", "type"], [[k, v] for k, v in cols.items()], fmt)


@app.command()
@friendly
def sql(ws: WS, query: str, limit: Annotated[int | None, typer.Option(
            help="Rows to print (default: 50 in a table, all otherwise).")] = None,
        fmt: Format = None) -> None:
    """Run a read-only SQL query against the workspace and print the result."""
    import sys

    df = Workspace(ws).sql(query)
    shown = limit if limit is not None else (50 if (fmt or ("table" if sys.stdout.isatty() else "plain")) == "table"
                                             else None)
    head = df if shown is None else df.head(shown)
    emit(f"{df.height} row(s)", df.columns, [list(r) for r in head.iter_rows()], fmt)
    if shown is not None and df.height > shown and (fmt or "table") == "table":
        out.print(f"… {df.height - shown} more (use --limit or --format csv)")


@app.command()
@friendly
def report(ws: WS, out_file: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path("report.html"),
           manifest: Annotated[Path | None, typer.Option(help="Manifest directory (default: the newest in WS).")]
           = None) -> None:
    """Write the audit report: one self-contained HTML file (plots inline, no document text)."""
    r = Workspace(ws).report(out_file, manifest=manifest)
    out.print(f"report: {r.path} ({len(r.sections)} sections, {r.plots} plots"
              + (f"; not available yet: {', '.join(r.skipped)}" if r.skipped else "") + ")")


@app.command()
@friendly
def validate(ws: WS,
             out_dir: Annotated[Path | None, typer.Option("--out", help="Audit bundle directory "
                                                          "(default: WS/audit/validation).")] = None,
             manifest: Annotated[Path | None, typer.Option(help="Manifest directory (default: the newest in WS).")]
             = None) -> None:
    """Great Expectations suites over documents, signal tables and the manifest; exit 1 on any failure."""
    r = Workspace(ws).validate(out_dir, manifest=manifest)
    out.print(table("validation", ["suite", "expectations", "failed"],
                     [[s.name, s.evaluated, s.failed] for s in r.suites]))
    for f in r.failures[:100]:
        out.print(f"[red]FAILED[/red] {f}", highlight=False)
    out.print(f"results: {r.path / 'validation.json'}; data docs: {r.docs_index}")
    if not r.ok:
        raise typer.Exit(1)


@app.command()
@friendly
def card(ws: WS, out_dir: Annotated[Path, typer.Option("--out", help="Directory for the cards.")],
         manifest: Annotated[Path | None, typer.Option(help="Manifest directory (default: the newest in WS).")]
         = None,
         name: Annotated[str | None, typer.Option(help="Dataset name (default: the workspace directory name).")]
         = None) -> None:
    """Write the datasheet (Markdown), Croissant JSON-LD with RAI fields, and the public training content summary."""
    r = Workspace(ws).card(out_dir, manifest=manifest, name=name)
    for p in r.files:
        out.print(f"wrote {p}")


@app.command()
@friendly
def bias(
    ws: WS,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole report as JSON.")] = False,
    all_rows: Annotated[bool, typer.Option("--all", help="Print every rule x group comparison, not only flagged.")]
    = False,
    confidence: Annotated[float, typer.Option(help="Confidence level of the intervals.")] = 0.95,
    fmt: Annotated[str | None, typer.Option(
        "--format", help="text (default), json (the whole report), or csv / plain: one of its tables (--table).")]
    = None,
    which: Annotated[str, typer.Option(
        "--table", help="With --format csv|plain: representation, removal or cooccurrence.")] = "removal",
) -> None:
    """Representation per group before/after the policy, removal rate per rule and group, toxicity co-occurrence."""
    import polars as pl

    r = Workspace(ws).bias(confidence=confidence)
    if as_json or fmt == "json":
        sys.stdout.write(json.dumps(r.to_dict(), default=str) + "\n")
        return
    if fmt in ("csv", "plain"):
        frames = {"representation": r.representation, "removal": r.removal, "cooccurrence": r.cooccurrence}
        if which not in frames:
            raise UserError(f"--table must be one of {', '.join(frames)}, not {which!r}")
        df = frames[which]
        emit(which, df.columns, [list(x) for x in df.iter_rows()], fmt)
        return
    if fmt not in (None, "text", "table"):
        raise UserError(f"--format must be text, json, csv or plain, not {fmt!r}")
    s = r.sample
    out.print(f"{s['documents_in_report']} documents, {s['tokens_before']} tokens before the policy; "
              f"{s['documents_after']} documents, {s['tokens_after']} tokens after (kept or redacted). "
              f"{s['documents_mentioning_a_group']} mention a group, {s['toxic_documents']} contain toxic terms.",
              highlight=False)
    if not s["lexicons_current"]:
        out.print("[yellow]note:[/yellow] the lexicons changed since the bias stage ran: run `curate run` again")
    for key in ("documents_without_decision", "documents_not_scanned"):
        if s[key]:
            out.print(f"[yellow]note:[/yellow] {s[key]} {key.replace('_', ' ')} (left out)")
    out.print(table("lexicons", ["axis", "version", "file", "sha256", "groups", "terms", "exclusions"],
                     [[x["axis"], x["version"], x["file"], x["sha256"][:12] + "…", x["groups"], x["terms"],
                       x["exclusions"]] for x in r.lexicons.iter_rows(named=True)]))
    rep = r.representation.filter(pl.col("docs_before") > 0)
    out.print(table("representation (terms per million tokens)",
                     ["axis", "group", "docs before", "docs after", "per M before", "per M after", "after/before"],
                     [[x["axis"], x["group_name"], x["docs_before"], x["docs_after"], _f(x["per_million_before"]),
                       _f(x["per_million_after"]), _f(x["change"], 2)] for x in rep.iter_rows(named=True)]))
    out.print(f"{r.representation.height - rep.height} group(s) without any mention", highlight=False)
    rem = r.removal if all_rows else r.removal.filter(pl.col("flag") != "")
    pct = f"{confidence:.0%}"
    out.print(table(f"removal by rule and group ({'all' if all_rows else 'flagged'}: {pct} interval excludes "
                     "the overall rate)",
                     ["rule", "measure", "axis", "group", "docs", "removed", "rate", f"{pct} interval", "overall",
                      "ratio", "flag"],
                     [[x["rule_id"], x["measure"], x["axis"], x["group_name"], x["docs"], x["removed"],
                       _p(x["rate"]), f"{_p(x['ci_low'])}–{_p(x['ci_high'])}", _p(x["overall_rate"]),
                       _f(x["ratio"], 2), x["flag"]] for x in rem.iter_rows(named=True)]))
    out.print(f"{s['flagged']} of {s['comparisons']} rule x group comparisons flagged", highlight=False)
    out.print(table("co-occurrence with toxic terms (documents)",
                     ["axis", "group", "docs", "toxic", "rate", f"{pct} interval", "overall", "lift", "flag"],
                     [[x["axis"], x["group_name"], x["docs"], x["toxic_docs"], _p(x["rate"]),
                       f"{_p(x['ci_low'])}–{_p(x['ci_high'])}", _p(x["overall_rate"]), _f(x["lift"], 2), x["flag"]]
                      for x in r.cooccurrence.iter_rows(named=True)]))


def _f(v: float | None, digits: int = 1) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _p(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.1f}%"
