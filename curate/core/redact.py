"""Redaction: replace personal-data spans with `<ENTITY_TYPE>` placeholders, in the text and in `meta`.

The manifest and the export both call `redacted_outputs`, so the output hash written in the manifest
is the hash of exactly the text that export writes. The replacing itself is presidio-anonymizer's
`replace` operator (imported on first use: it is slow to import). `MetaPolicy` is what export writes of a
document's `meta` (the `[pii.meta]` section of the rules file).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any

import duckdb
import pyarrow as pa

from curate.core.errors import ConfigError
from curate.util.hidden import hidden

Span = tuple[int, int, str]  # start, end (code points), entity type


def merge(spans: Sequence[Span]) -> list[Span]:
    """Overlapping or touching spans become one; it keeps the type of the span that starts first
    (the longer one on a tie), so the placeholder names the outermost finding."""
    out: list[Span] = []
    for start, end, kind in sorted(spans, key=lambda s: (s[0], -s[1], s[2])):
        if out and start <= out[-1][1]:
            s0, e0, k0 = out[-1]
            out[-1] = (s0, max(e0, end), k0)
        else:
            out.append((start, end, kind))
    return out


@functools.cache
def _presidio() -> tuple[Any, Any, Any]:
    """(AnonymizerEngine(), OperatorConfig, RecognizerResult). presidio-anonymizer imports presidio-analyzer,
    and with it spaCy (2.5 s), only for an Azure operator it can do without (the import is guarded), so the
    analyzer stays hidden while the anonymizer loads (a no-op when it is loaded already)."""
    with hidden("presidio_analyzer"):
        from presidio_anonymizer import AnonymizerEngine
        from presidio_anonymizer.entities import OperatorConfig, RecognizerResult
    return AnonymizerEngine(), OperatorConfig, RecognizerResult


def redact(text: str, spans: Sequence[Span]) -> str:
    """Each merged span replaced by `<TYPE>`; the text between spans is kept exactly (so spans of one
    type separated by spaces stay two placeholders)."""
    merged = [(max(0, s), min(e, len(text)), k) for s, e, k in merge(spans)]
    merged = [m for m in merged if m[0] < m[1]]
    if not merged:
        return text
    engine, operator_config, recognizer_result = _presidio()
    results = [recognizer_result(kind, start, end, 1.0) for start, end, kind in merged]
    operators = {kind: operator_config("replace", {"new_value": f"<{kind}>"}) for _, _, kind in merged}
    return engine.anonymize(text, results, operators=operators, merge_entities_with_spaces=False).text


REDACTIONS_TYPE = 'STRUCT(entity_type VARCHAR, "start" BIGINT, "end" BIGINT)[]'


def redactions_sql(con: duckdb.DuckDBPyConnection, rules: dict[str, Any]) -> str:
    """SQL: (doc_id, redactions) -- the spans every registered stage asks to redact, per document."""
    from curate.core.stage import instances

    parts = []
    for det in instances(rules):
        sql = det.redactions(rules)
        if sql:
            try:
                con.execute(f"SELECT 1 FROM ({sql}) LIMIT 0").fetchall()
            except duckdb.CatalogException:
                continue  # that stage has not created its tables yet
            parts.append(f"({sql})")
    if not parts:
        return f"SELECT NULL::VARCHAR AS doc_id, NULL::{REDACTIONS_TYPE} AS redactions WHERE false"
    return f"""SELECT doc_id, list(struct_pack(entity_type := entity_type, "start" := "start", "end" := "end")
                                   ORDER BY "start", "end", entity_type) AS redactions
               FROM ({" UNION ALL ".join(parts)}) GROUP BY doc_id"""


def apply(text: str, redactions: list[dict] | None) -> str:
    return redact(text, [(r["start"], r["end"], r["entity_type"]) for r in redactions or []])


def redacted_outputs(con: duckdb.DuckDBPyConnection, rules: dict[str, Any],
                     batch_rows: int = 2000, only: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
    """(doc_id, output_sha256, redactions) for every document whose decision is `redact` (among the
    doc_ids `only`, when given)."""
    reader = con.cursor()
    try:
        result = reader.sql(f"""
            SELECT d.doc_id, d.text, r.redactions
            FROM documents d JOIN decisions c USING (doc_id) LEFT JOIN ({redactions_sql(con, rules)}) r USING (doc_id)
            WHERE c.action = 'redact' {"AND d.doc_id IN (SELECT unnest(?::VARCHAR[]))" if only is not None else ""}
            ORDER BY d.doc_id""", params=[list(only)] if only is not None else None).to_arrow_reader(batch_rows)
        for batch in result:
            hashes = [hashlib.sha256(apply(t, r).encode("utf-8")).hexdigest()
                      for t, r in zip(batch.column("text").to_pylist(), batch.column("redactions").to_pylist(),
                                      strict=True)]
            yield pa.RecordBatch.from_arrays(
                [batch.column("doc_id"), pa.array(hashes, pa.string()), batch.column("redactions")],
                names=["doc_id", "output_sha256", "redactions"])
    finally:
        reader.close()


# -- meta -------------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MetaPolicy:
    """What export writes of a document's `meta` object, from the rules file's `[pii.meta]`:
    - `keep`: keys copied as they are (a dotted key reaches into an object: `headers.x-robots-tag`; an object
      kept whole is `headers`); in a kept string, any value the document's redactions replaced in its text is
      replaced there too (`<TYPE>`);
    - `redact`: personal fields, {key: entity type}: the value becomes `<TYPE>` (each item of a list);
    - every other key is left out, so a field nobody listed never reaches an export.
    Keys match without regard to case (HTTP header names). Without a `[pii.meta]` section nothing is kept."""

    keep: frozenset[str] = frozenset()
    redact: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_rules(cls, rules: dict[str, Any]) -> MetaPolicy:
        section = rules.get("pii", {}).get("meta", {})
        where = "[pii.meta]"
        if not isinstance(section, dict):
            raise ConfigError(f"{where} must be a table with `keep` and `redact`")
        unknown = set(section) - {"keep", "redact"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (`keep`, `redact`)")
        keep, redact = section.get("keep", []), section.get("redact", {})
        if not isinstance(keep, list) or not all(isinstance(k, str) and k for k in keep):
            raise ConfigError(f"{where} keep must be a list of meta keys")
        if not isinstance(redact, dict) or not all(isinstance(v, str) and v for v in redact.values()):
            raise ConfigError(f"{where} redact must be a table of meta key = \"ENTITY_TYPE\"")
        both = {k.lower() for k in keep} & {k.lower() for k in redact}
        if both:
            raise ConfigError(f"{where}: {', '.join(sorted(both))} both kept and redacted")
        return cls(frozenset(k.lower() for k in keep), tuple(sorted((k.lower(), v) for k, v in redact.items())))

    def describe(self) -> dict[str, Any]:
        return {"keep": sorted(self.keep), "redact": dict(self.redact), "other_keys": "left out"}

    def apply(self, meta: Any, values: Sequence[tuple[str, str]] = ()) -> Any:
        """The meta object as exported; `values` are (value, entity type) the text's redaction replaced."""
        return self._object(meta, "", values) if isinstance(meta, dict) else None  # meta is an object, or left out

    def _object(self, obj: dict[str, Any], prefix: str, values: Sequence[tuple[str, str]]) -> dict[str, Any]:
        redact = dict(self.redact)
        out: dict[str, Any] = {}
        for key, value in obj.items():
            path = f"{prefix}{str(key).lower()}"
            if path in redact:
                out[key] = _placeholder(value, redact[path])
            elif path in self.keep:
                out[key] = self._scrub(value, values)
            elif isinstance(value, dict) and any(k.startswith(path + ".") for k in (*self.keep, *redact)):
                out[key] = self._object(value, path + ".", values)
        return out

    def _scrub(self, value: Any, values: Sequence[tuple[str, str]]) -> Any:
        if isinstance(value, str):
            for found, kind in values:
                value = value.replace(found, f"<{kind}>")
            return value
        if isinstance(value, list):
            return [self._scrub(v, values) for v in value]
        if isinstance(value, dict):
            return {k: self._scrub(v, values) for k, v in value.items()}
        return value


def _placeholder(value: Any, kind: str) -> Any:
    if value is None or value == "":
        return value
    if isinstance(value, list):
        return [_placeholder(v, kind) for v in value]
    return f"<{kind}>"


def redacted_values(text: str, redactions: list[dict] | None) -> list[tuple[str, str]]:
    """(value, entity type) of each span a redaction replaces in the text, longest first (so a name is replaced
    before a part of it); values under 3 characters are left out (they would hit unrelated words)."""
    found = {(text[r["start"]:r["end"]], r["entity_type"]) for r in redactions or []}
    return sorted((v for v in found if len(v[0].strip()) >= 3), key=lambda v: (-len(v[0]), v))
