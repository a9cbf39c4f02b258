"""Brand profiles (rules/brands/*.toml) and the scan of one document against one profile.

A profile names its brand, lists marks (the brand's own names, aliases and product names, and its competitors'),
each with a case rule (`any`, `capitalised`, `exact`) and what it needs nearby to count (`requires`: a context
word of its own list, or an alias, that is another mention of the same brand by a mark that counts on its own).
Terms the brand must not be associated with (`[avoid]`) and the toxicity terms of the bias lexicon are looked
for only in documents that mention the brand, and each is marked `near` when it stands within `window`
characters of one of its mentions.

Matching: whole words (a letter, digit or '_' on either side of a term breaks it), a space in a term matches any
run of whitespace, the longest term at a position wins; terms are matched without regard to case and each match
is then held to its mark's case rule.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.core.errors import ConfigError
from curate.util.assets import file_asset, read_toml, rules_dir

# A profile's name becomes part of column names of the `signals` view (brand_<name>_mentions, ...): only a
# plain lower-case identifier is accepted, never quoted into SQL from anything else.
PROFILE_NAME = re.compile(r"[a-z][a-z0-9_]*")
MAX_NAME = 40
MARK_ID = re.compile(r"[a-z][a-z0-9-]*")
GROUP = re.compile(r"[a-z][a-z0-9_]*")
ROLES = ("own", "competitor")
TYPES = ("name", "alias", "product")
CASES = ("any", "capitalised", "exact")
REQUIRES = ("context", "alias")
KINDS = ("own", "competitor", "avoid", "toxic")  # the `kind` column of brand_hits
# The signal columns per profile (brand_<name>_<suffix>); two profiles must not produce the same column.
SUFFIXES = ("mentions", "competitor_mentions", "competitor_share", "competitors", "avoid_terms", "avoid_near",
            "toxic_terms", "toxic_near", "compatible")
MARK_KEYS = {"id", "brand", "role", "type", "terms", "case", "requires", "context", "examples", "counter_examples"}
TOP_KEYS = {"profile", "version", "brand", "description", "window", "toxicity", "marks", "avoid"}


class ProfileError(ConfigError):
    """A brand profile that cannot be used; names the file and the problem."""


@dataclass(frozen=True)
class Mark:
    id: str
    brand: str
    role: str  # own | competitor
    type: str  # name | alias | product (documentation: what the term is)
    terms: tuple[str, ...]
    case: str  # any | capitalised | exact
    requires: tuple[str, ...]  # () counts on its own; else any one of context / alias within the window
    context: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    counter_examples: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hit:
    kind: str  # own | competitor | avoid | toxic
    brand: str  # the brand (own, competitor) or the term's group (avoid, toxic)
    mark: str  # the mark's id (own, competitor) or the term as listed, lower case (avoid, toxic)
    start: int
    end: int
    near: bool | None = None  # avoid, toxic: within `window` characters of a mention of the brand


def key(term: str) -> str:
    """The form terms and matches are compared in: lower case, single spaces."""
    return " ".join(term.lower().split())


def term_regex(term: str, joiners: str = "") -> str:
    """Regex source for one term: whole words (no word character, nor one of `joiners`, on either side of a word
    edge), any whitespace run for a space."""
    body = r"\s+".join(re.escape(w) for w in term.split())
    edge = r"\w" + re.escape(joiners)
    first, last = term.strip()[0], term.strip()[-1]
    return ((f"(?<![{edge}])" if first.isalnum() or first == "_" else "") + body
            + (f"(?![{edge}])" if last.isalnum() or last == "_" else ""))


def alternation(terms: list[str], joiners: str = "") -> str:
    """Longest first, so that leftmost-first matching takes the longest term at a position."""
    return "|".join(term_regex(t, joiners) for t in sorted(set(terms), key=lambda t: (-len(t), t)))


def lowered(text: str) -> str:
    """`text` in lower case with the same offsets ("İ" is the one common character whose lower case is two)."""
    low = text.replace("\u0130", "i").lower()
    if len(low) != len(text):
        low = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
    return low


class Anchored:
    """A compiled alternation of terms, tried only where a term's first word (lower case) occurs: str.find over the
    lower-cased text, then the pattern anchored there (its lookbehind still sees the text before). The same matches
    as `pattern.finditer`, at a fraction of its cost (Python's regex engine tries the alternation at every
    position: about 1 MB/s with a hundred terms)."""

    def __init__(self, terms: list[str], joiners: str = ""):
        self.pattern = re.compile(alternation(terms, joiners), re.IGNORECASE)
        firsts = sorted({t.split()[0].lower() for t in terms}, key=len)
        anchors: list[str] = []
        for f in firsts:  # a first word that starts with a shorter one is found by it
            if not any(f.startswith(a) for a in anchors):
                anchors.append(f)
        self.anchors = tuple(anchors)

    def finditer(self, text: str, low: str | None = None):
        low = lowered(text) if low is None else low
        starts: set[int] = set()
        for a in self.anchors:
            i = low.find(a)
            while i >= 0:
                starts.add(i)
                i = low.find(a, i + 1)
        end = 0
        for i in sorted(starts):
            if i < end:
                continue
            m = self.pattern.match(text, i)
            if m is not None and m.end() > m.start():
                end = m.end()
                yield m


def case_ok(case: str, matched: str, spellings: tuple[str, ...]) -> bool:
    """Whether a match passes its mark's case rule (`spellings`: the mark's terms of the match's key)."""
    if case == "any":
        return True
    if case == "exact":
        return " ".join(matched.split()) in {" ".join(t.split()) for t in spellings}
    first = next((c for c in matched if c.isalpha()), "")
    return first.isupper()  # capitalised: the match starts with a capital letter ("Apple", "APPLE")


