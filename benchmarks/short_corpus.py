"""Corpora shaped like web and forum text, for the speed benchmarks: most documents short, many near copies.

Real text from this machine (dedup_corpus.source_documents: man pages, /usr/share/doc, the common licences;
never data/samples), cut at line ends into documents whose lengths follow a log-normal with a median of
600 characters and a mean of about 2 KB (sigma 1.55: exp(sigma^2 / 2) = 2000 / 600), the shape of held-out
crawl text. Each piece of real text is used once, so only the planted copies are duplicates.

Two shapes:
- "short": the base documents in order, 10% of them followed by an edited copy and 3% by an exact copy;
- "heavy": every base document followed by four edited copies (mirrors, re-posts), and one base in 200
  followed instead by a cluster of 100-500 lightly edited copies (boilerplate pages).

Edits are dedup_corpus.edit (word replacement or deletion, appended or removed lines, swapped paragraphs,
case and space), strength uniform in [0.02, 0.3], donors from other real documents. Deterministic: the
sources are read in sorted order and every choice comes from a seeded generator.

    PYTHONPATH=. .venv/bin/python benchmarks/short_corpus.py --docs 100000 --shape heavy   # prints the shape
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dedup_corpus  # noqa: E402

MEDIAN, SIGMA = 600, 1.55
MIN_CHARS, MAX_CHARS = 40, 60_000
SHAPES = ("short", "heavy")
VERSION = 1


def base_documents(seed: int = 11) -> Iterator[str]:
    """Real documents of log-normal length (see the module docstring), each piece of text used once."""
    rng = np.random.default_rng(seed)
    seen: set[int] = set()
    mu = math.log(MEDIAN)
    for origin, text in dedup_corpus.source_documents(max_chars=1_000_000):
        if origin.startswith("samples:"):
            continue  # data/samples is what the product is tuned on: never benchmark on it
        lines = text.splitlines(keepends=True)
        at = 0
        while at < len(lines):
            want = min(MAX_CHARS, max(MIN_CHARS, int(rng.lognormal(mu, SIGMA))))
            piece, size = [], 0
            while at < len(lines) and size < want:
                piece.append(lines[at])
                size += len(lines[at])
                at += 1
            doc = re.sub(r"\n{3,}", "\n\n", "".join(piece)).strip()
            key = hash(" ".join(doc.split()).casefold())
            if len(doc) >= MIN_CHARS and key not in seen:
                seen.add(key)
                yield doc


def documents(n: int, shape: str, seed: int = 11) -> Iterator[tuple[str, str]]:
    """n (doc_id, text) of the given shape; base documents are reused (with fresh edits) past the real text."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}")
    rng = np.random.default_rng(seed + 1)
    bases = list(base_documents(seed))
    made = 0

    def copy(parent: str, strength_max: float = 0.3) -> str:
        kind = dedup_corpus.EDITS[int(rng.integers(len(dedup_corpus.EDITS)))]
        donor = bases[int(rng.integers(len(bases)))]
        return dedup_corpus.edit(parent, kind, float(rng.uniform(0.02, strength_max)), rng, donor)

    i = 0
    while made < n:
        base = bases[i % len(bases)]
        if i >= len(bases):  # past the real text: the same bases, edited afresh, so no exact repeats
            base = copy(base, 0.1)
        i += 1
        group = [base]
        r = rng.random()
        if shape == "short":
            group += [copy(base)] if r < 0.10 else [base] if r < 0.13 else []
        elif r < 1 / 200:
            group += [copy(base, 0.05) for _ in range(int(rng.integers(100, 501)))]
        else:
            group += [copy(base) for _ in range(4)]
        for text in group[: n - made]:
            yield f"doc-{made:08d}", text
            made += 1


def build(out: Path, n: int, shape: str, seed: int = 11, shard_docs: int = 100_000) -> list[Path]:
    """JSONL shards ({"id", "text"}) of `shard_docs` documents in `out`; reused when built with the same
    arguments."""
    stamp = out / "built.json"
    want = {"docs": n, "shape": shape, "seed": seed, "shard_docs": shard_docs, "version": VERSION}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return sorted(out.glob("shard-*.jsonl"))
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shards: list[Path] = []
    f = None
    for k, (doc_id, text) in enumerate(documents(n, shape, seed)):
        if k % shard_docs == 0:
            if f:
                f.close()
            shards.append(out / f"shard-{len(shards):03d}.jsonl")
            f = shards[-1].open("w", encoding="utf-8")
        f.write(json.dumps({"id": doc_id, "text": text}, ensure_ascii=False) + "\n")
    if f:
        f.close()
    stamp.write_text(json.dumps(want))
    return shards


def describe(shards: list[Path]) -> dict:
    """Documents, bytes, median and mean length of built shards."""
    sizes = np.array([len(json.loads(line)["text"].encode()) for s in shards for line in s.open(encoding="utf-8")])
    return {"docs": int(len(sizes)), "text_mb": float(sizes.sum() / 1e6), "median_bytes": int(np.median(sizes)),
            "mean_bytes": int(sizes.mean()), "file_mb": sum(s.stat().st_size for s in shards) / 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--shape", choices=SHAPES, default="short")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=Path, default=Path("/tmp/curate-bench"))
    args = ap.parse_args()
    shards = build(args.out / f"{args.shape}-{args.docs}", args.docs, args.shape, args.seed)
    print(json.dumps({"shape": args.shape, "shards": [str(s) for s in shards], **describe(shards)}))


if __name__ == "__main__":
    main()
