"""What the audit surface shows of exact duplicates: cluster sizes (with the near-duplicate clusters beside them).

The audit module of `ExactDedup` (`Detector.audit`): the report's duplicate-cluster section, card facts and
validation expectations. The section also shows `dedup_fuzzy`'s clusters when that table is present, so both
kinds of copies read side by side.
"""

from __future__ import annotations

from typing import Any

from curate.audit import charts
from curate.audit import facts as F
from curate.audit.report import Section, absent, figure

TABLE = "dedup_exact"
EXPECTATIONS = {TABLE: {"one_row_per_doc": True, "required": ("content_hash",)}}
KINDS = ((TABLE, "Exact duplicates"), ("dedup_fuzzy", "Near duplicates"))


def report_sections(con, ctx: F.Context) -> list[Section]:
    if TABLE not in ctx.present:
        return [absent("duplicates", "Duplicate clusters", 70, TABLE)]
    parts = []
    for table, what in KINDS:
        if table not in ctx.present:
            parts.append(f'<h3>{what}</h3><p class="note">Not available: table `{table}` is absent.</p>')
            continue
        c = F.cluster_sizes(con, table)
        parts.append(f"<h3>{what} (<code>{table}</code>)</h3><p>{c['clusters']:,} clusters of two or more holding "
                     f"{c['documents']:,} documents; largest {c['largest']:,}.</p>")
        if c["clusters"]:
            parts.append(figure(charts.bars(c["buckets"], f"{what}: clusters by size", charts.PALETTE[4]),
                                "Clusters by size (documents per cluster)"))
    return [Section("duplicates", "Duplicate clusters", 70, parts)]


def card_facts(con, ctx: F.Context) -> dict[str, Any]:
    if TABLE not in ctx.present:
        return {}
    c = F.cluster_sizes(con, TABLE)
    return {"composition": [f"Exact duplicates: {c['clusters']:,} clusters holding {c['documents']:,} documents."]}
