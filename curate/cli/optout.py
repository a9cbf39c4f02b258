"""`curate optout`: the creator opt-out registry, per-site files, re-application."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.cli.app import WS, Format, Rules, app, emit, err, friendly, out, table
from curate.core.errors import UserError
from curate.core.workspace import Workspace

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


def _person(name: str | None, reveal: bool) -> str | None:
    """Creators are people (or organisations) too: their names are shown only on request, like authors."""
    import hashlib

    if name is None or reveal:
        return name
    return f"<creator sha256:{hashlib.sha256(name.encode()).hexdigest()[:12]}>"


def _cell(column: str, row: dict, reveal: bool):
    if column == "value":
        return _masked(row["kind"], row["value"], reveal)
    if column == "creator":
        return _person(row["creator"], reveal)
    return row[column]


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
    from curate.stages import optout

    if (value is None) == (text_file is None):
        raise UserError("give exactly one of --value or --file")
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
    from curate.stages import optout

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
                  received_at: ReceivedAt = None,
                  operator: Annotated[bool, typer.Option(
                      help="Revoke as the operator, not as the entry's creator (needs --reason; logged).")] = False,
                  reason: Annotated[str | None, typer.Option(help="Why the operator revokes the entry.")] = None,
                  ) -> None:
    """Revoke an entry (only its creator can, or the operator with --operator and a reason): documents only it
    excluded come back at the next `curate optout apply`."""
    from curate.core.errors import UserError
    from curate.stages import optout
    from curate.util import log

    if operator and not (reason or "").strip():
        raise UserError("--operator needs --reason: an operator revocation is logged with its reason")
    st = optout.revoke(Workspace(ws), entry_id, creator, evidence, received_at, operator=reason if operator else None)
    if operator:
        log.event("operator_revocation", "warning", entry_id=entry_id, reason=reason, registry_version=st.version)
    out.print(f"{entry_id} revoked; registry version {st.version} (sha256 {st.sha256[:16]}…)", highlight=False)


@optout_app.command("list")
@friendly
def optout_list(
    ws: WS,
    all_entries: Annotated[bool, typer.Option("--all", help="Include revoked entries.")] = False,
    kind: Annotated[str | None, typer.Option(help="Only this kind.")] = None,
    reveal: Annotated[bool, typer.Option(help="Show author and creator names (personal data).")] = False,
    limit: Annotated[int, typer.Option(help="Rows to print.")] = 100,
    fmt: Format = None,
) -> None:
    """The registry's entries (active ones unless --all); author and creator names only with --reveal."""
    from curate.stages import optout

    w = Workspace(ws)
    df = optout.entries(w, include_revoked=all_entries, kind=kind)
    with w.connect() as con:
        st = optout.state(con)
    rows = [[_cell(c, r, reveal) for c in df.columns] for r in df.head(limit).iter_rows(named=True)]
    emit(f"registry version {st.version}, {st.active} active entries, sha256 {st.sha256}", df.columns, rows, fmt)
    if df.height > limit and (fmt or "table") == "table":
        out.print(f"… {df.height - limit} more (use --limit)")