@dataclass(frozen=True)
class Toxicity:
    """The toxicity terms of a bias lexicon, matched as the bias stage does: whole words, a hyphen joins words,
    its exclusions ("damn small linux") matched and discarded."""

    path: Path
    version: str
    sha256: str
    groups: dict[str, str | None]  # term key -> group (None: an exclusion)
    regex: Anchored

    def find(self, text: str, low: str | None = None) -> list[tuple[str, str, int, int]]:
        out = []
        for m in self.regex.finditer(text, low):
            k = " ".join(m.group().lower().replace("-", "_").split())
            group = self.groups.get(k)
            if group is not None:
                out.append((group, k, m.start(), m.end()))
        return out

    def asset(self) -> dict[str, str]:
        return {**file_asset("lexicon", self.path, f"toxicity {self.version}"), "sha256": self.sha256}


_TOXIC: dict[tuple[str, str], Toxicity] = {}


def load_toxicity(path: str | Path) -> Toxicity:
    """The lexicon of axis `toxicity` (rules/lexicons/toxicity.toml), checked by the bias stage's loader."""
    from curate.stages.bias.stage import TOXICITY, load_lexicon, term_key

    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ProfileError(f"{p}: cannot read the toxicity lexicon: {e.strerror}") from None
    sha = hashlib.sha256(data).hexdigest()
    if (str(p), sha) in _TOXIC:
        return _TOXIC[(str(p), sha)]
    lx = load_lexicon(p)
    if lx.axis != TOXICITY:
        raise ProfileError(f"{p}: axis is {lx.axis!r}, not {TOXICITY!r}")
    terms = [t for ts in lx.groups.values() for t in ts] + list(lx.exclude)
    groups = {term_key(t): g for g, ts in lx.groups.items() for t in ts}
    groups.update({term_key(t): None for t in lx.exclude})
    out = Toxicity(p, lx.version, lx.sha256, groups,
                   Anchored([t.lower() for t in terms], "-"))
    _TOXIC[(str(p), sha)] = out
    return out


