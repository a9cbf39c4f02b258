"""`work` entries: a registered text whose near copies anywhere in the corpus match.

Similarity is the exact Jaccard of word 5-gram shingle sets of `curate.text.normalize`d text
(words are runs of \\w, so punctuation edits do not count). Candidate documents are found through
an inverted index of the works' shingles, so each document is read once however many works there are.
"""

from __future__ import annotations

import re
from collections import Counter

import duckdb

from ..text import normalize

WORD = re.compile(r"\w+")
N = 5


def shingle_set(text: str, n: int = N) -> set[str]:
    """Word n-grams of the normalised text (a text shorter than n is one shingle)."""
    words = WORD.findall(normalize(text))
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def work_matches(con: duckdb.DuckDBPyConnection, docs: str, threshold: float) -> list[tuple[str, str, float, bool]]:
    """(doc_id, entry_id, jaccard, verified) for every document of `docs` (SQL over optout_docs) that is
    a near copy (Jaccard >= threshold) of a `work` entry in the temp table _oo_e."""
    works = con.execute("SELECT entry_id, payload, verified FROM _oo_e WHERE kind = 'work' ORDER BY entry_id"
                        ).fetchall()
    if not works:
        return []
    index: dict[str, list[int]] = {}
    sizes = []
    for i, (_, text, _) in enumerate(works):
        shingles = shingle_set(text)
        sizes.append(len(shingles))
        for s in shingles:
            index.setdefault(s, []).append(i)
    out = []
    rel = con.execute(f"SELECT d.doc_id, x.text FROM {docs} d JOIN documents x USING (doc_id)")
    while batch := rel.fetchmany(2048):
        for doc_id, text in batch:
            shingles = shingle_set(text)
            shared = Counter(w for s in shingles for w in index.get(s, ()))
            for w, common in shared.items():
                j = common / (len(shingles) + sizes[w] - common)
                if j >= threshold:
                    out.append((doc_id, works[w][0], round(j, 6), works[w][2]))
    return out
