"""`curate` on the command line: each command is a thin shell over the Workspace method of its name."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from .workspace import Workspace, WorkspaceError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Curate: training-data curation and audit. Signals first, decisions later.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

WS = Annotated[Path, typer.Argument(help="Workspace directory.")]
Rules = Annotated[Path | None, typer.Option("--rules", help="Rules file (default: rules/default.toml).")]


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Expected failures print one plain line and exit 2, never a traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from .policy import RuleError

        try:
            return fn(*args, **kwargs)
        except (WorkspaceError, RuleError, FileNotFoundError, KeyError, ValueError) as e:
            msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
            err.print(f"[red]error:[/red] {msg}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    return t


@app.command()
@friendly
def init(ws: WS) -> None:
    """Create a workspace (or bring an existing one to the current schema)."""
    w = Workspace.init(ws)
    out.print(f"workspace ready: {w.path}")


@app.command()
@friendly
def ingest(
    ws: WS,
    paths: Annotated[list[str], typer.Argument(help="Shard files, directories or globs.")],
    id_field: Annotated[str, typer.Option(help="Input field holding the document id.")] = "id",
    text_field: Annotated[str, typer.Option(help="Input field holding the text.")] = "text",
    url_field: Annotated[str, typer.Option(help="Input field holding the URL.")] = "url",
    meta_field: Annotated[str, typer.Option(help="Input field holding the metadata object.")] = "meta",
    max_doc_bytes: Annotated[int, typer.Option(help="Larger documents are quarantined.")] = 64 * 1024 * 1024,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Stream shards (JSONL[.gz|.zst], Parquet, CSV) into the workspace; each shard once."""
    from .ingest import Fields

    s = Workspace(ws).ingest(paths, fields=Fields(id_field, text_field, url_field, meta_field),
                             max_doc_bytes=max_doc_bytes, progress=progress and sys.stderr.isatty())
    out.print(_table("ingest", ["shard", "status", "rows", "documents", "quarantined"],
                     [[Path(r.uri).name, r.status, r.rows, r.documents, r.quarantined] for r in s.shards]))
    for r in s.shards:
        if r.error:
            err.print(f"[yellow]{r.uri}[/yellow]: {r.error}", highlight=False)
    out.print(f"{len(s.shards)} shard(s): {s.by_status('ingested') + s.by_status('partial')} ingested, "
              f"{s.by_status('skipped')} already present, {s.by_status('failed')} unreadable, "
              f"{s.by_status('missing')} missing; {s.documents} documents, {s.quarantined} rows quarantined")
    if s.quarantined:
        out.print(f"see why with: curate sql {ws} \"select uri, row, error from quarantine\"")


