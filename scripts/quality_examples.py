#!/usr/bin/env python3
"""Write the examples the default quality model learns from, derived from data/samples deterministically.

Positive: English documents (lid.176 score >= 0.65) on which no quality rule of rules/default.toml fires.
Negative: as many documents on which quality rules fire, taken in order of sha256(doc_id).
So the default model is a smooth, fast stand-in for the heuristic policy on this kind of text; a team
with its own labelled data trains its own (`curate quality train`) or brings one (`--model`).

    python scripts/quality_examples.py OUT_DIR [--samples data/samples]

writes OUT_DIR/ws (a workspace), OUT_DIR/positive.jsonl and OUT_DIR/negative.jsonl.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from curate import Workspace
from curate.core.pipeline import decide
from curate.core.runner import run_stage
from curate.stages.quality.stage import Quality

MAX_CHARS = 4000  # examples are document openings: enough for a bag of n-grams, small files

QUALITY_FIRED = "len(list_filter(c.rule_ids, lambda r: r LIKE 'gopher.%' OR r LIKE 'c4.%' OR r LIKE 'fineweb.%')) > 0"
POSITIVE = f"""SELECT d.doc_id, d.text FROM documents d JOIN decisions c USING (doc_id) JOIN quality q USING (doc_id)
               WHERE NOT {QUALITY_FIRED} AND c.action <> 'drop' AND q.lang = 'en' AND q.lang_score >= 0.65
               ORDER BY sha256(d.doc_id)"""
NEGATIVE = f"""SELECT d.doc_id, d.text FROM documents d JOIN decisions c USING (doc_id)
               WHERE {QUALITY_FIRED} ORDER BY sha256(d.doc_id) LIMIT ?"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--samples", default=str(Path(__file__).resolve().parent.parent / "data" / "samples"))
    args = ap.parse_args()
    ws = Workspace.init(args.out / "ws")
    ws.ingest([args.samples])
    with ws.connect(write=True) as con:
        run_stage(con, Quality({}))  # the heuristics only: the model being made is not needed for them
    decide(ws)
    with ws.connect() as con:
        pos = con.execute(POSITIVE).fetchall()
        neg = con.execute(NEGATIVE, [len(pos)]).fetchall()
    for name, rows in (("positive", pos), ("negative", neg)):
        with open(args.out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for doc_id, text in rows:
                f.write(json.dumps({"id": doc_id, "text": text[:MAX_CHARS]}, ensure_ascii=False) + "\n")
        print(f"{args.out / (name + '.jsonl')}: {len(rows)} examples")


if __name__ == "__main__":
    main()