@optout_app.command("log")
@friendly
def optout_log(
    ws: WS,
    since: Annotated[int, typer.Option(help="Show events after this registry version.")] = 0,
    verify: Annotated[bool, typer.Option(help="Recompute the hash chain; exit 1 on any mismatch.")] = False,
    reveal: Annotated[bool, typer.Option(help="Show author and creator names (personal data).")] = False,
    limit: Annotated[int, typer.Option(help="Rows to print.")] = 100,
) -> None:
    """The registry's events, oldest first, each with the hash of the version it created."""
    from curate.stages import optout

    w = Workspace(ws)
    df = optout.log(w, since)
    rows = [[r[c][:16] + "…" if c == "chain_hash" else _cell(c, r, reveal) for c in df.columns]
            for r in df.head(limit).iter_rows(named=True)]
    out.print(table(f"{df.height} event(s)", df.columns, rows))
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
    fetched_at: Annotated[str, typer.Option(help="When the files were fetched (ISO 8601): dates the evidence.")],
    robots: Annotated[Path | None, typer.Option(help="Its robots.txt.")] = None,
    tdmrep: Annotated[Path | None, typer.Option(help="Its /.well-known/tdmrep.json.")] = None,
    ai_txt: Annotated[Path | None, typer.Option("--ai-txt", help="Its ai.txt.")] = None,
    creator: Annotated[str | None, typer.Option(help="Who fetched or sent them (default: the host).")] = None,
    evidence: Evidence = "",
) -> None:
    """Register a site's robots.txt / tdmrep.json / ai.txt (a newer file replaces the older)."""
    from curate.stages import optout

    changes, st = optout.import_site(Workspace(ws), domain, robots=robots, tdmrep=tdmrep, ai_txt=ai_txt,
                                     creator=creator, evidence=evidence, fetched_at=fetched_at)
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
    from curate.stages import optout

    r = optout.apply(Workspace(ws), rules=rules, out=out_dir)
    was = f"version {r.before.version}" if r.before else "no version"
    out.print(f"registry {was} -> version {r.after.version} (sha256 {r.after.sha256[:16]}…): "
              f"{r.summary['excluded']} document(s) newly excluded, {r.summary['re-included']} re-included",
              highlight=False)
    rows = r.diff.slice(0, limit).to_pylist()
    if rows:
        out.print(table("changes", ["doc_id", "change", "from", "to", "entries", "kinds"],
                         [[x["doc_id"], x["change"], x["action_before"], x["action_after"], ",".join(x["entries"]),
                           ",".join(x["kinds"])] for x in rows]))
    if r.diff.num_rows > limit:
        out.print(f"… {r.diff.num_rows - limit} more in {r.diff_path}")
    out.print(f"manifest: {r.manifest.path} ({r.manifest.rows} rows, root {r.manifest.root_hash[:16]}…); "
              f"diff: {r.diff_path}; " + ", ".join(f"{k} {v:.2f}s" for k, v in r.seconds.items()), highlight=False)


@optout_app.command("sync")
@friendly
def optout_sync(
    ws: WS,
    source: Annotated[str, typer.Option("--from", help="The portal's store (SQLite path or postgresql:// DSN) "
                                                       "or a running portal's URL.")],
    token: Annotated[str | None, typer.Option(help="Operator token for a portal URL (default: "
                                                   "$CURATE_PORTAL_TOKEN).")] = None,
    pending: Annotated[bool, typer.Option(help="Bring unverified requests too (verified=false), for a rules "
                                               "file that decides on optout_verified.")] = False,
) -> None:
    """Pull the portal's new verified events into the registry (each once), before `curate optout apply`."""
    from curate.portal.sync import sync

    r = sync(Workspace(ws), source, pending=pending, token=token)
    out.print(f"{r.added} added, {r.revoked} revoked, {r.skipped} with nothing to do, {r.already} already synced; "
              f"registry version {r.version}", highlight=False)


@optout_app.command("evidence")
@friendly
def optout_evidence(
    ws: WS,
    domain: Annotated[str | None, typer.Option(help="Only this host and the hosts under it.")] = None,
    entry: Annotated[str | None, typer.Option(help="The history of one registry entry instead.")] = None,
    reveal: Annotated[bool, typer.Option(help="Show author and creator names (personal data).")] = False,
    limit: Annotated[int, typer.Option(help="Rows to print.")] = 200,
    fmt: Format = None,
) -> None:
    """What showed each reservation honoured: the site file (SHA-256, date fetched, rule) or the document's own
    header / meta value, with the documents it reserves; --entry ENTRY_ID: that entry's dated history."""
    from curate.stages.optout import registry
    from curate.stages.optout.evidence import evidence_rows

    w = Workspace(ws)
    if entry is not None:
        df = registry.history(w, entry)
        rows = [[r[c][:16] + "…" if c == "chain_hash" else _cell(c, r, reveal) for c in df.columns]
                for r in df.iter_rows(named=True)]
        emit(f"entry {entry}: {df.height} event(s)", df.columns, rows, fmt)
        return
    with w.connect() as con:
        found = evidence_rows(con, domain)
    cols = ["standard", "reservation", "source", "host", "shown_by", "sha256", "fetched_at", "entry_id", "documents",
            "removed", "example"]
    rows = [[(r[c][:16] + "…" if c == "sha256" and r[c] and (fmt or "table") == "table" else r[c]) for c in cols]
            for r in found[:limit]]
    emit(f"{len(found)} piece(s) of evidence" + (f" for {domain}" if domain else ""), cols, rows, fmt)
    if len(found) > limit and (fmt or "table") == "table":
        out.print(f"… {len(found) - limit} more (use --limit)")
