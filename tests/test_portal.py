"""The opt-out portal over SQLite: API, proof, authority, sync into a workspace, lookup, abuse limits."""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import CURATE, doc, write_jsonl
from fastapi.testclient import TestClient

from curate import Workspace
from curate.portal import aipref, lookup, proof, requests, sync
from curate.portal.app import create_app
from curate.portal.mail import DirTransport
from curate.portal.store import Store
from curate.stages import optout

WORK = " ".join(f"river{i} stone quiet morning {i % 7}" for i in range(40))
SECRET_NAME = "Ingrid Sørensen-Private"


@pytest.fixture(scope="module")
def base_ws(tmp_path_factory) -> Path:
    """Eight documents: six on www.example.org, a copy of WORK there, WORK itself on blog.other.net."""
    d = tmp_path_factory.mktemp("portal")
    rows = [doc(i) for i in range(6)] + [doc(10, text=WORK + " copy"),
                                         doc(11, text=WORK, url="https://blog.other.net/w", meta={"author": "Zed"})]
    write_jsonl(d / "s.jsonl", rows)
    ws = Workspace.init(d / "ws")
    ws.ingest([str(d / "s.jsonl")])
    ws.run(workers=1, stages=["dedup_exact", "optout"])
    return d / "ws"


@pytest.fixture
def ws(base_ws, tmp_path) -> Workspace:
    shutil.copytree(base_ws, tmp_path / "ws", symlinks=True)
    return Workspace(tmp_path / "ws")


@pytest.fixture
def portal(tmp_path):
    store = Store(tmp_path / "portal.sqlite")
    mail = DirTransport(tmp_path / "mail")
    app = create_app(store, mail, "http://127.0.0.1:9", write_rate=0, read_rate=0)
    with TestClient(app, base_url="http://127.0.0.1:9") as client:
        yield store, client, tmp_path / "mail"
    store.close()


def mails(box: Path) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(box.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns)]


def link_token(msg) -> str:
    return re.search(r"/confirm\?t=(\S+)", msg.get_content()).group(1)


def test_api_submit_confirm_sync_apply_lookup_and_revoke(portal, ws):
    store, client, box = portal
    r = client.post("/api/v1/requests", json={"kind": "work", "value": WORK, "contact": "ann@example.org",
                                              "evidence": "I wrote it"})
    assert r.status_code == 201, r.text
    receipt = r.json()
    assert receipt["status"] == "pending" and receipt["mailed"] is True and "token" not in {
        k for k, v in receipt.items() if v is not None}
    rid = receipt["id"]
    assert client.get(f"/api/v1/requests/{rid}").json()["status"] == "pending"

    # a pending request is not synced
    assert sync.sync(ws, sync.StoreSource(store)).added == 0
    (msg,) = mails(box)
    assert msg["To"] == "ann@example.org"
    assert client.post("/api/v1/confirm", json={"token": link_token(msg)}).json()["status"] == "verified"

    rep = sync.sync(ws, sync.StoreSource(store))
    assert rep.added == 1
    with ws.connect() as con:
        assert optout.check_chain(con) == []
    ent = optout.entries(ws)
    assert ent.height == 1 and ent["creator"][0] == f"portal:{rid}" and ent["verified"][0]
    assert "ann@example.org" not in json.dumps(ws.sql("SELECT * FROM optout_events").rows(), default=str)
    st = client.get(f"/api/v1/requests/{rid}").json()
    assert st["in_registry_since"] and st["latest_release"] is None

    applied = optout.apply(ws)
    assert applied.summary["excluded"] == 2
    pub = lookup.publish(ws, store)
    assert pub["documents"] == 8 and pub["entries"] == 1
    st = client.get(f"/api/v1/requests/{rid}").json()
    assert st["latest_release"]["excluded"] == 2 and WORK[:20] not in json.dumps(st)

    ans = client.post("/api/v1/lookup", json={"text": WORK}).json()
    assert ans["found"] and ans["exact_copies"] == 1 and ans["documents"] == 2 and ans["actions"] == {"drop": 2}
    assert ans["rules"] == ["optout-registry"] and ans["entries"] == [st["entry_id"]]
    assert set(ans) == {"release", "found", "documents", "actions", "excluded", "rules", "entries", "query",
                        "threshold", "exact_copies"}
    url = client.get("/api/v1/lookup", params={"url": "HTTPS://blog.other.net/w/?utm_source=x#top"}).json()
    assert url["found"] and url["excluded"] and url["documents"] == 1
    dom = client.get("/api/v1/lookup", params={"domain": "example.org"}).json()
    assert dom["documents"] == 7 and dom["actions"] == {"drop": 1, "keep": 6}
    none = client.get("/api/v1/lookup", params={"domain": "nowhere.example"}).json()
    assert none["found"] is False and none["documents"] == 0
    other = client.post("/api/v1/lookup", json={"text": "An unrelated text about bread and butter and tea."}).json()
    assert other["found"] is False

    # revocation: a link to the request's own contact, then sync + apply re-include the documents
    assert client.post(f"/api/v1/requests/{rid}/revoke").json()["status"] == "revocation pending"
    revoke_msg = mails(box)[-1]
    assert revoke_msg["To"] == "ann@example.org" and "revocation" in revoke_msg["Subject"]
    assert client.post("/api/v1/confirm", json={"token": link_token(revoke_msg)}).json()["status"] == "revoked"
    rep = sync.sync(ws, sync.StoreSource(store))
    assert rep.revoked == 1 and optout.entries(ws).height == 0
    assert optout.apply(ws).summary["re-included"] == 2