@dataclass(frozen=True)
class Profile:
    name: str
    version: str
    path: Path
    sha256: str
    brand: str
    description: str
    window: int
    toxicity: bool  # look for the toxicity lexicon's terms near the brand
    marks: tuple[Mark, ...]
    avoid: dict[str, tuple[str, ...]]  # group -> terms the brand must not be associated with
    regex: Anchored = field(repr=False)
    lookup: dict[str, tuple[int, tuple[str, ...]]] = field(repr=False)  # term key -> (mark index, spellings)
    context: dict[int, re.Pattern] = field(repr=False)  # mark index -> its context words
    avoid_regex: Anchored | None = field(repr=False)
    avoid_lookup: dict[str, str] = field(repr=False)  # term key -> group

    @property
    def brands(self) -> list[str]:
        return list(dict.fromkeys(m.brand for m in self.marks))

    @property
    def competitors(self) -> list[str]:
        return list(dict.fromkeys(m.brand for m in self.marks if m.role == "competitor"))

    @property
    def terms(self) -> list[str]:
        return [t for m in self.marks for t in m.terms]

    def columns(self) -> dict[str, str]:
        """Suffix -> the signal column's name (validated name, so a plain identifier)."""
        return {s: f"brand_{self.name}_{s}" for s in SUFFIXES}

    def asset(self) -> dict[str, str]:
        return {**file_asset("brand-profile", self.path, f"{self.name} {self.version}"), "sha256": self.sha256}

    def mentions(self, text: str, low: str | None = None) -> list[Hit]:
        """The brand's and its competitors' mentions in `text` that pass their mark's case rule and requirement."""
        found: list[tuple[int, int, int]] = []
        for m in self.regex.finditer(text, low):
            idx, spellings = self.lookup[key(m.group())]
            if case_ok(self.marks[idx].case, m.group(), spellings):
                found.append((idx, m.start(), m.end()))
        if not found:
            return []
        free = [(self.marks[i].brand, s) for i, s, _ in found if not self.marks[i].requires]
        out = []
        w = self.window
        for i, s, e in found:
            mk = self.marks[i]
            if mk.requires:
                ok = False
                if "context" in mk.requires:
                    ok = self.context[i].search(text, max(0, s - w), min(len(text), e + w)) is not None
                if not ok and "alias" in mk.requires:
                    ok = any(b == mk.brand and abs(p - s) <= w for b, p in free)
                if not ok:
                    continue
            out.append(Hit(mk.role, mk.brand, mk.id, s, e))
        return out

    def scan(self, text: str, toxicity: Toxicity | None = None) -> list[Hit]:
        """Mentions, then (in a document that mentions the brand itself) avoided and toxic terms, in text order."""
        low = lowered(text)
        hits = self.mentions(text, low)
        own = [(h.start, h.end) for h in hits if h.kind == "own"]
        if not own:
            return hits
        w = self.window

        def near(s: int, e: int) -> bool:
            return any(s - oe <= w and os_ - e <= w for os_, oe in own)

        if self.avoid_regex is not None:
            for m in self.avoid_regex.finditer(text, low):
                if not in_name(text, m.start(), m.end()):
                    k = key(m.group())
                    hits.append(Hit("avoid", self.avoid_lookup[k], k, m.start(), m.end(), near(m.start(), m.end())))
        if self.toxicity and toxicity is not None:
            hits += [Hit("toxic", g, k, s, e, near(s, e)) for g, k, s, e in toxicity.find(text, low)
                     if not in_name(text, s, e)]
        return sorted(hits, key=lambda h: (h.start, h.end, h.kind))


def in_name(text: str, start: int, end: int) -> bool:
    """Whether text[start:end] is part of a file name, path, e-mail address, URL or dotted name ("tests/keygen.c",
    "morten@wtf.dk"), not prose: the bias stage does not count terms there either."""
    before = text[start - 1] if start else ""
    after = text[end:end + 2]
    return before in ("/", "@", ".", "\\") or after[:1] in ("/", "@", "\\") or (
        after[:1] == "." and len(after) == 2 and (after[1].isalnum() or after[1] == "_"))


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(t, str) and t.strip() for t in value)


_CACHE: dict[tuple[str, str], Profile] = {}


