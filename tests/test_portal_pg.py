"""The portal on PostgreSQL (a real server on 127.0.0.1, tests/pgserver.py): two portal instances on one store,
concurrent submissions, sync exactly once, publish and lookup."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from pgserver import pg  # noqa: F401  (the PostgreSQL server fixture)
from s3server import listening_ports
from test_portal import WORK, base_ws, link_token, mails, ws  # noqa: F401  (fixtures)

from curate.core.errors import UserError
from curate.portal import lookup, sync
from curate.portal.app import create_app
from curate.portal.mail import DirTransport
from curate.portal.store import Store, redact
from curate.stages import optout


@pytest.fixture
def pg_store(pg):  # noqa: F811
    """A fresh database per test (the server is shared by the session)."""
    import secrets

    import psycopg

    name = "t" + secrets.token_hex(6)
    admin = pg.dsn.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")  # name: generated above, not input
    dsn = pg.dsn.rsplit("/", 1)[0] + "/" + name
    yield dsn


def test_server_listens_on_loopback_only(pg):  # noqa: F811
    assert listening_ports(pg.pid) == [("127.0.0.1", pg.port)]
    assert pg.password not in redact(pg.dsn) and "127.0.0.1" in redact(pg.dsn)
    wrong = pg.dsn.replace(pg.password, "not-the-password-123")
    with pytest.raises(UserError) as e:
        Store(wrong)
    assert "not-the-password-123" not in str(e.value) and "cannot connect" in str(e.value)


@pytest.mark.slow
def test_two_instances_concurrent_submissions_and_sync_once(pg_store, ws, tmp_path):  # noqa: F811
    stores = [Store(pg_store, pool_size=4), Store(pg_store, pool_size=4)]
    assert stores[0].store_id == stores[1].store_id and stores[0].secret == stores[1].secret
    apps = [create_app(s, DirTransport(tmp_path / "mail"), write_rate=0, read_rate=0) for s in stores]
    clients = [TestClient(a, base_url="http://127.0.0.1:9") for a in apps]
    try:
        def submit(i: int) -> str:
            r = clients[i % 2].post("/api/v1/requests", json={"kind": "url", "value": f"https://s{i}.example.com/p",
                                                              "contact": f"u{i}@example.org"})
            assert r.status_code == 201, r.text
            return r.json()["id"]

        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(submit, range(60)))
        msgs = mails(tmp_path / "mail")
        assert len(msgs) == 60
        confirmed = [m for m in msgs if int(m["To"][1:].split("@")[0]) % 3 == 0]

        def confirm(i_msg):
            i, m = i_msg
            r = clients[i % 2].post("/api/v1/confirm", json={"token": link_token(m)})
            assert r.json()["status"] == "verified"

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(confirm, enumerate(confirmed)))
        with stores[0].tx() as cur:
            assert cur.one("SELECT count(*), count(DISTINCT id) FROM requests") == (60, 60)
            seqs = [r[0] for r in cur.all("SELECT seq FROM events ORDER BY seq")]
        assert len(seqs) == 80 and len(set(seqs)) == 80
        rep = sync.sync(ws, sync.StoreSource(stores[1]))
        assert rep.added == 20 and optout.entries(ws).height == 20
        assert sync.sync(ws, sync.StoreSource(stores[0])).added == 0
        st = clients[0].get(f"/api/v1/requests/{ids[0]}").json()
        assert st["status"] == "verified" and st["in_registry_since"]
    finally:
        for c in clients:
            c.close()
        for s in stores:
            s.close()


def test_publish_and_lookup_on_postgres(pg_store, ws, tmp_path):  # noqa: F811
    store = Store(pg_store)
    try:
        client = TestClient(create_app(store, DirTransport(tmp_path / "mail"), write_rate=0, read_rate=0))
        client.post("/api/v1/requests", json={"kind": "work", "value": WORK, "contact": "w@example.org"})
        client.post("/api/v1/confirm", json={"token": link_token(mails(tmp_path / "mail")[0])})
        sync.sync(ws, sync.StoreSource(store))
        optout.apply(ws)
        assert lookup.publish(ws, store)["documents"] == 8
        assert lookup.publish(ws, store)["documents"] == 8  # publishing again replaces, never doubles
        ans = client.post("/api/v1/lookup", json={"text": WORK}).json()
        assert ans["exact_copies"] == 1 and ans["documents"] == 2 and ans["excluded"]
        dom = client.get("/api/v1/lookup", params={"domain": "other.net"}).json()
        assert dom["documents"] == 1 and dom["actions"] == {"drop": 1}
        assert "river" not in json.dumps(ans)
        client.close()
    finally:
        store.close()
