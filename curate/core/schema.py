"""The public workspace schema (DESIGN.md) and its migrations.

Core tables are migrated in place; signal tables belong to their stage, which declares its own DDL
and a schema version (signals are derived data: a stage whose schema changed is rebuilt).
"""

from __future__ import annotations

import duckdb

from curate.core.db import one

SCHEMA_VERSION = 4

# Each entry moves the workspace from version i to i + 1. Append, never edit.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)""",
        """CREATE TABLE shards (
            shard_id VARCHAR PRIMARY KEY,   -- first 16 hex digits of sha256
            uri VARCHAR NOT NULL,
            name VARCHAR NOT NULL,          -- file name, used for derived doc ids
            format VARCHAR NOT NULL,        -- jsonl | parquet | csv (+ compression)
            sha256 VARCHAR NOT NULL,
            bytes BIGINT NOT NULL,
            rows BIGINT,                    -- input rows read (documents + quarantined)
            documents BIGINT,
            quarantined BIGINT,
            status VARCHAR NOT NULL,        -- ok | partial (some rows quarantined) | failed
            ingested_at TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE documents (
            doc_id VARCHAR NOT NULL,        -- unique (enforced by ingest)
            seq BIGINT NOT NULL,            -- global ingest order; 'first ingested' means lowest seq
            shard_id VARCHAR NOT NULL,
            "row" BIGINT NOT NULL,          -- 0-based row (non-blank line) within the shard
            url VARCHAR,
            domain VARCHAR,
            text VARCHAR NOT NULL,
            sha256 VARCHAR NOT NULL,        -- of the UTF-8 text
            meta JSON
        )""",
        """CREATE TABLE quarantine (
            shard_id VARCHAR,
            uri VARCHAR NOT NULL,
            "row" BIGINT,                   -- NULL when the whole file could not be read
            raw VARCHAR,                    -- the row as read (invalid bytes backslash-escaped)
            error VARCHAR NOT NULL
        )""",
        """CREATE TABLE stage_runs (
            stage VARCHAR NOT NULL,
            shard_id VARCHAR NOT NULL,
            fingerprint VARCHAR NOT NULL,   -- stage version + config hash
            documents BIGINT NOT NULL,
            seconds DOUBLE,
            finished_at TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE stage_schema (stage VARCHAR PRIMARY KEY, version INTEGER NOT NULL)""",
        """CREATE TABLE stage_errors (
            stage VARCHAR NOT NULL, doc_id VARCHAR NOT NULL, error VARCHAR NOT NULL
        )""",
        """CREATE TABLE decisions (
            doc_id VARCHAR NOT NULL,
            action VARCHAR NOT NULL,        -- keep | redact | drop
            rule_ids VARCHAR[] NOT NULL,    -- every rule that fired, in rules-file order
            reasons VARCHAR[] NOT NULL
        )""",
        """CREATE TABLE policy_runs (
            rules_sha256 VARCHAR NOT NULL, rules_path VARCHAR NOT NULL, decided_at TIMESTAMP NOT NULL
        )""",
    ],
    [
        # The opt-out registry (curate/optout/registry.py): an append-only event log that cannot be
        # recomputed from anything else. Registry version N is the state after event seq = N.
        """CREATE TABLE optout_events (
            seq BIGINT PRIMARY KEY,         -- 1, 2, ...; the registry version this event creates
            op VARCHAR NOT NULL,            -- add | revoke
            entry_id VARCHAR NOT NULL,      -- stable id of the entry (kind, value, creator)
            kind VARCHAR NOT NULL,          -- domain, url_prefix, url, sha256, author, work; robots_txt, tdmrep, ai_txt
            value VARCHAR NOT NULL,         -- canonical value (work: sha256 of its normalised text; site files: host)
            payload VARCHAR,                -- the registered text of a `work`, or a site file's content
            creator VARCHAR NOT NULL,       -- who asked (a name, an organisation, a site)
            evidence VARCHAR NOT NULL,      -- where the request came from (ticket, e-mail id, URL)
            received_at TIMESTAMP NOT NULL, -- UTC
            verified BOOLEAN NOT NULL,      -- the requester's identity or right was checked
            chain_hash VARCHAR NOT NULL     -- sha256(previous chain_hash + this event): the hash of version seq
        )""",
    ],
    [
        # Sizes stored once at ingest, so the policy's signals view never reads the text.
        "ALTER TABLE documents ADD COLUMN chars BIGINT",  # code points
        "ALTER TABLE documents ADD COLUMN bytes BIGINT",  # UTF-8 bytes
        "ALTER TABLE documents ADD COLUMN blank BOOLEAN",  # empty or whitespace only
        r"UPDATE documents SET chars = length(text), bytes = strlen(text), blank = regexp_full_match(text, '\s*')",
    ],
    [
        # Every input named on the command line ends in `shards`: a missing file has no hash or size.
        "ALTER TABLE shards ALTER COLUMN sha256 DROP NOT NULL",
        "ALTER TABLE shards ALTER COLUMN bytes DROP NOT NULL",
        "ALTER TABLE shards ADD COLUMN etag VARCHAR",  # the object's ETag, when the store gives one
        "ALTER TABLE shards ADD COLUMN version_id VARCHAR",  # the object's version, on a versioned bucket
        "ALTER TABLE shards ADD COLUMN error VARCHAR",  # why a shard is missing or failed
    ],
]


def current_version(con: duckdb.DuckDBPyConnection) -> int:
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'meta' AND table_schema = 'main'"
    ).fetchall()[0][0]
    if not exists:
        return 0
    row = one(con.execute("SELECT value FROM meta WHERE key = 'schema_version'"))
    return int(row[0]) if row else 0


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Bring the core tables to SCHEMA_VERSION, one transaction per step."""
    version = current_version(con)
    if version > SCHEMA_VERSION:
        from curate.core.workspace import WorkspaceError

        raise WorkspaceError(
            f"workspace schema version {version} is newer than this curate ({SCHEMA_VERSION}); upgrade curate"
        )
    for target in range(version + 1, SCHEMA_VERSION + 1):
        con.execute("BEGIN")
        for ddl in MIGRATIONS[target - 1]:
            con.execute(ddl)
        con.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(target)])
        con.execute("COMMIT")
    return SCHEMA_VERSION


def ensure_stage_tables(con: duckdb.DuckDBPyConnection, name: str, version: int, ddl: list[str],
                        tables: list[str]) -> None:
    """Create a stage's tables, or rebuild them (and forget its progress) when its schema changed.

    Only derived data may live in stage tables: they are dropped on a schema change. Anything that
    cannot be recomputed (the opt-out registry's event log) belongs in MIGRATIONS.
    """
    row = one(con.execute("SELECT version FROM stage_schema WHERE stage = ?", [name]))
    if row and row[0] == version:
        return
    con.execute("BEGIN")
    for table in tables:
        con.execute(f'DROP TABLE IF EXISTS "{table}"')
    con.execute("DELETE FROM stage_runs WHERE stage = ?", [name])
    for statement in ddl:
        con.execute(statement)
    con.execute("INSERT OR REPLACE INTO stage_schema VALUES (?, ?)", [name, version])
    con.execute("COMMIT")