def test_sync_interrupted_and_rerun_adds_each_event_once(portal, ws, monkeypatch):
    store, client, box = portal
    ids = []
    for host in ("a.example.com", "b.example.com", "c.example.com"):
        ids.append(client.post("/api/v1/requests", json={"kind": "url", "value": f"https://{host}/p",
                                                         "contact": "x@example.org"}).json()["id"])
    for msg in mails(box):
        client.post("/api/v1/confirm", json={"token": link_token(msg)})
    real, calls = optout.add, []

    def failing(*a, **k):
        if len(calls) == 2:
            raise KeyboardInterrupt("interrupted")
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(optout, "add", failing)
    with pytest.raises(KeyboardInterrupt):
        sync.sync(ws, sync.StoreSource(store))
    assert optout.entries(ws).height == 2
    monkeypatch.setattr(optout, "add", real)
    rep = sync.sync(ws, sync.StoreSource(store))
    assert rep.added == 1
    assert sync.sync(ws, sync.StoreSource(store)).added == 0
    events = ws.sql("SELECT evidence FROM optout_events")["evidence"].to_list()
    marks = [sync.MARK.match(e).group(2) for e in events]
    assert len(marks) == len(set(marks)) == 3
    assert sorted(optout.entries(ws)["creator"].to_list()) == sorted(f"portal:{i}" for i in ids)
    with ws.connect() as con:
        assert optout.check_chain(con) == []


def test_only_the_requester_can_revoke(portal):
    store, client, box = portal
    a = client.post("/api/v1/requests", json={"kind": "author", "value": SECRET_NAME,
                                              "contact": "ingrid@example.org"}).json()["id"]
    b = client.post("/api/v1/requests", json={"kind": "author", "value": "Other Person",
                                              "contact": "other@example.org"}).json()["id"]
    for msg in mails(box):
        client.post("/api/v1/confirm", json={"token": link_token(msg)})
    # the holder of B's link cannot touch A: links name one request and one purpose
    client.post(f"/api/v1/requests/{b}/revoke")
    b_revoke = link_token(mails(box)[-1])
    assert requests.status(store, a)["status"] == "verified"
    # anyone may ask to revoke A, but the link goes only to A's own address
    client.post(f"/api/v1/requests/{a}/revoke")
    assert mails(box)[-1]["To"] == "ingrid@example.org"
    assert requests.status(store, a)["status"] == "revocation pending"
    # a confirmation link is not a revocation link, and a tampered or forged one is refused
    confirm_a = proof.sign(store.secret, "confirm", a)
    assert client.post("/api/v1/confirm", json={"token": confirm_a}).json()["changed"] is False
    body, mac = b_revoke.split(".")
    forged = proof._b64(json.dumps(["revoke", a, 2**40]).encode()) + "." + mac
    r = client.post("/api/v1/confirm", json={"token": forged})
    assert r.status_code == 422 and "not one of ours" in r.json()["error"]
    assert proof.sign(b"another secret", "revoke", a) != proof.sign(store.secret, "revoke", a)
    r = client.post("/api/v1/confirm", json={"token": proof.sign(b"x" * 32, "revoke", a)})
    assert r.status_code == 422
    expired = proof.sign(store.secret, "revoke", a, seconds=-1)
    assert "expired" in client.post("/api/v1/confirm", json={"token": expired}).json()["error"]
    assert requests.status(store, a)["status"] == "revocation pending"
    assert client.post("/api/v1/confirm", json={"token": b_revoke}).json()["status"] == "revoked"
    assert requests.status(store, a)["status"] == "revocation pending"
    # status never shows the name or the address
    st = json.dumps(client.get(f"/api/v1/requests/{a}").json())
    assert SECRET_NAME.lower() not in st.lower() and "sørensen" not in st.lower() and "ingrid@" not in st


