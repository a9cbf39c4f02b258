"""Tokenisation for the quality metrics: spaCy's blank English tokenizer (what DataTrove uses for English, no
download needed), cached per whitespace-delimited span, with the per-string features the metrics read.

One tokenisation per batch of documents feeds every word metric; word identities are spaCy's 64-bit string
hashes, so n-gram statistics are integer work in numpy.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from itertools import chain

import numpy as np

from curate.stages.quality.datatrove import PUNCTUATION, STOP_WORDS
from curate.util.rolling import string_hash

# A text is cut into items that cover it exactly: a run of non-space characters with the one ' ' after it, if
# any (a single ' ' after a word only marks that word in spaCy, it makes no token), or a run of whitespace
# (str.isspace). findall hands the items over as strings, so no per-item Python runs: the items' offsets
# are their lengths' running sum (on 10,000 short documents this is 6x faster than a finditer loop).
_ITEMS = re.compile(r"\S+ ?|\s+")
MAX_VOCAB = 500_000  # strings the tokenizer may cache before it is rebuilt
# Base of the polynomial hash of a string's characters (curate.util.rolling): sum(ord(c) * CHAR_BASE^i) mod 2^64,
# so that the hash of words joined without a separator follows from the words' hashes (metrics.concat_hashes).
CHAR_BASE = 0x100000001B3
_SYMBOL_CHARS = "".join(sorted(PUNCTUATION))
# Columns of the token table (uint64): spaCy's ORTH, IDX (within the span, then the document), LENGTH, IS_PUNCT,
# then the features of the string: whitespace only, symbol only, has a letter, stop-word index + 1 (0: none),
# a sentencizer stop, the polynomial hash of its characters.
ORTH, IDX, LENGTH, PUNCT, SPACE, SYMBOL, ALPHA, STOP, SENT, CHARS = range(10)


def _tokenizer():  # type: ignore[no-untyped-def]
    """spaCy's blank English tokenizer, built as spacy.blank("en") builds it (its registered
    "spacy.Tokenizer.v1" on the English defaults and vocabulary), without the Language object: creating one
    imports every package that registers spaCy factories (presidio_analyzer among them), 1.4 s of each
    worker's start-up against 0.2 s for this."""
    from types import SimpleNamespace

    from spacy.attrs import IS_PUNCT
    from spacy.lang.en import English
    from spacy.language import create_tokenizer
    from spacy.vocab import create_vocab

    vocab = create_vocab("en", English.Defaults)
    # Tokens do not depend on lexeme attributes; computing only IS_PUNCT makes new strings ~25% cheaper.
    vocab.lex_attr_getters = {IS_PUNCT: vocab.lex_attr_getters[IS_PUNCT]}
    return create_tokenizer()(SimpleNamespace(Defaults=English.Defaults, vocab=vocab))


