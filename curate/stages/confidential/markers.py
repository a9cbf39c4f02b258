"""The marker file of the `confidential` stage (rules/confidential/markers.toml) and the scan of one document.

A marker is a regular expression with a kind, a case rule (written into the pattern), where it may stand
(`banner`, `edge`, `any`) and a score. All markers become one alternation of named groups, tried in file order at
each position; each match is then placed (header, footer or body; on a banner line or inside prose) and kept when
it stands where its marker allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.core.errors import ConfigError
from curate.util.assets import file_asset, read_toml, rules_dir

KINDS = ("classification", "handling", "trade_secret", "legal_privilege", "nda", "government", "disclaimer")
WHERE = ("banner", "edge", "any")
POSITIONS = ("header", "footer", "body")
ID = re.compile(r"[a-z][a-z0-9-]*")
WORD = re.compile(r"[A-Za-z]{2,}")
DECORATION = " \t*#=_~|<>[](){}-–—:·•\"'"
SENTENCE_END = re.compile(r"[.;,!?]\s*$")


class MarkerError(ConfigError):
    """A marker file that cannot be used; names the file and the problem."""


@dataclass(frozen=True)
class Marker:
    id: str
    kind: str
    pattern: str
    where: str
    score: float
    examples: tuple[str, ...] = ()
    counter_examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class Found:
    marker: str
    kind: str
    position: str  # header, footer, body
    banner: bool  # on a banner line (the marker is most of its line)
    start: int
    end: int
    score: float


@dataclass(frozen=True)
class MarkerSet:
    path: Path
    version: str
    sha256: str
    markers: tuple[Marker, ...]
    edge_lines: int
    banner_max_words: int
    inline_factor: float
    anchors: tuple[str, ...]
    window: int
    regex: re.Pattern

    @property
    def prefilter(self) -> str:
        """RE2 source (case-insensitive) matching a document that holds an anchor."""
        return "|".join(r"\b" + re.escape(a.strip()) if a[0].isspace() else re.escape(a) for a in self.anchors)

    def asset(self) -> dict[str, str]:
        return {**file_asset("confidential-markers", self.path, self.version), "sha256": self.sha256}

    def matches(self, text: str):
        """The alternation's matches, searched only in windows around anchors (a match holds an anchor and is
        shorter than `window`; lookbehinds still see the text before a window)."""
        for s, e in _windows(text, self.anchors, self.window):
            yield from self.regex.finditer(text, s, e)

    def scan(self, text: str) -> list[Found]:
        """Every marker in `text` standing where its marker allows, in text order."""
        out: list[Found] = []
        head = tail = None
        for m in self.matches(text):
            marker = self.markers[int(m.lastgroup[1:])]
            start, end = m.span()
            if head is None:
                head, tail = edges(text, self.edge_lines)
            position = "header" if end <= head else "footer" if start >= tail else "body"
            banner = is_banner(text, start, end, self.banner_max_words)
            if marker.where == "banner" and not banner:
                continue
            if marker.where == "edge" and not banner and position == "body":
                continue
            prose = not banner and position == "body"
            score = round(marker.score * (self.inline_factor if prose else 1.0), 4)
            out.append(Found(marker.id, marker.kind, position, banner, start, end, score))
        return out


def _windows(text: str, anchors: tuple[str, ...], width: int) -> list[tuple[int, int]]:
    # An anchor may start with a space or newline: the text's first word gets one too. "İ" is the one common
    # character whose lower case is two characters; offsets must not drift.
    low = "\n" + text.replace("\u0130", "i").lower()
    if len(low) != len(text) + 1:
        low = "\n" + "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    hits = []
    for a in anchors:
        i = low.find(a)
        while i >= 0:
            hits.append(i)
            i = low.find(a, i + 1)
    out: list[tuple[int, int]] = []
    for i in sorted(hits):
        s, e = max(0, i - 1 - width), min(len(text), i + width)
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def edges(text: str, k: int) -> tuple[int, int]:
    """Offsets (end of the first k non-blank lines, start of the last k non-blank lines)."""
    head, seen, i, n = 0, 0, 0, len(text)
    while i <= n and seen < k:
        j = text.find("\n", i)
        j = n if j < 0 else j
        if text[i:j].strip():
            seen, head = seen + 1, j
        i = j + 1
    tail, seen, j = n, 0, n
    while j >= 0 and seen < k:
        i = text.rfind("\n", 0, j) + 1  # the line text[i:j]
        if text[i:j].strip():
            seen, tail = seen + 1, i
        j = i - 1
    return head, tail


def is_banner(text: str, start: int, end: int, max_words: int) -> bool:
    """Whether the match stands on a banner line: at most `max_words` other words on its line, and no sentence
    punctuation at the line's end unless the marker is upper case ("CONFIDENTIAL." is a banner, "keep it
    Confidential." is prose)."""
    ls = text.rfind("\n", 0, start) + 1
    le = text.find("\n", end)
    le = len(text) if le < 0 else le
    before, after = text[ls:start], text[end:le]
    if len(WORD.findall(before)) + len(WORD.findall(after)) > max_words:
        return False
    line = (before + text[start:end] + after).strip(DECORATION)
    matched = text[start:end]
    return not SENTENCE_END.search(line) or (matched.isupper() and not WORD.search(after))