def load_profile(path: str | Path) -> Profile:
    """Parse and check one profile file (cached per path and content hash); every problem names the file."""
    p = Path(path)
    raw, sha = read_toml(p, "brand profile", ProfileError)
    if (str(p), sha) in _CACHE:
        return _CACHE[(str(p), sha)]
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise ProfileError(f"{p}: unknown key(s) {', '.join(unknown)}")
    for k in ("profile", "version", "brand", "marks"):
        if not raw.get(k):
            raise ProfileError(f"{p}: missing {k}")
    name = raw["profile"]
    if not isinstance(name, str) or not PROFILE_NAME.fullmatch(name) or len(name) > MAX_NAME:
        raise ProfileError(f"{p}: profile name {name!r} must match [a-z][a-z0-9_]* (at most {MAX_NAME} characters): "
                           "it becomes part of the signal columns' names")
    brand = str(raw["brand"])
    window = raw.get("window", 200)
    if not isinstance(window, int) or isinstance(window, bool) or not 0 < window <= 5000:
        raise ProfileError(f"{p}: window must be an integer number of characters in 1..5000")
    toxicity = raw.get("toxicity", True)
    if not isinstance(toxicity, bool):
        raise ProfileError(f"{p}: toxicity must be true or false")
    if not isinstance(raw["marks"], list):
        raise ProfileError(f"{p}: [[marks]] must be a list of tables")
    marks: list[Mark] = []
    lookup: dict[str, tuple[int, tuple[str, ...]]] = {}
    context: dict[int, re.Pattern] = {}
    for i, m in enumerate(raw["marks"]):
        where = f"{p}: mark {m.get('id', i + 1)!r}" if isinstance(m, dict) else f"{p}: mark {i + 1}"
        if not isinstance(m, dict):
            raise ProfileError(f"{where}: must be a table")
        missing = [k for k in ("id", "brand", "role", "terms", "case") if k not in m]
        if missing:
            raise ProfileError(f"{where}: missing {', '.join(missing)}")
        bad = sorted(set(m) - MARK_KEYS)
        if bad:
            raise ProfileError(f"{where}: unknown key(s) {', '.join(bad)}")
        if not isinstance(m["id"], str) or not MARK_ID.fullmatch(m["id"]) or any(x.id == m["id"] for x in marks):
            raise ProfileError(f"{where}: id must be unique lower-case letters, digits and '-'")
        if not isinstance(m["brand"], str) or not m["brand"].strip():
            raise ProfileError(f"{where}: brand must be a non-empty string")
        role = m["role"]
        if role not in ROLES:
            raise ProfileError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
        if role == "own" and m["brand"] != brand:
            raise ProfileError(f"{where}: an own mark's brand must be the profile's brand {brand!r}")
        if role == "competitor" and m["brand"] == brand:
            raise ProfileError(f"{where}: a competitor's brand cannot be the profile's own brand {brand!r}")
        if m.get("type", "name") not in TYPES:
            raise ProfileError(f"{where}: type {m.get('type')!r} is not one of {', '.join(TYPES)}")
        if m["case"] not in CASES:
            raise ProfileError(f"{where}: case {m['case']!r} is not one of {', '.join(CASES)}")
        if not _strings(m["terms"]) or not m["terms"]:
            raise ProfileError(f"{where}: terms must be a non-empty list of non-empty strings")
        requires = m.get("requires", [])
        if not isinstance(requires, list) or any(r not in REQUIRES for r in requires):
            raise ProfileError(f"{where}: requires must be a list of {' / '.join(REQUIRES)} (empty: counts alone)")
        ctx = m.get("context", [])
        if not _strings(ctx):
            raise ProfileError(f"{where}: context must be a list of non-empty strings")
        if "context" in requires and not ctx:
            raise ProfileError(f"{where}: requires context but lists no context words")
        if ctx and "context" not in requires:
            raise ProfileError(f"{where}: lists context words but does not require context")
        for k in ("examples", "counter_examples"):
            if not _strings(m.get(k, [])) and m.get(k, []) != []:
                raise ProfileError(f"{where}: {k} must be a list of strings")
        for t in m["terms"]:
            k = key(t)
            if k in lookup and lookup[k][0] != i:
                raise ProfileError(f"{where}: term {t!r} is already a term of mark {marks[lookup[k][0]].id!r}")
            if k in lookup and t in lookup[k][1]:
                raise ProfileError(f"{where}: term {t!r} is listed twice")
            lookup[k] = (i, lookup[k][1] + (t,) if k in lookup else (t,))  # spellings: "SUSE", "SuSE"
        if ctx:
            context[i] = re.compile(alternation(ctx), re.IGNORECASE)
        marks.append(Mark(m["id"], m["brand"], role, m.get("type", "name"), tuple(m["terms"]), m["case"],
                          tuple(requires), tuple(ctx), tuple(m.get("examples", ())),
                          tuple(m.get("counter_examples", ()))))
    if not any(mk.role == "own" for mk in marks):
        raise ProfileError(f"{p}: no mark of the brand itself (role = \"own\")")
    avoid_raw = raw.get("avoid", {})
    if not isinstance(avoid_raw, dict):
        raise ProfileError(f"{p}: [avoid] must map group names to lists of terms")
    avoid: dict[str, tuple[str, ...]] = {}
    avoid_lookup: dict[str, str] = {}
    for g, terms in avoid_raw.items():
        if not GROUP.fullmatch(g):
            raise ProfileError(f"{p}: [avoid] group {g!r} must be lower-case letters, digits and '_'")
        if not _strings(terms) or not terms:
            raise ProfileError(f"{p}: [avoid] {g} must be a non-empty list of non-empty strings")
        for t in terms:
            k = key(t)
            if k in avoid_lookup:
                raise ProfileError(f"{p}: [avoid] term {t!r} is already in group {avoid_lookup[k]!r}")
            if k in lookup:
                raise ProfileError(f"{p}: [avoid] term {t!r} is also a mark's term")
            avoid_lookup[k] = g
        avoid[g] = tuple(terms)
    regex = Anchored([t for mk in marks for t in mk.terms])
    avoid_regex = Anchored(list(avoid_lookup), "-") if avoid_lookup else None
    out = Profile(name, str(raw["version"]), p, sha, brand, str(raw.get("description", "")).strip(), window,
                  toxicity, tuple(marks), avoid, regex, lookup, context, avoid_regex, avoid_lookup)
    _CACHE[(str(p), sha)] = out
    return out


