"""The portal's ASGI app (FastAPI): the JSON API under /api/v1 (schema at /openapi.json) and the HTML page.

Abuse limits, all in `Guard` (a pure ASGI middleware, so they hold before any route runs): a cap on the body
size (the registry's own line limit: a 1 MiB work, JSON-escaped), per-client token buckets for writes and
reads, `application/json` required on API writes, and security headers (a CSP that allows nothing but this
origin's stylesheet and forms). HTML forms carry a CSRF token: an HMAC of a random SameSite=Strict cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from typing import Any, Literal

from fastapi import Body, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from curate import __version__
from curate.core.errors import NotFound as CoreNotFound
from curate.core.errors import UserError
from curate.portal import lookup as lookups
from curate.portal import page, requests
from curate.portal.mail import Transport
from curate.portal.requests import Context, NotFound
from curate.portal.store import Store
from curate.stages.optout import registry

MAX_BODY = registry.MAX_LINE_BYTES
CSRF_COOKIE = "curate_csrf"
WRITES = ("/submit", "/revoke", "/resend", "/confirm", "/api/v1/requests", "/api/v1/confirm")
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; style-src 'self'; form-action 'self'; base-uri 'none'; "
                                 b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]


class Bucket:
    """Token buckets per client: `rate` requests per minute, bursts of up to `rate`."""

    def __init__(self, rate: int, max_clients: int = 100_000):
        self.rate, self.max_clients = rate, max_clients
        self.state: dict[str, tuple[float, float]] = {}

    def allow(self, client: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        tokens, last = self.state.get(client, (float(self.rate), now))
        tokens = min(float(self.rate), tokens + (now - last) * self.rate / 60)
        if len(self.state) >= self.max_clients and client not in self.state:
            self.state.pop(next(iter(self.state)))  # oldest first: dicts keep insertion order
        self.state[client] = (tokens - 1, now) if tokens >= 1 else (tokens, now)
        return tokens >= 1


class Guard:
    def __init__(self, app: Any, write_rate: int, read_rate: int, max_body: int = MAX_BODY):
        self.app, self.max_body = app, max_body
        self.writes, self.reads = Bucket(write_rate), Bucket(read_rate)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def secured(message: dict) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + SECURITY_HEADERS
            await send(message)

        path, method = scope["path"], scope["method"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = (scope.get("client") or ("unknown", 0))[0]
        if not path.startswith("/api/v1/operator") and path not in ("/portal.css", "/healthz"):
            write = method == "POST" and path.startswith(WRITES)
            if not (self.writes if write else self.reads).allow(client):
                return await _plain(secured, 429, "too many requests from this address: wait a minute",
                                    [(b"retry-after", b"60")])
        if method in ("POST", "PUT", "PATCH"):
            try:
                declared = int(headers.get("content-length", "0") or 0)
            except ValueError:
                return await _plain(secured, 400, "bad Content-Length")
            typed = headers.get("content-type", "")
            if path.startswith("/api/") and not typed.startswith("application/json") and (declared or typed):
                return await _plain(secured, 415, "the API takes application/json")
            if declared > self.max_body:
                return await _plain(secured, 413, f"request body larger than {self.max_body} bytes")
            body, more = b"", True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self.max_body:
                    return await _plain(secured, 413, f"request body larger than {self.max_body} bytes")
            sent = False

            async def replay() -> dict:
                nonlocal sent
                if sent:
                    return await receive()
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}

            return await self.app(scope, replay, secured)
        return await self.app(scope, receive, secured)


async def _plain(send: Any, status: int, text: str, extra: list | None = None) -> None:
    data = json.dumps({"error": text}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
                + (extra or [])})
    await send({"type": "http.response.body", "body": data})


# -- API models -------------------------------------------------------------------------------------------
Kind = Literal["domain", "url_prefix", "url", "work", "author", "sha256", "robots_txt", "tdmrep"]


class Submission(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Kind
    value: str = Field(max_length=registry.MAX_SITE_FILE_BYTES,
                       description="domain, URL, name, 64-hex hash, a work's text, or the site file's text")
    contact: str | None = Field(None, max_length=254, description="e-mail address (required for url, work, "
                                "author, sha256: the confirmation link goes there)")
    site: str | None = Field(None, max_length=253, description="for robots_txt and tdmrep: the host they belong to")
    evidence: str = Field("", max_length=registry.MAX_EVIDENCE)
    prefs: str | None = Field(None, max_length=1024, description="IETF AI-preferences statement, e.g. train-ai=n")


class Receipt(BaseModel):
    id: str
    status: str
    method: Literal["site", "contact"]
    kind: str
    received_at: str
    token: str | None = None
    place_at: str | None = None
    mailed: bool | None = None


class ConfirmBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(max_length=512)


class LookupBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    release: str | None = Field(None, max_length=100)
    url: str | None = Field(None, max_length=2048)
    domain: str | None = Field(None, max_length=253)
    text: str | None = Field(None, max_length=lookups.MAX_TEXT)


class Synced(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seqs: list[int] = Field(max_length=100_000)
    workspace: str = Field(max_length=4096)
    version: int


def create_app(store: Store, mail: Transport | None = None, base_url: str = "http://127.0.0.1:8080",
               write_rate: int = 30, read_rate: int = 600, max_body: int = MAX_BODY) -> Any:
    """The portal app over `store`; rates are requests per minute per client address (0: no limit)."""
    ctx = Context(store, mail, base_url)
    api = FastAPI(title="Curate opt-out portal", version=__version__, docs_url=None, redoc_url=None,
                  description="Creators submit opt-out requests, prove them, look up releases and revoke.")
    secure_cookie = base_url.startswith("https://")

    def csrf_pair(request: Request) -> tuple[str, str | None]:
        """(form token, new cookie value or None when the request has one)."""
        cookie = request.cookies.get(CSRF_COOKIE)
        new = None
        if not cookie or len(cookie) > 64:
            cookie = new = secrets.token_urlsafe(24)
        return hmac.new(store.secret, b"csrf:" + cookie.encode(), hashlib.sha256).hexdigest(), new

    def html(request: Request, render: Any, status: int = 200) -> HTMLResponse:
        token, new = csrf_pair(request)
        resp = HTMLResponse(render(token), status_code=status)
        if new:
            resp.set_cookie(CSRF_COOKIE, new, httponly=True, samesite="strict", secure=secure_cookie, path="/")
        return resp

    async def form(request: Request) -> dict[str, str]:
        data = await request.form(max_files=0, max_fields=20)
        fields = {k: v for k, v in data.items() if isinstance(v, str)}
        cookie = request.cookies.get(CSRF_COOKIE, "")
        expected = hmac.new(store.secret, b"csrf:" + cookie.encode(), hashlib.sha256).hexdigest()
        if not cookie or not hmac.compare_digest(fields.get("csrf", ""), expected):
            raise HTTPException(403, "the form expired or came from another site: reload the page and try again")
        return fields

    def client(request: Request) -> str:
        host = request.client.host if request.client else "unknown"
        return hashlib.sha256(store.secret + host.encode()).hexdigest()[:16]  # abuse review without keeping the IP

    def operator(authorization: str | None) -> None:
        token = (authorization or "").removeprefix("Bearer ").strip()
        if not token or not store.check_operator_token(token):
            raise HTTPException(401, "operator token required")

    @api.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> Response:
        code = 404 if isinstance(exc, NotFound | CoreNotFound) else 422
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=code)
        return HTMLResponse(page.error("Sorry", str(exc)), status_code=code)

    @api.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own answer echoes the input back; ours names the fields only
        where = sorted({".".join(str(p) for p in err.get("loc", ())[1:]) or "body" for err in exc.errors()})
        text = f"invalid or missing: {', '.join(where)}"
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": text}, status_code=422)
        return HTMLResponse(page.error("Sorry", text), status_code=422)

    @api.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)
        return HTMLResponse(page.error("Sorry", str(exc.detail)), status_code=exc.status_code)

    # -- API ---------------------------------------------------------------------------------------------
    @api.post("/api/v1/requests", status_code=201, response_model=Receipt, tags=["requests"])
    def submit(body: Submission, request: Request) -> dict[str, Any]:
        """Submit an opt-out request; the receipt says how to prove it (a site token, or a mailed link)."""
        return requests.submit(ctx, body.kind, body.value, body.contact, body.evidence, body.prefs, body.site,
                               client(request))

    @api.get("/api/v1/requests/{request_id}", tags=["requests"])
    def get_status(request_id: str) -> dict[str, Any]:
        """A request's status: pending, verified, revocation pending or revoked, and what it did in the newest
        published release."""
        return requests.status(store, request_id)

    @api.post("/api/v1/requests/{request_id}/revoke", status_code=202, tags=["requests"])
    def revoke(request_id: str) -> dict[str, Any]:
        """Start revoking: proof goes to the request's own contact (a link) or site (a new token)."""
        return requests.request_revoke(ctx, request_id)

    @api.post("/api/v1/requests/{request_id}/resend", tags=["requests"])
    def resend(request_id: str) -> dict[str, Any]:
        """Mail the pending confirmation or revocation link again, to the request's own contact."""
        return requests.resend(ctx, request_id)

    @api.post("/api/v1/confirm", tags=["requests"])
    def confirm(body: ConfirmBody) -> dict[str, Any]:
        """Act on a mailed link's token (confirm a request, or its revocation)."""
        return requests.confirm(store, body.token)

    @api.get("/api/v1/lookup", tags=["lookup"])
    def lookup_get(release: str | None = Query(None, max_length=100), url: str | None = Query(None, max_length=2048),
                   domain: str | None = Query(None, max_length=253)) -> dict[str, Any]:
        """Is this URL or domain in the release (default: the newest), and what happened to it?"""
        return lookups.lookup(store, release, url=url, domain=domain)

    @api.post("/api/v1/lookup", tags=["lookup"])
    def lookup_post(body: LookupBody) -> dict[str, Any]:
        """The same, and for a text: its exact copies and near copies (counts, actions, rules, entries)."""
        return lookups.lookup(store, body.release, url=body.url, domain=body.domain, text=body.text)

    @api.get("/api/v1/releases", tags=["lookup"])
    def releases() -> list[dict[str, Any]]:
        return lookups.releases(store)

    @api.get("/api/v1/operator/store", tags=["operator"])
    def operator_store(authorization: str | None = Header(None)) -> dict[str, Any]:
        operator(authorization)
        return {"store_id": store.store_id}

    @api.get("/api/v1/operator/events", tags=["operator"])
    def operator_events(after: int = 0, limit: int = Query(1000, ge=1, le=10_000),
                        authorization: str | None = Header(None)) -> dict[str, Any]:
        """Events after `after` for `curate optout sync` (request data without contact addresses)."""
        operator(authorization)
        return {"store_id": store.store_id, "events": requests.events(store, after, limit)}

    @api.post("/api/v1/operator/synced", tags=["operator"])
    def operator_synced(body: Synced = Body(...), authorization: str | None = Header(None)) -> dict[str, Any]:
        operator(authorization)
        requests.mark_synced(store, body.seqs, body.workspace, body.version)
        return {"ok": True}

    @api.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        with store.tx() as cur:
            cur.one("SELECT 1")
        return {"ok": True}

    # -- the page ------------------------------------------------------------------------------------------
    @api.get("/portal.css", include_in_schema=False)
    def css() -> Response:
        return PlainTextResponse(page.CSS, media_type="text/css")

    @api.get("/", include_in_schema=False)
    def index(request: Request) -> HTMLResponse:
        return html(request, page.index)

    @api.post("/submit", include_in_schema=False)
    async def submit_form(request: Request) -> HTMLResponse:
        f = await form(request)
        r = await run_in_threadpool(requests.submit, ctx, f.get("kind"), f.get("value"), f.get("contact") or None,
                                    f.get("evidence", ""), f.get("prefs") or None, f.get("site"), client(request))
        return html(request, lambda _t: page.receipt(r), 201)

    @api.get("/status", include_in_schema=False)
    def status_page(request: Request, id: str | None = Query(None, max_length=64)) -> HTMLResponse:
        if not id:
            return html(request, lambda _t: page.status_form())
        st = requests.status(store, id)
        return html(request, lambda t: page.status(st, t))

    @api.post("/revoke", include_in_schema=False)
    async def revoke_form(request: Request) -> HTMLResponse:
        f = await form(request)
        r = await run_in_threadpool(requests.request_revoke, ctx, f.get("id", ""))
        return html(request, lambda _t: page.revoke_started(r))

    @api.post("/resend", include_in_schema=False)
    async def resend_form(request: Request) -> Response:
        f = await form(request)
        r = await run_in_threadpool(requests.resend, ctx, f.get("id", ""))
        return RedirectResponse(f"/status?id={r['id']}", status_code=303)

    @api.get("/confirm", include_in_schema=False)
    def confirm_page(request: Request, t: str = Query("", max_length=512)) -> HTMLResponse:
        return html(request, lambda token: page.confirm_form(t, token))

    @api.post("/confirm", include_in_schema=False)
    async def confirm_form(request: Request) -> HTMLResponse:
        f = await form(request)
        r = await run_in_threadpool(requests.confirm, store, f.get("t", ""))
        return html(request, lambda _t: page.confirmed(r))

    @api.get("/lookup", include_in_schema=False)
    def lookup_page(request: Request) -> HTMLResponse:
        rels = lookups.releases(store)
        return html(request, lambda t: page.lookup_form(t, rels))

    @api.post("/lookup", include_in_schema=False)
    async def lookup_form(request: Request) -> HTMLResponse:
        f = await form(request)
        rels = await run_in_threadpool(lookups.releases, store)
        what, q = f.get("what", "url"), f.get("q", "").strip() if f.get("what") != "text" else f.get("q", "")
        if what not in ("url", "domain", "text"):
            what = "url"
        try:
            answer = await run_in_threadpool(lambda: lookups.lookup(store, f.get("release") or None, **{what: q}))
        except UserError as exc:
            why = str(exc)
            return html(request, lambda t: page.lookup_form(t, rels, message=why), 422)
        return html(request, lambda t: page.lookup_form(t, rels, answer))

    return Guard(api, write_rate, read_rate, max_body)


def openapi(app: Any) -> dict[str, Any]:
    return app.app.openapi()
