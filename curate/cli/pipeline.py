"""Commands of the pipeline: init, ingest, run, decide, dedup, manifest, verify, diff, export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from curate.cli.app import WS, Rules, app, err, friendly, out, table
from curate.core.workspace import Workspace

Endpoint = Annotated[str | None, typer.Option(
    help="S3-compatible endpoint URL (default: $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL).")]
Root = Annotated[str | None, typer.Option(
    help="Dataset root (directory or URI prefix): shard URIs under it are recorded relative to it.")]


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
    paths: Annotated[list[str], typer.Argument(help="Shard files, directories or prefixes, or globs; local or "
                                                    "s3://bucket/... (also file://, gs://, hf://).")],
    id_field: Annotated[str, typer.Option(help="Input field holding the document id.")] = "id",
    text_field: Annotated[str, typer.Option(help="Input field holding the text.")] = "text",
    url_field: Annotated[str, typer.Option(help="Input field holding the URL.")] = "url",
    meta_field: Annotated[str, typer.Option(help="Input field holding the metadata object.")] = "meta",
    max_doc_bytes: Annotated[int, typer.Option(help="Larger documents are quarantined.")] = 64 * 1024 * 1024,
    max_quarantine: Annotated[float, typer.Option(
        help="Exit 1 when more than this share of the rows read was quarantined.")] = 0.01,
    endpoint: Endpoint = None,
    progress: Annotated[bool, typer.Option(help="Show progress (a bar on a terminal, else a line every 10 s).")]
    = True,
) -> None:
    """Stream shards (JSONL[.gz|.zst], Parquet, CSV) into the workspace; each shard once. Exit 0 when every input
    was read, 1 when one is missing or unreadable or too many rows were quarantined (--max-quarantine)."""
    from curate.io.ingest import Fields

    s = Workspace(ws).ingest(paths, fields=Fields(id_field, text_field, url_field, meta_field),
                             max_doc_bytes=max_doc_bytes, progress=progress, endpoint=endpoint)
    out.print(table("ingest", ["shard", "status", "rows", "documents", "quarantined"],
                    [[r.uri.rstrip("/").rsplit("/", 1)[-1], r.status, r.rows, r.documents, r.quarantined]
                     for r in s.shards]))
    for r in s.shards:
        if r.error:
            err.print(f"{r.status}: {r.uri}: {r.error}", markup=False, highlight=False)
    bad = s.by_status("failed") + s.by_status("missing")
    out.print(f"{len(s.shards)} shard(s): {s.by_status('ingested') + s.by_status('partial')} ingested, "
              f"{s.by_status('skipped')} already present, {s.by_status('failed')} unreadable, "
              f"{s.by_status('missing')} missing; {s.documents} documents, {s.quarantined} rows quarantined")
    if s.retried.retries:
        out.print(s.retried.describe())
    if s.quarantined:
        out.print(f"see why with: curate sql {ws} \"select uri, row, error from quarantine\"", markup=False)
    rows = s.count("rows")
    if bad or (rows and s.quarantined / rows > max_quarantine):
        if not bad:
            err.print(f"{s.quarantined} of {rows} rows quarantined: more than --max-quarantine {max_quarantine:g}",
                      highlight=False)
        raise typer.Exit(1)


@app.command()
@friendly
def run(
    ws: WS,
    stages: Annotated[list[str] | None, typer.Option("--stages", help="Stages to run (default: all).")] = None,
    rules: Rules = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: one per core).")] = None,
    manifest: Annotated[str | None, typer.Option(
        help="Manifest directory or store URI (default: a new release WS/manifests/<n>; WS/manifest points at "
             "the newest).")] = None,
    name: Annotated[str | None, typer.Option(help="Name of the new release (default: the next number).")] = None,
    root: Root = None,
    progress: Annotated[bool, typer.Option(help="Show progress (a bar on a terminal, else a line every 10 s).")]
    = True,
    engine: Annotated[str | None, typer.Option(
        help="Where per-document work runs: local (a process pool) or ray (default: the rules file's \\[engine], "
             "else local).")] = None,
    ray_address: Annotated[str | None, typer.Option(
        help="Address (host:port) of the Ray cluster's head for --engine ray (default: \\[engine] address, else "
             "$RAY_ADDRESS, else a Ray instance of its own).")] = None,
) -> None:
    """Run the detectors on what they have not seen, then the policy, then write the manifest."""
    names = [n for s in stages or [] for n in s.split(",") if n] or None
    s = Workspace(ws).run(stages=names, rules=rules, workers=workers, manifest=manifest, name=name, root=root,
                          progress=progress, engine=engine, ray_address=ray_address)
    out.print(table("stages", ["stage", "shards", "documents", "errors", "seconds"],
                     [[r.name, r.shards, r.documents, r.errors, f"{r.seconds:.1f}"] for r in s.stages]))
    _print_decisions(s.decisions)
    m = s.manifest
    out.print(f"manifest: {m.uri} ({m.rows} rows, root {m.root_hash[:16]}…)")
    if m.retried.retries:
        out.print(m.retried.describe())


def _print_decisions(d: Any) -> None:
    out.print(table(f"decisions (policy {d.rules.path.name}, sha256 {d.rules.sha256[:12]}…)",
                     ["action", "documents"], [[k, v] for k, v in d.by_action.items()]))
    if d.by_rule:
        out.print(table("rules fired", ["rule", "documents"], [[k, v] for k, v in d.by_rule.items()]))


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
                            progress=progress)
    out.print(f"near duplicates: {s.clusters} clusters, {s.clustered} documents in them, {s.duplicates} not kept")
    for ref, n in s.against.items():
        out.print(f"against {ref}: {n} documents near-copy a document there")
    _print_decisions(s.decisions)


@app.command()
@friendly
def manifest(ws: WS, out_dir: Annotated[str | None, typer.Option(
                 "--out", help="Manifest directory or store URI (s3://bucket/releases/r7/); default: a new release "
                               "WS/manifests/<n>.")] = None,
             rules: Rules = None,
             name: Annotated[str | None, typer.Option(help="Name of the new release (default: the next number).")]
             = None,
             root: Root = None,
             sign: Annotated[Path | None, typer.Option(
                 help="Sign the root with this ed25519 private key (PEM): ROOT.sig.")] = None) -> None:
    """Write manifest.parquet, run.json, the root hash (over the rows and run.json) and, with --sign, its
    signature."""
    m = Workspace(ws).manifest(out_dir, rules=rules, name=name, root=root, sign=sign)
    out.print(f"manifest: {m.uri} ({m.rows} rows, root {m.root_hash})")
    if m.retried.retries:
        out.print(m.retried.describe())


@app.command()
@friendly
def verify(
    manifest_dir: Annotated[str, typer.Argument(help="Manifest directory or store URI.")],
    workspace: Annotated[Path | None, typer.Option(help="Also check against this workspace.")] = None,
    shards: Annotated[bool, typer.Option("--shards", help="Also re-hash the input shards.")] = False,
    root: Annotated[str | None, typer.Option(
        help="Where the shards are now: relative URIs are resolved under it, and a shard not at its URI is "
             "looked for by hash under it.")] = None,
    endpoint: Endpoint = None,
    key: Annotated[Path | None, typer.Option(help="Check ROOT.sig with this ed25519 public key (PEM).")] = None,
) -> None:
    """Recompute row hashes, root hash (over the rows and run.json) and counts, and with --workspace every row
    from the workspace; exit 1 naming each mismatch."""
    from curate.core.manifest import verify as _verify

    rep = _verify(manifest_dir, workspace=Workspace(workspace) if workspace else None, shards=shards, root=root,
                  endpoint=endpoint, key=key)
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
    a: Annotated[Path, typer.Argument(help="Old manifest directory (e.g. WS/manifests/3).")],
    b: Annotated[Path, typer.Argument(help="New manifest directory (e.g. WS/manifests/4, or WS/manifest).")],
    out_file: Annotated[Path | None, typer.Option("--out", help="Write every changed row (.parquet/.csv).")] = None,
    limit: Annotated[int, typer.Option(help="Rows to print.")] = 50,
) -> None:
    """Documents whose action changed between two manifests, and the rules that changed it (rules that fired in
    one only, and rules that fired in both but whose action or condition changed)."""
    from curate.core.manifest import diff as _diff
    from curate.core.manifest import rule_changes

    summary, changes = _diff(a, b)
    edited = rule_changes(a, b)
    if not summary:
        out.print("no document changed its action")
    else:
        out.print(table("changes", ["transition", "documents"], [[k, v] for k, v in summary.items()]))
        rows = changes.slice(0, limit).to_pylist()
        out.print(table("documents", ["doc_id", "from", "to", "rules added", "rules removed", "rules changed"],
                        [[r["doc_id"], r["action_a"], r["action_b"], ",".join(r["rules_added"]),
                          ",".join(r["rules_removed"]), ",".join(r["rules_changed"])] for r in rows]))
        if changes.num_rows > limit:
            out.print(f"… {changes.num_rows - limit} more (use --out FILE for all)")
    for rid, how in edited.items():
        out.print(f"rule {rid} changed: {how}", markup=False, highlight=False)
    if out_file:
        _write_changes(changes, out_file)


def _write_changes(changes: Any, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if path.suffix == ".csv":
        flat = changes
        for col in ("rules_added", "rules_removed", "rules_changed"):
            i = flat.schema.get_field_index(col)
            flat = flat.set_column(i, col, pa.array([",".join(x) for x in flat.column(col).to_pylist()]))
        pacsv.write_csv(flat, path)
    else:
        pq.write_table(changes, path)


@app.command()
@friendly
def manifests(ws: WS) -> None:
    """The workspace's manifests (WS/manifests/<n>), oldest first; WS/manifest points at the newest."""
    rows = Workspace(ws).manifests()
    out.print(table(f"{len(rows)} manifest(s)", ["name", "created", "rows", "root", "rules", "actions", "current"],
                    [[r["name"], r["created_at"], r["rows"], (r["root_hash"] or "")[:16],
                      (r["rules_sha256"] or "")[:12], ", ".join(f"{k} {v}" for k, v in r["by_action"].items()),
                      "*" if r["current"] else ""] for r in rows]))


@app.command()
@friendly
def export(
    ws: WS,
    out_dir: Annotated[str, typer.Option("--out", help="Output directory or store prefix (s3://bucket/...).")],
    format: Annotated[str, typer.Option(help="jsonl or parquet.")] = "jsonl",
    max_bytes: Annotated[int, typer.Option(help="Cap per output file.")] = 256 * 1024 * 1024,
    endpoint: Endpoint = None,
) -> None:
    """Write the kept documents, redacted where the decision says so, in size-capped parts (each written
    atomically; export.json, the index, last)."""
    s = Workspace(ws).export(out_dir, format=format, max_bytes=max_bytes, endpoint=endpoint)
    out.print(f"exported {s.documents} documents ({s.redacted} redacted) to {len(s.files)} file(s) in {s.path}")
    if s.retried.retries:
        out.print(s.retried.describe())