def markers_path(setting: str = "confidential/markers.toml") -> Path:
    """The marker file a `[stages.confidential] markers` setting names (relative to rules/ unless absolute)."""
    p = Path(setting)
    return p if p.is_absolute() else rules_dir() / p


_CACHE: dict[tuple[str, str], MarkerSet] = {}


def load_markers(path: str | Path) -> MarkerSet:
    """Parse and check a marker file (cached per path and content hash)."""
    p = Path(path)
    raw, sha = read_toml(p, "marker file", MarkerError)
    key = (str(p), sha)
    if key in _CACHE:
        return _CACHE[key]
    for k in ("version", "anchors", "markers"):
        if not raw.get(k):
            raise MarkerError(f"{p}: missing {k}")
    markers, seen = [], set()
    for i, m in enumerate(raw["markers"]):
        where = f"{p}: marker {m.get('id', i + 1)!r}"
        missing = [k for k in ("id", "kind", "pattern", "where", "score") if k not in m]
        if missing:
            raise MarkerError(f"{where}: missing {', '.join(missing)}")
        unknown = sorted(set(m) - {"id", "kind", "pattern", "where", "score", "examples", "counter_examples"})
        if unknown:
            raise MarkerError(f"{where}: unknown key(s) {', '.join(unknown)}")
        if not ID.fullmatch(str(m["id"])) or m["id"] in seen:
            raise MarkerError(f"{where}: id must be unique lower-case letters, digits and '-'")
        seen.add(m["id"])
        if m["kind"] not in KINDS:
            raise MarkerError(f"{where}: kind {m['kind']!r} is not one of {', '.join(KINDS)}")
        if m["where"] not in WHERE:
            raise MarkerError(f"{where}: where {m['where']!r} is not one of {', '.join(WHERE)}")
        if not isinstance(m["score"], int | float) or not 0 < m["score"] <= 1:
            raise MarkerError(f"{where}: score must be in (0, 1]")
        try:
            rx = re.compile(m["pattern"])
        except re.error as e:
            raise MarkerError(f"{where}: bad pattern: {e}") from None
        if rx.groups:
            raise MarkerError(f"{where}: the pattern must not capture: write (?:...) for groups")
        markers.append(Marker(m["id"], m["kind"], m["pattern"], m["where"], float(m["score"]),
                              tuple(m.get("examples", ())), tuple(m.get("counter_examples", ()))))
    anchors = raw["anchors"]
    if not isinstance(anchors, list) or not all(isinstance(a, str) and a and a == a.lower() for a in anchors):
        raise MarkerError(f"{p}: anchors must be a list of non-empty lower-case strings")
    factor = float(raw.get("inline_factor", 0.8))
    if not 0 < factor <= 1:
        raise MarkerError(f"{p}: inline_factor must be in (0, 1]")
    regex = re.compile("|".join(f"(?P<m{i}>{m.pattern})" for i, m in enumerate(markers)))
    out = MarkerSet(p, str(raw["version"]), sha, tuple(markers), int(raw.get("edge_lines", 3)),
                    int(raw.get("banner_max_words", 6)), factor, tuple(anchors), int(raw.get("window", 250)), regex)
    _CACHE[key] = out
    return out


def summary(ms: MarkerSet) -> dict[str, Any]:
    return {"file": str(ms.path), "version": ms.version, "markers": len(ms.markers), "sha256": ms.sha256}
