#!/usr/bin/env python3
"""Keep/drop agreement between the default quality rules and DataTrove's filters, on every sample document.

For each document and each DataTrove filter (GopherQualityFilter, GopherRepetitionFilter, C4QualityFilter,
FineWebQualityFilter, default thresholds, each on the original text), DataTrove's keep/drop is compared with
"no rule of that family fired" in Curate's decisions (rules/default.toml). Empty documents are left out
(both drop them: DataTrove's filters, and Curate's `empty-text` rule).

    python benchmarks/quality_agreement.py [--samples data/samples]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curate.stages.quality.datatrove import FILTERS, filters, kept  # noqa: E402 - the rule families, one place


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", default=str(ROOT / "data" / "samples"))
    args = ap.parse_args()

    from datatrove.data import Document

    from curate import Workspace
    from curate.core.pipeline import decide
    from curate.core.runner import run_stage
    from curate.stages.quality.stage import Quality

    with tempfile.TemporaryDirectory() as d:
        ws = Workspace.init(Path(d) / "ws")
        ws.ingest([args.samples])
        with ws.connect(write=True) as con:
            run_stage(con, Quality({}))
        decide(ws)
        rows = ws.sql("""SELECT d.doc_id, d.text, c.rule_ids FROM documents d JOIN decisions c USING (doc_id)
                         WHERE length(trim(d.text, ' \n\t')) > 0 ORDER BY d.doc_id""").rows()
    peers = filters()
    same, dropped, differ = Counter(), Counter(), []
    for doc_id, text, fired in rows:
        for family, peer in peers.items():
            try:
                theirs = peer.filter(Document(text=text, id=doc_id)) is True
            except ZeroDivisionError:  # FineWeb divides by the word count
                theirs = False
            ours = kept(family, fired)
            same[family] += ours == theirs
            dropped[family] += not theirs
            if ours != theirs:
                differ.append((family, doc_id, ours, theirs))
    n = len(rows)
    for family in FILTERS:
        print(f"{FILTERS[family]:<24} {same[family]}/{n} identical ({100 * same[family] / n:.2f}%), "
              f"DataTrove drops {dropped[family]}")
    total = sum(same.values())
    print(f"all four filters: {total}/{4 * n} identical keep/drop decisions ({100 * total / (4 * n):.2f}%)")
    for family, doc_id, ours, theirs in differ[:20]:
        print(f"  differs: {FILTERS[family]} {doc_id}: curate {'keeps' if ours else 'drops'}, "
              f"datatrove {'keeps' if theirs else 'drops'}")


if __name__ == "__main__":
    main()
