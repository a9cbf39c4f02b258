"""The quality metrics: every Gopher (quality and repetition), C4 and FineWeb number as DataTrove 0.10.1 defines
it, as raw values per document (the thresholds are rules in rules/default.toml, so the policy decides).

Every metric reads the same words (`words.Words`: spaCy's blank English tokenizer, as DataTrove uses for English);
n-gram statistics are integer work in numpy over the words' hashes (`curate.util.rolling`). A batch is measured
at once: one tokenisation, the word and n-gram statistics over all its words (per-document numpy calls cost more
than their work on short documents), one Python pass per document over its lines; `tests/test_quality.py` pins
the outputs (digests recorded before the batch-wide rewrite) and checks that a batch gives each document what it
gets alone.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import numpy as np

from curate.stages.quality.datatrove import (
    C4_CITATION,
    C4_END_PUNCTUATION,
    C4_POLICY,
    DUP_NGRAMS,
    STOP_WORDS,
    TERMINAL_PUNCTUATION,
    TOP_NGRAMS,
)
from curate.stages.quality.words import CHAR_BASE, Batch, Words, count_sentences
from curate.util.rolling import powers, prefix_sums

WORD_BASE = 0x9E3779B97F4A7C15  # odd base of the n-gram hashes of word sequences (curate.util.rolling)

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


def _find_duplicates(items: list[str]) -> tuple[int, int]:
    """(repeated items, characters in repeated items): every occurrence after the first counts."""
    if len(set(items)) == len(items):  # most documents repeat no line: one C-level pass
        return 0, 0
    seen: set[str] = set()
    n = chars = 0
    for x in items:
        if x in seen:
            n += 1
            chars += len(x)
        else:
            seen.add(x)
    return n, chars


@dataclass(frozen=True)
class Settings:
    """What the line-level metrics mean (DataTrove's filter arguments). The stage takes them from its settings
    (`Quality.Config`, the rules file's [stages.quality]): changing one recomputes the stage."""

    c4_min_words_per_line: int = 3  # C4: a line with fewer words is left out
    c4_max_word_length: int = 1000  # C4: a line with a longer word is left out (-1: no limit)
    c4_remove_citations: bool = True  # C4: remove Wikipedia-style citations ([1], [edit]) from lines first
    fineweb_short_line_length: int = 30  # FineWeb: a line of at most this many characters is short


# A column: its values and, where some are NULL, a mask of the valid ones (pyarrow's mask is its negation).
Column = tuple[np.ndarray, np.ndarray | None]


def metrics(texts: Sequence[str], settings: Settings = Settings(), words: Words | None = None
            ) -> dict[str, list[Any]]:
    """Every metric of METRICS for each text, as columns of Python values (None for NULL)."""
    out = {}
    for k, (values, valid) in columns(texts, settings, words).items():
        v = values.tolist()
        out[k] = v if valid is None else [x if ok else None for x, ok in zip(v, valid.tolist(), strict=True)]
    return out


def columns(texts: Sequence[str], settings: Settings = Settings(), words: Words | None = None
            ) -> dict[str, Column]:
    """Every metric of METRICS for each text, computed for the whole batch at once: one tokenisation, the word
    and n-gram statistics as numpy work over all the batch's words (per-document numpy calls cost more than
    their work on short documents), and one Python pass over each document's lines."""
    words = words or Words()
    b = words.tokenize_batch(texts)
    cols = {**_word_metrics(b, len(texts)), **_line_metrics(texts, b, words, settings)}
    size = np.fromiter(map(len, texts), np.int64, len(texts))
    tokens = cols["gopher_tokens"][0]
    for n in TOP_NGRAMS:  # n-grams joined with spaces; none when the document is shorter than n words
        cols[f"rep_top_{n}gram"] = _divide(cols[f"rep_top_{n}gram"][0], size, (size > 0) & (tokens >= n))
    for n in DUP_NGRAMS:  # joined without spaces; 0 when the document is shorter than n words
        cols[f"rep_dup_{n}gram"] = _divide(cols[f"rep_dup_{n}gram"][0], size, size > 0)
    return {k: cols[k] for k in METRICS}


def _divide(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None = None) -> Column:
    """a / b as float64 (what Python's a / b gives for integers below 2**53), NULL where b is 0 or not valid."""
    ok = b != 0 if valid is None else valid & (b != 0)
    out = np.zeros(len(a), np.float64)
    np.divide(a, b, out=out, where=ok)
    return out, ok


def _word_metrics(b: Batch, n_docs: int) -> dict[str, Column]:
    """Gopher quality's word statistics and the n-gram counts (characters, not yet divided) per document."""
    w = ~b.space
    keys, lens, symbol, d = b.orth[w], b.length[w], b.symbol[w], b.doc[w]
    tokens = np.bincount(d, minlength=n_docs)
    n_words = np.bincount(d[~symbol], minlength=n_docs)
    letters = np.bincount(d[~symbol], weights=lens[~symbol], minlength=n_docs)  # integers, exact in float64
    stop = b.stop[w]
    pairs = np.sort(d[stop >= 0] * len(STOP_WORDS) + stop[stop >= 0])  # (document, stop word)
    distinct = pairs[np.append(True, pairs[1:] != pairs[:-1])] if len(pairs) else pairs
    m: dict[str, Column] = {
        "gopher_words": (n_words, None),
        "gopher_tokens": (tokens, None),
        "gopher_mean_word_length": _divide(letters, n_words),
        "gopher_alpha_words": _divide(np.bincount(d[b.alpha[w]], minlength=n_docs), tokens),
        "gopher_stop_words": (np.bincount(distinct // len(STOP_WORDS), minlength=n_docs), None),
    }
    start = np.cumsum(tokens) - tokens  # each document's first word
    pos = np.arange(len(keys)) - start[d]  # position of each word in its document
    offset = np.cumsum(lens) - lens
    offset -= offset[start[d]]  # each word's character offset in its document's words joined
    cum = np.zeros(len(lens) + 1, np.int64)
    np.cumsum(lens, out=cum[1:])
    # Window i is words i .. i+n-1 of the batch; it counts where they are all in one document. Hashes place
    # the words at their position in their document (curate.util.rolling), so a window inside one document
    # hashes as it would in that document alone: the batch gives the per-document values.
    grams = _Windows(d, pos, tokens, start, cum)
    word_prefix = prefix_sums(keys, WORD_BASE, pos)
    char_prefix = prefix_sums(b.chars[w], CHAR_BASE, offset)
    if len(keys):
        word_inverse = powers(WORD_BASE, int(pos.max()) + 1)[1][pos]
        char_inverse = powers(CHAR_BASE, int(offset.max()) + 1)[1][offset]
    for n in TOP_NGRAMS:  # n-grams as sequences of words
        h = (word_prefix[n:] - word_prefix[:-n]) * word_inverse[: len(keys) - n + 1] if len(keys) >= n else NO_HASHES
        m[f"rep_top_{n}gram"] = (grams.top_chars(h, n), None)
    for n in DUP_NGRAMS:  # n-grams as their words joined without a separator
        h = (char_prefix[n:] - char_prefix[:-n]) * char_inverse[: len(keys) - n + 1] if len(keys) >= n else NO_HASHES
        m[f"rep_dup_{n}gram"] = (grams.dup_chars(h, n), None)
    return m


NO_HASHES = np.zeros(0, np.uint64)
# Odd, so multiplying by it is a bijection modulo 2**64 (equal hashes stay equal): it carries differences in
# a hash's low bits to the high bits a key keeps (word hashes of spaCy's symbols are small numbers).
MIX = np.uint64(0x9E3779B97F4A7C15)
INDEX_BITS = 24  # _Windows.repeats packs a window's index into the low bits of its key
LOW = np.uint64((1 << INDEX_BITS) - 1)


class _Windows:
    """The n-gram windows of a batch's words (window i: words i .. i+n-1): which repeat within their document,
    and the characters they cover, per document."""

    def __init__(self, d: np.ndarray, pos: np.ndarray, tokens: np.ndarray, start: np.ndarray, cum: np.ndarray):
        self.d, self.pos, self.tokens, self.start, self.cum = d, pos, tokens, start, cum
        self.tag = d.astype(np.uint64) << np.uint64(40)  # the document, xored into a key's high bits

    def chars(self, i: np.ndarray, n: int) -> np.ndarray:
        """Characters of the words of windows i (without separators)."""
        return self.cum[i + n] - self.cum[i]

    def repeats(self, h: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The windows inside one document whose hash h occurs again in that document, grouped: (members,
        starts), group g being members[starts[g]:starts[g + 1]] (one document, one hash), in window order.

        One np.sort of uint64 finds the candidates (a vectorised sort, 4x faster than argsort): each window's
        hash, mixed (MIX) and xored with its document, truncated to 40 bits, with its index packed below.
        Equal keys are only candidates; the groups are then checked on the full hash and document (and sorted
        exactly in the unlikely case that truncation merged two)."""
        k = len(h)
        d = self.d[:k]
        key = None
        if k < 1 << INDEX_BITS:
            packed = np.sort(((h * MIX ^ self.tag[:k]) & ~LOW) | np.arange(k, dtype=np.uint64))
            key = packed >> np.uint64(INDEX_BITS)
            same = key[1:] == key[:-1]
            cand = np.zeros(k, bool)  # sorted places whose key equals a neighbour's
            cand[1:] |= same
            cand[:-1] |= same
            order = (packed[cand] & LOW).astype(np.int64)
            key = key[cand]
        else:  # too many windows to pack: all of them, sorted exactly below
            order = np.arange(k)
        inside = self.pos[order] + n <= self.tokens[d[order]]  # windows across two documents do not count
        order = order[inside]
        hs, ds = h[order], d[order]
        if key is None or ((key[inside][1:] == key[inside][:-1]) & ((hs[1:] != hs[:-1]) | (ds[1:] != ds[:-1]))).any():
            exact = np.lexsort((order, hs, ds))  # by document, hash, window
            order, hs, ds = order[exact], hs[exact], ds[exact]
        new = np.ones(len(order), bool)
        new[1:] = (hs[1:] != hs[:-1]) | (ds[1:] != ds[:-1])
        starts = np.append(np.flatnonzero(new), len(order))
        size = np.diff(starts)
        if (size == 1).any():  # candidates that do not repeat after all
            keep = np.repeat(size > 1, size)
            order, new = order[keep], new[keep]
            starts = np.append(np.flatnonzero(new), len(order))
        return order, starts

    def top_chars(self, h: np.ndarray, n: int) -> np.ndarray:
        """Per document, characters covered by its most frequent n-gram, counted with the n-1 spaces between
        its words: those of its first occurrence times its count; the first n-gram seen among ties (as
        Counter.most_common), so the document's first n-gram when none repeats; 0 for fewer than n words."""
        tokens = self.tokens
        out = np.zeros(len(tokens), np.int64)
        has = tokens >= n
        out[has] = self.chars(self.start[has], n) + (n - 1)
        members, starts = self.repeats(h, n)
        if len(members):
            size = np.diff(starts)
            head = members[starts[:-1]]  # each repeated n-gram's first occurrence
            doc = self.d[head]
            top = np.zeros(len(tokens), np.int64)
            np.maximum.at(top, doc, size)
            best = size == top[doc]
            pick = np.full(len(tokens), len(h), np.int64)
            np.minimum.at(pick, doc[best], head[best])
            rep = top > 1
            out[rep] = (self.chars(pick[rep], n) + (n - 1)) * top[rep]
        return out

    def dup_chars(self, h: np.ndarray, n: int) -> np.ndarray:
        """Per document, characters in n-grams seen before, scanning left to right and jumping past each repeat
        (Gopher's rule). A window is a repeat when an earlier occurrence of its n-gram was visited, i.e. not
        jumped over; only windows with an earlier occurrence can be one, so the Python loop visits those
        alone, and usually looks at one earlier occurrence each."""
        out = np.zeros(len(self.tokens), np.int64)
        members, starts = self.repeats(h, n)
        if not len(members):
            return out
        size = np.diff(starts)
        first = np.repeat(starts[:-1], size)
        earlier = np.arange(len(members)) - first  # occurrences of the same n-gram before each member
        at = np.zeros(len(h), np.int64)  # for each member window: where its group starts in members
        at[members] = first
        rank = np.zeros(len(h), np.int64)  # and how many members come before it
        rank[members] = earlier
        g = np.sort(members[earlier > 0])  # windows with an earlier occurrence, in window order
        occurrences = members.tolist()
        jumped = bytearray(len(h))  # windows the scan jumps over
        jump = b"\x01" * n
        skip_until = 0
        totals: dict[int, int] = {}
        # the earlier occurrences of window w are occurrences[lo:hi]
        for w, lo, hi, dw, c in zip(g.tolist(), at[g].tolist(), (at[g] + rank[g]).tolist(), self.d[g].tolist(),
                                    self.chars(g, n).tolist(), strict=True):
            if w < skip_until:
                continue
            for q in occurrences[lo:hi]:
                if not jumped[q]:  # an earlier occurrence was visited: a repeat
                    break
            else:
                continue
            totals[dw] = totals.get(dw, 0) + c
            jumped[w + 1: w + n] = jump[: n - 1]  # never past the document's words: w + n <= its end
            skip_until = w + n
        if totals:
            out[list(totals)] = list(totals.values())
        return out


# Line breaks of str.splitlines() other than '\n': a text without them has the lines of text.split("\n").
_OTHER_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
_BULLET_LINE = re.compile(r"^[^\S\n]*[\u2022-]", re.M)  # Gopher: a line starting with a bullet, after spaces
_ELLIPSIS_LINE = re.compile(r"(?:\.\.\.|\u2026)[^\S\n]*$", re.M)  # Gopher: a line ending in an ellipsis
_TERMINAL = frozenset(TERMINAL_PUNCTUATION)  # single characters (a regex class of them is 10x slower)
# C4: a line that may survive its punctuation rule: it ends in C4's punctuation, after spaces, or it holds a
# '[' (removing a citation may leave such an end)
_C4_CANDIDATE = re.compile(r"^[^\n]*(?:\[[^\n]*|[.?!\"'][^\S\n]*)$", re.M)
LINE_COUNTS = ("hash", "ellipsis", "newlines", "lines", "bullet", "ellipsis_lines", "paras", "dup_paras",
               "dup_para_chars", "rlines", "dup_lines", "dup_line_chars", "flines", "fpunct", "fshort", "fdup_chars",
               "c4_no_punct", "c4_javascript", "c4_policy", "c4_kept", "c4_lorem", "c4_curly")


def _paragraphs(text: str) -> list[str]:
    """PARAGRAPH_BREAK.split(text.strip()) (Gopher's paragraphs), 3x faster: the text has no newline at either
    end, so str.split("\\n\\n") cuts where the expression does, leaving an empty piece inside a run of four
    newlines or more and one newline at the start of a piece after an odd run."""
    stripped = text.strip()
    if not stripped:
        return [stripped]
    return [p[1:] if p[0] == "\n" else p for p in stripped.split("\n\n") if p]


def _line_runs(text: str, split: list[str]) -> list[str]:
    """LINE_BREAKS.split(text) (Gopher's lines) from text.split("\\n"), 1.5x faster: the pieces that are not
    empty, and an empty line first and last where the text starts or ends with a newline."""
    if not text:
        return [""]
    out = list(filter(None, split))
    if text[0] == "\n":
        out.insert(0, "")
    if text[-1] == "\n":
        out.append("")
    return out


def _line_metrics(texts: Sequence[str], b: Batch, words: Words, s: Settings) -> dict[str, Column]:
    """The metrics read from lines and paragraphs (one Python pass over each document's lines, its counts
    kept as plain ints) and C4's sentences (numpy over the whole batch's kept lines)."""
    rows: list[tuple[int, ...]] = []
    span_doc: list[int] = []  # C4's kept lines, unchanged: document, start and end offsets
    span_start: list[int] = []
    span_end: list[int] = []
    edited_doc: list[int] = []  # kept lines that lost a citation, tokenised again
    edited: list[str] = []
    short = s.fineweb_short_line_length
    max_word = s.c4_max_word_length
    min_words = s.c4_min_words_per_line
    citations = s.c4_remove_citations
    for i, text in enumerate(texts):
        split = text.split("\n")
        flines = list(filter(str.strip, split))  # FineWeb's lines: not blank
        if not _OTHER_BREAKS.search(text) and (max_word == -1 or max(map(len, split)) <= max_word):
            # Lines end at '\n' only and none can hold a word too long for C4: the per-line counts are
            # regular expressions over the text, and C4's cascade looks only at the lines that can end in its
            # punctuation (the others are all dropped for that). 2x faster than a loop over every line.
            n_lines = len(split) - (split[-1] == "")  # str.splitlines() makes no line after a final '\n'
            bullet = len(_BULLET_LINE.findall(text))
            ellipsis_lines = len(_ELLIPSIS_LINE.findall(text))
            candidates = [(m.start(), m.group()) for m in _C4_CANDIDATE.finditer(text)]
            no_punct = n_lines - len(candidates)
        else:
            lines = text.splitlines()
            n_lines = len(lines)
            bullet = sum(x.lstrip().startswith(("\u2022", "-")) for x in lines)
            ellipsis_lines = sum(x.rstrip().endswith(("...", "\u2026")) for x in lines)
            ends = list(accumulate(map(len, text.splitlines(keepends=True))))
            candidates = list(zip([0, *ends[:-1]], lines, strict=True))
            no_punct = 0
        # C4's line cascade: long-word, terminal-punctuation and short lines go first; then lorem ipsum and
        # '{' (which drop the page), javascript and policy lines; sentences are counted in the lines kept.
        javascript = policy = kept = 0
        lorem = curly = False
        for at, line in candidates:
            stripped = line.strip()
            if max_word != -1 and len(stripped) > max_word and any(len(x) > max_word for x in stripped.split()):
                continue
            clean = C4_CITATION.sub("", stripped) if citations and "[" in stripped else stripped
            if not clean.endswith(C4_END_PUNCTUATION) or clean.endswith("..."):
                no_punct += 1
                continue
            if len(stripped.split()) < min_words:
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
            kept += 1
            if clean == stripped:
                start = at + len(line) - len(line.lstrip())
                span_doc.append(i)
                span_start.append(start)
                span_end.append(start + len(stripped))
            else:
                edited_doc.append(i)
                edited.append(clean)
        paragraphs = _paragraphs(text)
        rlines = _line_runs(text, split)
        rows.append((
            text.count("#"), text.count("...") + text.count("\u2026"), len(split) - 1, n_lines, bullet,
            ellipsis_lines, len(paragraphs), *_find_duplicates(paragraphs), len(rlines), *_find_duplicates(rlines),
            len(flines), sum(map(_TERMINAL.__contains__, [x[-1] for x in flines])),
            sum(map(short.__ge__, map(len, flines))), _find_duplicates(flines)[1],
            no_punct, javascript, policy, kept, lorem, curly))
    q = dict(zip(LINE_COUNTS, np.array(rows, np.int64).reshape(-1, len(LINE_COUNTS)).T, strict=True))
    size = np.fromiter(map(len, texts), np.int64, len(texts))
    tokens = np.bincount(b.doc[~b.space], minlength=len(texts))
    has_text = size > 0
    return {
        "gopher_hash_ratio": _divide(q["hash"], tokens),
        "gopher_ellipsis_ratio": _divide(q["ellipsis"], tokens),
        "gopher_bullet_lines": _divide(q["bullet"], q["lines"]),
        "gopher_ellipsis_lines": _divide(q["ellipsis_lines"], q["lines"]),
        "rep_dup_line_frac": _divide(q["dup_lines"], q["rlines"], has_text),
        "rep_dup_line_char_frac": _divide(q["dup_line_chars"], size),
        "rep_dup_para_frac": _divide(q["dup_paras"], q["paras"], has_text),
        "rep_dup_para_char_frac": _divide(q["dup_para_chars"], size),
        "c4_lines": (q["lines"], None),
        "c4_no_terminal_punct_lines": (q["c4_no_punct"], None),
        "c4_javascript_lines": (q["c4_javascript"], None),
        "c4_policy_lines": (q["c4_policy"], None),
        "c4_kept_lines": (q["c4_kept"], None),
        "c4_sentences": (_c4_sentences(b, texts, words, span_doc, span_start, span_end, edited_doc, edited), None),
        "c4_lorem_ipsum": (q["c4_lorem"].astype(bool), None),
        "c4_curly_bracket": (q["c4_curly"].astype(bool), None),
        "fineweb_line_punct_ratio": (_divide(q["fpunct"], q["flines"])[0], None),  # 0 without lines
        "fineweb_short_line_ratio": _divide(q["fshort"], q["flines"]),
        "fineweb_dup_line_char_ratio": _divide(q["fdup_chars"], size - q["newlines"]),
        "fineweb_list_ratio": _divide(q["newlines"], tokens),
    }


def _c4_sentences(b: Batch, texts: Sequence[str], words: Words, span_doc: list[int], span_start: list[int],
                  span_end: list[int], edited_doc: list[int], edited: list[str]) -> np.ndarray:
    """Sentences in C4's kept lines per document, by the sentencizer rule over the batch's tokens: a line kept
    as it is reads the document's own tokens inside it; an edited line (a citation removed) is tokenised
    again, all of them in one batch."""
    n_docs = len(texts)
    out = np.zeros(n_docs, np.int64)
    if edited:
        e = words.tokenize_batch(edited)
        per_line = count_sentences(e, e.doc, np.ones(len(e.doc), bool), len(edited))
        np.add.at(out, np.array(edited_doc, np.int64), per_line)
    if span_doc:
        size = np.fromiter(map(len, texts), np.int64, n_docs)
        base = np.cumsum(size) - size  # each document's offset in the batch's texts one after the other
        sd = np.array(span_doc, np.int64)
        starts = base[sd] + np.array(span_start, np.int64)
        ends = base[sd] + np.array(span_end, np.int64)
        at = base[b.doc] + b.idx
        line_of = np.searchsorted(starts, at, side="right") - 1
        li = np.maximum(line_of, 0)
        inside = (line_of >= 0) & (at >= starts[li]) & (at + b.length <= ends[li])
        np.add.at(out, sd, count_sentences(b, li, inside, len(sd)))
    return out
