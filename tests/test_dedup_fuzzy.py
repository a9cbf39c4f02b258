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


# -- the stage ----------------------------------------------------------------------------------------
def edited(text: str, target: float, seed: int) -> str:
    """A copy of `text` with random words replaced until its exact 5-gram Jaccard is about `target`."""
    rng = np.random.default_rng(seed)
    words = text.split()
    base = mh.shingle_set(text)
    for p in np.linspace(0.002, 0.3, 300):
        out = [f"edit{rng.integers(10**6)}" if rng.random() < p else w for w in words]
        j = mh.jaccard(base, mh.shingle_set(" ".join(out)))
        if abs(j - target) < 0.03:
            return " ".join(out)
    raise AssertionError(f"no edit reaches Jaccard {target}")


@pytest.fixture(scope="module")
def corpus(real_texts) -> dict[str, str]:
    """Real documents: originals, an exact copy, edited copies at Jaccard ~0.9 and ~0.5, unrelated ones."""
    long = [t for t in real_texts if 400 < len(mh.shingles(t)) < 3000]
    docs = {f"orig-{i}": t for i, t in enumerate(long[:12])}
    docs["copy-0"] = long[0]
    docs["near90-1"] = edited(long[1], 0.9, 1)
    docs["near90-2"] = edited(long[2], 0.9, 2)
    docs["near90-2b"] = edited(long[2], 0.9, 3)
    docs["half-3"] = edited(long[3], 0.5, 4)
    docs["half-4"] = edited(long[4], 0.5, 5)
    return docs


def ingest(ws, tmp_path, name: str, docs: dict[str, str]) -> None:
    from conftest import write_jsonl

    rows = [{"id": k, "text": v, "url": f"https://example.org/{k}"} for k, v in docs.items()]
    ws.ingest([str(write_jsonl(tmp_path / f"{name}.jsonl", rows))])


def clusters(ws) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for doc_id, cluster in ws.sql("SELECT doc_id, cluster_id FROM dedup_fuzzy").iter_rows():
        out.setdefault(cluster, set()).add(doc_id)
    return out


def test_copies_and_edits_cluster_by_the_threshold(ws, tmp_path, corpus):
    ingest(ws, tmp_path, "a", corpus)
    ws.run()
    found = sorted(map(sorted, clusters(ws).values()))
    assert found == [["copy-0", "orig-0"], ["near90-1", "orig-1"], ["near90-2", "near90-2b", "orig-2"]]
    keepers = ws.sql("SELECT cluster_id, count(*) FILTER (is_keeper) AS k, any_value(keeper) AS keeper "
                     "FROM dedup_fuzzy GROUP BY 1 ORDER BY 1").rows()
    assert keepers == [("orig-0", 1, "orig-0"), ("orig-1", 1, "orig-1"), ("orig-2", 1, "orig-2")]
    decided = {d: (a, r) for d, a, r in ws.sql("SELECT doc_id, action, rule_ids FROM decisions").iter_rows()}
    assert decided["near90-1"][0] == "drop" and "near-duplicate" in decided["near90-1"][1]
    assert decided["orig-1"][0] != "drop" and decided["half-3"][0] != "drop"  # (other stages may redact)
    pairs = ws.sql("SELECT doc_a, doc_b, jaccard FROM dedup_pairs WHERE doc_b = 'near90-1'").rows()
    assert len(pairs) == 1 and pairs[0][0] == "orig-1" and 0.85 < pairs[0][2] < 0.95
    info = ws.explain("near90-2b")["signals"]["dedup_fuzzy"][0]
    assert info["cluster_id"] == "orig-2" and info["keeper"] == "orig-2" and info["is_keeper"] is False
    assert info["joined_by"].startswith("near90-2b ~ orig-2: Jaccard 0.")


