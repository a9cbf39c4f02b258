"""MinHash signatures of text shingles, vectorised over a whole batch of documents.

Shingles are word n-grams (default 5) of `curate.util.text.normalize(text)`, words being runs of
Unicode word characters (`re.findall(r"\\w+", ...)`: punctuation does not count); or character
n-grams of the normalised text. A document shorter than n uses its whole token string as its one
shingle; an empty document has none (its signature is all 0xFFFFFFFF, like datasketch's).

Each shingle gets a 32-bit hash (`shingle_hash`: a polynomial hash of its code points per word,
words combined and mixed). The signature follows datasketch's default "affine32" scheme exactly:
MurmurHash3's fmix32 on the shingle hash, then `a_k * h + b_k mod 2**32` with (a_k, b_k) drawn
from `numpy.random.RandomState(seed)` as datasketch draws them, and the minimum per permutation.
So `datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash).update_batch(shingles(text))`
gives the same hash values (tests/test_dedup_fuzzy.py checks it). The batch path does all of this
with numpy over every shingle of every document at once (`np.minimum.reduceat` per permutation).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from curate.core.errors import ConfigError
from curate.util.rolling import prefix_sums, span_hashes, string_hash
from curate.util.text import normalize
from curate.util.tokens import runs

WORD = re.compile(r"\w+")
M64 = (1 << 64) - 1
MAX32 = np.uint32(0xFFFFFFFF)
_P = 0x9E3779B97F4A7C15  # odd multiplier of the per-word polynomial hash (curate.util.rolling)
CHUNK_CHARS = 1 << 18  # characters of text hashed at once: their uint64 arrays (2 MB) stay in cache; 4M-character
# chunks took 2.3x as long on 100,000 short documents (125 MB) and a 64 MB table of powers per process
BLOCK = 1 << 17  # shingles per block of the permutation loop (512 KB of uint32: stays in cache)


@dataclass(frozen=True)
class Shingling:
    """How a text becomes shingles: `kind` "word" or "char", `n` tokens per shingle."""

    kind: str = "word"
    n: int = 5

    def __post_init__(self) -> None:
        if self.kind not in ("word", "char"):
            raise ConfigError(f"shingle kind must be 'word' or 'char', not {self.kind!r}")
        if not isinstance(self.n, int) or self.n < 1:
            raise ConfigError(f"shingle size must be a positive integer, not {self.n!r}")

    @classmethod
    def from_config(cls, config: Any) -> Shingling:
        """From `[stages.dedup_fuzzy]` (the stage's typed settings, or the table as a dict):
        `shingle = "word" | "char"`, `ngram = 5`."""
        return cls(str(_setting(config, "shingle", "word")), int(_setting(config, "ngram", 5)))


def _setting(config: Any, key: str, default: Any) -> Any:
    """`key` of `[stages.dedup_fuzzy]` given as a dict (absent: `default`) or as the stage's typed settings
    (None: not given)."""
    if config is None:
        return default
    value = config.get(key, default) if isinstance(config, dict) else getattr(config, key, default)
    return default if value is None else value


# -- the scalar definition (readable, used by tests, benchmarks and exact Jaccard) -----------------
def tokens(text: str, kind: str = "word") -> list[str]:
    """Words (runs of \\w in the normalised text) or characters of the normalised text."""
    norm = normalize(text)
    return WORD.findall(norm) if kind == "word" else list(norm)


def shingles(text: str, kind: str = "word", n: int = 5) -> list[str]:
    """The shingles of one text, in order (with repeats); words are joined by one space."""
    Shingling(kind, n)
    toks = tokens(text, kind)
    sep = " " if kind == "word" else ""
    if not toks:
        return []
    if len(toks) < n:
        return [sep.join(toks)]
    return [sep.join(toks[i:i + n]) for i in range(len(toks) - n + 1)]


def shingle_set(text: str, kind: str = "word", n: int = 5) -> set[str]:
    return set(shingles(text, kind, n))


def jaccard(a: set[str], b: set[str]) -> float:
    """Exact Jaccard similarity of two shingle sets (two empty sets: 1.0)."""
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _fmix64(x: int) -> int:
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & M64
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & M64
    return x ^ (x >> 33)


@lru_cache(maxsize=64)
def _combiners(n: int) -> tuple[int, ...]:
    """One odd 64-bit multiplier per position in a shingle."""
    return tuple(_fmix64(0x632BE59BD9B4E019 + j) | 1 for j in range(n))


def _word_hash(word: str) -> int:
    """fmix64 of sum(ord(word[i]) * _P**i) mod 2**64."""
    return _fmix64(string_hash(word, _P))


def shingle_hash(shingle: str | bytes, kind: str = "word") -> int:
    """The 32-bit hash of one shingle (as produced by `shingles`): datasketch's `hashfunc`."""
    if isinstance(shingle, bytes):
        shingle = shingle.decode("utf-8")
    parts = [_word_hash(w) for w in shingle.split(" ")] if kind == "word" else [ord(c) for c in shingle]
    k = _combiners(len(parts))
    x = sum(p * c for p, c in zip(parts, k, strict=True)) & M64
    return _fmix64(x) >> 32


def permutations(num_perm: int = 128, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) uint32 arrays drawn exactly as datasketch's affine32 MinHash draws them."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


# -- the vectorised path ----------------------------------------------------------------------------
def _fmix64_np(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(33))
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xC4CEB9FE1A85EC53)
    return x ^ (x >> np.uint64(33))