class WellKnown(http.server.BaseHTTPRequestHandler):
    files: dict[str, str] = {}

    def do_GET(self):  # noqa: N802 (http.server's name)
        text = self.files.get(self.headers.get("Host", ""))
        if self.path != proof.WELL_KNOWN or text is None:
            self.send_response(404)
            self.end_headers()
            return
        data = text.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def site_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), WellKnown)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        WellKnown.files = {}


def test_site_requests_are_verified_and_revoked_by_a_token_on_the_site(portal, ws, site_server):
    store, client, _ = portal
    server, addr = site_server
    dom = client.post("/api/v1/requests", json={"kind": "domain", "value": "WWW.Example.org",
                                                "prefs": "train-ai=n, search=y"}).json()
    assert dom["place_at"] == "https://www.example.org/.well-known/curate-optout.txt"
    robots = "User-agent: *\nAllow: /\nContent-Usage: train-ai=n\nContent-Signal: search=yes, ai-train=no\n"
    rob = client.post("/api/v1/requests", json={"kind": "robots_txt", "site": "blog.other.net", "value": robots}).json()
    tdm = '[{"location": "/", "tdm-reservation": 1, "tdm-policy": "https://blog.other.net/policy.json"}]'
    tdr = client.post("/api/v1/requests", json={"kind": "tdmrep", "site": "blog.other.net", "value": tdm}).json()
    resolve = {"www.example.org": addr, "blog.other.net": addr}
    # nothing on the sites yet
    out = requests.verify_sites(store, resolve, scheme="http")
    assert {r["result"] for r in out} == {"unreachable"}
    WellKnown.files = {"www.example.org": "someone-else\n" + dom["token"] + "\n", "blog.other.net": "wrong\n"}
    out = {r["id"]: r["result"] for r in requests.verify_sites(store, resolve, scheme="http")}
    assert out == {dom["id"]: "verified", rob["id"]: "token not found", tdr["id"]: "token not found"}
    WellKnown.files["blog.other.net"] = rob["token"] + "\n" + tdr["token"]
    requests.verify_sites(store, resolve, scheme="http")
    assert requests.status(store, tdr["id"])["status"] == "verified"
    st = requests.status(store, rob["id"])
    assert st["status"] == "verified" and "Content-Usage: train-ai=n" in st["prefs"]

    rep = sync.sync(ws, sync.StoreSource(store))
    assert rep.added == 3
    kinds = dict(zip(optout.entries(ws)["kind"], optout.entries(ws)["evidence"], strict=True))
    assert "AI preferences search=y, train-ai=n" in kinds["domain"]
    log = optout.log(ws)
    site = log.filter(log["kind"] == "robots_txt").row(0, named=True)
    assert site["payload_bytes"] == len(robots) and site["received_at"] is not None
    assert log.filter(log["kind"] == "tdmrep").row(0, named=True)["payload_bytes"] == len(tdm)
    optout.apply(ws)
    rules = ws.sql("SELECT rule_ids FROM decisions WHERE doc_id = 'doc-11'")["rule_ids"][0].to_list()
    assert "optout-reserved" in rules  # the page on blog.other.net, reserved by the site files sent to the portal

    # revoking needs a new token on the same site; the old one does not do
    r = client.post(f"/api/v1/requests/{dom['id']}/revoke").json()
    assert r["token"] != dom["token"]
    requests.verify_sites(store, resolve, scheme="http")
    assert requests.status(store, dom["id"])["status"] == "revocation pending"
    WellKnown.files["www.example.org"] += r["token"] + "\n"
    requests.verify_sites(store, resolve, scheme="http")
    assert requests.status(store, dom["id"])["status"] == "revoked"
    assert sync.sync(ws, sync.StoreSource(store)).revoked == 1
    assert "domain" not in optout.entries(ws)["kind"].to_list()


