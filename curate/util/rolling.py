"""Polynomial hashes modulo 2**64 over sequences: power tables, prefix sums, and the hash of every span or window.

The hash of items x[0], x[1], ... placed at positions a[0], a[1], ... (0, 1, 2, ... by default) is
sum(x[i] * base**a[i]) mod 2**64, shifted so that the first item sits at position 0. With an odd base, base**-k
exists modulo 2**64, so the hash of any span is a difference of prefix sums times one inverse power: every span
(a word of code points) or every window of n consecutive items (an n-gram of words) costs O(1) after one
cumulative sum, and equal item sequences hash equal wherever they occur. Placing words at their code-point
offsets makes an n-gram's hash the hash of its words' characters joined without a separator (when each word's
item is its own hash of characters with the same base). Used by the licence tokenizer, the quality stage's
n-gram statistics and MinHash's word hashes; each picks its own base, so their values are unchanged.
"""

from __future__ import annotations

import numpy as np

MASK = (1 << 64) - 1
KEPT = 1 << 23  # longest power table kept between calls, per base (2 tables x 64 MB)
_TABLES: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def powers(base: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(base**k, base**-k) mod 2**64 as uint64 for k < n at least (the tables may be longer), grown by doubling.
    Tables of up to KEPT entries are kept for the next call with the same base."""
    if not base & 1:
        raise ValueError(f"the base of a rolling hash must be odd (invertible modulo 2**64), not {base:#x}")
    tables = _TABLES.get(base) or (np.ones(1, np.uint64), np.ones(1, np.uint64))
    while len(tables[0]) < n:
        grown = []
        for p, b in zip(tables, (base, pow(base, -1, 1 << 64)), strict=True):
            if len(p) == 1:
                p = np.array([1, b], np.uint64)
            grown.append(np.concatenate([p, p * np.uint64((int(p[-1]) * b) & MASK)]))
        tables = (grown[0], grown[1])
    if len(tables[0]) <= KEPT:
        _TABLES[base] = tables
    return tables


def string_hash(s: str, base: int) -> int:
    """sum(ord(s[i]) * base**i) mod 2**64: one span of code points, as `span_hashes` computes it."""
    h = 0
    for c in reversed(s):
        h = (h * base + ord(c)) & MASK
    return h


def prefix_sums(values: np.ndarray, base: int, at: np.ndarray | None = None) -> np.ndarray:
    """P (uint64, one longer than `values`): P[0] = 0 and P[k + 1] = P[k] + values[k] * base**at[k] mod 2**64,
    with at[k] = k by default."""
    values = np.asarray(values).astype(np.uint64, copy=False)
    out = np.zeros(len(values) + 1, np.uint64)
    if not len(values):
        return out
    if at is None:
        weights = powers(base, len(values))[0][:len(values)]
    else:
        weights = powers(base, int(at.max()) + 1)[0][at]
    np.cumsum(values * weights, out=out[1:])
    return out


def span_hashes(prefix: np.ndarray, starts: np.ndarray, ends: np.ndarray, base: int,
                at: np.ndarray | None = None) -> np.ndarray:
    """The hash of items starts[j] .. ends[j] - 1 of the sequence behind `prefix` (`prefix_sums`, same base and
    positions), shifted to position 0: (P[end] - P[start]) * base**-at[start]."""
    if not len(starts):
        return np.zeros(0, np.uint64)
    shift = starts if at is None else at[starts]
    inverse = powers(base, int(shift.max()) + 1)[1]
    return (prefix[ends] - prefix[starts]) * inverse[shift]


def window_hashes(prefix: np.ndarray, n: int, base: int, at: np.ndarray | None = None) -> np.ndarray:
    """The hash of every window of n consecutive items (len(prefix) - n of them, in order; none when there are
    fewer than n items), shifted to position 0 like `span_hashes`."""
    m = len(prefix) - n
    if m <= 0:
        return np.zeros(0, np.uint64)
    if at is None:
        inverse = powers(base, m)[1][:m]
    else:
        inverse = powers(base, int(at[:m].max()) + 1)[1][at[:m]]
    return (prefix[n:] - prefix[:m]) * inverse
