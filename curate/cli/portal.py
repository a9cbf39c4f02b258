"""`curate portal`: the creators' opt-out portal (serve it, publish a release's lookup index, verify sites)."""

from __future__ import annotations

from typing import Annotated

import typer

from curate.cli.app import WS, app, friendly, out, table
from curate.core.errors import UserError

portal_app = typer.Typer(no_args_is_help=True, help="The creators' opt-out portal: a web service and page.")
app.add_typer(portal_app, name="portal")
StoreDSN = Annotated[str, typer.Option("--store", help="The portal's store: a SQLite file path, or a "
                                                         "postgresql:// DSN (several portal instances).")]


@portal_app.command("serve")
@friendly
def portal_serve(
    store: StoreDSN,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    base_url: Annotated[str | None, typer.Option(help="The portal's public address, for mailed links "
                                                       "(default: http://HOST:PORT).")] = None,
    mail: Annotated[str | None, typer.Option(help="smtp://HOST:PORT[?from=ADDR] or dir:PATH (default: no mail; "
                                                  "contact requests then wait for a resend).")] = None,
    write_rate: Annotated[int, typer.Option(help="Submissions, revocations and confirmations per minute per "
                                                 "client address (0: no limit).")] = 30,
    read_rate: Annotated[int, typer.Option(help="Lookups and status pages per minute per client address.")] = 600,
) -> None:
    """Serve the portal (API under /api/v1, schema at /openapi.json, the page at /) with uvicorn."""
    portal_serve_run(store, host, port, base_url, mail, write_rate, read_rate)


def portal_serve_run(store: str, host: str = "127.0.0.1", port: int = 8080, base_url: str | None = None,
                     mail: str | None = None, write_rate: int = 30, read_rate: int = 600) -> None:
    import uvicorn

    from curate.portal.app import create_app
    from curate.portal.mail import transport
    from curate.portal.store import Store

    s = Store(store)
    app_ = create_app(s, transport(mail) if mail else None, base_url or f"http://{host}:{port}", write_rate,
                      read_rate)
    try:
        uvicorn.run(app_, host=host, port=port, log_level="warning", access_log=False, server_header=False)
    finally:
        s.close()


@portal_app.command("publish")
@friendly
def portal_publish(
    ws: WS,
    store: StoreDSN,
    release: Annotated[str | None, typer.Option(help="Release name (default: the workspace's current manifest).")]
    = None,
) -> None:
    """Publish a release's lookup index (hashes, URL keys, hosts, shingle signatures; no text) to the store."""
    from curate.core.workspace import Workspace
    from curate.portal import lookup
    from curate.portal.store import Store

    s = Store(store)
    try:
        r = lookup.publish(Workspace(ws), s, release)
    finally:
        s.close()
    out.print(f"release {r['release']}: {r['documents']} documents, {r['entries']} opt-out entries indexed "
              f"(root {str(r['root_hash'])[:16]}…)", highlight=False)


@portal_app.command("verify-sites")
@friendly
def portal_verify_sites(
    store: StoreDSN,
    resolve: Annotated[list[str] | None, typer.Option(help="HOST=ADDR:PORT: fetch HOST from this address "
                                                           "(repeatable; for tests and internal mirrors).")] = None,
    scheme: Annotated[str, typer.Option(help="https (default) or http.")] = "https",
) -> None:
    """Fetch each pending site's /.well-known/curate-optout.txt and verify (or revoke) the requests it proves."""
    from curate.portal import requests
    from curate.portal.store import Store

    if scheme not in ("https", "http"):
        raise UserError("--scheme must be https or http")
    mapping = {}
    for item in resolve or []:
        h, sep, target = item.partition("=")
        if not sep or ":" not in target:
            raise UserError(f"--resolve {item!r}: expected HOST=ADDR:PORT")
        mapping[h.strip().lower()] = target.strip()
    s = Store(store)
    try:
        results = requests.verify_sites(s, mapping, scheme)
    finally:
        s.close()
    out.print(table(f"{len(results)} request(s) checked", ["request", "site", "result", "why"],
                    [[r["id"], r["site"], r["result"], r.get("why", "")] for r in results]))


@portal_app.command("token")
@friendly
def portal_token(store: StoreDSN) -> None:
    """Make a new operator token (for `curate optout sync --from URL`); the previous one stops working."""
    from curate.portal.store import Store

    s = Store(store)
    try:
        out.print(s.new_operator_token(), highlight=False)
    finally:
        s.close()
