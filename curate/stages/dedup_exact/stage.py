"""Exact duplicates: documents whose normalised text hashes the same form one cluster."""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from curate.core.stage import Detector, StageConfig, register
from curate.util.text import content_hash


@register
class ExactDedup(Detector):
    name = "dedup_exact"
    audit = "curate.stages.dedup_exact.audit"
    throughput = 30e6  # chars/s on one core, measured on data/samples
    version = "1"
    tables = {
        "dedup_exact": """CREATE TABLE dedup_exact (
            doc_id VARCHAR NOT NULL,
            content_hash VARCHAR NOT NULL,  -- sha256 of NFC, case-folded, whitespace-collapsed text
            cluster_id VARCHAR,             -- first 16 hex digits of content_hash
            is_keeper BOOLEAN               -- the first ingested copy (lowest seq, then doc_id)
        )""",
    }
    output = "dedup_exact"

    @dataclasses.dataclass(frozen=True)
    class Config(StageConfig):
        """No settings of its own (only `enabled`): the normalisation is curate.util.text.content_hash's."""

    signals = """SELECT doc_id, NOT is_keeper AS dup_exact,
                        count(*) OVER (PARTITION BY cluster_id) AS exact_copies
                 FROM dedup_exact"""

    def __call__(self, batch: pa.RecordBatch) -> pa.Table:
        texts = batch.column("text").to_pylist()
        return pa.table({
            "doc_id": batch.column("doc_id"),
            "content_hash": pa.array([content_hash(t) for t in texts], pa.string()),
        })

    def finalize(self, con) -> None:
        # Keepers are recomputed over the whole corpus: a later shard never displaces an earlier keeper.
        con.execute("""
            UPDATE dedup_exact SET cluster_id = substr(k.content_hash, 1, 16),
                                   is_keeper = (dedup_exact.doc_id = k.keeper)
            FROM (SELECT x.content_hash, arg_min(x.doc_id, (d.seq, x.doc_id)) AS keeper
                  FROM dedup_exact x JOIN documents d USING (doc_id) GROUP BY x.content_hash) k
            WHERE dedup_exact.content_hash = k.content_hash""")