def profile_path(setting: str) -> Path:
    """A profile a `[stages.brands] profiles` entry names (relative to rules/ unless absolute)."""
    p = Path(setting)
    return p if p.is_absolute() else rules_dir() / p


def load_profiles(settings: tuple[str, ...] | list[str]) -> list[Profile]:
    """The profiles named, checked together: two with one name, or whose signal columns would collide, are refused
    naming both files."""
    profiles = [load_profile(profile_path(s)) for s in settings]
    columns: dict[str, Profile] = {}
    for pr in profiles:
        for col in pr.columns().values():
            other = columns.get(col)
            if other is not None:
                raise ProfileError(f"{pr.path}: profile {pr.name!r} would give the signal column {col!r} that profile "
                                   f"{other.name!r} ({other.path}) gives too: rename one")
            columns[col] = pr
    return profiles


def prefilter(profiles: list[Profile]) -> str | None:
    """RE2 source (matched without regard to case) that every document mentioning a mark of any profile matches:
    a superset (RE2's \\b is ASCII-only, looser than the Python patterns' word edges)."""
    terms = sorted({key(t) for pr in profiles for t in pr.terms}, key=lambda t: (-len(t), t))
    if not terms:
        return None

    def one(t: str) -> str:
        body = r"\s+".join(re.escape(w) for w in t.split())
        b1 = r"\b" if t[0].isascii() and (t[0].isalnum() or t[0] == "_") else ""
        b2 = r"\b" if t[-1].isascii() and (t[-1].isalnum() or t[-1] == "_") else ""
        return b1 + body + b2

    return "|".join(one(t) for t in terms)
