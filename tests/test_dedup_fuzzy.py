"""Near-duplicate detection: MinHash signatures (checked against datasketch), LSH, clusters, keepers."""

from __future__ import annotations

import json

import datasketch
import numpy as np
import pyarrow.parquet as pq
import pytest
import zstandard
from conftest import SAMPLES

from curate.dedup import minhash as mh

ODD = ["", "   ", "one", "two words", "Straße STRASSE ﬁne ǰ", "Cafe\u0301 café", "a_b c-d e.f g h i j",
       "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 words beyond the BMP, 42 of them", "…“quoted”… — dash\u00a0nbsp", "x " * 3]


@pytest.fixture(scope="module")
def real_texts() -> list[str]:
    """Man pages and licence texts from data/samples, plus odd cases."""
    texts = pq.read_table(SAMPLES / "manpages.parquet", columns=["text"]).column("text").to_pylist()[:150]
    raw = zstandard.ZstdDecompressor().stream_reader(open(SAMPLES / "licenses.jsonl.zst", "rb")).read()
    texts += [json.loads(line)["text"] for line in raw.decode().splitlines()[:60]]
    return texts + ODD


@pytest.mark.parametrize("kind,n", [("word", 5), ("word", 1), ("char", 5)])
def test_vectorised_shingle_hashes_equal_the_scalar_definition(real_texts, kind, n):
    texts = [t[:3000] for t in real_texts[::6]] + ODD
    hashes, counts = mh.shingle_hashes(texts, kind, n)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    for i, text in enumerate(texts):
        expected = [mh.shingle_hash(s, kind) for s in mh.shingles(text, kind, n)]
        assert hashes[bounds[i]:bounds[i + 1]].tolist() == expected, text[:60]


def test_shingles_follow_the_rules():
    assert mh.shingles("The  QUICK, brown fox! jumps over", n=5) == ["the quick brown fox jumps",
                                                                     "quick brown fox jumps over"]
    assert mh.shingles("Hello, world.") == ["hello world"]  # shorter than n: the whole token string
    assert mh.shingles("   ...  ") == [] and mh.shingles("") == []
    assert mh.shingles("Ab  c", kind="char", n=3) == ["ab ", "b c"]
    assert mh.shingles("Straße", n=1) == mh.shingles("STRASSE", n=1) == ["strasse"]


def test_signatures_equal_datasketch_minhash_on_the_same_shingles(real_texts):
    sigs = mh.signatures(real_texts, num_perm=128, seed=1)
    assert sigs.shape == (len(real_texts), 128) and sigs.dtype == np.uint32
    for i in list(range(0, len(real_texts), 9)) + list(range(len(real_texts) - len(ODD), len(real_texts))):
        m = datasketch.MinHash(num_perm=128, seed=1, hashfunc=mh.shingle_hash)
        m.update_batch(mh.shingles(real_texts[i]))
        assert np.array_equal(m.hashvalues, sigs[i]), real_texts[i][:60]
    other = mh.signatures(real_texts[:5], num_perm=64, seed=7)
    m = datasketch.MinHash(num_perm=64, seed=7, hashfunc=mh.shingle_hash)
    m.update_batch(mh.shingles(real_texts[3]))
    assert np.array_equal(m.hashvalues, other[3])


def test_signatures_do_not_depend_on_the_batch(real_texts):
    whole = mh.signatures(real_texts)
    parts = np.vstack([mh.signatures(real_texts[i:i + 7]) for i in range(0, len(real_texts), 7)])
    assert np.array_equal(whole, parts)
    assert np.array_equal(mh.signatures([]), np.zeros((0, 128), np.uint32))


def test_empty_documents_have_the_empty_signature_and_one_word_documents_a_real_one():
    sigs = mh.signatures(["", "  \n", "word", "WORD", "other"])
    assert (sigs[0] == 0xFFFFFFFF).all() and (sigs[1] == 0xFFFFFFFF).all()
    assert np.array_equal(sigs[2], sigs[3]) and mh.estimate_jaccard(sigs[2], sigs[4]) < 0.1


def test_minhash_estimates_track_exact_jaccard(real_texts):
    """Mean absolute error over real pairs (edited copies at known similarity) stays small."""
    rng = np.random.default_rng(3)
    base = [t for t in real_texts if len(mh.shingles(t)) > 200][:40]
    variants = []
    for t in base:
        words = t.split()
        keep = rng.random(len(words)) > rng.uniform(0.002, 0.08)
        variants.append(" ".join(w for w, k in zip(words, keep, strict=True) if k))
    est = mh.estimate_jaccard(mh.signatures(base), mh.signatures(variants))
    exact = np.array([mh.jaccard(mh.shingle_set(a), mh.shingle_set(b)) for a, b in zip(base, variants, strict=True)])
    assert exact.min() < 0.6 < 0.9 < exact.max()
    assert np.abs(est - exact).mean() < 0.04


def test_lsh_parameters_are_derived_for_recall():
    bands, rows = mh.lsh_params(0.8, 128, 0.99)
    assert bands * rows <= 128 and mh.catch_probability(0.8, bands, rows) >= 0.99
    # the next number of rows would miss the recall target
    assert mh.catch_probability(0.8, 128 // (rows + 1), rows + 1) < 0.99
    assert mh.catch_probability(0.5, bands, rows) < 0.5
    with pytest.raises(ValueError, match="cannot catch"):
        mh.lsh_params(0.8, 4, 0.9999)
    sigs = mh.signatures(["alpha beta gamma delta epsilon zeta", "alpha beta gamma delta epsilon zeta"])
    b = mh.band_hashes(sigs, bands, rows)
    assert b.shape == (2, bands) and b.dtype == np.int64 and np.array_equal(b[0], b[1])
