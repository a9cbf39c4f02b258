"""Portal requests: submit (validated as `curate optout import` validates), confirm, status, revoke, verify sites.

Who may do what: a request is verified by the contact address it names (work, author, page, exact text:
a signed link mailed to it) or by its site (domain, URL prefix, robots.txt, tdmrep.json: a token placed
under `/.well-known/`). A revocation needs the same proof again: a new link mailed to the request's own
contact, or a new token on the same site. Nobody else can revoke it, whatever they know of it.

Each state change appends an event (`add` on submission, `verify`, `revoke`) that `curate optout sync`
replays into a workspace's registry. In the registry an entry's creator is `portal:<request id>`: the
contact address (personal data) stays in the portal's store.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from curate.portal import aipref, proof
from curate.portal.mail import Transport
from curate.portal.store import Store
from curate.stages.optout import registry
from curate.stages.optout.normalize import canonical_url, entry_domain
from curate.stages.optout.sitefiles import MAX_TDMREP_BYTES, parse_tdmrep

CONTACT_KINDS = ("url", "work", "author", "sha256")
SITE_KINDS = ("domain", "url_prefix", "robots_txt", "tdmrep")
KINDS = SITE_KINDS + CONTACT_KINDS
LABELS = {"domain": "a whole site (domain)", "url_prefix": "part of a site (URL prefix)", "url": "one page (URL)",
          "work": "a work (its text)", "author": "a name (author)", "sha256": "an exact text (SHA-256)",
          "robots_txt": "a site's robots.txt", "tdmrep": "a site's TDMRep file (tdmrep.json)"}
EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")
ID = re.compile(r"rq-[0-9a-f]{32}")


class PortalError(registry.RegistryError):
    """A request the portal refuses; the message says why (it never contains another person's data)."""


class NotFound(PortalError):
    pass


@dataclass
class Context:
    """What the operations need besides the store: how to mail, and the portal's public address."""

    store: Store
    mail: Transport | None = None
    base_url: str = "http://127.0.0.1:8080"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_id(request_id: Any) -> str:
    if not isinstance(request_id, str) or not ID.fullmatch(request_id):
        raise NotFound("no such request (a request id looks like rq- and 32 hexadecimal digits)")
    return request_id


def check_contact(contact: Any) -> str:
    if not isinstance(contact, str) or len(contact) > 254 or not EMAIL.fullmatch(contact.strip()):
        raise PortalError("contact must be an e-mail address (name@example.org)")
    return contact.strip()


def validate(kind: Any, value: Any, contact: Any, evidence: Any = "", prefs: Any = None,
             request_id: str = "rq-" + "0" * 32) -> dict[str, Any]:
    """The request's stored fields; PortalError / RegistryError (one line) when something is wrong."""
    if kind not in KINDS:
        raise PortalError(f"unknown kind; use one of {', '.join(KINDS)}")
    creator = f"portal:{request_id}"
    evidence = "" if evidence is None else evidence
    if kind in SITE_KINDS:
        contact = check_contact(contact) if contact else None
    else:
        contact = check_contact(contact)
    statement = None
    reserves = True
    if prefs not in (None, ""):
        try:
            parsed = aipref.parse(prefs)
        except ValueError as e:
            raise PortalError(f"AI-preference statement: {e}") from None
        statement, reserves = aipref.canonical(parsed), aipref.reserves_training(parsed)
    if kind in ("robots_txt", "tdmrep"):
        text = value if isinstance(value, str) else ""
        if not text.strip():
            raise PortalError(f"{kind}: paste the file's text")
        if len(text.encode("utf-8", "surrogatepass")) > registry.MAX_SITE_FILE_BYTES:
            raise PortalError(f"{kind}: more than {registry.MAX_SITE_FILE_BYTES} bytes")
        if kind == "tdmrep":
            if len(text.encode("utf-8", "surrogatepass")) > MAX_TDMREP_BYTES:
                raise PortalError(f"tdmrep: more than {MAX_TDMREP_BYTES} bytes")
            try:
                parse_tdmrep(text)
            except ValueError as e:
                raise PortalError(f"tdmrep: {e}") from None
        else:
            statements = aipref.robots_statements(text)
            if statements and statement is None:
                statement = "; ".join(statements)[:aipref.MAX_STATEMENT]
        # the site is given with the file: `value` is the text, `site` the host; checked like a domain entry
        return {"kind": kind, "payload": _site_text(text), "contact": contact, "evidence": evidence,
                "prefs": statement, "reserves": reserves, "creator": creator}
    e = registry.make_entry(kind, value, creator, evidence)
    site = None
    if kind == "domain":
        site = e.value.removeprefix("*.")
    elif kind == "url_prefix":
        site = entry_domain(canonical_url(e.value).split("://", 1)[1].split("/", 1)[0].split(":", 1)[0])
    return {"kind": kind, "value": e.value, "payload": e.payload, "entry_id": e.entry_id, "contact": contact,
            "site": site, "evidence": e.evidence, "prefs": statement, "reserves": reserves, "creator": creator}


def _site_text(text: str) -> str:
    bad = next((c for c in text if ord(c) < 32 and c not in "\t\n\r"), None)
    if bad is not None:
        raise PortalError(f"the file contains the control character U+{ord(bad):04X}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise PortalError("the file is not valid Unicode") from None
    return text


def submit(ctx: Context, kind: Any, value: Any, contact: Any = None, evidence: Any = "", prefs: Any = None,
           site: Any = None, client: str | None = None) -> dict[str, Any]:
    """Store a request as pending and start its proof; the receipt says what the requester does next."""
    request_id = "rq-" + secrets.token_hex(16)
    fields = validate(kind, value, contact, evidence, prefs, request_id)
    if kind in ("robots_txt", "tdmrep"):
        try:
            host = entry_domain(site if isinstance(site, str) else "")
        except ValueError as e:
            raise PortalError(f"site: {e}") from None
        fields.update(value=host, site=host,
                      entry_id=registry.Entry(kind, host, "", "", datetime.now(), False).entry_id)
        registry.make_entry("domain", host, fields["creator"], fields["evidence"])  # evidence checked as import does
    method = "site" if kind in SITE_KINDS else "contact"
    token = proof.site_token() if method == "site" else None
    at = now()
    with ctx.store.tx(write=True) as cur:
        cur.execute("""INSERT INTO requests (id, kind, value, payload, entry_id, contact, site, evidence, prefs,
                       reserves, method, token_hash, status, created_at, client)
                       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)""",
                    [request_id, kind, fields["value"], fields["payload"], fields["entry_id"], fields["contact"],
                     fields["site"], fields["evidence"], fields["prefs"], int(fields["reserves"]), method,
                     proof.token_hash(token) if token else None, at, client])
        _event(ctx.store, cur, request_id, "add", at)
    receipt = {"id": request_id, "status": "pending", "method": method, "kind": kind, "received_at": at}
    if method == "site":
        receipt.update(token=token, place_at=f"https://{fields['site']}{proof.WELL_KNOWN}")
    else:
        receipt["mailed"] = _mail_link(ctx, request_id, fields["contact"], "confirm")
    return receipt


def _event(store: Store, cur: Any, request_id: str, op: str, at: str) -> None:
    if store.postgres:  # events commit in seq order, so a sync that read up to N never misses one below N
        cur.execute("SELECT pg_advisory_xact_lock(7271002)")
    cur.execute("INSERT INTO events (request_id, op, at) VALUES (?, ?, ?)", [request_id, op, at])


def _mail_link(ctx: Context, request_id: str, contact: str, purpose: str) -> bool:
    if ctx.mail is None:
        return False
    link = f"{ctx.base_url.rstrip('/')}/confirm?t={proof.sign(ctx.store.secret, purpose, request_id)}"
    hours = proof.LINK_SECONDS // 3600
    if purpose == "confirm":
        subject = "Confirm your opt-out request"
        body = (f"Someone (we hope you) asked the curation team to leave content out of its training data, giving "
                f"this address.\n\nTo confirm request {request_id}, open this link within {hours} hours:\n\n{link}\n\n"
                "If it was not you, ignore this message: an unconfirmed request is never applied.\n")
    else:
        subject = "Confirm the revocation of your opt-out"
        body = (f"To revoke opt-out request {request_id}, open this link within {hours} hours:\n\n{link}\n\n"
                "If you did not ask for this, ignore this message: your opt-out stays in force.\n")
    try:
        ctx.mail.send(contact, subject, body)
    except OSError:  # the relay is down: the request stays stored; the status page offers to send it again
        return False
    return True


def resend(ctx: Context, request_id: str) -> dict[str, Any]:
    """Mail the confirmation (or revocation) link again to the request's own contact."""
    r = _get(ctx.store, request_id)
    if r["method"] != "contact":
        raise PortalError("this request is verified by a site token, not by mail")
    purpose = "revoke" if r["revoke_requested_at"] and r["status"] == "verified" else "confirm"
    if r["status"] == "revoked" or (purpose == "confirm" and r["status"] != "pending"):
        raise PortalError(f"this request is {r['status']}: there is nothing to confirm")
    return {"id": request_id, "mailed": _mail_link(ctx, request_id, r["contact"], purpose)}


COLUMNS = ("id", "kind", "value", "entry_id", "contact", "site", "prefs", "reserves", "method", "status",
           "created_at", "verified_at", "revoke_requested_at", "revoked_at", "token_hash", "revoke_hash")


def _get(store: Store, request_id: str, cur: Any = None) -> dict[str, Any]:
    check_id(request_id)
    sql = f"SELECT {', '.join(COLUMNS)} FROM requests WHERE id = ?"
    if cur is None:
        with store.tx() as c:
            row = c.one(sql, [request_id])
    else:
        row = cur.one(sql, [request_id])
    if row is None:
        raise NotFound("no such request")
    return dict(zip(COLUMNS, row, strict=True))


def status(store: Store, request_id: str) -> dict[str, Any]:
    """What the requester may see of their own request: never the contact, a work's text or a name."""
    r = _get(store, request_id)
    with store.tx() as cur:
        synced = cur.one("""SELECT min(s.at) FROM syncs s JOIN events e ON e.seq = s.seq
                            WHERE e.request_id = ? AND e.op IN ('add', 'verify')""", [request_id])[0]
        release = cur.one("SELECT name, published_at FROM releases ORDER BY ord DESC LIMIT 1")
        applied = None
        if release:
            hit = cur.one("SELECT documents, dropped FROM lookup_entries WHERE release = ? AND entry_id = ?",
                          [release[0], r["entry_id"]])
            applied = {"release": release[0], "published_at": release[1], "documents": hit[0] if hit else 0,
                       "excluded": hit[1] if hit else 0}
    shown = r["value"] if r["kind"] in ("domain", "url_prefix", "url", "sha256", "robots_txt", "tdmrep") \
        else f"sha256:{registry.content_hash(r['value'])[:16]}" if r["kind"] == "author" else f"text {r['value'][:16]}"
    state = r["status"]
    if state == "verified" and r["revoke_requested_at"]:
        state = "revocation pending"
    return {"id": r["id"], "kind": r["kind"], "value": shown, "entry_id": r["entry_id"], "method": r["method"],
            "status": state, "prefs": r["prefs"], "reserves_training": bool(r["reserves"]),
            "received_at": r["created_at"], "verified_at": r["verified_at"], "revoked_at": r["revoked_at"],
            "in_registry_since": synced, "latest_release": applied, "next": next_step(r, state, synced)}


def next_step(r: dict[str, Any], state: str, synced: str | None) -> str:
    if state == "pending":
        if r["method"] == "site":
            return (f"Place your token on its own line in https://{r['site']}{proof.WELL_KNOWN}. Our verifier checks "
                    "pending sites regularly; the request is verified when it finds the token.")
        return "Open the link we mailed to you (valid for 48 hours). An unconfirmed request is never applied."
    if state == "revocation pending":
        if r["method"] == "site":
            return (f"Place the revocation token in https://{r['site']}{proof.WELL_KNOWN}; your opt-out stays in "
                    "force until the verifier finds it.")
        return "Open the revocation link we mailed to you; your opt-out stays in force until then."
    if state == "revoked":
        return "Revoked: releases made after the next re-application include your content again."
    if not r["reserves"]:
        return "Verified. Your AI-preference statement does not reserve training, so nothing is excluded."
    if synced is None:
        return ("Verified. The curation team copies verified requests into its opt-out registry before each "
                "release; the next release made after that leaves matching content out.")
    return ("In the opt-out registry. Every release made after its re-application leaves matching content out; "
            "releases already published are not changed.")


def request_revoke(ctx: Context, request_id: str) -> dict[str, Any]:
    """Start a revocation: the proof goes to the request's own contact or site, never elsewhere."""
    r = _get(ctx.store, request_id)
    if r["status"] == "revoked":
        raise PortalError("this request is already revoked")
    out: dict[str, Any] = {"id": request_id, "status": "revocation pending", "method": r["method"]}
    token = proof.site_token() if r["method"] == "site" else None
    with ctx.store.tx(write=True) as cur:
        cur.execute("UPDATE requests SET revoke_requested_at = ?, revoke_hash = ? WHERE id = ?",
                    [now(), proof.token_hash(token) if token else None, request_id])
    if token:
        out.update(token=token, place_at=f"https://{r['site']}{proof.WELL_KNOWN}")
    else:
        out["mailed"] = _mail_link(ctx, request_id, r["contact"], "revoke")
    return out


def confirm(store: Store, token: str) -> dict[str, Any]:
    """Act on a mailed link: verify the request, or revoke it."""
    try:
        purpose, request_id = proof.check(store.secret, token)
    except proof.ProofError as e:
        raise PortalError(str(e)) from None
    if purpose == "confirm":
        changed = _transition(store, request_id, "pending", "verified")
    else:
        changed = _transition(store, request_id, ("pending", "verified"), "revoked", need_revoke=True)
    r = _get(store, request_id)
    return {"id": request_id, "status": r["status"], "changed": changed, "purpose": purpose}


def _transition(store: Store, request_id: str, before: str | tuple[str, ...], after: str,
                need_revoke: bool = False) -> bool:
    before = (before,) if isinstance(before, str) else before
    at = now()
    with store.tx(write=True) as cur:
        r = _get(store, request_id, cur)
        if r["status"] not in before or (need_revoke and not r["revoke_requested_at"]):
            return False
        column = "verified_at" if after == "verified" else "revoked_at"
        cur.execute(f"UPDATE requests SET status = ?, {column} = ? WHERE id = ? AND status = ?",  # column: a constant
                    [after, at, request_id, r["status"]])
        if cur.rowcount != 1:
            return False
        _event(store, cur, request_id, "verify" if after == "verified" else "revoke", at)
    return True


def verify_sites(store: Store, resolve: dict[str, str] | None = None, scheme: str = "https",
                 timeout: float = 10) -> list[dict[str, Any]]:
    """Check every site-proved request waiting for a token (to verify or to revoke); one fetch per host."""
    with store.tx() as cur:
        rows = cur.all("""SELECT id, site, status, token_hash, revoke_hash FROM requests WHERE method = 'site'
                          AND (status = 'pending' OR (status = 'verified' AND revoke_hash IS NOT NULL))
                          ORDER BY site, id""")
    fetched: dict[str, proof.Fetched] = {}
    out = []
    for request_id, site, state, token, revoke in rows:
        if site not in fetched:
            fetched[site] = proof.fetch_tokens(site, resolve, scheme, timeout)
        f = fetched[site]
        if f.error:
            out.append({"id": request_id, "site": site, "result": "unreachable", "why": f.error})
        elif state == "pending" and token in f.hashes:
            _transition(store, request_id, "pending", "verified")
            out.append({"id": request_id, "site": site, "result": "verified"})
        elif state == "verified" and revoke in f.hashes:
            _transition(store, request_id, "verified", "revoked", need_revoke=True)
            out.append({"id": request_id, "site": site, "result": "revoked"})
        else:
            out.append({"id": request_id, "site": site, "result": "token not found"})
    return out


# -- for sync --------------------------------------------------------------------------------------------
EVENT_COLUMNS = ("seq", "op", "request_id", "kind", "value", "payload", "entry_id", "evidence", "prefs", "reserves",
                 "method", "received_at", "at")


def events(store: Store, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
    """Events after `after`, oldest first, with what the registry needs (no contact address)."""
    with store.tx() as cur:
        rows = cur.all("""SELECT e.seq, e.op, e.request_id, r.kind, r.value, r.payload, r.entry_id, r.evidence,
                                 r.prefs, r.reserves, r.method, r.created_at, e.at
                          FROM events e JOIN requests r ON r.id = e.request_id
                          WHERE e.seq > ? ORDER BY e.seq LIMIT ?""", [after, limit])
    return [dict(zip(EVENT_COLUMNS, r, strict=True)) for r in rows]


def mark_synced(store: Store, seqs: list[int], workspace: str, version: int) -> None:
    if not seqs:
        return
    at = now()
    with store.tx(write=True) as cur:
        cur.executemany("INSERT INTO syncs (seq, workspace, registry_version, at) VALUES (?, ?, ?, ?) "
                        "ON CONFLICT (seq, workspace) DO NOTHING", [(s, workspace, version, at) for s in seqs])
