"""The `phi` stage: health data (medical record, health-plan, NHS and Medicare numbers, patient cues) near
diagnoses, medications and ICD-10 codes; one `phi_spans` row per finding, never its value.

What is looked for is data, rules/phi/lexicon.toml (`lexicon.py`), with Presidio's recognizers for `UK_NHS`,
`US_MBI` and `MEDICAL_LICENSE`. A span is `clinical` when an identifier or patient cue and a health term stand
close together: that is a clinical note, and the default policy drops it (redaction does not make a clinical
note safe: the diagnosis stays, and with it whoever can be recognised from the rest).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.core.stage import Detector, StageConfig, register
from curate.stages.phi.lexicon import HEALTH_TYPES, Lexicon, lexicon_path, load_lexicon

SCHEMA = pa.schema([("doc_id", pa.string()), ("entity_type", pa.string()), ("start", pa.int64()),
                    ("end", pa.int64()), ("score", pa.float64()), ("recognizer", pa.string()),
                    ("clinical", pa.bool_())])
HEALTH_LIST = ", ".join(f"'{t}'" for t in HEALTH_TYPES)


class PhiError(RuntimeError):
    """A recognizer failed on a document; the message names the error type only, never the text."""


@register
class Phi(Detector):
    name = "phi"
    categories = ("entity_type", "recognizer")
    explain_exclude = ()  # spans are offsets and types only; the value is never stored
    audit = "curate.stages.phi.audit"
    preload = ("presidio_analyzer.predefined_recognizers",)
    throughput = 20e6  # chars/s on one core, measured on data/samples (benchmarks/guardrails.py speed)
    version = "1"
    requires = {"presidio_analyzer": "presidio-analyzer"}
    tables = {
        "phi_spans": """CREATE TABLE phi_spans (
            doc_id VARCHAR NOT NULL,
            entity_type VARCHAR NOT NULL,  -- MEDICAL_RECORD_NUMBER, HEALTH_PLAN_ID, UK_NHS, US_MBI, MEDICAL_LICENSE,
                                           -- PATIENT_CUE, DIAGNOSIS, MEDICATION, ICD10_CODE
            "start" BIGINT NOT NULL,       -- code-point offsets into documents.text
            "end" BIGINT NOT NULL,
            score DOUBLE NOT NULL,
            recognizer VARCHAR NOT NULL,   -- phi-lexicon, or the Presidio recognizer's class
            clinical BOOLEAN NOT NULL      -- an identifier or cue within the lexicon's window of a health term
        )""",
    }
    output = "phi_spans"

    @dataclasses.dataclass(frozen=True)
    class Config(StageConfig):
        """`[stages.phi]`: which lexicon to use. What a finding means is the rules' business."""

        lexicon: str = "phi/lexicon.toml"  # relative to rules/ unless absolute

    settings: Config

    def __init__(self, config: dict[str, Any] | None = None, source: str = "rules file"):
        super().__init__(config, source)
        self.lexicon()  # a broken lexicon is refused when the stage is built

    def lexicon(self) -> Lexicon:
        return load_lexicon(lexicon_path(self.settings.lexicon))

    def __call__(self, batch: pa.RecordBatch) -> pa.Table:
        lx = self.lexicon()
        texts = batch.column("text")
        mask = pc.fill_null(pc.match_substring_regex(texts, lx.prefilter, ignore_case=True), False)
        idx = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        rows: list[tuple] = []
        picked = pa.array(idx, pa.int64())
        for doc_id, text in zip(batch.column("doc_id").take(picked).to_pylist(), texts.take(picked).to_pylist(),
                                strict=True):
            try:
                spans = lx.scan(text)
            except Exception as e:  # the runner retries document by document and records the failures
                raise PhiError(f"{type(e).__name__} in the PHI recognizers") from None
            rows += [(doc_id, s.entity_type, s.start, s.end, s.score, s.recognizer, s.clinical) for s in spans]
        cols = list(zip(*rows, strict=True)) if rows else [[] for _ in SCHEMA]
        return pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(cols, SCHEMA, strict=True)], schema=SCHEMA)

    def assets(self) -> list[dict[str, str]]:
        # the lexicon, and presidio-analyzer whose recognizers (patterns, checksums, context words) find spans
        return [self.lexicon().asset(), package_asset("presidio-analyzer")]

    signals = f"""
        SELECT doc_id,
               count(*) FILTER (entity_type NOT IN ({HEALTH_LIST}) AND entity_type <> 'PATIENT_CUE') AS phi_identifiers,
               count(*) FILTER (entity_type = 'PATIENT_CUE') AS phi_patient_cues,
               count(*) FILTER (entity_type IN ({HEALTH_LIST})) AS phi_health_terms,
               count(*) FILTER (clinical) AS phi_clinical_spans,
               coalesce(bool_or(clinical), false) AS phi_clinical,
               list(DISTINCT entity_type ORDER BY entity_type) AS phi_types
        FROM phi_spans GROUP BY doc_id"""


def package_asset(dist: str) -> dict[str, str]:
    """An installed package as run.json records it: its version and the hash of its RECORD file."""
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return {"kind": "package", "path": dist, "version": "", "sha256": ""}
    record = d.read_text("RECORD") or ""
    return {"kind": "package", "path": d.metadata["Name"], "version": d.version,
            "sha256": hashlib.sha256(record.encode()).hexdigest()}