def test_verifier_refuses_private_addresses_without_an_explicit_mapping():
    f = proof.fetch_tokens("127.0.0.1", scheme="http", timeout=2)
    assert f.error and "non-public" in f.error
    f = proof.fetch_tokens("10.1.2.3", scheme="http", timeout=2)
    assert f.error and "non-public" in f.error


def test_ai_preferences():
    assert aipref.parse("train-ai=n, search=y") == {"train-ai": "n", "search": "y"}
    assert aipref.parse("search=yes, ai-train=no") == {"search": "y", "train-ai": "n"}
    assert aipref.parse("train-ai=y, train-ai=n")["train-ai"] == "n"  # the most restrictive wins
    assert aipref.reserves_training(aipref.parse("train-genai=n"))
    assert not aipref.reserves_training(aipref.parse("train-ai=y, search=n"))
    with pytest.raises(ValueError):
        aipref.parse("train-ai=maybe")
    assert aipref.robots_reserves_training("User-agent: *\nContent-Usage: /blog/ train-ai=n\n")


def test_a_statement_that_reserves_no_training_is_recorded_not_applied(portal, ws):
    store, client, box = portal
    body = {"kind": "url", "value": "https://www.example.org/page/1", "contact": "p@example.org",
            "prefs": "train-ai=y, search=n"}
    rid = client.post("/api/v1/requests", json=body).json()["id"]
    client.post("/api/v1/confirm", json={"token": link_token(mails(box)[0])})
    assert sync.sync(ws, sync.StoreSource(store)).added == 0
    assert optout.entries(ws).height == 0
    assert "does not reserve training" in requests.status(store, rid)["next"]


def test_pending_requests_reach_the_registry_only_when_asked_and_are_upgraded_when_verified(portal, ws):
    store, client, box = portal
    client.post("/api/v1/requests", json={"kind": "url", "value": "https://www.example.org/page/2",
                                          "contact": "q@example.org"})
    rep = sync.sync(ws, sync.StoreSource(store), pending=True)
    assert rep.added == 1 and optout.entries(ws)["verified"].to_list() == [False]
    client.post("/api/v1/confirm", json={"token": link_token(mails(box)[0])})
    sync.sync(ws, sync.StoreSource(store), pending=True)
    assert optout.entries(ws)["verified"].to_list() == [True]


def test_validation_is_the_import_validation_and_input_is_data(portal):
    store, client, _ = portal
    bad = [({"kind": "domain", "value": "com"}, "domain"),
           ({"kind": "url", "value": "ftp://x.example.org/a", "contact": "a@example.org"}, "http"),
           ({"kind": "work", "value": "too short", "contact": "a@example.org"}, "20 are needed"),
           ({"kind": "author", "value": "Name\x07", "contact": "a@example.org"}, "control character"),
           ({"kind": "url", "value": "https://a.example.org/", "contact": "a@example.org\r\nBcc: x@y.org"},
            "e-mail address"),
           ({"kind": "tdmrep", "site": "a.example.org", "value": "not json"}, "tdmrep"),
           ({"kind": "sql", "value": "x"}, "kind")]
    for body, why in bad:
        r = client.post("/api/v1/requests", json=body)
        assert r.status_code == 422, body
        assert why in r.json()["error"], (body, r.json())
    hostile = "x'); DROP TABLE requests; --"
    r = client.post("/api/v1/requests", json={"kind": "author", "value": hostile, "contact": "h@example.org",
                                              "evidence": hostile})
    assert r.status_code == 201
    with store.tx() as cur:
        assert cur.one("SELECT count(*) FROM requests")[0] == 1
        assert cur.one("SELECT evidence FROM requests")[0] == hostile


