"""Tokens as runs: where a boolean mask over the code points of many texts is true, vectorised (no Python loop)."""

from __future__ import annotations

import numpy as np


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of the runs where `mask` is true: [starts[i], ends[i]) in the mask's positions. The
    licence scanner's words and MinHash's words are both runs of word characters over joined texts."""
    edges = np.diff(mask.view(np.int8) if mask.dtype == bool else mask.astype(np.int8),
                    prepend=np.int8(0), append=np.int8(0))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
