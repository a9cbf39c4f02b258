"""Dated evidence of the reservations honoured: which site file (its SHA-256 and the date it was fetched)
or which header / meta value of the document itself showed each one, and their counts by standard.

Site-file reservations point at the registry event that registered the file: the latest `add` of the
entry at the registry version the match was computed for, so a file replaced since still names the copy
that decided. Document reservations keep their own evidence in `optout_docs.evidence`.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa

from curate.stages.optout import standards
from curate.stages.optout.registry import KINDS
from curate.stages.optout.stage import RESERVING_MARKERS

_REG = ", ".join(f"'{k}'" for k in KINDS)
_RESERVING = ", ".join(f"'{m}'" for m in RESERVING_MARKERS)


def _tables(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


def evidence_rows(con: duckdb.DuckDBPyConnection, domain: str | None = None) -> list[dict[str, Any]]:
    """One row per piece of evidence (a site file's rule, or a document header / meta value) with the
    documents it reserves; `domain` keeps the hosts equal to it or under it. Values are bound parameters."""
    if not {"optout_matches", "optout_docs"} <= _tables(con):
        return []
    has_decisions = "decisions" in _tables(con)
    dropped = "(SELECT doc_id FROM decisions WHERE action = 'drop')" if has_decisions else "(SELECT NULL)"
    where_host = "(? IS NULL OR d.host = ? OR ends_with(d.host, '.' || ?))"
    site = con.execute(f"""
        WITH m AS (
            SELECT o.doc_id, o.entry_id, o.match_kind, o.detail, o.registry_version, d.host
            FROM optout_matches o JOIN optout_docs d USING (doc_id)
            WHERE o.match_kind NOT IN ({_REG}) AND {where_host}),
        files AS (
            SELECT m.entry_id, m.registry_version, max(e.seq) AS seq FROM (SELECT DISTINCT entry_id, registry_version
                                                                       FROM m) m
            JOIN optout_events e ON e.entry_id = m.entry_id AND e.op = 'add' AND e.seq <= m.registry_version
            GROUP BY ALL)
        SELECT m.match_kind AS reservation, 'site file' AS source, e.kind AS file, e.value AS host,
               m.detail AS shown_by, sha256(e.payload) AS sha256, e.received_at AS fetched_at, m.entry_id,
               e.seq AS registry_event, count(DISTINCT m.doc_id) AS documents,
               count(DISTINCT m.doc_id) FILTER (m.doc_id IN {dropped}) AS removed, min(m.doc_id) AS example
        FROM m JOIN files f USING (entry_id, registry_version) JOIN optout_events e ON e.seq = f.seq
        GROUP BY ALL ORDER BY host, reservation, shown_by""", [domain, domain, domain]).fetchall()
    cols = ("reservation", "source", "file", "host", "shown_by", "sha256", "fetched_at", "entry_id", "registry_event",
            "documents", "removed", "example")
    out = [dict(zip(cols, r, strict=True)) for r in site]
    docs = con.execute(f"""
        SELECT v.marker AS reservation, v.source, NULL AS file, d.host, v.value AS shown_by, NULL AS sha256,
               NULL AS fetched_at, NULL AS entry_id, NULL AS registry_event, count(DISTINCT d.doc_id) AS documents,
               count(DISTINCT d.doc_id) FILTER (d.doc_id IN {dropped}) AS removed, min(d.doc_id) AS example
        FROM optout_docs d, unnest(d.evidence) AS e(v)
        WHERE v.marker IN ({_RESERVING}) AND {where_host}
        GROUP BY ALL ORDER BY d.host, reservation, shown_by""", [domain, domain, domain]).fetchall()
    out += [dict(zip(cols, r, strict=True)) for r in docs]
    for r in out:
        s = standards.standard_of(r["reservation"])
        r["standard"] = s.label if s else r["reservation"]
    return out


def by_standard(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Reserved documents counted by standard and by where the evidence came from (site file or document);
    a document reserved under two standards counts under each, and once under each."""
    if not {"optout_matches", "optout_docs"} <= _tables(con):
        return []
    dropped = ("count(DISTINCT doc_id) FILTER (doc_id IN (SELECT doc_id FROM decisions WHERE action = 'drop'))"
               if "decisions" in _tables(con) else "NULL::BIGINT")
    reserved = f"""
        SELECT doc_id, match_kind AS reservation, 'site file' AS source FROM optout_matches
        WHERE match_kind NOT IN ({_REG})
        UNION ALL
        SELECT doc_id, m AS reservation, 'document' AS source
        FROM (SELECT doc_id, unnest(markers) AS m FROM optout_docs) WHERE m IN ({_RESERVING})"""
    kinds = [r for r, in con.execute(f"SELECT DISTINCT reservation FROM ({reserved})").fetchall()]
    by_id = {s.id: s for s in standards.standards()}
    mapping = {k: (st.id if (st := standards.standard_of(k)) else k) for k in kinds}
    con.register("_oo_std", pa.table({"reservation": pa.array(list(mapping), pa.string()),
                                      "standard": pa.array(list(mapping.values()), pa.string())}))
    try:
        rows = con.execute(f"""SELECT standard, source, count(DISTINCT doc_id), {dropped}
                               FROM ({reserved}) JOIN _oo_std USING (reservation) GROUP BY ALL""").fetchall()
    finally:
        con.unregister("_oo_std")
    order = {sid: i for i, sid in enumerate(by_id)}
    rows.sort(key=lambda r: (order.get(r[0], len(order)), r[1]))
    return [{"standard": by_id[sid].label if sid in by_id else sid,
             "status": by_id[sid].status if sid in by_id else "unknown",
             "source": source, "documents": documents, "removed": removed} for sid, source, documents, removed in rows]
