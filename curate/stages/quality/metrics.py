"""The quality metrics: every Gopher (quality and repetition), C4 and FineWeb number as DataTrove 0.10.1 defines
it, as raw values per document (the thresholds are rules in rules/default.toml, so the policy decides).

Every metric reads the same words (`words.Words`: spaCy's blank English tokenizer, as DataTrove uses for English);
n-gram statistics are integer work in numpy over the words' hashes (`curate.util.rolling`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from curate.stages.quality.datatrove import (
    C4_CITATION,
    C4_END_PUNCTUATION,
    C4_POLICY,
    DUP_NGRAMS,
    LINE_BREAKS,
    PARAGRAPH_BREAK,
    TERMINAL_PUNCTUATION,
    TOP_NGRAMS,
)
from curate.stages.quality.words import CHAR_BASE, Tokens, Words, count_sentences
from curate.util.rolling import prefix_sums, window_hashes

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
    """Hash of each word n-gram (as a sequence of words) for every size: windows of the words' string hashes."""
    prefix = prefix_sums(keys, WORD_BASE)
    return {n: window_hashes(prefix, n, WORD_BASE) for n in sizes}


def _top_ngram_chars(h: np.ndarray, chars: np.ndarray) -> int:
    """Characters covered by the most frequent n-gram (the first seen among ties, as Counter.most_common)."""
    _, first, counts = np.unique(h, return_index=True, return_counts=True)
    best = counts == counts.max()
    i = int(first[best].min())
    return int(chars[i]) * int(counts.max())


def _concat_hashes(t_chars: np.ndarray, lens: np.ndarray, sizes: Iterable[int]) -> dict[int, np.ndarray]:
    """Hash of each n-gram's words joined without a separator, as DataTrove compares them ("".join): equal
    strings hash equal whatever the word boundaries. Each word's character hash placed at its offset in the
    concatenation (the word hashes have the same base, CHAR_BASE), so a window hashes its characters."""
    offset = np.zeros(len(lens), np.int64)
    np.cumsum(lens[:-1], out=offset[1:])
    prefix = prefix_sums(t_chars, CHAR_BASE, offset)
    return {n: window_hashes(prefix, n, CHAR_BASE, offset) for n in sizes}


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
    """What the line-level metrics mean (DataTrove's filter arguments). The stage takes them from its settings
    (`Quality.Config`, the rules file's [stages.quality]): changing one recomputes the stage."""

    c4_min_words_per_line: int = 3  # C4: a line with fewer words is left out
    c4_max_word_length: int = 1000  # C4: a line with a longer word is left out (-1: no limit)
    c4_remove_citations: bool = True  # C4: remove Wikipedia-style citations ([1], [edit]) from lines first
    fineweb_short_line_length: int = 30  # FineWeb: a line of at most this many characters is short


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
        sentences += int(count_sentences(t, li, inside, len(spans)).sum())
    return {"c4_lines": len(lines), "c4_no_terminal_punct_lines": no_punct, "c4_javascript_lines": javascript,
            "c4_policy_lines": policy, "c4_kept_lines": len(spans) + len(edited), "c4_sentences": sentences,
            "c4_lorem_ipsum": lorem, "c4_curly_bracket": curly}
