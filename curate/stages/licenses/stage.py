"""The `licenses` stage: one `license_signals` row per licence finding in a document (full texts, notices, SPDX lines,
Creative Commons markers, copyright notices), with its evidence kind, span, score and use class; the policy decides.

Full texts are found by similarity to the templates in `rules/licenses/templates/` (`fulltext.py`), notices and
markers by patterns (`notices.py`), use classes come from `rules/licenses/use_classes.toml` (`expressions.py`);
`scanner.py` loads the rules files and turns a batch into rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.core.errors import ConfigError
from curate.core.stage import Detector, StageConfig, register
from curate.stages.licenses.expressions import CLASSES, GRANTING
from curate.stages.licenses.notices import PREFILTER
from curate.stages.licenses.scanner import Scanner, classes_asset, references_asset, templates_asset

SCHEMA = pa.schema([("doc_id", pa.string()), ("license", pa.string()), ("use_class", pa.string()),
                    ("evidence", pa.string()), ("start", pa.int64()), ("end", pa.int64()), ("score", pa.float64()),
                    ("form", pa.string()), ("scope", pa.string()), ("family", pa.bool_())])


@register
class Licenses(Detector):
    name = "licenses"
    categories = ("license", "use_class")
    audit = "curate.stages.licenses.audit"
    throughput = 4e6  # chars/s on one core, measured on data/samples
    version = "4"  # 4: links, table rows, bare headings, relicensing; the verbatim start of a copy
    schema_version = 2  # form, scope, family
    tables = {
        "license_signals": """CREATE TABLE license_signals (
            doc_id VARCHAR NOT NULL,
            license VARCHAR,          -- SPDX expression (CC licences by their SPDX ids), NULL for notices without one
            use_class VARCHAR NOT NULL,  -- rules/licenses/use_classes.toml: permissive, copyleft, noncommercial, ...
            evidence VARCHAR NOT NULL,   -- full_text, notice, spdx_identifier, cc_url, cc_name, rel_license,
                                         -- public_domain, copyright_notice, all_rights_reserved, restrictive_notice,
                                         -- reference (a licence named, not quoted: see form)
            "start" BIGINT,           -- code-point span in documents.text
            "end" BIGINT,
            score DOUBLE,             -- full_text: F1 of template recall and precision; others: fixed confidence
            form VARCHAR,             -- reference: dep5_field, statement, heading, badge, url, metadata
            scope VARCHAR NOT NULL,   -- self, files (a DEP-5 paragraph naming files), mention (not a grant)
            family BOOLEAN            -- the text names a family without a version (LicenseRef-<family> or the
                                      -- family's least specific id)
        )""",
    }
    output = "license_signals"

    @dataclasses.dataclass(frozen=True)
    class Config(StageConfig):
        """[stages.licenses]: when a region of a document counts as a full copy of a licence template."""

        # share of a template's required word 3-grams a region must contain to be a full copy (0 < x <= 1)
        min_recall: float = 0.75
        # share of the region's 3-grams the template must explain (a holder's name in a slot counts; 0 < x <= 1)
        min_precision: float = 0.75

    settings: Config

    def __init__(self, config: dict[str, Any] | None = None, source: str = "rules file"):
        super().__init__(config, source)
        for key in ("min_recall", "min_precision"):
            value = getattr(self.settings, key)
            if not 0 < value <= 1:
                raise ConfigError(f"{source}: [stages.licenses] {key} must be in (0, 1], not {value}")

    def _scanner(self) -> Scanner:
        if getattr(self, "_loaded", None) is None:
            self._loaded = Scanner(float(self.settings.min_recall), float(self.settings.min_precision))
        return self._loaded

    def __getstate__(self) -> dict[str, Any]:  # workers load their own index
        return {k: v for k, v in self.__dict__.items() if k != "_loaded"}

    def __call__(self, batch: pa.RecordBatch) -> pa.Table:
        texts = batch.column("text")
        mask = pc.fill_null(pc.match_substring_regex(texts, PREFILTER, ignore_case=True), False)
        idx = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        if not len(idx):
            return SCHEMA.empty_table()
        picked = pa.array(idx)
        rows = self._scanner().rows(batch.column("doc_id").take(picked).to_pylist(),
                                    texts.take(picked).to_pylist())
        return pa.table(rows, schema=SCHEMA)

    def assets(self) -> list[dict[str, str]]:
        """The templates (templates.toml and every template file, one hash), the use-class table and the references
        table: editing any of them recomputes the stage."""
        return [templates_asset(), classes_asset(), references_asset()]

    def signals_sql(self, rules: dict[str, Any]) -> str:
        granting = ", ".join(f"'{c}'" for c in GRANTING)
        order = ", ".join(f"'{c}'" for c in CLASSES[:-1])
        # a licence the text only mentions ("compatible with the GPL") grants nothing: the columns rules act on
        # count findings of scope `self` and `files` only; `license_mentions` lists the others
        g = "scope <> 'mention'"
        return f"""
            SELECT doc_id,
                   list(DISTINCT license ORDER BY license) FILTER (license IS NOT NULL AND {g}) AS license_ids,
                   list(DISTINCT use_class ORDER BY use_class)
                       FILTER (evidence <> 'copyright_notice' AND {g}) AS license_use_classes,
                   CASE WHEN bool_or(use_class IN ({granting}) AND {g})
                        THEN arg_max(use_class, list_position([{order}], use_class))
                                 FILTER (use_class IN ({granting}) AND {g})
                        WHEN bool_or(use_class = 'all-rights-reserved') THEN 'all-rights-reserved'
                        WHEN bool_or(license IS NOT NULL AND {g}) THEN 'unknown' END AS license_use_class,
                   coalesce(bool_or(use_class = 'noncommercial' AND {g}), false) AS license_noncommercial,
                   coalesce(bool_or(use_class = 'no-derivatives' AND {g}), false) AS license_no_derivatives,
                   coalesce(bool_or(use_class = 'copyleft' AND {g}), false) AS license_copyleft,
                   bool_or(evidence = 'full_text') AS license_full_text,
                   bool_or(evidence = 'all_rights_reserved') AND NOT coalesce(bool_or(use_class IN ({granting})
                       AND {g}), false) AS license_all_rights_reserved,
                   bool_or(evidence = 'restrictive_notice') AND NOT coalesce(bool_or(use_class IN ({granting})
                       AND {g}), false) AS license_restrictive,
                   count(*) FILTER (evidence = 'copyright_notice') AS license_copyright_notices,
                   CASE WHEN bool_or(license IS NOT NULL AND scope = 'self') THEN 'self'
                        WHEN bool_or(license IS NOT NULL AND scope = 'files') THEN 'files'
                        WHEN bool_or(license IS NOT NULL) THEN 'mention' END AS license_scope,
                   coalesce(bool_and(evidence = 'reference') FILTER (license IS NOT NULL AND {g}), false)
                       AS license_by_reference,
                   coalesce(list(DISTINCT license ORDER BY license) FILTER (license IS NOT NULL
                       AND scope = 'mention'), []) AS license_mentions
            FROM license_signals GROUP BY doc_id"""
