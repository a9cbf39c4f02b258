"""Reservation standards of 2026: the versioned list (rules/optout/standards.toml) and the parsers of the
newer vocabularies: IETF AI preferences (`Content-Usage`, an RFC 9651 dictionary such as `train-ai=n,
search=y`), Cloudflare's `Content-Signal` (`ai-train=no`), TDMRep's document declaration (`tdm-reservation`,
`tdm-policy`) and the CAWG training-and-data-mining assertion inside a document's content credentials.

Every value parsed here comes from outside (a header, a meta tag, a robots.txt line, a manifest): the
parsers never evaluate it, bound what they read, and return None for what they cannot read.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from curate.stages.optout.normalize import prune_json
from curate.util.assets import rules_dir

MAX_FIELD = 8192  # bytes of one header or robots.txt value that are read; longer values are cut there


# -- the list of standards ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Standard:
    id: str
    name: str
    status: str  # "standard", "draft", "community", "industry", "de facto"
    reference: str
    markers: tuple[str, ...]  # prefixes of per-document markers (optout_docs.markers) it accounts for
    match_kinds: tuple[str, ...]  # site-file match kinds (optout_matches.match_kind) it accounts for

    @property
    def draft(self) -> bool:
        return self.status == "draft"

    @property
    def label(self) -> str:
        return f"{self.name} (draft)" if self.draft else self.name


def standards_file():
    return rules_dir() / "optout" / "standards.toml"


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[str, tuple[Standard, ...], dict[str, Any]]:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    items = tuple(Standard(s["id"], s["name"], s["status"], s.get("reference", ""), tuple(s.get("markers", ())),
                           tuple(s.get("match_kinds", ()))) for s in data.get("standards", []))
    return str(data.get("version", "")), items, data.get("vocabulary", {})


def standards() -> tuple[Standard, ...]:
    return _load(str(standards_file()))[1]


def standards_version() -> str:
    return _load(str(standards_file()))[0]


def vocabulary() -> dict[str, Any]:
    """The `[vocabulary]` table: which AI-preference and content-signal keys mean training."""
    return _load(str(standards_file()))[2]


def standard_of(reservation: str) -> Standard | None:
    """The standard behind a marker (`content-usage:train-ai=n`) or a site-file match kind (`robots_txt`)."""
    for s in standards():
        if reservation in s.match_kinds or any(reservation.startswith(m) for m in s.markers):
            return s
    return None


# -- RFC 9651 dictionaries --------------------------------------------------------------------------------
KEY = re.compile(r"[a-z*][a-z0-9_\-.*]*")
TOKEN = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*")
NUMBER = re.compile(r"-?[0-9]{1,15}(?:\.[0-9]{1,3})?")
STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"')
BINARY = re.compile(r":[A-Za-z0-9+/=]*:")


class _Parser:
    def __init__(self, text: str):
        self.s, self.i = text, 0

    def ws(self, chars: str = " \t") -> None:
        while self.i < len(self.s) and self.s[self.i] in chars:
            self.i += 1

    def peek(self, c: str) -> bool:
        return self.s.startswith(c, self.i)

    def take(self, rx: re.Pattern[str]) -> re.Match[str]:
        m = rx.match(self.s, self.i)
        if not m:
            raise ValueError(f"unexpected {self.s[self.i:self.i + 10]!r} at {self.i}")
        self.i = m.end()
        return m

    def bare(self) -> Any:
        if self.peek('"'):
            return re.sub(r"\\(.)", r"\1", self.take(STRING).group(1))
        if self.peek("?"):
            self.i += 1
            return self.take(re.compile("[01]")).group() == "1"
        if self.peek(":"):
            return self.take(BINARY).group()
        if self.peek("@"):
            self.i += 1
            return int(self.take(re.compile(r"-?[0-9]{1,15}")).group())
        if self.peek('%"'):
            self.i += 1
            return self.take(re.compile(r'"((?:[^"\\]|\\.)*)"')).group(1)
        if self.i < len(self.s) and (self.s[self.i].isdigit() or self.s[self.i] == "-"):
            n = self.take(NUMBER).group()
            return float(n) if "." in n else int(n)
        return Token(self.take(TOKEN).group())

    def params(self) -> None:  # parameters are read (the syntax must hold) and not used
        while self.peek(";"):
            self.i += 1
            self.ws(" ")
            self.take(KEY)
            if self.peek("="):
                self.i += 1
                self.bare()

    def item(self) -> Any:
        if self.peek("("):  # an inner list
            self.i += 1
            items = []
            while True:
                self.ws(" ")
                if self.peek(")"):
                    self.i += 1
                    break
                items.append(self.bare())
                self.params()
                if not self.peek(" ") and not self.peek(")"):
                    raise ValueError(f"bad inner list at {self.i}")
            self.params()
            return items
        value = self.bare()
        self.params()
        return value


class Token(str):
    """An RFC 9651 token (`y`, `n`), told apart from a string."""


def parse_dictionary(text: str) -> dict[str, Any] | None:
    """An RFC 9651 structured-field dictionary; None when the text is not one (RFC 9651 4.2: the whole field
    fails). A repeated key keeps its last value, as the RFC says; a key without a value is boolean true."""
    p = _Parser(text[:MAX_FIELD].strip(" \t"))
    out: dict[str, Any] = {}
    try:
        while p.i < len(p.s):
            key = p.take(KEY).group()
            if p.peek("="):
                p.i += 1
                out[key] = p.item()
            else:
                out[key] = True
                p.params()
            p.ws()
            if p.i == len(p.s):
                break
            if not p.peek(","):
                raise ValueError(f"expected ',' at {p.i}")
            p.i += 1
            p.ws()
            if p.i == len(p.s):
                raise ValueError("trailing comma")
    except ValueError:
        return None
    return out


# -- IETF AI preferences and Cloudflare content signals ---------------------------------------------------
@dataclass(frozen=True)
class Preference:
    """A usage preference statement: its training verdict (True: reserved, False: allowed, None: silent),
    and the text it came from."""

    reserved: bool | None
    text: str
    keys: tuple[str, ...] = ()  # the keys that decided


def aipref(text: str) -> Preference | None:
    """An AI-preferences statement (`train-ai=n, search=y`): training is reserved when a training category
    says `n` (most restrictive wins), else allowed when one says `y`; when neither is stated, its parent
    category (`bots`, automated processing) decides. None when the statement does not parse."""
    d = parse_dictionary(text)
    if d is None:
        return None
    vocab = vocabulary().get("aipref", {})
    return _verdict(d, tuple(vocab.get("training", ("train-ai", "train-genai"))),
                    tuple(vocab.get("parents", ("bots",))), Token("y"), Token("n"), text)


def content_signal(text: str) -> Preference | None:
    """A Cloudflare content signal (`search=yes, ai-train=no`): training is reserved when `ai-train=no`.
    Cloudflare's policy is not written as a structured field, so the pairs are read leniently (case and
    spaces do not matter); a pair that is not `key=value` makes the line unreadable (None)."""
    d: dict[str, Any] = {}
    for pair in text[:MAX_FIELD].split(","):
        if not pair.strip():
            continue
        key, eq, value = pair.partition("=")
        if not eq or not KEY.fullmatch(key.strip().lower()) or not TOKEN.fullmatch(value.strip()):
            return None
        d[key.strip().lower()] = Token(value.strip().lower())
    vocab = vocabulary().get("content_signal", {})
    return _verdict(d, tuple(vocab.get("training", ("ai-train",))), (), Token("yes"), Token("no"), text)


def _verdict(d: dict[str, Any], training: tuple[str, ...], parents: tuple[str, ...], yes: str, no: str,
             text: str) -> Preference:
    for keys in (training, parents):
        said = {k: d[k] for k in keys if isinstance(d.get(k), Token) and d[k] in (yes, no)}
        if any(v == no for v in said.values()):
            return Preference(True, text, tuple(k for k, v in said.items() if v == no))
        if said:
            return Preference(False, text, tuple(said))
    return Preference(None, text)


def most_restrictive(prefs: list[Preference]) -> Preference | None:
    """Several statements for one document: a reservation wins over a permission, which wins over silence."""
    for wanted in (True, False, None):
        for p in prefs:
            if p.reserved is wanted:
                return p
    return None


# -- CAWG training-and-data-mining assertion -------------------------------------------------------------
CAWG_LABELS = re.compile(r"(cawg|c2pa)\.training-mining(\.v\d+)?")
CREDENTIAL_KEYS = ("c2pa", "content_credentials", "contentCredentials", "c2pa_manifest", "manifest_store")
MAX_ASSERTIONS = 1000


@dataclass(frozen=True)
class CawgEntry:
    entry: str  # cawg.ai_training, ...
    use: str  # allowed, notAllowed, constrained
    terms: bool  # constraint_info was given
    label: str  # the assertion's label

    @property
    def reserved(self) -> bool:
        """notAllowed, or constrained with nothing that says how (read as notAllowed)."""
        return self.use == "notAllowed" or (self.use == "constrained" and not self.terms)

    def marker(self) -> str:
        use = "notAllowed" if self.reserved else self.use
        return f"cawg:{self.entry.split('.', 1)[-1]}={use}"

    def evidence(self) -> str:
        terms = " (with terms)" if self.terms else (" (no terms: read as notAllowed)" if self.use == "constrained"
                                                     else "")
        return f"{self.label} {self.entry}: {self.use}{terms}"


def cawg_entries(meta: dict[str, Any]) -> list[CawgEntry]:
    """Training-and-data-mining entries of the active manifest of a document's content credentials
    (`meta.c2pa`, `meta.content_credentials`, ...: a manifest store, one manifest, a list of assertions,
    or any of them as a JSON string)."""
    store = next((meta[k] for k in CREDENTIAL_KEYS if k in meta), None)
    if isinstance(store, str):
        try:
            store = prune_json(store[:4 * 1024 * 1024])
        except ValueError:
            return []
    assertions: Any = None
    if isinstance(store, dict):
        manifests = store.get("manifests")
        if isinstance(manifests, dict):  # a manifest store: the active manifest speaks for the asset
            active = store.get("active_manifest")
            manifest = manifests.get(active) if isinstance(active, str) else None
            if manifest is None and len(manifests) == 1:
                manifest = next(iter(manifests.values()))
            store = manifest
        elif isinstance(manifests, list) and manifests:  # a list of manifests: the last one is the active one
            store = manifests[-1]
        assertions = store.get("assertions") if isinstance(store, dict) else None
    elif isinstance(store, list):
        assertions = store
    if not isinstance(assertions, list):
        return []
    out = []
    allowed = ("allowed", "notAllowed", "constrained")
    for a in assertions[:MAX_ASSERTIONS]:
        if not isinstance(a, dict) or not isinstance(a.get("label"), str) or not CAWG_LABELS.fullmatch(a["label"]):
            continue
        data = a.get("data")
        entries = data.get("entries") if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            continue
        for name, value in list(entries.items())[:64]:
            if not isinstance(value, dict) or value.get("use") not in allowed:
                continue
            info = value.get("constraint_info")
            out.append(CawgEntry(str(name)[:64], value["use"], isinstance(info, str) and bool(info.strip()),
                                 a["label"]))
    return out


def cawg_training(entries: list[CawgEntry]) -> list[CawgEntry]:
    """The entries about training (rules/optout/standards.toml `[vocabulary.cawg] training`)."""
    names = set(vocabulary().get("cawg", {}).get("training", ("cawg.ai_training", "cawg.ai_generative_training")))
    return [e for e in entries if e.entry in names or e.entry.replace("c2pa.", "cawg.", 1) in names]
