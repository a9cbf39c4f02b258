"""Near duplicates: MinHash signatures per document, LSH bands in DuckDB, verified edges, clusters.

Per document (process pool): a MinHash signature of its shingles (`minhash.py`). Then set work in
SQL (`finalize`), only for documents not clustered yet:
1. band buckets of their signatures go to `dedup_bands`;
2. candidate pairs: documents sharing a (band, bucket). In a bucket ordered by ingest order, the
   member at position k pairs with every earlier member while k < `max_bucket`, and after that with
   the first and the previous member only (a bucket of 10,000 copies gives 20,000 pairs, not 50
   million). A new document only ever adds pairs: old results are never recomputed;
3. every candidate is verified on the full signatures (estimated Jaccard >= threshold) before it
   becomes an edge in `dedup_pairs`;
4. connected components over all edges by min-label propagation with pointer jumping in SQL;
   `cluster_id` is the doc_id of the cluster's first-ingested member;
5. one keeper per cluster by a configurable ordering (`keeper`), never at random.
Changing the LSH or keeper settings redoes steps 1-5 from the stored signatures; changing the
shingles or permutations recomputes the signatures (they are the stage's fingerprint).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import duckdb
import numpy as np
import pyarrow as pa

from curate.core.db import fetch_by_rowid, one
from curate.core.errors import ConfigError
from curate.core.stage import REGISTRY, Detector, StageConfig, register
from curate.stages.dedup_fuzzy import minhash
from curate.util.sql import literal

if TYPE_CHECKING:
    pass

SIGNATURE_KEYS = ("shingle", "ngram", "num_perm", "seed")
KEEPER_KEYS = ("license", "quality", "first_ingested")
PERMITTED = ("permissive", "public-domain")
CHUNK = 100_000  # signatures (or candidate pairs) handled per query in finalize: bounded memory


class _WritersOf:
    """`after` resolved when asked: every registered stage writing one of these tables, so keepers see
    the licence and quality signals of the same run whichever stages exist."""

    def __init__(self, *tables: str):
        self.tables = set(tables)

    def __get__(self, obj: object, owner: type) -> tuple[str, ...]:
        return tuple(sorted(n for n, c in REGISTRY.items() if self.tables & set(c.tables) and c is not owner))


@register
class FuzzyDedup(Detector):
    name = "dedup_fuzzy"
    audit = "curate.stages.dedup_fuzzy.audit"
    throughput = 30e6  # chars/s on one core: 32 million on 100,000 short documents (dedup_speed.py --shape heavy)
    version = "1"
    schema_version = 3
    tables: ClassVar[dict[str, str]] = {
        "dedup_signatures": """CREATE TABLE dedup_signatures (
            doc_id VARCHAR NOT NULL,
            seq BIGINT NOT NULL,              -- documents.seq: ingest order
            shingles INTEGER NOT NULL,        -- 0 for a document without words: never a candidate
            signature BLOB NOT NULL,          -- num_perm MinHash values, little-endian uint32 (minhash.py)
            buckets BIGINT[],                 -- its band buckets, computed with the signature ...
            banding VARCHAR,                  -- ... for this many bands x rows
            clustered BOOLEAN NOT NULL DEFAULT false  -- its bands and candidate pairs are in
        )""",
        "dedup_bands": """CREATE TABLE dedup_bands (
            seq BIGINT NOT NULL,              -- documents.seq (dedup_signatures.seq)
            band SMALLINT NOT NULL,
            bucket BIGINT NOT NULL            -- hash of the band's rows of the signature
        )""",
        "dedup_pairs": """CREATE TABLE dedup_pairs (
            doc_a VARCHAR NOT NULL,           -- the earlier ingested of the two
            doc_b VARCHAR NOT NULL,
            jaccard DOUBLE NOT NULL,          -- >= threshold
            exact BOOLEAN NOT NULL            -- of the shingle sets (near the threshold), else estimated
        )""",
        "dedup_fuzzy": """CREATE TABLE dedup_fuzzy (
            doc_id VARCHAR NOT NULL,          -- documents in clusters of 2 or more
            cluster_id VARCHAR NOT NULL,      -- doc_id of the cluster's first-ingested member
            cluster_size BIGINT NOT NULL,
            keeper VARCHAR NOT NULL,          -- doc_id of the copy kept
            is_keeper BOOLEAN NOT NULL
        )""",
        "dedup_against": """CREATE TABLE dedup_against (
            doc_id VARCHAR NOT NULL,          -- a document of this workspace
            reference_workspace VARCHAR NOT NULL,
            reference_doc_id VARCHAR NOT NULL,
            jaccard DOUBLE NOT NULL
        )""",
        "dedup_fuzzy_state": """CREATE TABLE dedup_fuzzy_state (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)""",
    }
    output = "dedup_signatures"
    columns = ("doc_id", "seq", "text")
    after = _WritersOf("dedup_exact", "license_signals", "quality")  # type: ignore[assignment]
    explain_exclude = ("signature", "buckets", "banding", "seq", "clustered")

    @dataclasses.dataclass(frozen=True)
    class Config(StageConfig):
        """`[stages.dedup_fuzzy]`. The first four make the signatures (the fingerprint); the rest is finalize's."""

        shingle: str = "word"  # "word" (runs of \w in the normalised text) or "char"
        ngram: int = 5  # tokens per shingle
        num_perm: int = 128  # MinHash permutations: values per signature
        seed: int = 1  # seed of the permutations
        threshold: float = 0.8  # estimated Jaccard an edge needs
        bands: int | None = None  # LSH bands, given with `rows`; absent: derived from threshold and recall
        rows: int | None = None  # signature values per band
        recall: float = 0.99  # P(candidate) at the threshold that derived bands x rows reach
        catch_probability: float | None = None  # as stated in the file: checked against bands, rows, threshold
        exact_margin: float = 0.1  # estimates within this of the threshold get their exact Jaccard
        max_bucket: int = 50  # past this many members, a bucket pairs a member with the first and previous only
        keeper: tuple[str, ...] = KEEPER_KEYS  # the keeper ordering, some of KEEPER_KEYS (then doc_id)
        keeper_license_classes: tuple[str, ...] = PERMITTED  # licence use classes the `license` keeper prefers

    settings: Config

    def __init__(self, config: dict[str, Any] | None = None, source: str = "rules file"):
        super().__init__(config, source)
        where = f"{source}: [stages.{self.name}]"
        s = self.settings
        try:
            self.shingling = minhash.Shingling.from_config(s)
            self.bands, self.rows = minhash.bands_for(s)
        except ConfigError as e:
            raise ConfigError(f"{where} {e}") from None
        unknown = [k for k in s.keeper if k not in KEEPER_KEYS]
        if unknown:
            raise ConfigError(f"{where} keeper: unknown {unknown}; use some of {list(KEEPER_KEYS)}")
        actual = minhash.catch_probability(s.threshold, self.bands, self.rows)
        if s.catch_probability is not None and abs(s.catch_probability - actual) > 5e-4:
            raise ConfigError(f"{where} catch_probability = {s.catch_probability}, but {self.bands} bands x "
                              f"{self.rows} rows catch a pair at Jaccard {s.threshold} with {actual:.4f}")

    def fingerprint_config(self) -> dict[str, Any]:
        """Only what the signatures depend on: LSH and keeper settings are applied by finalize."""
        return {k: getattr(self.settings, k) for k in SIGNATURE_KEYS}

    def signature_params(self) -> dict[str, Any]:
        return {"shingle": self.shingling.kind, "ngram": self.shingling.n, "num_perm": self.settings.num_perm,
                "seed": self.settings.seed, "scheme": "affine32", "version": self.version}

    def lsh_params(self) -> dict[str, Any]:
        return {**self.signature_params(), "bands": self.bands, "rows": self.rows, "threshold": self.settings.threshold,
                "max_bucket": self.settings.max_bucket, "exact_margin": self.settings.exact_margin}

    def __call__(self, batch: pa.RecordBatch) -> pa.Table:
        texts = batch.column("text").to_pylist()
        hashes, counts = minhash.shingle_hashes(texts, self.shingling.kind, self.shingling.n)
        sigs = minhash.signatures_of_hashes(hashes, counts, self.settings.num_perm, self.settings.seed)
        buckets = minhash.band_hashes(sigs, self.bands, self.rows)
        return pa.table({
            "doc_id": batch.column("doc_id"),
            "seq": batch.column("seq"),
            "shingles": pa.array(counts.astype(np.int32)),
            "signature": _blobs(sigs),
            "buckets": pa.FixedSizeListArray.from_arrays(pa.array(buckets.ravel()), self.bands).cast(
                pa.list_(pa.int64())),
            "banding": pa.array([f"{self.bands}x{self.rows}"] * len(sigs), pa.string()),
        })

    # -- set work ------------------------------------------------------------------------------
    def finalize(self, con: duckdb.DuckDBPyConnection) -> None:
        params = json.dumps(self.lsh_params(), sort_keys=True)
        stored = one(con.execute("SELECT value FROM dedup_fuzzy_state WHERE key = 'lsh'"))
        first_new, last_old = one(con.execute(
            "SELECT min(seq) FILTER (NOT clustered), max(seq) FILTER (clustered) FROM dedup_signatures"))
        full = bool(stored and stored[0] != params) or (first_new is not None and last_old is not None
                                                         and first_new <= last_old)
        if full:
            # Other LSH settings, or documents arriving out of ingest order: redo from the signatures.
            con.execute("UPDATE dedup_signatures SET clustered = false WHERE clustered")
            con.execute("DELETE FROM dedup_bands")
            con.execute("DELETE FROM dedup_pairs")
            first_new = one(con.execute("SELECT min(seq) FROM dedup_signatures"))[0]
        if not stored or stored[0] != params:
            con.execute("DELETE FROM dedup_fuzzy_state WHERE key = 'lsh'")
            con.execute("INSERT INTO dedup_fuzzy_state VALUES ('lsh', ?)", [params])
        if first_new is not None:
            # New documents are exactly those with seq >= first_new. Rows of a reprocessed last shard
            # lose their earlier bands and edges (an edge's doc_b is its later document).
            if one(con.execute("SELECT count(*) FROM dedup_bands WHERE seq >= ?", [first_new]))[0]:
                con.execute("DELETE FROM dedup_bands WHERE seq >= ?", [first_new])
                con.execute("DELETE FROM dedup_pairs WHERE doc_b IN "
                            "(SELECT doc_id FROM dedup_signatures WHERE seq >= ?)", [first_new])
            self._add_bands(con, first_new, recompute=full)
            self._add_pairs(con, first_new)
            con.execute("UPDATE dedup_signatures SET clustered = true WHERE NOT clustered")
        self._cluster(con)

    def _add_bands(self, con: duckdb.DuckDBPyConnection, first_new: int, recompute: bool) -> None:
        """Band buckets of the new documents: as the workers computed them, or (other LSH settings than
        when they were computed) from the stored signatures in numpy, a chunk of documents at a time."""
        stale = one(con.execute("""SELECT count(*) FROM dedup_signatures WHERE seq >= ? AND shingles > 0
                                     AND banding IS DISTINCT FROM ?""", [first_new, f"{self.bands}x{self.rows}"]))
        if not recompute and not stale[0]:
            con.execute("""INSERT INTO dedup_bands
                SELECT seq, generate_subscripts(buckets, 1) - 1, unnest(buckets) FROM dedup_signatures
                WHERE seq >= ? AND shingles > 0""", [first_new])
            return
        last = one(con.execute("SELECT max(seq) FROM dedup_signatures"))[0]
        for lo in range(first_new, last + 1, CHUNK):
            t = con.execute("""SELECT seq, signature FROM dedup_signatures
                               WHERE shingles > 0 AND seq >= ? AND seq < ?""", [lo, lo + CHUNK]).to_arrow_table()
            buckets = minhash.band_hashes(_matrix(t.column("signature"), self.settings.num_perm), self.bands, self.rows)
            rows = pa.table({
                "seq": np.repeat(t.column("seq").to_numpy(), self.bands),
                "band": np.tile(np.arange(self.bands, dtype=np.int16), len(t)),
                "bucket": buckets.ravel(),
            })
            con.register("_rows", rows)
            con.execute("INSERT INTO dedup_bands SELECT * FROM _rows")
            con.unregister("_rows")

    def _add_pairs(self, con: duckdb.DuckDBPyConnection, first_new: int) -> None:
        """Candidate pairs involving a new document, verified on the full signatures."""
        candidate_pairs(con, first_new, self.settings.max_bucket)
        for t in self._verified(con, "dedup_signatures", "documents"):
            con.register("_rows", t.select(["doc_a", "doc_b", "jaccard", "exact"]))
            con.execute("INSERT INTO dedup_pairs BY NAME SELECT * FROM _rows")
            con.unregister("_rows")
        con.execute("DROP TABLE _cand")

    def _verified(self, con: duckdb.DuckDBPyConnection, ref_sigs: str, ref_docs: str) -> Iterator[pa.Table]:
        """The candidate pairs of `_cand` (a: this workspace, b: `ref_sigs`) that are edges, a chunk of
        pairs at a time in (a, b) order: estimated Jaccard from the signatures, and the exact Jaccard of the
        shingle sets where the estimate is within `exact_margin` of the threshold (MinHash noise at 128
        permutations is about 0.035 there).

        A chunk reads each signature it needs once (heavy duplication: 100,000 documents gave 587,000
        candidates, so a join fetching two signatures per pair moved 600 MB where 50 MB do), and the texts of
        its near-threshold pairs once, however many pairs a document is in."""
        s = self.settings
        n = one(con.execute("SELECT count(*) FROM _cand"))[0]
        con.execute("CREATE OR REPLACE TEMP TABLE _cand_n AS SELECT a, b, row_number() OVER (ORDER BY a, b) - 1 AS i "
                    "FROM _cand")
        same = ref_sigs == "dedup_signatures"
        for lo in range(0, n, CHUNK):
            t = con.execute("SELECT a, b FROM _cand_n WHERE i >= ? AND i < ? ORDER BY i",
                            [lo, lo + CHUNK]).to_arrow_table()
            a, b = _numpy(t.column("a")), _numpy(t.column("b"))
            if same:
                own = other = _signatures(con, "dedup_signatures", np.union1d(a, b), s.num_perm)
            else:
                own = _signatures(con, "dedup_signatures", np.unique(a), s.num_perm)
                other = _signatures(con, ref_sigs, np.unique(b), s.num_perm)
            ia, ib = _positions(own.seqs, a), _positions(other.seqs, b)
            if (ia < 0).any() or (ib < 0).any():  # a document without a signature is no edge (as a join gave)
                has = (ia >= 0) & (ib >= 0)
                a, b, ia, ib = a[has], b[has], ia[has], ib[has]
            j = np.empty(len(a))
            for k in range(0, len(a), 8192):  # blocks of pairs: two 4 MB gathers, not two 50 MB ones
                j[k:k + 8192] = minhash.estimate_jaccard(own.sigs[ia[k:k + 8192]], other.sigs[ib[k:k + 8192]])
            exact = np.abs(j - s.threshold) < s.exact_margin
            if exact.any():
                j[exact] = self._exact_jaccard(con, a[exact], b[exact], ref_docs)
            keep = j >= s.threshold
            yield pa.table({"a": a[keep], "b": b[keep], "doc_a": own.doc_ids.take(pa.array(ia[keep])),
                            "doc_b": other.doc_ids.take(pa.array(ib[keep])), "jaccard": j[keep],
                            "exact": exact[keep]})
        con.execute("DROP TABLE _cand_n")

    def _exact_jaccard(self, con: duckdb.DuckDBPyConnection, a: np.ndarray, b: np.ndarray,
                       ref_docs: str) -> np.ndarray:
        """Exact Jaccard of the shingle sets (32-bit shingle hashes) of pairs of documents by seq: each text
        read and shingled once (a and b from the same table: their union), the intersections counted for
        all pairs at once."""
        if ref_docs == "documents":
            own = other = self._shingle_sets(con, "documents", np.union1d(a, b))
        else:
            own, other = self._shingle_sets(con, "documents", np.unique(a)), self._shingle_sets(con, ref_docs,
                                                                                               np.unique(b))
        return _set_jaccard(own, np.searchsorted(own.seqs, a), other, np.searchsorted(other.seqs, b))

    def _shingle_sets(self, con: duckdb.DuckDBPyConnection, table: str, seqs: np.ndarray) -> _Sets:
        """The shingle sets of the documents `seqs` (sorted, unique) of `table`."""
        rows = dict(fetch_by_rowid(con, table, "seq, text", "seq = ANY(?)", [seqs.tolist()]))
        hashes, counts = minhash.shingle_hashes([rows[q] for q in seqs.tolist()], self.shingling.kind,
                                                self.shingling.n)
        # One sort for all documents: (document, hash) keys, duplicates dropped.
        keys = np.sort((np.repeat(np.arange(len(seqs), dtype=np.uint64), counts) << np.uint64(32)) | hashes)
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if len(keys) else keys
        bounds = np.searchsorted(keys, np.arange(len(seqs) + 1, dtype=np.uint64) << np.uint64(32))
        return _Sets(seqs, keys, bounds)

    def _cluster(self, con: duckdb.DuckDBPyConnection) -> None:
        """Connected components of the edges, then one keeper per component."""
        con.execute("""CREATE OR REPLACE TEMP TABLE _edges AS
            WITH e AS (SELECT sa.seq AS a, sb.seq AS b FROM dedup_pairs p
                       JOIN dedup_signatures sa ON sa.doc_id = p.doc_a JOIN dedup_signatures sb ON sb.doc_id = p.doc_b)
            SELECT a AS node, b AS nb FROM e UNION ALL SELECT b, a FROM e""")
        con.execute("CREATE OR REPLACE TEMP TABLE _label AS SELECT node, least(node, min(nb)) AS label "
                    "FROM _edges GROUP BY node")
        while True:
            # A node takes the smallest label among its neighbours, then its label's label (jumping).
            con.execute("""CREATE OR REPLACE TEMP TABLE _step AS
                SELECT e.node, least(min(l.label), any_value(s.label)) AS label
                FROM _edges e JOIN _label l ON l.node = e.nb JOIN _label s ON s.node = e.node
                GROUP BY e.node""")
            con.execute("""CREATE OR REPLACE TEMP TABLE _next AS
                SELECT s.node, least(s.label, j.label) AS label FROM _step s JOIN _step j ON j.node = s.label""")
            changed = one(con.execute("""SELECT count(*) FROM _next n JOIN _label l USING (node)
                                         WHERE n.label <> l.label"""))[0]
            con.execute("DROP TABLE _label")
            con.execute("ALTER TABLE _next RENAME TO _label")
            con.execute("DROP TABLE _step")
            if not changed:
                break
        order = self._keeper_order(con)
        con.execute("DELETE FROM dedup_fuzzy")
        con.execute(f"""INSERT INTO dedup_fuzzy
            WITH m AS (
                SELECT s.doc_id, s.seq, r.doc_id AS cluster_id, count(*) OVER (PARTITION BY l.label) AS cluster_size,
                       row_number() OVER (PARTITION BY l.label ORDER BY {order}) = 1 AS is_keeper
                FROM _label l JOIN dedup_signatures s ON s.seq = l.node
                JOIN dedup_signatures r ON r.seq = l.label {self._keeper_joins(con)})
            SELECT doc_id, cluster_id, cluster_size,
                   max(CASE WHEN is_keeper THEN doc_id END) OVER (PARTITION BY cluster_id), is_keeper
            FROM m ORDER BY cluster_id, seq""")
        con.execute("DROP TABLE _label")
        con.execute("DROP TABLE _edges")

    def _keeper_tables(self, con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
        rows = con.execute("""SELECT table_name, list(column_name) FROM information_schema.columns
                              WHERE table_schema = 'main' AND table_catalog = current_database()
                                AND table_name IN ('dedup_exact', 'license_signals', 'quality')
                              GROUP BY 1""").fetchall()
        return {t: set(cols) for t, cols in rows}

    def _keeper_joins(self, con: duckdb.DuckDBPyConnection) -> str:
        have = self._keeper_tables(con)
        joins = ""
        if {"doc_id", "is_keeper"} <= have.get("dedup_exact", set()):
            joins += """ LEFT JOIN (SELECT doc_id, bool_and(NOT is_keeper) AS exact_copy FROM dedup_exact
                                    GROUP BY doc_id) kx ON kx.doc_id = s.doc_id"""
        if "license" in self.settings.keeper and {"doc_id", "use_class"} <= have.get("license_signals", set()):
            classes = ", ".join(literal(c) for c in self.settings.keeper_license_classes)
            own = "WHERE scope IN ('self', 'files')" if "scope" in have["license_signals"] else ""  # not mentions
            joins += f""" LEFT JOIN (SELECT doc_id, bool_and(use_class IN ({classes})) AS permitted
                                     FROM license_signals {own} GROUP BY doc_id) kl ON kl.doc_id = s.doc_id"""
        if "quality" in self.settings.keeper and {"doc_id", "quality_score"} <= have.get("quality", set()):
            joins += """ LEFT JOIN (SELECT doc_id, max(quality_score) AS quality_score FROM quality
                                    GROUP BY doc_id) kq ON kq.doc_id = s.doc_id"""
        return joins

    def _keeper_order(self, con: duckdb.DuckDBPyConnection) -> str:
        """ORDER BY of a cluster's members, best first. An exact-duplicate copy (not dedup_exact's
        keeper) never keeps the cluster, so the two dedup rules never drop every copy."""
        have = self._keeper_tables(con)
        terms = []
        if {"doc_id", "is_keeper"} <= have.get("dedup_exact", set()):
            terms.append("coalesce(kx.exact_copy, false)")
        for key in self.settings.keeper:
            if key == "license" and {"doc_id", "use_class"} <= have.get("license_signals", set()):
                terms.append("coalesce(kl.permitted, false) DESC")
            elif key == "quality" and {"doc_id", "quality_score"} <= have.get("quality", set()):
                terms.append("kq.quality_score DESC NULLS LAST")
            elif key == "first_ingested":
                terms.append("s.seq")
        return ", ".join(terms + ["s.doc_id"])

    # -- the policy and explain ------------------------------------------------------------------
    def signals_sql(self, rules: dict[str, Any]) -> str:
        return """SELECT d.doc_id,
                         coalesce(NOT f.is_keeper, false) AS dup_fuzzy,
                         coalesce(f.cluster_size, 1) AS fuzzy_cluster_size,
                         f.keeper AS fuzzy_keeper,
                         a.doc_id IS NOT NULL AS dup_reference,
                         a.jaccard AS fuzzy_reference_jaccard
                  FROM documents d
                  LEFT JOIN dedup_fuzzy f ON f.doc_id = d.doc_id
                  LEFT JOIN (SELECT doc_id, max(jaccard) AS jaccard FROM dedup_against GROUP BY doc_id) a
                         ON a.doc_id = d.doc_id"""

    @staticmethod
    def explain_extra(con: duckdb.DuckDBPyConnection, doc_id: str) -> dict[str, Any]:
        """The document's cluster, its keeper and the edge that joined it, and how many of its band buckets
        it shares. (Called after this stage's tables are listed: entries replace rows of the same name.)"""
        out: dict[str, Any] = {}
        bands = one(con.execute("""SELECT count(*), count(*) FILTER (shared) FROM (
                SELECT EXISTS (SELECT 1 FROM dedup_bands o WHERE o.band = b.band AND o.bucket = b.bucket
                               AND o.seq <> b.seq) AS shared
                FROM dedup_bands b JOIN documents d ON d.seq = b.seq WHERE d.doc_id = ?)""", [doc_id]))
        if bands and bands[0]:
            out["dedup_bands"] = [{"bands": bands[0], "buckets shared with other documents": bands[1]}]
        row = one(con.execute("SELECT cluster_id, cluster_size, keeper, is_keeper FROM dedup_fuzzy WHERE doc_id = ?",
                              [doc_id]))
        if row:
            cluster_id, size, keeper, is_keeper = row
            edges = con.execute("""
                SELECT CASE WHEN doc_a = $d THEN doc_b ELSE doc_a END AS other, jaccard, exact
                FROM dedup_pairs WHERE doc_a = $d OR doc_b = $d
                ORDER BY (CASE WHEN doc_a = $d THEN doc_b ELSE doc_a END) = $k DESC, jaccard DESC, other
                LIMIT 10""", {"d": doc_id, "k": keeper}).fetchall()
            out["dedup_fuzzy"] = [{
                "cluster_id": cluster_id, "cluster_size": size, "keeper": keeper, "is_keeper": is_keeper,
                "joined_by": f"{doc_id} ~ {edges[0][0]}: Jaccard {edges[0][1]:.3f} "
                             f"({'exact' if edges[0][2] else 'estimated'})" if edges else None,
                "edges": ", ".join(f"{o} {j:.3f}" for o, j, _ in edges)}]
        return out

    # -- against another workspace ---------------------------------------------------------------
    def match_against(self, con: duckdb.DuckDBPyConnection, reference: str | Path) -> int:
        """Record in `dedup_against` the documents of this workspace that near-duplicate a document of
        the reference workspace (opened read-only, never written). Returns the number of documents."""
        from curate.core.workspace import DB_NAME, WorkspaceError

        ref_dir = Path(reference).resolve()
        db = ref_dir / DB_NAME
        if not db.exists():
            raise WorkspaceError(f"no workspace at {reference} to deduplicate against")
        try:
            con.execute(f"ATTACH {literal(db)} AS _ref (READ_ONLY)")
        except duckdb.Error as e:
            raise WorkspaceError(f"cannot open reference workspace {reference} read-only: "
                                 f"{str(e).splitlines()[0]}") from None
        try:
            con.execute("BEGIN")
            found = one(con.execute("""SELECT count(*) FROM information_schema.tables
                                       WHERE table_catalog = '_ref' AND table_name = 'dedup_fuzzy_state'"""))[0]
            stored = one(con.execute("SELECT value FROM _ref.dedup_fuzzy_state WHERE key = 'lsh'")) if found else None
            mine = json.dumps(self.lsh_params(), sort_keys=True)
            if stored is None:
                raise WorkspaceError(f"reference workspace {reference} has no near-duplicate signatures: "
                                     f"run `curate run {reference}` (or `curate dedup {reference}`) first")
            if json.loads(stored[0]) != json.loads(mine):
                raise WorkspaceError(f"reference workspace {reference} was deduplicated with other settings "
                                     f"({stored[0]}); use the same [stages.dedup_fuzzy] settings as here ({mine})")
            con.execute("""CREATE OR REPLACE TEMP TABLE _cand AS SELECT DISTINCT a, b FROM (
                SELECT w.seq AS a, r.seq AS b FROM dedup_bands w JOIN (
                    SELECT band, bucket, seq FROM _ref.dedup_bands
                    QUALIFY row_number() OVER (PARTITION BY band, bucket ORDER BY seq) <= $cap) r
                  ON r.band = w.band AND r.bucket = w.bucket)""", {"cap": self.settings.max_bucket})
            con.execute("DELETE FROM dedup_against WHERE reference_workspace = ?", [str(ref_dir)])
            for t in self._verified(con, "_ref.dedup_signatures", "_ref.documents"):
                rows = pa.table({"doc_id": t.column("doc_a"),
                                 "reference_workspace": pa.array([str(ref_dir)] * len(t), pa.string()),
                                 "reference_doc_id": t.column("doc_b"), "jaccard": t.column("jaccard")})
                con.register("_rows", rows)
                con.execute("INSERT INTO dedup_against SELECT * FROM _rows")
                con.unregister("_rows")
            con.execute("DROP TABLE _cand")
            n = one(con.execute("SELECT count(DISTINCT doc_id) FROM dedup_against WHERE reference_workspace = ?",
                                [str(ref_dir)]))[0]
            con.execute("COMMIT")
            return n
        except BaseException:
            con.execute("ROLLBACK")
            raise
        finally:
            con.execute("DETACH _ref")


def candidate_pairs(con: duckdb.DuckDBPyConnection, first_new: int, cap: int, partition: int = 0,
                    partitions: int = 1, into: str = "_cand") -> None:
    """Candidate pairs (a, b: seqs, a < b) into the temp table `into`: documents sharing a band bucket where at
    least one of the two is new (seq >= first_new). In a bucket ordered by seq, the member at position k pairs
    with every earlier member while k < `cap`, and after that with the first and the previous member only.

    Only the buckets of one partition of `partitions` (by hash(band, bucket)) are read: each partition's pairs
    can be generated, and verified, on their own (a cluster engine's tasks). A pair sharing buckets in several
    partitions is in each of them: the union of the partitions' pairs is the whole set once DISTINCT."""
    part = f"AND hash(band, bucket) % {int(partitions)} = {int(partition)}" if partitions > 1 else ""
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _members AS
        WITH b AS (SELECT band, bucket, seq FROM dedup_bands WHERE true {part}),
        shared AS (SELECT band, bucket FROM b GROUP BY band, bucket HAVING count(*) > 1 AND max(seq) >= $first)
        SELECT b.band, b.bucket, b.seq, b.seq >= $first AS is_new,
               row_number() OVER (PARTITION BY b.band, b.bucket ORDER BY b.seq) - 1 AS pos
        FROM b SEMI JOIN shared USING (band, bucket)""", {"first": first_new})
    con.execute(f"""CREATE OR REPLACE TEMP TABLE {into} AS
        SELECT DISTINCT a, b FROM (
            SELECT y.seq AS a, x.seq AS b FROM _members x JOIN _members y
                ON x.band = y.band AND x.bucket = y.bucket AND y.pos < x.pos
            WHERE x.is_new AND x.pos < $cap AND y.pos < $cap
            UNION ALL  -- past the cap: the first member and the previous one (two equi-joins, never k^2)
            SELECT y.seq, x.seq FROM _members x JOIN _members y
                ON x.band = y.band AND x.bucket = y.bucket AND y.pos = 0
            WHERE x.is_new AND x.pos >= $cap
            UNION ALL
            SELECT y.seq, x.seq FROM _members x JOIN _members y
                ON x.band = y.band AND x.bucket = y.bucket AND y.pos = x.pos - 1
            WHERE x.is_new AND x.pos >= $cap)""", {"cap": cap})
    con.execute("DROP TABLE _members")


@dataclasses.dataclass
class _Signatures:
    seqs: np.ndarray  # sorted (those of the asked documents that have a signature)
    doc_ids: pa.Array
    sigs: np.ndarray  # (len(seqs), num_perm) uint32


def _signatures(con: duckdb.DuckDBPyConnection, table: str, seqs: np.ndarray, width: int) -> _Signatures:
    """doc_id and signature of the documents `seqs` (sorted, unique) of a signatures table, those that have one.
    The bounds are literals: DuckDB skips row groups outside them only for those."""
    con.register("_seqs", pa.table({"seq": seqs}))
    t = con.execute(f"""SELECT s.seq, s.doc_id, s.signature FROM {table} s SEMI JOIN _seqs USING (seq)
                        WHERE s.seq BETWEEN {int(seqs[0])} AND {int(seqs[-1])} ORDER BY s.seq""").to_arrow_table()
    con.unregister("_seqs")
    return _Signatures(_numpy(t.column("seq")), t.column("doc_id").combine_chunks(),
                       _matrix(t.column("signature"), width))


def _positions(sorted_: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each value in a sorted array of unique values, -1 where it is absent."""
    if not len(sorted_):
        return np.full(len(values), -1)
    at = np.minimum(np.searchsorted(sorted_, values), len(sorted_) - 1)
    return np.where(sorted_[at] == values, at, -1)


@dataclasses.dataclass
class _Sets:
    seqs: np.ndarray  # sorted
    keys: np.ndarray  # (document index << 32 | shingle hash), sorted, unique
    bounds: np.ndarray  # document i's keys are keys[bounds[i]:bounds[i + 1]]


def _set_jaccard(x: _Sets, ix: np.ndarray, y: _Sets, iy: np.ndarray) -> np.ndarray:
    """Exact Jaccard of the sets x[ix[p]] and y[iy[p]] for every pair p. One np.intersect1d per pair: its
    small sorts stay in cache (4.5 us a pair on heavy duplication); looking every element up in the sorted
    keys of all sets at once (np.searchsorted) was 2-3x slower there."""
    low = np.uint64(0xFFFFFFFF)
    xs, ys = (x.keys & low).astype(np.uint32), (y.keys & low).astype(np.uint32)
    bx, by = x.bounds.tolist(), y.bounds.tolist()
    out = np.empty(len(ix))
    for p, (i, k) in enumerate(zip(ix.tolist(), iy.tolist(), strict=True)):
        sx, sy = xs[bx[i]:bx[i + 1]], ys[by[k]:by[k + 1]]
        inter = len(np.intersect1d(sx, sy, assume_unique=True))
        out[p] = inter / (len(sx) + len(sy) - inter) if len(sx) + len(sy) else 1.0
    return out


def _numpy(column: pa.ChunkedArray) -> np.ndarray:
    return column.to_numpy() if len(column) else np.zeros(0, np.int64)


def _blobs(sigs: np.ndarray) -> pa.Array:
    """Each signature row as one little-endian BLOB."""
    width = sigs.shape[1] * 4
    offsets = np.arange(len(sigs) + 1, dtype=np.int32) * width
    data = np.ascontiguousarray(sigs, dtype="<u4").tobytes()
    return pa.Array.from_buffers(pa.binary(), len(sigs), [None, pa.py_buffer(offsets), pa.py_buffer(data)])


def _matrix(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """A column of signature BLOBs as an (n, width) uint32 array."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(arr) == 0:
        return np.zeros((0, width), np.uint32)
    arr = arr.cast(pa.large_binary())
    offsets = np.frombuffer(arr.buffers()[1], np.int64, count=len(arr) + 1, offset=arr.offset * 8)
    if not (np.diff(offsets) == width * 4).all():
        raise ValueError(f"signatures of another length than {width} permutations in the workspace")
    values = np.frombuffer(arr.buffers()[2], "<u4", count=len(arr) * width, offset=int(offsets[0]))
    return values.astype(np.uint32, copy=False).reshape(len(arr), width)