def test_incremental_equals_full_recompute(tmp_path, corpus):
    from curate import Workspace

    items = list(corpus.items())
    parts = [dict(items[:7]), dict(items[7:13]), dict(items[13:])]
    inc = Workspace.init(tmp_path / "inc")
    for i, part in enumerate(parts):
        ingest(inc, tmp_path, f"p{i}", part)
        report = next(r for r in inc.run().stages if r.name == "dedup_fuzzy")
        assert report.documents == len(part)  # only the new shard's signatures are computed
    full = Workspace.init(tmp_path / "full")
    for i, part in enumerate(parts):
        ingest(full, tmp_path, f"p{i}", part)
    full.run()
    for q in ("SELECT * FROM dedup_fuzzy ORDER BY doc_id", "SELECT * FROM dedup_pairs ORDER BY doc_a, doc_b",
              "SELECT doc_id, signature FROM dedup_signatures ORDER BY doc_id"):
        assert inc.sql(q).equals(full.sql(q))
    assert len(clusters(full)) == 3


def test_results_do_not_depend_on_runs_or_worker_count(sample_ws, tmp_path):
    from curate import Workspace

    one_worker = Workspace.init(tmp_path / "w1")
    one_worker.ingest([str(SAMPLES)])
    one_worker.run(stages=["dedup_exact", "dedup_fuzzy"], workers=1)
    one_worker.run(stages=["dedup_exact", "dedup_fuzzy"], workers=1)
    two = Workspace(sample_ws)
    # (keepers are compared elsewhere: the sample workspace also has licence and quality signals)
    for q in ("SELECT doc_id, cluster_id, cluster_size FROM dedup_fuzzy ORDER BY doc_id",
              "SELECT * FROM dedup_pairs ORDER BY doc_a, doc_b"):
        a, b = one_worker.sql(q), two.sql(q)
        assert a.height > 20 and a.equals(b)


@pytest.mark.slow
def test_empty_one_word_and_five_megabyte_documents(ws, tmp_path, real_texts):
    big = " ".join(t for t in real_texts * 40)[:5_000_000]
    docs = {"empty": "", "blank": "  \n\t", "also-empty": "...", "word": "Debian", "word-again": "debian!",
            "other-word": "Ubuntu", "big": big, "big-edited": big[:4_900_000] + " a new ending", "small": real_texts[0]}
    ingest(ws, tmp_path, "sizes", docs)
    ws.run()
    found = sorted(map(sorted, clusters(ws).values()))
    assert found == [["big", "big-edited"], ["word", "word-again"]]
    assert ws.sql("SELECT count(*) FROM dedup_bands JOIN documents USING (seq) "
                  "WHERE doc_id IN ('empty', 'blank', 'also-empty')").item() == 0
    assert ws.sql("SELECT shingles FROM dedup_signatures WHERE doc_id = 'big'").item() > 500_000


def test_keeper_prefers_permitted_licence_then_quality(ws, tmp_path, corpus):
    ingest(ws, tmp_path, "a", corpus)
    ws.run()
    cluster = "('orig-2', 'near90-2', 'near90-2b')"

    def plant(sql: str) -> None:  # the signals the quality and licenses stages write, set by hand
        with ws.connect(write=True) as con:
            con.execute(sql)
        ws.run()

    plant(f"UPDATE quality SET quality_score = 0.5 WHERE doc_id IN {cluster}")
    assert ws.sql("SELECT keeper FROM dedup_fuzzy WHERE doc_id = 'orig-2'").item() == "orig-2"
    plant("UPDATE quality SET quality_score = CASE doc_id WHEN 'orig-2' THEN 0.2 WHEN 'near90-2' THEN 0.9 "
          f"ELSE 0.5 END WHERE doc_id IN {cluster}")
    assert ws.sql("SELECT keeper FROM dedup_fuzzy WHERE doc_id = 'orig-2'").item() == "near90-2"
    plant(f"DELETE FROM license_signals WHERE doc_id IN {cluster}; "
          "INSERT INTO license_signals (doc_id, license, use_class, evidence, scope) VALUES "
          "('near90-2b', 'MIT', 'permissive', 'notice', 'self'), "
          "('near90-2', 'LicenseRef-x', 'restricted', 'notice', 'self'), "
          "('near90-2b', 'GPL-3.0-only', 'copyleft', 'reference', 'mention')")  # a mention: not its licence
    assert ws.sql("SELECT keeper FROM dedup_fuzzy WHERE doc_id = 'orig-2'").item() == "near90-2b"
    assert ws.sql("SELECT action FROM decisions WHERE doc_id = 'near90-2b'").item() != "drop"
    assert ws.sql("SELECT action FROM decisions WHERE doc_id = 'orig-2'").item() == "drop"
    rules = tmp_path / "first.toml"
    rules.write_text(open(ws_rules()).read().replace('keeper = ["license", "quality", "first_ingested"]',
                                                     'keeper = ["first_ingested"]'))
    report = next(r for r in ws.run(rules=rules).stages if r.name == "dedup_fuzzy")
    assert report.documents == 0  # the keeper ordering needs no new signatures
    assert ws.sql("SELECT keeper FROM dedup_fuzzy WHERE doc_id = 'orig-2'").item() == "orig-2"


