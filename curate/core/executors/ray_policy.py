"""The policy and the manifest's rows per shard, as tasks (the Ray engine's `policy_step`).

The local engine evaluates the `signals` view and the rules over every document in the workspace file, then
`manifest.manifest_rows` hashes every row there. Here a task per shard does both for the shard's documents, in
a DuckDB of its own in memory; the driver only moves files and loads the decisions:

1. the driver (re)creates the `signals` view as `write_decisions` does (analysts query it) and takes its SQL,
   the rules' decisions SQL and the redactions SQL: the task runs exactly these statements;
2. the task's tables, named as in the workspace and with its column types, hold the shard's rows only, from
   - the parts the stage's workers published (`stage_parts`), for the output tables of stages whose finalize
     never changes them (PARTS_TABLES), when the shard's parts are the current fingerprint's and cover it;
   - otherwise files the driver exports per shard, for tables whose signals read a document's rows only
     (PER_DOCUMENT, checked by reading each stage's `signals_sql`; `documents` without its text);
   - or, for any other table (dedup_exact: `exact_copies` counts a cluster across shards; any table a new stage
     adds), one file of the whole table the driver exports once and every task reads;
3. the task writes the shard's decisions and manifest rows (manifest.rows_sql, hashed with ROW_HASH_SQL). A
   `redact` document with spans to replace needs its text: its row is left to a second round, where the driver
   exports those texts (fetched by rowid) and tasks hash the redacted outputs. A `redact` document with no span
   keeps its text, whose SHA-256 is `documents.sha256` (ingest hashes the same UTF-8 text), as
   `redact.redacted_outputs` would compute;
4. the driver loads the decisions into `decisions` in one transaction (the checks of `write_decisions`), and
   sorts the rows by doc_id into the manifest's table (`write_manifest(rows=...)`), byte-identical to the local
   engine's.

Workers never open the workspace file; the files live in `PARTS/_global/.policy-<random>.tmp/`, removed at the
end (a crash leaves that directory, which the next global step or policy step removes).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from curate.core import manifest, parts
from curate.core.db import fetch_by_rowid, one
from curate.core.executors.ray_global import GLOBAL_DIR, Tasks, read, remove_dir, sweep, write
from curate.core.policy import Ruleset, build_signals_view, decisions_sql
from curate.core.redact import REDACTIONS_TYPE, apply, redactions_sql
from curate.io import lake
from curate.util import log

# Output tables of stages whose finalize never changes them (no finalize, or one that only inserts into another
# table: bias -> bias_docs, pii -> pii_docs): their rows in the workspace are exactly the published parts' rows.
# dedup_exact (finalize sets the keepers), dedup_signatures and optout_docs (flags) are not.
PARTS_TABLES = frozenset({"quality", "license_signals", "confidential_markers", "phi_spans", "brand_hits",
                          "bias_terms", "pii_spans"})
# Tables whose stage's signals (and redactions) read a document's rows only by its doc_id (grouped by doc_id,
# or a row per document): a shard's documents need only the shard's rows. Every other table is global.
PER_DOCUMENT = PARTS_TABLES | {"stage_errors", "bias_docs", "pii_docs", "optout_signals", "dedup_fuzzy",
                               "dedup_against"}
DOCUMENT_COLUMNS = ("doc_id", "shard_id", "row", "seq", "url", "domain", "meta", "chars", "bytes", "blank",
                    "sha256")  # what the signals' base columns and the manifest read of `documents`
TEXT_ROWS = 20_000  # redacted documents per hashing task

DECISIONS = pa.schema([("doc_id", pa.string()), ("action", pa.string()), ("rule_ids", pa.list_(pa.string())),
                       ("reasons", pa.list_(pa.string()))])
OUTPUTS = pa.schema([("doc_id", pa.string()), ("output_sha256", pa.string())])


def signal_tables(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    """The workspace tables `sql` (the signals view and the redactions) reads after FROM or JOIN, besides
    `documents` and `shards` (the task makes those); a few more than it reads (a name in a string) is harmless.
    Stages' signals read other tables than their own (brands: `stage_runs`, every stage: `stage_errors`)."""
    existing = [r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_type = 'BASE TABLE'"
    ).fetchall()]
    return sorted(t for t in existing if t not in ("documents", "shards") and re.search(
        rf'\b(?:from|join)\s+(?:main\.)?"?{re.escape(t)}"?(?![\w"])', sql, re.IGNORECASE))


