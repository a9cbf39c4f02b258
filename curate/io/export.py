"""Export the kept documents (redacted where the decision says so) as size-capped shards."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from curate.core.errors import UserError

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


def export(ws: Workspace, out: str | os.PathLike[str], format: str = "jsonl",
           max_bytes: int = 256 * 1024 * 1024, batch_rows: int = 2000) -> ExportSummary:
    """Write kept and redacted documents in ingest order; `export.json` lists files and their hashes."""
    from curate.core.policy import current_rules
    from curate.core.redact import redactions_sql

    if format not in FORMATS:
        raise UserError(f"format must be one of {', '.join(FORMATS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*"):
        old.unlink()
    (out / INDEX).unlink(missing_ok=True)
    summary = ExportSummary(out)
    writer = _Writer(out, format, max_bytes, summary)
    with ws.connect() as con:
        batches = con.sql(f"""
            SELECT d.doc_id AS id, d.text, d.url, d.meta::VARCHAR AS meta, c.action = 'redact' AS redacted,
                   r.redactions
            FROM documents d JOIN decisions c USING (doc_id)
            LEFT JOIN ({redactions_sql(con, current_rules(con).raw)}) r USING (doc_id)
            WHERE c.action IN ('keep', 'redact') ORDER BY d.seq""").to_arrow_reader(batch_rows)
        for batch in batches:
            writer.write(batch)
    writer.close()
    (out / INDEX).write_text(json.dumps({"documents": summary.documents, "redacted": summary.redacted,
                                         "format": format, "files": summary.files}, indent=2) + "\n")
    return summary


class _Writer:
    """Rolls over to a new part file when the current one passes max_bytes."""

    def __init__(self, out: Path, format: str, max_bytes: int, summary: ExportSummary):
        self.out, self.format, self.max_bytes, self.summary = out, format, max_bytes, summary
        self.file = None
        self.pq: pq.ParquetWriter | None = None
        self.size = self.docs = 0

    def _open(self) -> None:
        name = f"part-{len(self.summary.files):05d}.{self.format}"
        self.path = self.out / name
        if self.format == "jsonl":
            self.file = open(self.path, "w", encoding="utf-8", newline="\n")
        self.size = self.docs = 0

    def write(self, batch: pa.RecordBatch) -> None:
        from curate.core.redact import apply

        flags = batch.column("redacted").to_pylist()
        self.summary.redacted += sum(flags)
        texts = [apply(t, r) if f else t for t, r, f in zip(
            batch.column("text").to_pylist(), batch.column("redactions").to_pylist(), flags, strict=True)]
        batch = pa.RecordBatch.from_arrays(
            [batch.column("id"), pa.array(texts, pa.string()), batch.column("url"), batch.column("meta")],
            names=["id", "text", "url", "meta"])
        if self.format == "parquet":
            if self.pq is None:
                self._open()
                self.pq = pq.ParquetWriter(self.path, batch.schema, compression="zstd")
            self.pq.write_batch(batch)
            self.docs += batch.num_rows
            self.size += batch.nbytes
            self.summary.documents += batch.num_rows
            if self.size >= self.max_bytes:
                self._close_part()
            return
        for row in batch.to_pylist():
            if self.file is None:
                self._open()
            meta = json.loads(row["meta"]) if row["meta"] else None
            line = json.dumps({"id": row["id"], "text": row["text"], "url": row["url"], "meta": meta},
                              ensure_ascii=False) + "\n"
            self.file.write(line)
            self.size += len(line.encode("utf-8"))
            self.docs += 1
            self.summary.documents += 1
            if self.size >= self.max_bytes:
                self._close_part()

    def _close_part(self) -> None:
        if self.file:
            self.file.close()
            self.file = None
        if self.pq:
            self.pq.close()
            self.pq = None
        h = hashlib.sha256(self.path.read_bytes()).hexdigest()
        self.summary.files.append({"file": self.path.name, "documents": self.docs,
                                   "bytes": self.path.stat().st_size, "sha256": h})

    def close(self) -> None:
        if self.file or self.pq:
            self._close_part()