def ws_rules():
    from curate.core.policy import default_rules_path

    return default_rules_path()


def test_threshold_change_reclusters_from_stored_signatures(ws, tmp_path, corpus):
    ingest(ws, tmp_path, "a", corpus)
    ws.run()
    strict = tmp_path / "strict.toml"
    text = open(ws_rules()).read()
    strict.write_text(text.replace("threshold = 0.8 ", "threshold = 0.97").replace("bands = 21", "bands = 6")
                      .replace("rows = 6", "rows = 20")
                      .replace("catch_probability = 0.9983", "catch_probability = 0.9910"))
    report = next(r for r in ws.run(rules=strict).stages if r.name == "dedup_fuzzy")
    assert report.documents == 0
    assert sorted(map(sorted, clusters(ws).values())) == [["copy-0", "orig-0"]]
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(text.replace("catch_probability = 0.9983", "catch_probability = 0.95"))
    with pytest.raises(ValueError, match="catch a pair at Jaccard 0.8 with 0.9983"):
        ws.run(rules=wrong)


def test_dedup_against_a_reference_workspace_leaves_it_untouched(tmp_path, corpus):
    import hashlib
    import subprocess

    from conftest import CURATE

    from curate import Workspace

    ref = Workspace.init(tmp_path / "release")
    ingest(ref, tmp_path, "old", {k: v for k, v in corpus.items() if k.startswith("orig")})
    ref.run()
    new = Workspace.init(tmp_path / "new")
    ingest(new, tmp_path, "new", {k: v for k, v in corpus.items() if not k.startswith("orig")})
    before = hashlib.sha256((ref.path / "curate.duckdb").read_bytes()).hexdigest()
    proc = subprocess.run([*CURATE, "dedup", str(new.path), "--against", str(ref.path), "--no-progress"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "4 documents near-copy a document there" in " ".join(proc.stdout.split())
    assert hashlib.sha256((ref.path / "curate.duckdb").read_bytes()).hexdigest() == before
    rows = new.sql("SELECT doc_id, reference_doc_id FROM dedup_against ORDER BY 1").rows()
    assert rows == [("copy-0", "orig-0"), ("near90-1", "orig-1"), ("near90-2", "orig-2"), ("near90-2b", "orig-2")]
    actions = dict(new.sql("SELECT doc_id, action FROM decisions").iter_rows())
    assert actions["near90-1"] == "drop" and actions["half-3"] == "keep"
    other = tmp_path / "char.toml"
    other.write_text(open(ws_rules()).read().replace('shingle = "word"', 'shingle = "char"'))
    proc = subprocess.run([*CURATE, "dedup", str(new.path), "--against", str(ref.path), "--rules", str(other),
                           "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "with other settings" in proc.stderr


def test_a_bucket_of_many_copies_gives_linear_candidates(ws, tmp_path, real_texts):
    """300 copies of one document: one cluster, one keeper, and far fewer than 300^2/2 verified edges."""
    text = real_texts[0]
    ingest(ws, tmp_path, "many", {f"copy-{i:03d}": text + ("" if i % 2 else " ") for i in range(300)})
    ws.run()
    assert ws.sql("SELECT count(DISTINCT cluster_id), count(*), count(*) FILTER (is_keeper) FROM dedup_fuzzy").row(0) \
        == (1, 300, 1)
    assert ws.sql("SELECT keeper FROM dedup_fuzzy LIMIT 1").item() == "copy-000"
    # the first 50 members pair with each other; each later one with the first and the previous member
    assert ws.sql("SELECT count(*) FROM dedup_pairs").item() == 50 * 49 // 2 + 2 * 250


# -- verification and candidate generation, piece by piece ---------------------------------------------
def test_exact_jaccard_of_shingle_sets_equals_the_set_definition(real_texts):
    """The batched exact Jaccard (one read and one shingling per document, however many pairs it is in)
    equals mh.jaccard of the scalar shingle sets, for pairs of related and unrelated real texts."""
    from curate.stages.dedup_fuzzy.stage import _set_jaccard, _Sets

    texts = real_texts[:60] + [edited(real_texts[i], 0.85, i) for i in range(0, 40, 4) if len(real_texts[i]) > 500]
    hashes, counts = mh.shingle_hashes(texts)
    keys = np.sort((np.repeat(np.arange(len(texts), dtype=np.uint64), counts) << np.uint64(32)) | hashes)
    keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    sets = _Sets(np.arange(len(texts)), keys,
                 np.searchsorted(keys, np.arange(len(texts) + 1, dtype=np.uint64) << np.uint64(32)))
    rng = np.random.default_rng(3)
    a = np.concatenate([np.arange(0, 40, 4)[:len(texts) - 60], rng.integers(0, len(texts), 200)])
    b = np.concatenate([np.arange(60, len(texts)), rng.integers(0, len(texts), 200)])
    got = _set_jaccard(sets, a, sets, b)
    want = [mh.jaccard({mh.shingle_hash(s) for s in mh.shingles(texts[x])},
                       {mh.shingle_hash(s) for s in mh.shingles(texts[y])}) for x, y in zip(a, b, strict=True)]
    assert np.array_equal(got, np.array(want))
    assert (got[:len(texts) - 60] > 0.7).all()  # the edited copies are near their originals


def test_candidate_partitions_together_are_all_candidates(ws, tmp_path, corpus):
    """candidate_pairs over P partitions of the band buckets: their union (DISTINCT) is the whole set, for
    every P, so a cluster engine can generate and verify each partition in its own task."""
    from curate.stages.dedup_fuzzy.stage import candidate_pairs

    docs = dict(corpus)
    docs.update({f"many-{i:02d}": corpus["orig-5"] + " extra" * (i % 3) for i in range(60)})  # a bucket past the cap
    ingest(ws, tmp_path, "a", docs)
    ws.run(stages=["dedup_fuzzy"])
    with ws.connect(write=True) as con:
        candidate_pairs(con, 0, 50)
        whole = sorted(con.execute("SELECT a, b FROM _cand").fetchall())
        assert len(whole) > 50 * 49 // 2
        for partitions in (2, 5):
            parts = set()
            for p in range(partitions):
                candidate_pairs(con, 0, 50, p, partitions, into=f"_cand_{p}")
                parts |= set(con.execute(f"SELECT a, b FROM _cand_{p}").fetchall())
            assert sorted(parts) == whole
        # only pairs with a new document: none past the last seq, all with one at or past the first
        last = con.execute("SELECT max(seq) FROM dedup_bands").fetchone()[0]
        candidate_pairs(con, last + 1, 50)
        assert con.execute("SELECT count(*) FROM _cand").fetchone()[0] == 0
        candidate_pairs(con, last - 10, 50)
        assert con.execute("SELECT count(*) FILTER (b < ?), count(*) FROM _cand", [last - 10]).fetchone()[0] == 0


def test_exact_content_hash_takes_the_ingest_hash_only_for_normalised_text():
    """dedup_exact's content hashes equal curate.util.text.content_hash, and the SHA-256 computed at ingest
    stands in for it only where normalisation leaves the text as it is."""
    import hashlib

    from curate.stages.dedup_exact.stage import content_hashes
    from curate.util.text import content_hash

    texts = ["already normalised text", "Not Normalised", "two  spaces", " lead", "trail ", "line\nbreak",
             "straße", "cafe\u0301", "", "x\u00a0y", "\x1cseparator"] + ODD
    ingest = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    assert content_hashes(texts, ingest) == content_hashes(texts) == [content_hash(t) for t in texts]
    marked = [f"ingest-{i}" for i in range(len(texts))]  # which ones are taken from the ingest hash
    got = content_hashes(texts, marked)
    assert {t for t, h in zip(texts, got, strict=True) if h.startswith("ingest-")} == \
        {"already normalised text", "", "one", "two words", "a_b c-d e.f g h i j"}