def columns_of(con: duckdb.DuckDBPyConnection, table: str, only: Sequence[str] | None = None) -> list[list[str]]:
    cols = [[n, t] for n, t, *_ in con.execute(f'DESCRIBE "{table}"').fetchall()]
    return [c for c in cols if only is None or c[0] in only]


def part_sources(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, list[str]]:
    """shard_id -> the URIs of the published parts holding every row of `table` for the shard: parts of the
    fingerprint the stage last ran the shard with, whose units cover all its documents (a shard a local run
    processed has none, and is exported by the driver)."""
    parts.ensure_catalog(con)
    rows = con.execute("""
        SELECT p.shard_id, list(p.uri ORDER BY p.unit) FILTER (p.uri IS NOT NULL), sum(p.documents),
               any_value(s.documents)
        FROM stage_parts p JOIN stage_runs r ON r.stage = p.stage AND r.shard_id = p.shard_id
                                            AND r.fingerprint = p.fingerprint
        JOIN shards s ON s.shard_id = p.shard_id
        WHERE p."table" = ? GROUP BY p.shard_id""", [table]).fetchall()
    return {shard: uris or [] for shard, uris, docs, total in rows if docs == total}


def export_by_shard(con: duckdb.DuckDBPyConnection, sql: str, directory: str, name: str) -> dict[str, str]:
    """The rows of `sql` (which has a shard_id column) as a file per shard; shard_id -> URI."""
    t = con.sql(f"""SELECT *, dense_rank() OVER (ORDER BY shard_id) - 1 AS _shard_no FROM ({sql})
                    ORDER BY _shard_no""").to_arrow_table()
    if not t.num_rows:
        return {}
    no = t.column("_shard_no").to_numpy()
    bounds = np.searchsorted(no, np.arange(int(no[-1]) + 2))
    t = t.drop_columns(["_shard_no"])
    out = {}
    for i in range(len(bounds) - 1):
        piece = t.slice(int(bounds[i]), int(bounds[i + 1] - bounds[i]))
        out[piece.column("shard_id")[0].as_py()] = write(lake.join(directory, name), f"s{i}", piece)
    return out


