"""Tokenisation for the quality metrics: spaCy's blank English tokenizer (what DataTrove uses for English, no
download needed), cached per whitespace-delimited span, with the per-string features the metrics read.

One tokenisation per document feeds every word metric; word identities are spaCy's 64-bit string hashes, so
n-gram statistics are integer work in numpy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from curate.stages.quality.datatrove import PUNCTUATION, STOP_WORDS
from curate.util.rolling import string_hash

_RUNS = re.compile(r"\s+|\S+")  # runs of whitespace (str.isspace) and of everything else
MAX_VOCAB = 500_000  # strings the tokenizer may cache before it is rebuilt
# Base of the polynomial hash of a string's characters (curate.util.rolling): sum(ord(c) * CHAR_BASE^i) mod 2^64,
# so that the hash of words joined without a separator follows from the words' hashes (metrics.concat_hashes).
CHAR_BASE = 0x100000001B3


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
        h = string_hash(s, CHAR_BASE)
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
        return count_sentences(t, np.zeros(len(t.orth), np.int64), np.ones(len(t.orth), bool), 1)[0]


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


def count_sentences(t: Tokens, line_of: np.ndarray, keep: np.ndarray, n_lines: int) -> np.ndarray:
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
