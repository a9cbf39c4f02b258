"""The `confidential` stage: classification banners and handling markers, where they stand, and a score.

Markers are data (rules/confidential/markers.toml, `markers.py`): CONFIDENTIAL and its variants, INTERNAL USE ONLY,
PROPRIETARY, TRADE SECRET, ATTORNEY-CLIENT PRIVILEGED, DO NOT DISTRIBUTE, NDA boilerplate, government banners
(`SECRET//NOFORN`), e-mail confidentiality disclaimers. The stage writes one `confidential_markers` row per marker
found (its kind, position, whether it stands on a banner line, span and score); the policy decides.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.core.stage import Detector, StageConfig, register
from curate.stages.confidential.markers import MarkerSet, load_markers, markers_path

SCHEMA = pa.schema([("doc_id", pa.string()), ("marker", pa.string()), ("kind", pa.string()),
                    ("position", pa.string()), ("banner", pa.bool_()), ("start", pa.int64()), ("end", pa.int64()),
                    ("score", pa.float64())])


@register
class Confidential(Detector):
    name = "confidential"
    categories = ("marker", "kind", "position")
    audit = "curate.stages.confidential.audit"
    throughput = 100e6  # chars/s on one core, measured on data/samples (benchmarks/guardrails.py speed)
    version = "1"
    tables = {
        "confidential_markers": """CREATE TABLE confidential_markers (
            doc_id VARCHAR NOT NULL,
            marker VARCHAR NOT NULL,     -- the marker's id in rules/confidential/markers.toml
            kind VARCHAR NOT NULL,       -- classification, handling, trade_secret, legal_privilege, nda, government,
                                         -- disclaimer
            position VARCHAR NOT NULL,   -- header (first lines), footer (last lines) or body
            banner BOOLEAN NOT NULL,     -- on a banner line: the marker is most of its line, not prose
            "start" BIGINT NOT NULL,     -- code-point span in documents.text
            "end" BIGINT NOT NULL,
            score DOUBLE NOT NULL        -- the marker's score; inside prose times inline_factor
        )""",
    }
    output = "confidential_markers"

    @dataclasses.dataclass(frozen=True)
    class Config(StageConfig):
        """`[stages.confidential]`: which marker file to use. What a marker means is the rules' business."""

        markers: str = "confidential/markers.toml"  # the marker file, relative to rules/ unless absolute

    settings: Config

    def __init__(self, config: dict[str, Any] | None = None, source: str = "rules file"):
        super().__init__(config, source)
        self.marker_set()  # a broken marker file is refused when the stage is built

    def marker_set(self) -> MarkerSet:
        return load_markers(markers_path(self.settings.markers))

    def __call__(self, batch: pa.RecordBatch) -> pa.Table:
        ms = self.marker_set()
        texts = batch.column("text")
        # The prefilter (RE2 in Arrow, over the whole batch) leaves the Python patterns a few documents in a hundred.
        mask = pc.fill_null(pc.match_substring_regex(texts, ms.prefilter, ignore_case=True), False)
        idx = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        if not len(idx):
            return SCHEMA.empty_table()
        picked = pa.array(idx)
        rows = []
        for doc_id, text in zip(batch.column("doc_id").take(picked).to_pylist(), texts.take(picked).to_pylist(),
                                strict=True):
            rows += [(doc_id, f.marker, f.kind, f.position, f.banner, f.start, f.end, f.score) for f in ms.scan(text)]
        return pa.Table.from_arrays([pa.array(c, t.type) for c, t in zip(zip(*rows, strict=True), SCHEMA, strict=True)]
                                    if rows else [pa.array([], t.type) for t in SCHEMA], schema=SCHEMA)

    def assets(self) -> list[dict[str, str]]:
        return [self.marker_set().asset()]

    signals = """
        SELECT doc_id,
               count(*) AS confidential_markers,
               max(score) AS confidential_score,
               list(DISTINCT kind ORDER BY kind) AS confidential_kinds,
               list(DISTINCT position ORDER BY position) AS confidential_positions,
               bool_or(banner) AS confidential_banner
        FROM confidential_markers GROUP BY doc_id"""
