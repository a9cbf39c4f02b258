"""The `brands` stage: mentions of a brand and of its competitors, and what the brand is mentioned next to.

Profiles are data (rules/brands/*.toml, `profile.py`), named by `[stages.brands] profiles`; none by default. The
stage writes one `brand_hits` row per mention of a mark (kind `own` or `competitor`) and, in a document that
mentions the brand itself, per term of the profile's `[avoid]` list (`avoid`) and per toxicity term of the bias
lexicon (`toxic`), each with `near` = within the profile's window of a mention. The policy decides; the
signals are per profile, `brand_<profile>_*` (the profile's name is checked to be a plain identifier).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.core.stage import Detector, StageConfig, register
from curate.stages.brands.profile import Profile, Toxicity, load_profiles, load_toxicity, prefilter, profile_path
from curate.util.sql import identifier, literal

SCHEMA = pa.schema([("doc_id", pa.string()), ("profile", pa.string()), ("kind", pa.string()), ("brand", pa.string()),
                    ("mark", pa.string()), ("start", pa.int64()), ("end", pa.int64()), ("near", pa.bool_())])


@register
class Brands(Detector):
    name = "brands"
    categories = ("profile", "kind", "brand")
    audit = "curate.stages.brands.audit"
    throughput = 50e6  # chars/s on one core, measured on data/samples (benchmarks/guardrails.py brands)
    version = "1"
    tables = {
        "brand_hits": """CREATE TABLE brand_hits (
            doc_id VARCHAR NOT NULL,
            profile VARCHAR NOT NULL,    -- the profile's name (rules/brands/*.toml `profile`)
            kind VARCHAR NOT NULL,       -- own, competitor (a mention); avoid, toxic (a term, in documents that
                                         -- mention the brand itself)
            brand VARCHAR NOT NULL,      -- the brand mentioned; for avoid and toxic the term's group
            mark VARCHAR NOT NULL,       -- the mark's id; for avoid and toxic the term (lower case)
            "start" BIGINT NOT NULL,     -- code-point span in documents.text
            "end" BIGINT NOT NULL,
            near BOOLEAN                 -- avoid, toxic: within the profile's window of a mention of the brand
        )""",
    }
    output = "brand_hits"

    @dataclasses.dataclass(frozen=True)
    class Config(StageConfig):
        """`[stages.brands]`: which profiles to look for. What a mention means is the rules' business."""

        profiles: tuple[str, ...] = ()  # profile files (rules/brands/*.toml), relative to rules/ unless absolute
        toxicity: str = "lexicons/toxicity.toml"  # the bias lexicon whose terms count as toxic near a brand

    settings: Config

    def __init__(self, config: dict[str, Any] | None = None, source: str = "rules file"):
        super().__init__(config, source)
        self.profiles()  # a broken profile is refused when the stage is built
        if self.settings.profiles:
            self.toxic()

    def profiles(self) -> list[Profile]:
        return load_profiles(self.settings.profiles)

    def toxic(self) -> Toxicity | None:
        if not any(p.toxicity for p in self.profiles()):
            return None
        return load_toxicity(profile_path(self.settings.toxicity))

    def __call__(self, batch: pa.RecordBatch) -> pa.Table:
        profiles = self.profiles()
        pattern = prefilter(profiles)
        if pattern is None:
            return SCHEMA.empty_table()
        toxic = self.toxic()
        texts = batch.column("text")
        # The prefilter (RE2 in Arrow, over the whole batch) leaves the Python patterns the documents with a term.
        mask = pc.fill_null(pc.match_substring_regex(texts, pattern, ignore_case=True), False)
        idx = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        if not len(idx):
            return SCHEMA.empty_table()
        picked = pa.array(idx)
        rows = []
        for doc_id, text in zip(batch.column("doc_id").take(picked).to_pylist(), texts.take(picked).to_pylist(),
                                strict=True):
            for pr in profiles:
                rows += [(doc_id, pr.name, h.kind, h.brand, h.mark, h.start, h.end, h.near)
                         for h in pr.scan(text, toxic)]
        return pa.Table.from_arrays([pa.array(c, t.type) for c, t in zip(zip(*rows, strict=True), SCHEMA, strict=True)]
                                    if rows else [pa.array([], t.type) for t in SCHEMA], schema=SCHEMA)

    def assets(self) -> list[dict[str, str]]:
        toxic = self.toxic()
        return [p.asset() for p in self.profiles()] + ([toxic.asset()] if toxic else [])

    def signals_sql(self, rules: dict[str, Any]) -> str:
        """One row per document the stage scanned (its shard ran, it did not fail): `brands_mentioned` and, per
        profile, brand_<name>_mentions, _competitor_mentions, _competitor_share, _competitors, _avoid_terms,
        _avoid_near, _toxic_terms, _toxic_near, _compatible. Names are validated identifiers; values literals."""
        aggs, cols = [], []
        for i, p in enumerate(self.profiles()):
            c = p.columns()
            v = literal(p.name)
            a = f"_p{i}"
            mine = f"profile = {v} AND kind"
            aggs += [f"count(*) FILTER (profile = {v} AND kind = 'own') AS {a}_own",
                     f"count(*) FILTER (profile = {v} AND kind = 'competitor') AS {a}_comp",
                     f"list(DISTINCT brand ORDER BY brand) FILTER ({mine} = 'competitor') AS {a}_brands",
                     f"count(*) FILTER (profile = {v} AND kind = 'avoid') AS {a}_avoid",
                     f"count(*) FILTER (profile = {v} AND kind = 'avoid' AND near) AS {a}_avoid_near",
                     f"count(*) FILTER (profile = {v} AND kind = 'toxic') AS {a}_toxic",
                     f"count(*) FILTER (profile = {v} AND kind = 'toxic' AND near) AS {a}_toxic_near"]
            own, comp = f"coalesce(h.{a}_own, 0)", f"coalesce(h.{a}_comp, 0)"
            avoid_near, toxic_near = f"coalesce(h.{a}_avoid_near, 0)", f"coalesce(h.{a}_toxic_near, 0)"
            cols += [f"{own} AS {identifier(c['mentions'])}",
                     f"{comp} AS {identifier(c['competitor_mentions'])}",
                     f"{comp}::DOUBLE / greatest({own} + {comp}, 1) AS {identifier(c['competitor_share'])}",
                     f"coalesce(h.{a}_brands, []::VARCHAR[]) AS {identifier(c['competitors'])}",
                     f"coalesce(h.{a}_avoid, 0) AS {identifier(c['avoid_terms'])}",
                     f"{avoid_near} AS {identifier(c['avoid_near'])}",
                     f"coalesce(h.{a}_toxic, 0) AS {identifier(c['toxic_terms'])}",
                     f"{toxic_near} AS {identifier(c['toxic_near'])}",
                     f"({comp} = 0 AND {avoid_near} = 0 AND {toxic_near} = 0) AS {identifier(c['compatible'])}"]
        aggs.append("list(DISTINCT brand ORDER BY brand) FILTER (kind IN ('own', 'competitor')) AS brands")
        return f"""
            SELECT d.doc_id, coalesce(h.brands, []::VARCHAR[]) AS brands_mentioned{''.join(', ' + c for c in cols)}
            FROM documents d
            LEFT JOIN (SELECT doc_id, {', '.join(aggs)} FROM brand_hits GROUP BY doc_id) h USING (doc_id)
            WHERE d.shard_id IN (SELECT shard_id FROM stage_runs WHERE stage = 'brands')
              AND NOT EXISTS (SELECT 1 FROM stage_errors e WHERE e.stage = 'brands' AND e.doc_id = d.doc_id)"""
