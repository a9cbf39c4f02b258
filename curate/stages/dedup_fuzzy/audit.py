"""What the audit surface shows of near duplicates (the report's cluster section is `dedup_exact`'s, and shows
these clusters too).

The audit module of `FuzzyDedup` (`Detector.audit`): card facts and validation expectations.
"""

from __future__ import annotations

from typing import Any

from curate.audit import facts as F

TABLE = "dedup_fuzzy"
EXPECTATIONS = {TABLE: {"one_row_per_doc": True}}


def card_facts(con, ctx: F.Context) -> dict[str, Any]:
    if TABLE not in ctx.present:
        return {"limitations": [f"Near duplicates were not measured on this workspace (no `{TABLE}` table)."]}
    c = F.cluster_sizes(con, TABLE)
    return {"composition": [f"Near duplicates: {c['clusters']:,} clusters holding {c['documents']:,} documents."]}
