"""Export the kept documents (redacted where the decision says so) as size-capped shards.

`meta` goes through the rules file's `[pii.meta]` policy (curate.core.redact.MetaPolicy) as each row is built:
listed keys kept, personal fields replaced by placeholders, every other key left out. The manifest's
output_sha256 covers the text; export.json records the meta policy that was applied."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from curate.core.errors import UserError
from curate.io import lake
from curate.util import log

if TYPE_CHECKING:
    from curate.core.workspace import Workspace

FORMATS = ("jsonl", "parquet")
INDEX = "export.json"


@dataclass
class ExportSummary:
    path: Path
    documents: int = 0
    redacted: int = 0
    files: list[dict] = field(default_factory=list)
    meta_skipped: list[dict] = field(default_factory=list)  # documents whose meta could not be read: id, reason
    retried: lake.RetryStats = field(default_factory=lake.RetryStats)  # transient store errors; not in export.json


def export(ws: Workspace, out: str | os.PathLike[str], format: str = "jsonl",
           max_bytes: int = 256 * 1024 * 1024, batch_rows: int = 2000, endpoint: str | None = None) -> ExportSummary:
    """Write kept and redacted documents in ingest order to a directory or store prefix (s3://...), in parts of
    at most about `max_bytes`, each written atomically (a reader never sees half a part); `export.json`, which
    lists the parts and their hashes, is removed first and written last, so an interrupted export leaves
    nothing that looks complete. Transient store errors are retried (curate.io.lake) and counted in the
    summary's `retried`."""
    if format not in FORMATS:
        raise UserError(f"format must be one of {', '.join(FORMATS)}")
    with lake.counting() as retried:
        summary = _export(ws, str(out), format, max_bytes, batch_rows, endpoint)
    # The retries are said (summary, log event) but not written into export.json: the same documents give the
    # same export.json byte for byte, however the network behaved.
    summary.retried = retried
    log.event("export", path=lake.redact_uri(str(out)), documents=summary.documents, redacted=summary.redacted,
              files=len(summary.files), retries=retried.retries, retry_errors=retried.errors)
    return summary


def _export(ws: Workspace, out: str, format: str, max_bytes: int, batch_rows: int,
            endpoint: str | None) -> ExportSummary:
    from curate.core.policy import current_rules
    from curate.core.redact import MetaPolicy, redactions_sql

    if lake.is_local(out):
        Path(out).mkdir(parents=True, exist_ok=True)
    lake.remove(lake.join(out, INDEX), endpoint)
    for old in lake.expand([lake.join(out, "part-*")], endpoint):
        lake.remove(old, endpoint)
    summary = ExportSummary(Path(out) if lake.is_local(out) else Path(lake.redact_uri(out)))
    writer = _Writer(out, format, max_bytes, summary, endpoint)
    try:
        with ws.connect() as con:
            rules = current_rules(con).raw
            writer.meta = MetaPolicy.from_rules(rules)
            batches = con.sql(f"""
                SELECT d.doc_id AS id, d.text, d.url, d.meta::VARCHAR AS meta, c.action = 'redact' AS redacted,
                       r.redactions
                FROM documents d JOIN decisions c USING (doc_id)
                LEFT JOIN ({redactions_sql(con, rules)}) r USING (doc_id)
                WHERE c.action IN ('keep', 'redact') ORDER BY d.seq""").to_arrow_reader(batch_rows)
            for batch in batches:
                writer.write(batch)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    index = {"documents": summary.documents, "redacted": summary.redacted, "format": format,
             "meta": writer.meta.describe(), "meta_not_exported": summary.meta_skipped, "files": summary.files}
    lake.write_atomic(lake.join(out, INDEX), (json.dumps(index, indent=2) + "\n").encode(), endpoint)
    return summary


class _Writer:
    """Rolls over to a new part when the current one passes max_bytes; each part is hashed as it is written
    and published atomically when it closes."""

    def __init__(self, out: str, format: str, max_bytes: int, summary: ExportSummary, endpoint: str | None):
        self.out, self.format, self.max_bytes, self.summary, self.endpoint = out, format, max_bytes, summary, endpoint
        self.part: Any = None  # the atomic output context of the open part
        self.stream: Any = None
        self.pq: pq.ParquetWriter | None = None
        self.size = self.docs = 0
        self.meta: Any = None  # the MetaPolicy, set by export() once the rules are read

    def _open(self) -> None:
        self.name = f"part-{len(self.summary.files):05d}.{self.format}"
        self.part = lake.open_output_atomic(lake.join(self.out, self.name), self.endpoint)
        self.stream = _Hashing(self.part.__enter__())
        self.size = self.docs = 0

    def _meta(self, doc_id: str, text: str | None) -> Any:
        """A document's meta as an object; one nested deeper than JSON parsing can go is not exported, and
        export.json names the document and why (the run goes on)."""
        if not text:
            return None
        try:
            return json.loads(text)
        except RecursionError:
            self.summary.meta_skipped.append({"id": doc_id, "reason": "meta nested too deep to read: not exported"})
            return None

    def write(self, batch: pa.RecordBatch) -> None:
        from curate.core.redact import MetaPolicy, apply, redacted_values

        policy = self.meta or MetaPolicy()
        flags = batch.column("redacted").to_pylist()
        self.summary.redacted += sum(flags)
        texts, metas = [], []
        for doc_id, t, r, f, m in zip(batch.column("id").to_pylist(), batch.column("text").to_pylist(),
                                      batch.column("redactions").to_pylist(), flags, batch.column("meta").to_pylist(),
                                      strict=True):
            values = redacted_values(t, r) if f else []
            texts.append(apply(t, r) if f else t)
            parsed = self._meta(doc_id, m)
            meta = None if parsed is None else policy.apply(parsed, values)
            metas.append(None if meta is None else json.dumps(meta, ensure_ascii=False))
        batch = pa.RecordBatch.from_arrays(
            [batch.column("id"), pa.array(texts, pa.string()), batch.column("url"), pa.array(metas, pa.string())],
            names=["id", "text", "url", "meta"])
        if self.format == "parquet":
            if self.pq is None:
                self._open()
                self.pq = pq.ParquetWriter(self.stream, batch.schema, compression="zstd")
            self.pq.write_batch(batch)
            self.docs += batch.num_rows
            self.size += batch.nbytes
            self.summary.documents += batch.num_rows
            if self.size >= self.max_bytes:
                self._close_part()
            return
        for row in batch.to_pylist():
            if self.stream is None:
                self._open()
            meta = json.loads(row["meta"]) if row["meta"] else None
            line = (json.dumps({"id": row["id"], "text": row["text"], "url": row["url"], "meta": meta},
                               ensure_ascii=False) + "\n").encode("utf-8")
            self.stream.write(line)
            self.size += len(line)
            self.docs += 1
            self.summary.documents += 1
            if self.size >= self.max_bytes:
                self._close_part()

    def _close_part(self) -> None:
        if self.pq:
            self.pq.close()
            self.pq = None
        stream, self.stream = self.stream, None
        self.part.__exit__(None, None, None)
        self.summary.files.append({"file": self.name, "documents": self.docs, "bytes": stream.size,
                                   "sha256": stream.hash.hexdigest()})

    def close(self) -> None:
        if self.stream is not None:
            self._close_part()

    def abort(self) -> None:
        """Discard the open part (its temporary goes, nothing is published)."""
        if self.stream is not None:
            self.stream = None
            self.part.__exit__(RuntimeError, RuntimeError("export interrupted"), None)


class _Hashing:
    """A write-only stream that hashes and counts what passes through it."""

    def __init__(self, raw: Any):
        self.raw, self.hash, self.size, self.closed = raw, hashlib.sha256(), 0, False

    def write(self, data: Any) -> int:
        b = bytes(data)
        self.hash.update(b)
        self.size += len(b)
        return self.raw.write(b)

    def flush(self) -> None:
        self.raw.flush()

    def close(self) -> None:  # ParquetWriter closes its sink; the part closes the real stream on publish
        self.closed = True

    def tell(self) -> int:
        return self.size

    def writable(self) -> bool:
        return True