def policy_step(con: duckdb.DuckDBPyConnection, ruleset: Ruleset, tasks: Tasks, parts_root: str,
                root: str | None = None) -> tuple[Any, pa.Table]:
    """The decisions (loaded into `decisions`, as `pipeline.write_decisions`) and the manifest's rows (sorted by
    doc_id, as `manifest.manifest_rows`), the per-shard work in tasks. Returns (DecideSummary, rows)."""
    from curate.core.pipeline import DecideSummary

    started = time.monotonic()
    rules = ruleset.raw
    columns = build_signals_view(con, rules)
    view_sql = one(con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'signals' AND NOT temporary"))[0]
    decide_sql = decisions_sql(ruleset, columns)
    spans_sql = redactions_sql(con, rules)
    shards = con.execute("SELECT shard_id, uri, sha256 FROM shards WHERE shard_id IN "
                         "(SELECT DISTINCT shard_id FROM documents) ORDER BY shard_id").fetchall()
    stats: dict[str, Any] = {"shards": len(shards), "from_parts": {}, "exported": {}, "global": []}
    base = lake.join(parts_root, GLOBAL_DIR)
    sweep(base)
    directory = lake.join(base, f".policy-{secrets.token_hex(6)}.tmp")
    try:
        # what every task gets: per table its columns and, per shard, its files
        docs = [c[0] for c in columns_of(con, "documents") if c[0] in DOCUMENT_COLUMNS]
        tables: dict[str, dict[str, Any]] = {"documents": {
            "columns": columns_of(con, "documents", docs),
            "by_shard": export_by_shard(con, "SELECT " + ", ".join(f'"{c}"' for c in docs) + " FROM documents",
                                        directory, "documents")}}
        for table in signal_tables(con, view_sql + spans_sql):
            spec: dict[str, Any] = {"columns": columns_of(con, table)}
            names = {c[0] for c in spec["columns"]}
            if table in PER_DOCUMENT and "doc_id" in names:
                from_parts = part_sources(con, table) if table in PARTS_TABLES else {}
                rest = [s for s, *_ in shards if s not in from_parts]
                exported = {}
                if rest:
                    con.execute("CREATE OR REPLACE TEMP TABLE _rest AS SELECT unnest(?::VARCHAR[]) AS shard_id",
                                [rest])
                    exported = export_by_shard(con, f"""SELECT t.*, d.shard_id FROM "{table}" t JOIN documents d
                                                       USING (doc_id) SEMI JOIN _rest USING (shard_id)""",
                                               directory, table)
                    con.execute("DROP TABLE _rest")
                spec["by_shard"] = {s: [u] for s, u in exported.items()} | from_parts
                stats["from_parts"][table] = len(from_parts)
                stats["exported"][table] = len(rest)
            else:  # global: the whole table once, read by every task
                whole = con.sql(f'SELECT * FROM "{table}"').to_arrow_table()
                spec["all"] = write(lake.join(directory, table), "all", whole)
                stats["global"].append(table)
            tables[table] = spec
        uri_sql = manifest._relative_uri("s.uri", root)
        t_export = time.monotonic()
        done = tasks.get([tasks.submit(
            shard_policy, shard, [shard, uri, sha], _inputs(tables, shard), view_sql, decide_sql, spans_sql,
            uri_sql, directory) for shard, uri, sha in shards])
        t_tasks = time.monotonic()
        outputs = _redacted_round(con, tasks, done, directory)
        t_redact = time.monotonic()
        summary = _load_decisions(con, ruleset, [d["decisions"] for d in done if d["decisions"]])
        rows = _assemble([d["rows"] for d in done if d["rows"]], outputs)
    finally:
        remove_dir(directory)
    stats.update({"tasks": len(done), "redacted_rows": outputs.num_rows,
                  "nodes": sorted({d["node"] for d in done}), "export_seconds": round(t_export - started, 3),
                  "tasks_seconds": round(t_tasks - t_export, 3), "redact_seconds": round(t_redact - t_tasks, 3),
                  "load_seconds": round(time.monotonic() - t_redact, 3)})
    log.event("policy", rules=str(ruleset.path), rules_sha256=ruleset.sha256, subset=False, engine="tasks",
              by_action=summary.by_action, seconds=round(time.monotonic() - started, 3), **stats)
    return DecideSummary(ruleset, summary.by_action, summary.by_rule), rows


def _inputs(tables: dict[str, dict[str, Any]], shard: str) -> dict[str, tuple[list[list[str]], list[str]]]:
    """table -> (columns, the files holding the shard's rows) for one task."""
    out = {}
    for name, spec in tables.items():
        if "all" in spec:
            out[name] = (spec["columns"], [spec["all"]])
        else:
            files = spec["by_shard"].get(shard, [])
            out[name] = (spec["columns"], [files] if isinstance(files, str) else list(files))
    return out


def _load(con: duckdb.DuckDBPyConnection, name: str, columns: list[list[str]], uris: list[str]) -> None:
    """A table of the task's DuckDB with the workspace table's columns and types, from Parquet files."""
    con.execute(f'CREATE TABLE "{name}" (' + ", ".join(f'"{c}" {t}' for c, t in columns) + ")")
    for uri in uris:
        con.register("_file", read(uri))
        present = set(con.execute("SELECT * FROM _file LIMIT 0").to_arrow_table().schema.names)
        cols = ", ".join(f'"{c}"' for c, _ in columns if c in present)
        con.execute(f'INSERT INTO "{name}" ({cols}) SELECT {cols} FROM _file')
        con.unregister("_file")


def shard_policy(shard: str, shard_row: list[str], inputs: dict[str, tuple[list[list[str]], list[str]]],
                 view_sql: str, decide_sql: str, spans_sql: str, uri_sql: str, out: str) -> dict[str, Any]:
    """A task: one shard's decisions and manifest rows. Rows of `redact` documents with spans to replace have
    no output hash nor row hash yet; they are listed apart (doc_id, seq, redactions) for the second round."""
    from curate.core.executors.ray_global import _node

    con = duckdb.connect()
    con.execute("SET threads = 1")  # a task has one CPU
    for name, (columns, uris) in inputs.items():
        _load(con, name, columns, uris)
    con.execute("CREATE TABLE shards (shard_id VARCHAR, uri VARCHAR, sha256 VARCHAR)")
    con.execute("INSERT INTO shards VALUES (?, ?, ?)", shard_row)
    con.execute(view_sql)
    con.execute(f"CREATE TABLE decisions AS {decide_sql}")
    con.execute(f"""CREATE TABLE _spans AS SELECT r.doc_id, r.redactions FROM ({spans_sql}) r
                    JOIN decisions c USING (doc_id) WHERE c.action = 'redact' AND len(r.redactions) > 0""")
    # keep: the input's hash; redact without a span: the text unchanged, so the same hash (redacted_outputs)
    con.execute(f"""CREATE TEMP TABLE _redacted AS
        SELECT c.doc_id, CASE WHEN p.doc_id IS NULL THEN d.sha256 END AS output_sha256,
               coalesce(p.redactions, NULL::{REDACTIONS_TYPE}) AS redactions
        FROM decisions c JOIN documents d USING (doc_id) LEFT JOIN _spans p USING (doc_id)
        WHERE c.action = 'redact'""")
    rows = con.sql(f"""SELECT *, CASE WHEN action = 'redact' AND output_sha256 IS NULL THEN NULL
                                     ELSE {manifest.ROW_HASH_SQL} END AS row_hash
                       FROM ({manifest.rows_sql(uri_sql)})""").to_arrow_table()
    pending = con.sql("SELECT p.doc_id, d.seq, p.redactions FROM _spans p JOIN documents d USING (doc_id) "
                      "ORDER BY d.seq").to_arrow_table()
    decisions = con.sql("SELECT * FROM decisions").to_arrow_table().cast(DECISIONS)
    con.close()
    return {"shard": shard, "node": _node(), "documents": decisions.num_rows,
            "decisions": write(lake.join(out, "decisions"), "d", decisions) if decisions.num_rows else None,
            "rows": write(lake.join(out, "rows"), "r", rows) if rows.num_rows else None,
            "pending": write(lake.join(out, "pending"), "p", pending) if pending.num_rows else None}


def _redacted_round(con: duckdb.DuckDBPyConnection, tasks: Tasks, done: list[dict[str, Any]], directory: str
                    ) -> pa.Table:
    """The output hashes of the `redact` documents with spans: their texts exported by the driver (located by
    seq, fetched by rowid), hashed in tasks. (doc_id, output_sha256)."""
    pending = [read(d["pending"]) for d in done if d["pending"]]
    if not pending:
        return OUTPUTS.empty_table()
    todo = pa.concat_tables(pending)
    seqs = todo.column("seq").to_pylist()
    texts = dict(fetch_by_rowid(con, "documents", "seq, text", "seq = ANY(?)", [seqs]))
    todo = todo.append_column("text", pa.array([texts[s] for s in seqs], pa.string())).drop_columns(["seq"])
    uris = [write(lake.join(directory, "texts"), f"t{i}", todo.slice(i, TEXT_ROWS))
            for i in range(0, todo.num_rows, TEXT_ROWS)]
    return pa.concat_tables([read(u) for u in tasks.get([tasks.submit(redacted_hashes, u, directory)
                                                            for u in uris])]).cast(OUTPUTS)


def redacted_hashes(uri: str, out: str) -> str:
    """A task: SHA-256 of each document's text with its redactions applied (`redact.redacted_outputs`)."""
    t = read(uri)
    hashes = [hashlib.sha256(apply(text, spans).encode("utf-8")).hexdigest()
              for text, spans in zip(t.column("text").to_pylist(), t.column("redactions").to_pylist(), strict=True)]
    return write(lake.join(out, "outputs"), "o", pa.table({"doc_id": t.column("doc_id"),
                                                           "output_sha256": pa.array(hashes, pa.string())}))


def _load_decisions(con: duckdb.DuckDBPyConnection, ruleset: Ruleset, uris: list[str]) -> Any:
    """`decisions` replaced by the tasks' rows in one transaction, with `write_decisions`' checks."""
    from curate.core.pipeline import replace_decisions

    def fill() -> None:
        for uri in uris:
            con.register("_decision_rows", read(uri))
            con.execute("INSERT INTO decisions SELECT doc_id, action, rule_ids, reasons FROM _decision_rows")
            con.unregister("_decision_rows")

    return replace_decisions(con, ruleset, fill)


def _assemble(uris: list[str], outputs: pa.Table) -> pa.Table:
    """The manifest's table: every shard's rows sorted by doc_id, the redacted documents' output and row hashes
    filled in (in a DuckDB of its own: the workspace file is not read)."""
    mem = duckdb.connect()
    rows = pa.concat_tables([read(u) for u in uris]).cast(manifest._schema()) if uris else \
        manifest._schema().empty_table()
    mem.register("_rows", rows)
    mem.register("_outputs", outputs)
    table = mem.sql(f"""SELECT * REPLACE (coalesce(row_hash, {manifest.ROW_HASH_SQL}) AS row_hash) FROM (
                            SELECT m.* REPLACE (coalesce(m.output_sha256, o.output_sha256) AS output_sha256)
                            FROM _rows m LEFT JOIN _outputs o USING (doc_id))
                        ORDER BY doc_id""").to_arrow_table()
    mem.close()
    return table.cast(manifest._schema())
