"""DataTrove 0.10.1 as the quality stage reproduces it: the definitions its metrics copy, and which default rules
stand for each of DataTrove's quality filters (used by the agreement test and benchmarks).

The constants are copied from datatrove 0.10.1 (`utils/text.py` and the filters `GopherQualityFilter`,
`GopherRepetitionFilter`, `C4QualityFilter`, `FineWebQualityFilter`), so that every metric is defined exactly
as there. `datatrove` itself is needed only by `filters()`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

# -- definitions (datatrove 0.10.1, utils/text.py and the filters) -------------------------------------------
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

# -- the filters and the default rules that stand for them ---------------------------------------------------
# Family -> the filter class in datatrove.pipeline.filters (each with its default thresholds).
FILTERS = {"gopher_quality": "GopherQualityFilter", "gopher_repetition": "GopherRepetitionFilter",
           "c4": "C4QualityFilter", "fineweb": "FineWebQualityFilter"}
# Family -> the rules of rules/default.toml with the filter's thresholds: it keeps a document none of them fires on.
RULES = {
    "gopher_quality": ("gopher.word-count", "gopher.mean-word-length", "gopher.symbol-ratio", "gopher.bullet-lines",
                       "gopher.ellipsis-lines", "gopher.alpha-words", "gopher.stop-words"),
    "gopher_repetition": ("gopher.duplicate-lines", "gopher.duplicate-paragraphs", "gopher.top-ngrams",
                          "gopher.duplicate-ngrams"),
    "c4": ("c4.lorem-ipsum", "c4.curly-bracket", "c4.few-sentences"),
    "fineweb": ("fineweb.line-punctuation", "fineweb.short-lines", "fineweb.duplicate-lines", "fineweb.list-ratio"),
}


def filters() -> dict[str, Any]:
    """Family -> a DataTrove filter with its default thresholds (needs the `datatrove` package)."""
    import datatrove.pipeline.filters as dt

    return {family: getattr(dt, cls)() for family, cls in FILTERS.items()}


def kept(family: str, fired: Iterable[str]) -> bool:
    """Curate's keep/drop for one family: kept when none of the family's rules fired."""
    return not set(RULES[family]) & set(fired)
