"""`work` entries: a registered text whose near copies anywhere in the corpus match.

A document matches a work when the exact Jaccard similarity of their word 5-gram shingle sets
(`curate.stages.dedup_fuzzy.minhash.shingle_set`: normalised text, words are runs of \\w) reaches `work_jaccard`.
Candidates come from the near-duplicate stage's LSH index when it exists (`dedup_bands`, keyed by seq: the work's
MinHash signature is banded with the same parameters, so candidates are an equi-join); documents
it has not banded, and every document when there is no index, are compared through an inverted
index of the works' shingles, so each is read once however many works there are.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from curate.core.db import fetch_by_rowid, one
from curate.dedup import minhash

KIND, N = "word", 5


def lsh_index(con: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    """The dedup_fuzzy stage's LSH parameters when its band index is present and usable."""
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    if not {"dedup_bands", "dedup_fuzzy_state"} <= tables:
        return None
    row = one(con.execute("SELECT value FROM dedup_fuzzy_state WHERE key = 'lsh'"))
    try:
        p = json.loads(row[0]) if row else None
        if p.get("scheme") != "affine32":
            return None
        return {k: p[k] for k in ("shingle", "ngram", "num_perm", "seed", "bands", "rows")}
    except (TypeError, ValueError, KeyError, AttributeError):
        return None


def work_matches(con: duckdb.DuckDBPyConnection, docs: str, threshold: float,
                 candidates: str = "auto") -> list[tuple[str, str, float, bool]]:
    """(doc_id, entry_id, jaccard, verified) for every document of `docs` (SQL over optout_docs) that is
    a near copy (Jaccard >= threshold) of a `work` entry in the temp table _oo_e. `candidates`: "auto"
    (the LSH index when present) or "scan" (compare every document: exhaustive, slower)."""
    works = con.execute("SELECT entry_id, payload, verified FROM _oo_e WHERE kind = 'work' ORDER BY entry_id"
                        ).fetchall()
    if not works:
        return []
    sets = [minhash.shingle_set(text, KIND, N) for _, text, _ in works]
    lsh = lsh_index(con) if candidates == "auto" else None
    if lsh is None:
        pairs = _scan(_all(con, f"SELECT d.doc_id, x.text FROM {docs} d JOIN documents x USING (doc_id)"), sets,
                      threshold)
    else:
        pairs = _via_lsh(con, docs, [t for _, t, _ in works], sets, lsh, threshold)
    return sorted((doc_id, works[w][0], round(j, 6), works[w][2]) for doc_id, w, j in pairs)


def fetch_texts(con: duckdb.DuckDBPyConnection, doc_ids: str) -> Iterator[tuple[str, str]]:
    """(doc_id, text) of the documents in `doc_ids` (SQL giving a doc_id column), by rowid."""
    return fetch_by_rowid(con, "documents", "doc_id, text", f"doc_id IN ({doc_ids})")


def _scan(rows: Iterable[tuple[str, str]], sets: list[set[str]], threshold: float) -> list[tuple[str, int, float]]:
    """Every (doc_id, text) against every work, through an inverted index of the works' shingles."""
    index: dict[str, list[int]] = {}
    for w, shingles in enumerate(sets):
        for s in shingles:
            index.setdefault(s, []).append(w)
    out = []
    for doc_id, text in rows:
        shingles = minhash.shingle_set(text, KIND, N)
        for w, common in Counter(w for s in shingles for w in index.get(s, ())).items():
            j = common / (len(shingles) + len(sets[w]) - common)
            if j >= threshold:
                out.append((doc_id, w, j))
    return out


def _all(con: duckdb.DuckDBPyConnection, sql: str) -> Iterator[tuple[str, str]]:
    rel = con.execute(sql)
    while batch := rel.fetchmany(2048):
        yield from batch


def _via_lsh(con, docs: str, texts: list[str], sets: list[set[str]], lsh: dict[str, Any], threshold: float):
    sigs = minhash.signatures(texts, lsh["num_perm"], lsh["seed"], lsh["shingle"], lsh["ngram"])
    buckets = minhash.band_hashes(sigs, lsh["bands"], lsh["rows"])
    con.register("_oo_wb", pa.table({
        "work": np.repeat(np.arange(len(texts), dtype=np.int32), lsh["bands"]),
        "band": np.tile(np.arange(lsh["bands"], dtype=np.int16), len(texts)),
        "bucket": buckets.ravel(),
    }))
    candidates = con.execute(f"""
        SELECT DISTINCT d.doc_id, w.work FROM dedup_bands b JOIN _oo_wb w USING (band, bucket)
        JOIN documents d ON d.seq = b.seq
        WHERE d.doc_id IN (SELECT doc_id FROM {docs}) ORDER BY 1, 2""").fetchall()
    con.unregister("_oo_wb")
    out = []
    by_doc: dict[str, list[int]] = {}
    for doc_id, w in candidates:
        by_doc.setdefault(doc_id, []).append(w)
    if by_doc:
        con.register("_oo_cand", pa.table({"doc_id": pa.array(sorted(by_doc), pa.string())}))
        for doc_id, text in fetch_texts(con, "SELECT doc_id FROM _oo_cand"):
            shingles = minhash.shingle_set(text, KIND, N)
            for w in by_doc[doc_id]:
                if (j := minhash.jaccard(shingles, sets[w])) >= threshold:
                    out.append((doc_id, w, j))
        con.unregister("_oo_cand")
    # Documents the LSH stage has not banded yet (ingested after its last run) are compared directly;
    # a banded document has a row for every band, so band 0 tells which are.
    unbanded = f"""SELECT o.doc_id FROM {docs} o JOIN documents d USING (doc_id)
                   WHERE d.seq NOT IN (SELECT seq FROM dedup_bands WHERE band = 0)"""
    return out + _scan(fetch_texts(con, unbanded), sets, threshold)