def _fmix32_np(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint32(16))
    x *= np.uint32(0x85EBCA6B)
    x ^= x >> np.uint32(13)
    x *= np.uint32(0xC2B2AE35)
    return x ^ (x >> np.uint32(16))


@lru_cache(maxsize=1)
def _word_chars() -> np.ndarray:
    """A lookup table over every code point: does `\\w` match it (str.isalnum() or '_')."""
    table = np.zeros(0x110000, bool)
    every = np.arange(0x110000, dtype="<u4").tobytes().decode("utf-32-le", "surrogatepass")
    for m in WORD.finditer(every):
        table[m.start():m.end()] = True
    return table


_LOWER_ASCII = np.array([ord(chr(c).lower()) for c in range(128)] + [0] * 128, np.uint8)


def _offsets(counts: np.ndarray) -> np.ndarray:
    out = np.zeros(len(counts), np.int64)
    np.cumsum(counts[:-1], out=out[1:])
    return out


def _word_hashes(cps: np.ndarray, starts: np.ndarray, word: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of the words (runs where `word` is true) in code points `cps` of texts beginning at
    `starts`, concatenated in order, and each text's word count. A word's polynomial hash is a
    difference of prefix sums of cps[j] * P**j, shifted back by P**-start (P is odd: invertible)."""
    tok_start, tok_end = runs(word)
    counts = np.diff(np.searchsorted(tok_start, starts), append=len(tok_start)).astype(np.int64)
    if not len(tok_start):
        return np.zeros(0, np.uint64), counts
    return _fmix64_np(span_hashes(prefix_sums(cps, _P), tok_start, tok_end, _P)), counts


def _token_hashes(texts: Sequence[str], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-token 64-bit values of the texts (word hashes or code points), concatenated, and each
    text's token count: the tokens of `tokens(text, kind)`, without a Python loop over tokens."""
    if kind == "char":
        norms = [normalize(t) for t in texts]
        cps = np.frombuffer("".join(norms).encode("utf-32-le", "surrogatepass"), np.uint32)
        return cps.astype(np.uint64), np.fromiter(map(len, norms), np.int64, len(norms))
    # Words of normalize(text) are the words of NFC(text).casefold(): whitespace never is in a word.
    # ASCII texts (most of them) only need lower-casing, done here over bytes.
    ascii_ = np.fromiter((t.isascii() for t in texts), bool, len(texts))
    parts = []
    for group in (np.flatnonzero(ascii_), np.flatnonzero(~ascii_)):
        if not len(group):
            continue
        if ascii_[group[0]]:
            chunk = [texts[i] for i in group]
            raw = np.frombuffer("\n".join(chunk).encode("ascii"), np.uint8)
            cps = _LOWER_ASCII[raw]
            word = _word_chars()[:256][cps]
        else:
            chunk = [unicodedata.normalize("NFC", texts[i]).casefold() for i in group]
            cps = np.frombuffer("\n".join(chunk).encode("utf-32-le", "surrogatepass"), np.uint32)
            word = _word_chars()[cps]
        lengths = np.fromiter((len(t) + 1 for t in chunk), np.int64, len(chunk))
        hashes, counts = _word_hashes(cps.astype(np.uint64), _offsets(lengths), word)
        parts.append((group, hashes, counts))
    return _merge(parts, len(texts))


def _merge(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Values grouped by text, computed for groups of texts, back in the texts' order."""
    if len(parts) == 1 and len(parts[0][0]) == n:
        return parts[0][1], parts[0][2]
    counts = np.zeros(n, np.int64)
    for group, _, c in parts:
        counts[group] = c
    start = _offsets(counts)
    out = np.empty(int(counts.sum()), np.uint64)
    for group, values, c in parts:
        dest = np.repeat(start[group] - _offsets(c), c) + np.arange(len(values))
        out[dest] = values
    return out, counts


def shingle_hashes(texts: Sequence[str], kind: str = "word", n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """32-bit shingle hashes of all texts, grouped by text in order, and each text's shingle count.

    Equal to `[shingle_hash(s, kind) for s in shingles(text, kind, n)]` per text, without Python loops
    (texts are taken in groups of about CHUNK_CHARS characters: bounded memory, cached powers).
    """
    Shingling(kind, n)
    parts, group, size = [], [], 0
    for t in texts:
        if group and size + len(t) > CHUNK_CHARS:
            parts.append(_shingle_hashes(group, kind, n))
            group, size = [], 0
        group.append(t)
        size += len(t)
    parts.append(_shingle_hashes(group, kind, n))
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([h for h, _ in parts]), np.concatenate([c for _, c in parts])


def _shingle_hashes(texts: Sequence[str], kind: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    toks, counts = _token_hashes(texts, kind)
    nsh = np.where(counts >= n, counts - n + 1, np.minimum(counts, 1))
    k = np.array(_combiners(n), np.uint64)
    # Every window of n consecutive tokens, then only those inside one text (in text order).
    m = max(len(toks) - n + 1, 0)
    x = toks[:m] * k[0]
    tmp = np.empty_like(x)
    for j in range(1, n):
        np.multiply(toks[j:j + m], k[j], out=tmp)
        x += tmp
    ok = np.ones(m, bool)
    crossing = (np.cumsum(counts)[:, None] - np.arange(1, n)[None, :]).ravel()
    ok[crossing[(crossing >= 0) & (crossing < m)]] = False
    out = x[ok]
    # Texts with 1..n-1 tokens: one shingle of all of them, inserted at their place.
    short = np.flatnonzero((counts > 0) & (counts < n))
    if len(short):
        tstart = _offsets(counts)
        y = np.zeros(len(short), np.uint64)
        for j in range(n - 1):
            has = counts[short] > j
            y[has] += toks[tstart[short[has]] + j] * k[j]
        before = np.concatenate([[0], np.cumsum(np.where(counts >= n, nsh, 0))])[short]
        out = np.insert(out, before, y)
    return (_fmix64_np(out) >> np.uint64(32)).astype(np.uint32), nsh


def signatures(texts: Sequence[str], num_perm: int = 128, seed: int = 1, kind: str = "word",
               n: int = 5) -> np.ndarray:
    """MinHash signatures, shape (len(texts), num_perm), uint32; see the module docstring."""
    hashes, counts = shingle_hashes(texts, kind, n)
    return signatures_of_hashes(hashes, counts, num_perm, seed)


def signatures_of_hashes(hashes: np.ndarray, counts: np.ndarray, num_perm: int = 128,
                         seed: int = 1) -> np.ndarray:
    """Signatures from shingle hashes grouped by document (`counts` per document, 0 allowed)."""
    a, b = permutations(num_perm, seed)
    sig = np.full((len(counts), num_perm), MAX32, np.uint32)
    has = np.flatnonzero(counts > 0)
    if not len(has):
        return sig
    hv = _fmix32_np(hashes.astype(np.uint32, copy=False))
    ends = np.cumsum(counts[has])
    cols = np.empty((num_perm, len(has)), np.uint32)
    # Blocks of documents whose shingles fit in cache; one pass per permutation over each block.
    d0 = 0
    while d0 < len(has):
        lo = ends[d0 - 1] if d0 else 0
        d1 = max(int(np.searchsorted(ends, lo + BLOCK, "right")), d0 + 1)
        block = hv[lo:ends[d1 - 1]]
        seg = np.concatenate(([0], ends[d0:d1 - 1] - lo))
        tmp = np.empty_like(block)
        for p in range(num_perm):
            np.multiply(block, a[p], out=tmp)
            tmp += b[p]
            np.minimum.reduceat(tmp, seg, out=cols[p, d0:d1])
        d0 = d1
    sig[has] = cols.T
    return sig


def estimate_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Fraction of equal signature positions (the MinHash Jaccard estimate), row by row."""
    return (np.asarray(sig_a) == np.asarray(sig_b)).mean(axis=-1)


# -- LSH banding ------------------------------------------------------------------------------------
def catch_probability(j: float, bands: int, rows: int) -> float:
    """P(two documents at Jaccard j share at least one band bucket) = 1 - (1 - j^rows)^bands."""
    return 1.0 - (1.0 - j ** rows) ** bands


def lsh_params(threshold: float = 0.8, num_perm: int = 128, recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm catching a pair at `threshold` with at least
    probability `recall`, choosing the most rows (fewest spurious candidates) that does."""
    if not 0 < threshold < 1:
        raise ConfigError(f"threshold must be between 0 and 1, not {threshold}")
    best = None
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if catch_probability(threshold, bands, rows) >= recall:
            best = (bands, rows)
    if best is None:
        raise ConfigError(f"{num_perm} permutations cannot catch pairs at Jaccard {threshold} with "
                         f"probability {recall}: use more permutations")
    return best


def band_hashes(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One signed 64-bit bucket per (document, band): a mix of the band's `rows` signature values."""
    if bands * rows > sigs.shape[1]:
        raise ConfigError(f"{bands} bands x {rows} rows need {bands * rows} permutations, "
                         f"signatures have {sigs.shape[1]}")
    s = sigs[:, :bands * rows].astype(np.uint64).reshape(len(sigs), bands, rows)
    h = np.zeros((len(sigs), bands), np.uint64)
    for r in range(rows):
        h = _fmix64_np(h ^ (s[:, :, r] + np.uint64(((r + 1) * _P) & M64)))
    return h.view(np.int64)


def bands_for(config: Any) -> tuple[int, int]:
    """(bands, rows) from `[stages.dedup_fuzzy]` (typed settings or a dict): given, or derived for its recall."""
    num_perm = int(_setting(config, "num_perm", 128))
    bands, rows = _setting(config, "bands", None), _setting(config, "rows", None)
    if bands is not None or rows is not None:
        if bands is None or rows is None:
            raise ConfigError("bands and rows go together: give both, or neither (derived from threshold and recall)")
        bands, rows = int(bands), int(rows)
        if bands < 1 or rows < 1:
            raise ConfigError(f"bands ({bands}) and rows ({rows}) must be positive")
        if bands * rows > num_perm:
            raise ConfigError(f"bands ({bands}) x rows ({rows}) exceeds num_perm ({num_perm})")
        return bands, rows
    return lsh_params(float(_setting(config, "threshold", 0.8)), num_perm, float(_setting(config, "recall", 0.99)))


def describe(config: Any) -> str:
    """One line on the LSH set-up, e.g. for the README and run reports."""
    bands, rows = bands_for(config)
    t = float(_setting(config, "threshold", 0.8))
    return (f"{bands} bands x {rows} rows: P(candidate) = {catch_probability(t, bands, rows):.4f} at "
            f"Jaccard {t}, {catch_probability(t / 2 + 0.1, bands, rows):.3f} at {t / 2 + 0.1:.2f}")


__all__ = ["Shingling", "band_hashes", "bands_for", "catch_probability", "estimate_jaccard", "jaccard",
           "lsh_params", "permutations", "shingle_hash", "shingle_hashes", "shingles", "signatures",
           "signatures_of_hashes", "tokens"]
