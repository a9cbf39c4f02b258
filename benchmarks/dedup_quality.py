"""Accuracy of near-duplicate detection at Jaccard 0.8: curate's dedup_fuzzy vs datasketch.MinHashLSH.

Data: real documents of this machine (man pages, /usr/share/doc, data/samples; see dedup_corpus.py) and
copies with controlled edits (words replaced or deleted, lines appended or removed, paragraphs
reordered, case and spacing changed), some edited again (chains). Ground truth: the exact Jaccard
of word 5-gram shingle sets (curate.stages.dedup_fuzzy.minhash.shingles) over ALL pairs of documents, computed as a
sparse matrix product. Targets: document-level F1 >= 0.95 for "has a near-duplicate" and >= 95% of
true pairs in one cluster.

    PYTHONPATH=. .venv/bin/python benchmarks/dedup_quality.py [--base 4000] [--variants 2500]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dedup_corpus as corpus  # noqa: E402

from curate import Workspace  # noqa: E402
from curate.dedup import minhash as mh  # noqa: E402

THRESHOLD = 0.8


def build(base: int, variants: int, seed: int) -> list[tuple[str, str]]:
    """(doc_id, text): `base` real documents, then `variants` edited copies (20% of them of a copy)."""
    rng = np.random.default_rng(seed)
    pool = [t for _, t in corpus.source_documents() if 300 <= len(t) and len(mh.WORD.findall(t)) >= 10]
    pick = np.sort(rng.choice(len(pool), size=min(base, len(pool)), replace=False))
    docs = [(f"base-{i:05d}", pool[j]) for i, j in enumerate(pick)]
    for i in range(variants):
        parent = docs[int(rng.integers(len(docs)))] if rng.random() < 0.2 else docs[int(rng.integers(len(pick)))]
        kind = corpus.EDITS[int(rng.integers(len(corpus.EDITS)))]
        donor = docs[int(rng.integers(len(pick)))][1]
        docs.append((f"var-{i:05d}-{kind}", corpus.edit(parent[1], kind, float(rng.random()), rng, donor)))
    return docs


def truth(texts: list[str]) -> tuple[dict[tuple[int, int], float], np.ndarray]:
    """Exact Jaccard of every pair of documents sharing a shingle: {(i, j): J} for J >= THRESHOLD,
    and the number of shingles per document."""
    ids: dict[str, int] = {}
    rows, cols = [], []
    for i, t in enumerate(texts):
        for s in mh.shingle_set(t):
            rows.append(i)
            cols.append(ids.setdefault(s, len(ids)))
    x = sp.csr_matrix((np.ones(len(rows), np.int32), (rows, cols)), shape=(len(texts), len(ids)))
    sizes = np.asarray(x.sum(axis=1)).ravel()
    inter = sp.triu(x @ x.T, k=1).tocoo()
    j = inter.data / (sizes[inter.row] + sizes[inter.col] - inter.data)
    keep = j >= THRESHOLD
    return {(int(a), int(b)): float(v) for a, b, v in zip(inter.row[keep], inter.col[keep], j[keep], strict=True)}, \
        sizes


def run_curate(docs: list[tuple[str, str]]) -> tuple[list[int], list[tuple[int, int]], float]:
    """Cluster label per document (-1: alone) and verified edges, from a fresh workspace."""
    index = {d: i for i, (d, _) in enumerate(docs)}
    with tempfile.TemporaryDirectory(prefix="curate-dedup-quality-") as tmp:
        shard = Path(tmp) / "docs.jsonl"
        shard.write_text("".join(json.dumps({"id": d, "text": t}) + "\n" for d, t in docs))
        ws = Workspace.init(Path(tmp) / "ws")
        ws.ingest([str(shard)])
        t0 = time.perf_counter()
        with ws.connect(write=True) as con:
            from curate.core.executors import executor
            from curate.core.runner import run_stage
            from curate.core.stage import detectors

            run_stage(con, detectors({"stages": _rules_stages()}, ["dedup_fuzzy"])[0], executor("local", 2))
        seconds = time.perf_counter() - t0
        label = [-1] * len(docs)
        for d, c in ws.sql("SELECT doc_id, cluster_id FROM dedup_fuzzy").iter_rows():
            label[index[d]] = index[c]
        edges = [(index[a], index[b]) for a, b in ws.sql("SELECT doc_a, doc_b FROM dedup_pairs").iter_rows()]
    return label, edges, seconds


def _rules_stages() -> dict:
    from curate.core.policy import load_rules

    return load_rules().raw.get("stages", {})


def run_datasketch(texts: list[str], verify: bool) -> tuple[list[int], float]:
    """datasketch.MinHashLSH(threshold 0.8, 128 permutations): insert all, query each, union-find the
    answers (optionally only those whose MinHash Jaccard estimate is >= 0.8)."""
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=128)
    sketches = []
    for i, t in enumerate(texts):
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([s.encode() for s in mh.shingle_set(t)])
        sketches.append(m)
        if len(mh.shingle_set(t)):
            lsh.insert(i, m)
    parent = list(range(len(texts)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, m in enumerate(sketches):
        for j in lsh.query(m) if i in lsh else []:
            if j != i and (not verify or m.jaccard(sketches[j]) >= THRESHOLD):
                parent[find(i)] = find(j)
    roots = [find(i) for i in range(len(texts))]
    counts = np.bincount(roots, minlength=len(texts))
    return [r if counts[r] > 1 else -1 for r in roots], time.perf_counter() - t0


def score(label: list[int], pairs: dict[tuple[int, int], float], n: int) -> dict[str, float]:
    lab = np.asarray(label)
    truth_pos = np.zeros(n, bool)
    for a, b in pairs:
        truth_pos[a] = truth_pos[b] = True
    pred = lab >= 0
    tp = int((pred & truth_pos).sum())
    precision = tp / max(1, int(pred.sum()))
    recall = tp / max(1, int(truth_pos.sum()))
    together = [lab[a] >= 0 and lab[a] == lab[b] for a, b in pairs]
    bands = {}
    for lo, hi in ((0.8, 0.85), (0.85, 0.9), (0.9, 1.01)):
        sel = [t for t, (p, j) in zip(together, pairs.items(), strict=True) if lo <= j < hi]
        bands[f"pair_recall_{lo:.2f}-{min(hi, 1):.2f}"] = round(sum(sel) / max(1, len(sel)), 4)
    return {"doc_precision": round(precision, 4), "doc_recall": round(recall, 4),
            "doc_f1": round(2 * precision * recall / max(1e-9, precision + recall), 4),
            "pair_recall": round(sum(together) / max(1, len(together)), 4), **bands,
            "docs_flagged": int(pred.sum())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", type=int, default=4000)
    ap.add_argument("--variants", type=int, default=2500)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, help="Also write the figures here.")
    args = ap.parse_args()

    t0 = time.perf_counter()
    docs = build(args.base, args.variants, args.seed)
    texts = [t for _, t in docs]
    pairs, sizes = truth(texts)
    n_pos = len({i for p in pairs for i in p})
    print(f"{len(docs)} documents ({args.base} real, {args.variants} edited copies), "
          f"{sum(map(len, texts)) / 1e6:.1f} MB; ground truth over all "
          f"{len(docs) * (len(docs) - 1) // 2:,} pairs: {len(pairs)} pairs at J >= {THRESHOLD}, "
          f"{n_pos} documents with a near-duplicate ({time.perf_counter() - t0:.0f} s to build)")
    results = {}
    label, edges, secs = run_curate(docs)
    results["curate dedup_fuzzy"] = {**score(label, pairs, len(docs)), "seconds": round(secs, 1)}
    exact_edges = 0
    for a, b in edges:
        exact_edges += (min(a, b), max(a, b)) in pairs
    results["curate dedup_fuzzy"]["edge_precision"] = round(exact_edges / max(1, len(edges)), 4)
    label, secs = run_datasketch(texts, verify=False)
    results["datasketch MinHashLSH"] = {**score(label, pairs, len(docs)), "seconds": round(secs, 1)}
    label, secs = run_datasketch(texts, verify=True)
    results["datasketch MinHashLSH + estimate >= 0.8"] = {**score(label, pairs, len(docs)), "seconds": round(secs, 1)}
    keys = list(results["curate dedup_fuzzy"])
    print(f"{'':<24}" + "".join(f"{name[:26]:>28}" for name in results))
    for k in keys:
        print(f"{k:<24}" + "".join(f"{str(r.get(k, '')):>28}" for r in results.values()))
    if args.json:
        args.json.write_text(json.dumps({"documents": len(docs), "true_pairs": len(pairs), "positives": n_pos,
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()