def test_abuse_limits_csrf_and_escaping(tmp_path):
    store = Store(tmp_path / "p.sqlite")
    app = create_app(store, DirTransport(tmp_path / "mail"), write_rate=6, read_rate=0, max_body=10_000)
    with TestClient(app, base_url="http://127.0.0.1:9") as client:
        assert client.post("/api/v1/requests", content=b"x" * 10_001,
                           headers={"content-type": "application/json"}).status_code == 413
        assert client.post("/api/v1/requests", data={"kind": "domain", "value": "a.example.org"}).status_code == 415
        # a form without the CSRF token (or with another cookie's) is refused
        page = client.get("/")
        assert page.status_code == 200 and "curate_csrf" in page.headers["set-cookie"]
        assert "SameSite=strict" in page.headers["set-cookie"] or "samesite=strict" in page.headers["set-cookie"]
        csp = page.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "http" not in csp
        assert "<script" not in page.text and "https://" not in page.text.split("<main")[0]
        r = client.post("/submit", data={"kind": "domain", "value": "a.example.org", "csrf": "0" * 64})
        assert r.status_code == 403
        token = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text).group(1)
        r = client.post("/submit", data={"kind": "domain", "value": "<script>alert(1)</script>.example.org",
                                         "csrf": token})
        assert r.status_code == 422 and "<script>" not in r.text and "&lt;script&gt;" in r.text
        r = client.post("/submit", data={"kind": "domain", "value": "a.example.org", "csrf": token})
        assert r.status_code == 201 and "rq-" in r.text
        # writes: 6 per minute per client, refused ones included; the seventh is refused
        codes = [client.post("/submit", data={"kind": "domain", "value": f"{c}.example.org", "csrf": token})
                 for c in "bc"]
        assert [r.status_code for r in codes] == [201, 429] and codes[1].headers["retry-after"] == "60"
        # operator endpoints need the token
        assert client.get("/api/v1/operator/events").status_code == 401
        schema = client.get("/openapi.json").json()
        assert {"/api/v1/requests", "/api/v1/requests/{request_id}", "/api/v1/lookup", "/api/v1/confirm",
                "/api/v1/requests/{request_id}/revoke"} <= set(schema["paths"])
        assert client.get("/docs").status_code == 404  # Swagger UI would load scripts from a CDN
    store.close()


@pytest.mark.slow
def test_cli_publish_and_sync_through_a_running_portal(portal, ws, tmp_path):
    from curate.portal.server import running

    store, client, box = portal
    client.post("/api/v1/requests", json={"kind": "url", "value": "https://www.example.org/page/3",
                                          "contact": "c@example.org"})
    client.post("/api/v1/confirm", json={"token": link_token(mails(box)[0])})
    token = store.new_operator_token()
    app = create_app(store, None, write_rate=0, read_rate=0)
    with running(app) as url:
        p = subprocess.run([*CURATE, "optout", "sync", str(ws.path), "--from", url], capture_output=True, text=True,
                           env={"PATH": "/usr/bin:/bin", "CURATE_PORTAL_TOKEN": "wrong"})
        assert p.returncode == 2 and "HTTP 401" in p.stderr + p.stdout
        p = subprocess.run([*CURATE, "optout", "sync", str(ws.path), "--from", url, "--token", token],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        assert "1 added" in p.stdout
    p = subprocess.run([*CURATE, "optout", "sync", str(ws.path), "--from", str(store.path)], capture_output=True,
                       text=True)
    assert p.returncode == 0 and "0 added" in p.stdout, p.stdout + p.stderr
    p = subprocess.run([*CURATE, "optout", "apply", str(ws.path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([*CURATE, "portal", "publish", str(ws.path), "--store", str(store.path)], capture_output=True,
                       text=True)
    assert p.returncode == 0 and "8 documents" in p.stdout, p.stdout + p.stderr
    ans = client.get("/api/v1/lookup", params={"url": "https://www.example.org/page/3"}).json()
    assert ans["excluded"] and ans["rules"] == ["optout-registry"]
    p = subprocess.run([*CURATE, "portal", "publish", str(ws.path), "--store", str(tmp_path / "nodir" / "x")],
                       capture_output=True, text=True)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