@app.command()
@friendly
def run(
    ws: WS,
    stages: Annotated[list[str] | None, typer.Option("--stages", help="Stages to run (default: all).")] = None,
    rules: Rules = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: one per core).")] = None,
    manifest: Annotated[Path | None, typer.Option(help="Manifest directory (default: WS/manifest).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run the detectors on what they have not seen, then the policy, then write the manifest."""
    names = [n for s in stages or [] for n in s.split(",") if n] or None
    s = Workspace(ws).run(stages=names, rules=rules, workers=workers, manifest=manifest,
                          progress=progress and sys.stderr.isatty())
    out.print(_table("stages", ["stage", "shards", "documents", "errors", "seconds"],
                     [[r.name, r.shards, r.documents, r.errors, f"{r.seconds:.1f}"] for r in s.stages]))
    _print_decisions(s.decisions)
    m = s.manifest
    out.print(f"manifest: {m.path} ({m.rows} rows, root {m.root_hash[:16]}…)")


def _print_decisions(d: Any) -> None:
    out.print(_table(f"decisions (policy {d.rules.path.name}, sha256 {d.rules.sha256[:12]}…)",
                     ["action", "documents"], [[k, v] for k, v in d.by_action.items()]))
    if d.by_rule:
        out.print(_table("rules fired", ["rule", "documents"], [[k, v] for k, v in d.by_rule.items()]))


@app.command()
@friendly
def decide(ws: WS, rules: Rules = None) -> None:
    """Re-run only the policy over the stored signals."""
    _print_decisions(Workspace(ws).decide(rules))


@app.command()
@friendly
def dedup(
    ws: WS,
    against: Annotated[list[Path] | None, typer.Option(
        "--against", help="Also mark documents that near-copy this workspace (opened read-only; repeatable).")] = None,
    rules: Rules = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: one per core).")] = None,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Exact and near-duplicate detection (and against reference workspaces), then the policy."""
    s = Workspace(ws).dedup(against=against or [], rules=rules, workers=workers,
                            progress=progress and sys.stderr.isatty())
    out.print(f"near duplicates: {s.clusters} clusters, {s.clustered} documents in them, {s.duplicates} not kept")
    for ref, n in s.against.items():
        out.print(f"against {ref}: {n} documents near-copy a document there")
    _print_decisions(s.decisions)


@app.command()
@friendly
def manifest(ws: WS, out_dir: Annotated[Path, typer.Option("--out", help="Manifest directory.")],
             rules: Rules = None) -> None:
    """Write manifest.parquet, run.json and the root hash."""
    m = Workspace(ws).manifest(out_dir, rules=rules)
    out.print(f"manifest: {m.path} ({m.rows} rows, root {m.root_hash})")


@app.command()
@friendly
def verify(
    manifest_dir: Annotated[Path, typer.Argument(help="Manifest directory.")],
    workspace: Annotated[Path | None, typer.Option(help="Also check against this workspace.")] = None,
    shards: Annotated[bool, typer.Option("--shards", help="Also re-hash the input shards.")] = False,
) -> None:
    """Recompute row hashes, root hash and counts; exit 1 naming each mismatch."""
    from .manifest import verify as _verify

    rep = _verify(manifest_dir, workspace=Workspace(workspace) if workspace else None, shards=shards)
    for n in rep.notes:
        out.print(f"note: {n}", highlight=False)
    for p in rep.problems[:200]:
        out.print(f"[red]MISMATCH[/red] {p}", highlight=False)
    if len(rep.problems) > 200:
        out.print(f"… and {len(rep.problems) - 200} more")
    if not rep.ok:
        raise typer.Exit(1)
    out.print(f"manifest {manifest_dir} verified")


@app.command()
@friendly
def diff(
    a: Annotated[Path, typer.Argument(help="Old manifest directory.")],
    b: Annotated[Path, typer.Argument(help="New manifest directory.")],
    out_file: Annotated[Path | None, typer.Option("--out", help="Write every changed row (.parquet/.csv).")] = None,
    limit: Annotated[int, typer.Option(help="Rows to print.")] = 50,
) -> None:
    """Documents whose action changed between two manifests, and the rules that changed it."""
    from .manifest import diff as _diff

    summary, table = _diff(a, b)
    if not summary:
        out.print("no document changed its action")
    else:
        out.print(_table("changes", ["transition", "documents"], [[k, v] for k, v in summary.items()]))
        rows = table.slice(0, limit).to_pylist()
        out.print(_table("documents", ["doc_id", "from", "to", "rules added", "rules removed"],
                         [[r["doc_id"], r["action_a"], r["action_b"], ",".join(r["rules_added"]),
                           ",".join(r["rules_removed"])] for r in rows]))
        if table.num_rows > limit:
            out.print(f"… {table.num_rows - limit} more (use --out FILE for all)")
    if out_file:
        _write_table(table, out_file)


def _write_table(table: Any, path: Path) -> None:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if path.suffix == ".csv":
        flat = table.set_column(3, "rules_added", [[",".join(x) for x in table.column(3).to_pylist()]])
        flat = flat.set_column(4, "rules_removed", [[",".join(x) for x in table.column(4).to_pylist()]])
        pacsv.write_csv(flat, path)
    else:
        pq.write_table(table, path)


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
        out.print(f"{doc_id}: quarantined at ingest ({q['uri']} row {q['row']}): {q['error']}", highlight=False)
        return
    out.print(f"[bold]{info['doc_id']}[/bold]  {info['shard_uri']} row {info['row']}", highlight=False)
    out.print(f"url {info['url']}  domain {info['domain']}  {info['chars']} chars  sha256 {info['sha256'][:16]}…",
              highlight=False)
    out.print(f"action: [bold]{info['action']}[/bold]")
    for r in info.get("rules", []):
        out.print(f"  rule {r['id']} ({r['action']}): {r['description']}\n    when {r['when']}", highlight=False)
    for table, rows in info["signals"].items():
        cols = list(rows[0])
        if len(rows) == 1 and len(cols) > 8:  # one wide row (e.g. quality's metrics): one line per column
            out.print(_table(table, ["column", "value"], [[c, rows[0][c]] for c in cols]))
            continue
        out.print(_table(table, cols, [[r[c] for c in cols] for r in rows[:50]]))
    for e in info.get("stage_errors", []):
        out.print(f"[yellow]stage {e['stage']} failed on this document:[/yellow] {e['error']}", highlight=False)


@app.command()
@friendly
def export(
    ws: WS,
    out_dir: Annotated[Path, typer.Option("--out", help="Output directory.")],
    format: Annotated[str, typer.Option(help="jsonl or parquet.")] = "jsonl",
    max_bytes: Annotated[int, typer.Option(help="Cap per output file.")] = 256 * 1024 * 1024,
) -> None:
    """Write the kept documents, redacted where the decision says so, in size-capped shards."""
    s = Workspace(ws).export(out_dir, format=format, max_bytes=max_bytes)
    out.print(f"exported {s.documents} documents ({s.redacted} redacted) to {len(s.files)} file(s) in {s.path}")


@app.command()
@friendly
def stages() -> None:
    """The registered detectors and the tables they write."""
    from .stages import load_builtin, ordered

    reg = load_builtin()
    out.print(_table("stages", ["stage", "version", "writes", "after"],
                     [[n, reg[n].version, ", ".join(reg[n].tables), ", ".join(reg[n].after)] for n in ordered(reg)]))


@app.command()
@friendly
def signals(ws: WS) -> None:
    """The columns of the `signals` view that rules can use."""
    from .policy import build_signals_view

    w = Workspace(ws)
    with w.connect(write=True) as con:
        cols = build_signals_view(con)
    out.print(_table("signals", ["column", "type"], [[k, v] for k, v in cols.items()]))


@app.command()
@friendly
def sql(ws: WS, query: str, limit: Annotated[int, typer.Option(help="Rows to print.")] = 50) -> None:
    """Run a read-only SQL query against the workspace and print the result."""
    df = Workspace(ws).sql(query)
    out.print(_table(f"{df.height} row(s)", df.columns, [list(r) for r in df.head(limit).iter_rows()]))


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
    out.print(_table("validation", ["suite", "expectations", "failed"],
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
) -> None:
    """Representation per group before/after the policy, removal rate per rule and group, toxicity co-occurrence."""
    import polars as pl

    r = Workspace(ws).bias(confidence=confidence)
    if as_json:
        out.print_json(json.dumps(r.to_dict()))
        return
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
    out.print(_table("lexicons", ["axis", "version", "file", "sha256", "groups", "terms", "exclusions"],
                     [[x["axis"], x["version"], x["file"], x["sha256"][:12] + "…", x["groups"], x["terms"],
                       x["exclusions"]] for x in r.lexicons.iter_rows(named=True)]))
    rep = r.representation.filter(pl.col("docs_before") > 0)
    out.print(_table("representation (terms per million tokens)",
                     ["axis", "group", "docs before", "docs after", "per M before", "per M after", "after/before"],
                     [[x["axis"], x["group_name"], x["docs_before"], x["docs_after"], _f(x["per_million_before"]),
                       _f(x["per_million_after"]), _f(x["change"], 2)] for x in rep.iter_rows(named=True)]))
    out.print(f"{r.representation.height - rep.height} group(s) without any mention", highlight=False)
    rem = r.removal if all_rows else r.removal.filter(pl.col("flag") != "")
    pct = f"{confidence:.0%}"
    out.print(_table(f"removal by rule and group ({'all' if all_rows else 'flagged'}: {pct} interval excludes "
                     "the overall rate)",
                     ["rule", "measure", "axis", "group", "docs", "removed", "rate", f"{pct} interval", "overall",
                      "ratio", "flag"],
                     [[x["rule_id"], x["measure"], x["axis"], x["group_name"], x["docs"], x["removed"],
                       _p(x["rate"]), f"{_p(x['ci_low'])}–{_p(x['ci_high'])}", _p(x["overall_rate"]),
                       _f(x["ratio"], 2), x["flag"]] for x in rem.iter_rows(named=True)]))
    out.print(f"{s['flagged']} of {s['comparisons']} rule x group comparisons flagged", highlight=False)
    out.print(_table("co-occurrence with toxic terms (documents)",
                     ["axis", "group", "docs", "toxic", "rate", f"{pct} interval", "overall", "lift", "flag"],
                     [[x["axis"], x["group_name"], x["docs"], x["toxic_docs"], _p(x["rate"]),
                       f"{_p(x['ci_low'])}–{_p(x['ci_high'])}", _p(x["overall_rate"]), _f(x["lift"], 2), x["flag"]]
                      for x in r.cooccurrence.iter_rows(named=True)]))


def _f(v: float | None, digits: int = 1) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _p(v: float | None) -> str:
    return "" if v is None else f"{100 * v:.1f}%"
quality_app = typer.Typer(no_args_is_help=True, help="The learned quality score: train a model, try one.")
app.add_typer(quality_app, name="quality")


@quality_app.command("train")
@friendly
def quality_train(
    ws: WS,
    positive: Annotated[Path, typer.Option(help="Good examples: .jsonl (field text) or .txt (one per line).")],
    negative: Annotated[Path, typer.Option(help="Bad examples, same formats.")],
    rules: Rules = None,
    out_file: Annotated[Path | None, typer.Option("--out", help="Model file (default: WS/models/quality-<hash>.bin).")
                        ] = None,
) -> None:
    """Train a small fastText classifier (settings: the rules file's quality_model table), stored by its hash."""
    from .quality import train

    r = train(ws, positive, negative, rules=rules, out=out_file)
    acc = "n/a" if r.holdout_accuracy is None else f"{r.holdout_accuracy:.3f}"
    out.print(f"model {r.path} (sha256 {r.sha256[:16]}…): {r.positive} positive, {r.negative} negative examples, "
              f"hold-out accuracy {acc}", highlight=False)
    out.print(f"use it: in your rules file set [stages.quality] model = \"{r.path.resolve()}\" and "
              f"model_label = \"{r.params['positive_label']}\", then `curate run`", markup=False, highlight=False)


@quality_app.command("score")
@friendly
def quality_score(
    ws: WS,
    model: Annotated[Path, typer.Option(help="Any fastText classifier (.bin or .ftz).")],
    label: Annotated[str, typer.Option(help="The label whose probability is the score.")] = "__label__hq",
    out_file: Annotated[Path | None, typer.Option("--out", help="Write doc_id, score (.parquet).")] = None,
) -> None:
    """Score every document with a fastText classifier without changing the workspace."""
    from .quality import score

    s = score(ws, model, label=label, out=out_file)
    q = ", ".join(f"{k} {v:.3f}" for k, v in s.quantiles.items())
    mean = "n/a" if s.mean is None else f"{s.mean:.3f}"
    out.print(f"{s.documents} documents scored with {s.model} ({s.label}): mean {mean}; {q}", highlight=False)
    if s.out:
        out.print(f"scores written to {s.out}")
# -- opt-outs (curate/optout): the registry, per-site files, re-application --------------------------
optout_app = typer.Typer(no_args_is_help=True, help="The creator opt-out registry and machine-readable reservations.")
app.add_typer(optout_app, name="optout")
Creator = Annotated[str, typer.Option(help="Who asked (person, organisation or site).")]
Evidence = Annotated[str, typer.Option(help="Where the request came from (ticket, e-mail id, URL).")]
ReceivedAt = Annotated[str | None, typer.Option(help="When it was received (ISO 8601, default: now, UTC).")]


def _masked(kind: str, value: str, reveal: bool) -> str:
    """Author names are personal data: shown only on request."""
    import hashlib

    if kind == "author" and not reveal:
        return f"<author sha256:{hashlib.sha256(value.encode()).hexdigest()[:12]}>"
    return value if len(value) <= 100 else value[:97] + "..."


@optout_app.command("add")
@friendly
def optout_add(
    ws: WS,
    kind: Annotated[str, typer.Option(help="domain, url_prefix, url, sha256, author or work.")],
    creator: Creator,
    value: Annotated[str | None, typer.Option(help="The domain, URL, hash or name.")] = None,
    text_file: Annotated[Path | None, typer.Option("--file", help="For a work: a UTF-8 file with its text.")] = None,
    evidence: Evidence = "",
    received_at: ReceivedAt = None,
    verified: Annotated[bool, typer.Option(help="The requester's identity or right was checked.")] = False,
) -> None:
    """Register one opt-out entry (apply it with `curate optout apply`)."""
    from . import optout

    if (value is None) == (text_file is None):
        raise ValueError("give exactly one of --value or --file")
    if text_file is not None:
        value = optout.registry.read_work(text_file)
    entry_id, new, st = optout.add(Workspace(ws), kind, value, creator, evidence, received_at, verified)
    what = "added" if new else "already registered"
    out.print(f"{entry_id} {what}; registry version {st.version} (sha256 {st.sha256[:16]}…)", highlight=False)


@optout_app.command("import")
@friendly
def optout_import(
    ws: WS,
    file: Annotated[Path, typer.Argument(help="JSONL: {kind, value, creator, ...} or {op: revoke, entry_id, ...}.")],
    creator: Annotated[str | None, typer.Option(help="Creator for lines that name none.")] = None,
) -> None:
    """Import opt-out requests; bad lines are reported by number and the good ones imported."""
    from . import optout

    r = optout.import_file(Workspace(ws), file, creator=creator)
    for number, why in r.errors:
        err.print(f"{file}:{number}: {why}", highlight=False)
    st = r.state
    out.print(f"{r.added} added, {r.revoked} revoked, {r.unchanged} unchanged, {len(r.errors)} line(s) rejected; "
              f"registry version {st.version} (sha256 {st.sha256[:16]}…)", highlight=False)
    if r.errors:
        raise typer.Exit(1)


@optout_app.command("revoke")
@friendly
def optout_revoke(ws: WS, entry_id: str, creator: Creator, evidence: Evidence = "",
                  received_at: ReceivedAt = None) -> None:
    """Revoke an entry: documents only it excluded come back at the next `curate optout apply`."""
    from . import optout

    st = optout.revoke(Workspace(ws), entry_id, creator, evidence, received_at)
    out.print(f"{entry_id} revoked; registry version {st.version} (sha256 {st.sha256[:16]}…)", highlight=False)


@optout_app.command("list")
@friendly
def optout_list(
    ws: WS,
    all_entries: Annotated[bool, typer.Option("--all", help="Include revoked entries.")] = False,
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    reveal: Annotated[bool, typer.Option(help="Show author names (personal data).")] = False,
    limit: Annotated[int, typer.Option(help="Rows to print.")] = 100,
) -> None:
    """The registry's entries (active ones unless --all)."""
    from . import optout

    w = Workspace(ws)
    df = optout.entries(w, include_revoked=all_entries, kind=kind)
    with w.connect() as con:
        st = optout.state(con)
    rows = [[_masked(r["kind"], r["value"], reveal) if c == "value" else r[c] for c in df.columns]
            for r in df.head(limit).iter_rows(named=True)]
    out.print(_table(f"registry version {st.version}, {st.active} active entries, sha256 {st.sha256}",
                     df.columns, rows))
    if df.height > limit:
        out.print(f"… {df.height - limit} more (use --limit)")


@optout_app.command("log")
@friendly
def optout_log(
    ws: WS,
    since: Annotated[int, typer.Option(help="Show events after this registry version.")] = 0,
    verify: Annotated[bool, typer.Option(help="Recompute the hash chain; exit 1 on any mismatch.")] = False,
    reveal: Annotated[bool, typer.Option(help="Show author names (personal data).")] = False,
    limit: Annotated[int, typer.Option(help="Rows to print.")] = 100,
) -> None:
    """The registry's events, oldest first, each with the hash of the version it created."""
    from . import optout

    w = Workspace(ws)
    df = optout.log(w, since)
    rows = [[_masked(r["kind"], r["value"], reveal) if c == "value" else
             (r[c][:16] + "…" if c == "chain_hash" else r[c]) for c in df.columns]
            for r in df.head(limit).iter_rows(named=True)]
    out.print(_table(f"{df.height} event(s)", df.columns, rows))
    if verify:
        with w.connect() as con:
            problems = optout.check_chain(con)
        for p in problems:
            out.print(f"[red]MISMATCH[/red] {p}", highlight=False)
        if problems:
            raise typer.Exit(1)
        out.print("hash chain verified")


@optout_app.command("import-site")
@friendly
def optout_import_site(
    ws: WS,
    domain: Annotated[str, typer.Option(help="The host the files were fetched from.")],
    robots: Annotated[Path | None, typer.Option(help="Its robots.txt.")] = None,
    tdmrep: Annotated[Path | None, typer.Option(help="Its /.well-known/tdmrep.json.")] = None,
    ai_txt: Annotated[Path | None, typer.Option("--ai-txt", help="Its ai.txt.")] = None,
    creator: Annotated[str | None, typer.Option(help="Who fetched or sent them (default: the host).")] = None,
    evidence: Evidence = "",
    received_at: ReceivedAt = None,
) -> None:
    """Register a site's robots.txt / tdmrep.json / ai.txt (a newer file replaces the older)."""
    from . import optout

    changes, st = optout.import_site(Workspace(ws), domain, robots=robots, tdmrep=tdmrep, ai_txt=ai_txt,
                                     creator=creator, evidence=evidence, received_at=received_at)
    for kind, entry_id, changed in changes:
        out.print(f"{kind}: {entry_id} {'registered' if changed else 'unchanged'}", highlight=False)
    out.print(f"registry version {st.version} (sha256 {st.sha256[:16]}…)", highlight=False)


@optout_app.command("apply")
@friendly
def optout_apply(
    ws: WS,
    rules: Rules = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Manifest directory (default: WS/manifest).")] = None,
    limit: Annotated[int, typer.Option(help="Changed documents to print.")] = 50,
) -> None:
    """Re-apply the registry: opt-out matches for what changed, the policy, a new manifest and a diff."""
    from . import optout

    r = optout.apply(Workspace(ws), rules=rules, out=out_dir)
    was = f"version {r.before.version}" if r.before else "no version"
    out.print(f"registry {was} -> version {r.after.version} (sha256 {r.after.sha256[:16]}…): "
              f"{r.summary['excluded']} document(s) newly excluded, {r.summary['re-included']} re-included",
              highlight=False)
    rows = r.diff.slice(0, limit).to_pylist()
    if rows:
        out.print(_table("changes", ["doc_id", "change", "from", "to", "entries", "kinds"],
                         [[x["doc_id"], x["change"], x["action_before"], x["action_after"], ",".join(x["entries"]),
                           ",".join(x["kinds"])] for x in rows]))
    if r.diff.num_rows > limit:
        out.print(f"… {r.diff.num_rows - limit} more in {r.diff_path}")
    out.print(f"manifest: {r.manifest.path} ({r.manifest.rows} rows, root {r.manifest.root_hash[:16]}…); "
              f"diff: {r.diff_path}; " + ", ".join(f"{k} {v:.2f}s" for k, v in r.seconds.items()), highlight=False)


def main() -> None:
    from .hidden import hide

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    # DuckDB 1.5 imports pandas (0.6 s) at a process's first bound parameter, only to compare the value with
    # pandas.NaT. Great Expectations (`validate`) needs pandas; no other command does.
    if sys.argv[1:2] != ["validate"]:
        hide("pandas")
    app()


if __name__ == "__main__":
    main()
