"""The portal's store: its own database, SQLite (a file path) or PostgreSQL (a postgresql:// DSN).

Tables: `meta` (store id, signing secret, operator token hash), `requests` (one per submission), `events`
(add / verify / revoke, in the order a sync replays them), `syncs` (which workspace took which event),
`releases`, `lookup_docs`, `lookup_bands`, `lookup_entries` (the published lookup index, no text).
Every statement is a constant string with bound parameters (`?`, rewritten to `%s` for psycopg); nothing
from a request is ever spliced into SQL.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from curate.core.errors import UserError

SCHEMA_VERSION = "1"

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL, payload TEXT, entry_id TEXT NOT NULL,
    contact TEXT, site TEXT, evidence TEXT NOT NULL, prefs TEXT, reserves INTEGER NOT NULL, method TEXT NOT NULL,
    token_hash TEXT, revoke_hash TEXT, status TEXT NOT NULL, created_at TEXT NOT NULL, verified_at TEXT,
    revoke_requested_at TEXT, revoked_at TEXT, client TEXT);
CREATE INDEX IF NOT EXISTS requests_pending ON requests (method, status);
CREATE TABLE IF NOT EXISTS events (seq {serial} PRIMARY KEY, request_id TEXT NOT NULL, op TEXT NOT NULL,
    at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS syncs (seq BIGINT NOT NULL, workspace TEXT NOT NULL, registry_version BIGINT NOT NULL,
    at TEXT NOT NULL, PRIMARY KEY (seq, workspace));
CREATE TABLE IF NOT EXISTS releases (name TEXT PRIMARY KEY, root_hash TEXT NOT NULL, documents BIGINT NOT NULL,
    bands INTEGER NOT NULL, rows_per_band INTEGER NOT NULL, threshold REAL NOT NULL, published_at TEXT NOT NULL,
    ord BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS lookup_docs (release TEXT NOT NULL, n BIGINT NOT NULL, url_key TEXT {c}, rhost TEXT {c},
    sha256 TEXT, action TEXT NOT NULL, rules TEXT NOT NULL, entries TEXT NOT NULL, sig {blob},
    PRIMARY KEY (release, n));
CREATE INDEX IF NOT EXISTS lookup_docs_url ON lookup_docs (release, url_key);
CREATE INDEX IF NOT EXISTS lookup_docs_host ON lookup_docs (release, rhost);
CREATE INDEX IF NOT EXISTS lookup_docs_sha ON lookup_docs (release, sha256);
CREATE TABLE IF NOT EXISTS lookup_bands (release TEXT NOT NULL, bucket BIGINT NOT NULL, band INTEGER NOT NULL,
    n BIGINT NOT NULL);
CREATE INDEX IF NOT EXISTS lookup_bands_bucket ON lookup_bands (release, bucket);
CREATE TABLE IF NOT EXISTS lookup_entries (release TEXT NOT NULL, entry_id TEXT NOT NULL, documents BIGINT NOT NULL,
    dropped BIGINT NOT NULL, PRIMARY KEY (release, entry_id));
"""


def is_postgres(dsn: str) -> bool:
    return dsn.startswith(("postgresql://", "postgres://"))


class Store:
    """One portal store. Thread-safe: SQLite gets a connection per thread, PostgreSQL a connection pool."""

    def __init__(self, dsn: str | Path, pool_size: int = 8):
        self.dsn = str(dsn)
        self.postgres = is_postgres(self.dsn)
        self._local = threading.local()
        self._pool = None
        if self.postgres:
            try:
                import psycopg
                from psycopg_pool import ConnectionPool
            except ImportError:
                raise UserError("a postgresql:// store needs psycopg and psycopg-pool: pip install "
                                "'psycopg[binary]' psycopg-pool") from None
            try:  # one plain connection first: the pool would retry for its whole timeout, logging each try
                psycopg.connect(self.dsn, connect_timeout=10).close()
            except psycopg.Error as e:
                why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise UserError(f"store {redact(self.dsn)}: cannot connect: {why.replace(self.dsn, '…')}") from None
            self._pool = ConnectionPool(self.dsn, min_size=1, max_size=pool_size, open=False, timeout=30)
            self._pool.open(wait=True, timeout=30)
        else:
            path = Path(self.dsn.removeprefix("sqlite://"))
            if not path.parent.is_dir():
                raise UserError(f"store {path}: directory {path.parent} does not exist")
            self.path = path
        self._init()

    # -- connections ---------------------------------------------------------------------------------
    def _sqlite(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable at checkpoints, safe from corruption
            con.execute("PRAGMA busy_timeout=30000")
            self._local.con = con
        return con

    @contextmanager
    def tx(self, write: bool = False) -> Iterator[Cursor]:
        """A transaction; committed when the block ends, rolled back on an exception."""
        if self.postgres:
            with self._pool.connection() as con:  # commits on success, rolls back on an exception
                with con.cursor() as cur:
                    yield Cursor(cur, True)
            return
        con = self._sqlite()
        con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield Cursor(con.cursor(), False)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None

    def _init(self) -> None:
        ddl = _TABLES.format(serial="BIGSERIAL" if self.postgres else "INTEGER",
                             blob="BYTEA" if self.postgres else "BLOB",
                             c='COLLATE "C"' if self.postgres else "")
        with self.tx(write=True) as cur:
            if self.postgres:  # two instances starting at once must not both create the tables
                cur.execute("SELECT pg_advisory_xact_lock(7271001)")
            for statement in filter(str.strip, ddl.split(";")):
                cur.execute(statement)
            for key, value in (("schema_version", SCHEMA_VERSION), ("store_id", secrets.token_hex(8)),
                               ("secret", secrets.token_hex(32))):
                cur.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING", [key, value])
            rows = dict(cur.all("SELECT key, value FROM meta"))
        self.store_id: str = rows["store_id"]
        self.secret: bytes = bytes.fromhex(rows["secret"])

    # -- operator token -------------------------------------------------------------------------------
    def new_operator_token(self) -> str:
        """A new operator token (for `optout sync --from URL`); only its hash is kept, the old one stops working."""
        token = "cop-" + secrets.token_urlsafe(32)
        with self.tx(write=True) as cur:
            cur.execute("INSERT INTO meta (key, value) VALUES ('operator_token', ?) ON CONFLICT (key) "
                        "DO UPDATE SET value = excluded.value", [_sha(token)])
        return token

    def check_operator_token(self, token: str) -> bool:
        with self.tx() as cur:
            row = cur.one("SELECT value FROM meta WHERE key = 'operator_token'")
        return row is not None and secrets.compare_digest(row[0], _sha(token))


class Cursor:
    """A DB-API cursor taking `?` placeholders on both backends."""

    def __init__(self, cur: Any, postgres: bool):
        self.cur = cur
        self.postgres = postgres

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        self.cur.execute(sql.replace("?", "%s") if self.postgres else sql, tuple(params))
        return self

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.cur.executemany(sql.replace("?", "%s") if self.postgres else sql, rows)

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.execute(sql, params).cur.fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple | None:
        return self.execute(sql, params).cur.fetchone()

    @property
    def rowcount(self) -> int:
        return self.cur.rowcount


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def redact(dsn: str) -> str:
    """A DSN without its password (for messages)."""
    from urllib.parse import urlsplit, urlunsplit

    if not is_postgres(dsn):
        return dsn
    p = urlsplit(dsn)
    host = p.hostname or ""
    netloc = (f"{p.username}@" if p.username else "") + host + (f":{p.port}" if p.port else "")
    return urlunsplit((p.scheme, netloc, p.path, "", ""))