class Words:
    """spaCy's blank English tokenizer (what DataTrove uses for English) plus per-string features, cached."""

    def __init__(self) -> None:
        self._load()

    def _load(self) -> None:
        from spacy.attrs import IDX, IS_PUNCT, LENGTH, ORTH
        from spacy.pipeline.sentencizer import Sentencizer

        self.tokenizer = _tokenizer()
        self.sentence_punct = frozenset(Sentencizer.default_punct_chars)
        self.features: dict[int, tuple[int, ...]] = {}  # ORTH -> columns SPACE .. CHARS
        self.span_ids: dict[str, int] = {}  # item -> its tokens: rows span_first[k] ... + span_count[k] of table
        self.text_ids: dict[str, tuple[int, int]] = {}  # text tokenised -> (first row, rows) in table
        self.span_first, self.span_count = np.zeros(0, np.int64), np.zeros(0, np.int64)
        self.table = np.zeros((1024, 10), np.uint64)  # grown by doubling; rows in use: self.rows
        self.rows = 0
        self.attrs = [ORTH, IDX, LENGTH, IS_PUNCT]

    def _feature(self, s: str) -> tuple[int, ...]:
        """(is whitespace, is symbol-only, has a letter, stop-word index + 1 or 0, is a sentencizer stop,
        polynomial hash of the characters) for one distinct string."""
        return (not s.strip(), not s.strip(_SYMBOL_CHARS), s.isalpha() or any(c.isalpha() for c in s),
                STOP_WORDS.index(s) + 1 if s in STOP_WORDS else 0, s in self.sentence_punct,
                string_hash(s, CHAR_BASE))

    def _add_spans(self, spans: list[str]) -> None:
        """Tokenise new items (ids continuing span_ids). 'word ' and 'word' have the same tokens: an item
        whose text (without that ' ') was tokenised before gets the same rows of the table, the others go
        through spaCy, the non-space ones in one Doc, one per line. The line break is a token of its own, so
        no special case of spaCy's can match across two items."""
        # a word item's trailing ' ' makes no token: the tokens of 'word ' are those of 'word'
        texts = [sp[:-1] if sp[-1] == " " and not sp[0].isspace() else sp for sp in spans]
        fresh = [t for t in dict.fromkeys(texts) if t not in self.text_ids]
        # A word of ASCII letters that is no special case (like "dont" or "gonna") is one token for spaCy:
        # its prefix, suffix and infix patterns all need a character that is not a letter.
        rules = self.tokenizer.rules
        plain = [t for t in fresh if t.isascii() and t.isalpha() and t not in rules]
        words = [t for t in fresh if not t[0].isspace() and not (t.isascii() and t.isalpha() and t not in rules)]
        spaces = [t for t in fresh if t[0].isspace()]
        blocks = []
        if plain:
            lengths = np.fromiter(map(len, plain), np.uint64, len(plain))
            add = self.tokenizer.vocab.strings.add
            block = np.zeros((len(plain), 4), np.uint64)
            block[:, 0] = np.fromiter(map(add, plain), np.uint64, len(plain))
            block[:, 2] = lengths
            blocks.append(block)
        counts = [np.ones(len(plain), np.int64)]
        if words:
            lengths = np.fromiter(map(len, words), np.int64, len(words))
            pos = np.cumsum(lengths + 1) - lengths - 1
            arr = self._array("\n".join(words))
            k = np.searchsorted(pos, arr[:, 1].astype(np.int64), "right") - 1
            inside = arr[:, 1].astype(np.int64) < pos[k] + lengths[k]  # the line breaks out
            arr, k = arr[inside], k[inside]
            arr[:, 1] -= pos[k].astype(np.uint64)
            if (arr[:, 1] + arr[:, 2] > lengths[k].astype(np.uint64)).any():  # a token across spans: never seen
                per_word = [self._array(w) for w in words]
                arr = np.concatenate(per_word)
                counts.append(np.array([len(a) for a in per_word], np.int64))
            else:
                counts.append(np.bincount(k, minlength=len(words)))
            blocks.append(arr)
        if spaces:
            per_space = [self._array(t) for t in spaces]
            blocks += per_space
            counts.append(np.array([len(a) for a in per_space], np.int64))
        n = np.concatenate(counts)
        firsts = (self.rows + np.cumsum(n) - n).tolist()
        self.text_ids.update(zip(plain + words + spaces, zip(firsts, n.tolist(), strict=True), strict=True))
        where = np.array(list(map(self.text_ids.__getitem__, texts)), np.int64).reshape(-1, 2)
        self.span_ids.update(zip(spans, range(len(self.span_ids), len(self.span_ids) + len(spans)), strict=True))
        self.span_first = np.concatenate([self.span_first, where[:, 0]])
        self.span_count = np.concatenate([self.span_count, where[:, 1]])
        if not blocks:
            return
        new = np.concatenate(blocks)
        strings, feats = self.tokenizer.vocab.strings, self.features
        for o in np.unique(new[:, 0]).tolist():
            if o not in feats:
                feats[o] = self._feature(strings[o])
        rows = np.empty((len(new), 10), np.uint64)
        rows[:, :4] = new
        rows[:, 4:] = np.array(list(map(feats.__getitem__, new[:, 0].tolist())), np.uint64).reshape(-1, 6)
        while self.rows + len(rows) > len(self.table):
            self.table = np.concatenate([self.table, np.zeros_like(self.table)])
        self.table[self.rows: self.rows + len(rows)] = rows
        self.rows += len(rows)

    def _array(self, text: str) -> np.ndarray:
        doc = self.tokenizer(text)
        return doc.to_array(self.attrs).reshape(-1, 4) if len(doc) else np.zeros((0, 4), np.uint64)

    def tokenize_batch(self, texts: Sequence[str]) -> Batch:
        """What spaCy's tokenizer makes of each text, for a whole batch at once, from a cache of items (see
        _ITEMS). spaCy tokenises each run of non-space characters and each run of whitespace on its own (a
        single ' ' after a word only marks that word), so a text's tokens are its items' tokens, shifted.
        Real text repeats its items: a known one costs a dict lookup, and the new ones of a batch go through
        spaCy together. The one difference: spaCy can also apply a special case across a space, so after an
        item ending in an apostrophe, "'d" stays one token here where spaCy splits it (none of the 2,240
        sample documents has such a place)."""
        if len(self.tokenizer.vocab) > MAX_VOCAB or len(self.span_ids) > MAX_VOCAB:  # caches grow with new strings
            self._load()
        per_text = [_ITEMS.findall(t) for t in texts]
        items = list(chain.from_iterable(per_text))
        # the items' ids, NaN (from None) for the new ones, which are then added and looked up alone
        found = np.array(list(map(self.span_ids.get, items)), np.float64)
        missing = np.flatnonzero(np.isnan(found)).tolist()
        if missing:
            new = [items[i] for i in missing]
            self._add_spans(list(dict.fromkeys(new)))
            found[missing] = list(map(self.span_ids.__getitem__, new))
        ids_a = found.astype(np.int64)
        item_len = np.fromiter(map(len, items), np.int64, len(items))
        item_doc = np.repeat(np.arange(len(texts)), np.fromiter(map(len, per_text), np.int64, len(texts)))
        text_len = np.fromiter(map(len, texts), np.int64, len(texts))
        # each item's offset in its text: items cover their text exactly, so a running sum of their lengths
        item_start = np.cumsum(item_len) - item_len - (np.cumsum(text_len) - text_len)[item_doc]
        counts = self.span_count[ids_a]
        ends = np.cumsum(counts)
        rows = np.arange(ends[-1] if len(ends) else 0) + np.repeat(self.span_first[ids_a] - (ends - counts), counts)
        tab = self.table[rows]
        doc = np.repeat(item_doc, counts)
        bounds = np.zeros(len(texts) + 1, np.int64)
        np.cumsum(np.bincount(doc, minlength=len(texts)), out=bounds[1:])
        return Batch(tab[:, ORTH], tab[:, IDX].astype(np.int64) + np.repeat(item_start, counts),
                     tab[:, LENGTH].astype(np.int64), tab[:, PUNCT].astype(bool), tab[:, SPACE].astype(bool),
                     tab[:, SYMBOL].astype(bool), tab[:, ALPHA].astype(bool), tab[:, STOP].astype(np.int64) - 1,
                     tab[:, SENT].astype(bool), tab[:, CHARS], doc, bounds)

    def tokenize(self, texts: Sequence[str]) -> list[Tokens]:
        """`tokenize_batch`, one Tokens per text."""
        return self.tokenize_batch(texts).split()


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


@dataclass
class Batch(Tokens):
    """The tokens of a batch of documents, one after the other (idx is still the offset in its document)."""

    doc: np.ndarray  # the document of each token (0, 1, ... in order)
    bounds: np.ndarray  # document i's tokens are bounds[i]:bounds[i + 1]

    def split(self) -> list[Tokens]:
        cols = [getattr(self, f.name) for f in fields(Tokens)]
        b = self.bounds.tolist()
        return [Tokens(*(c[b[i]:b[i + 1]] for c in cols)) for i in range(len(b) - 1)]


def count_sentences(t: Tokens, line_of: np.ndarray, keep: np.ndarray, n_lines: int) -> np.ndarray:
    """Sentences per line by spaCy's Sentencizer rule: a token that is neither punctuation nor a sentence
    stop starts a sentence when a stop ('.', '!', '?', ...) occurred since the previous such token. The
    lines' tokens may come from many documents; line_of must not decrease along the kept tokens."""
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
