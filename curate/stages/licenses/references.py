"""Licences named, not quoted: DEP-5 `License:` fields, statements ("licensed under the MIT License"), licence
headings, metadata fields, licence URLs and shields-style badges, each read as an SPDX expression with its form and
its scope (`self`: the document's own licence, `files`: a DEP-5 paragraph naming files, `mention`: a licence the
text only talks about). Names and Debian short names come from `rules/licenses/references.toml`.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from curate.stages.licenses.expressions import normalize_expression

FORMS = ("dep5_field", "statement", "heading", "badge", "url", "metadata")
SCOPES = ("self", "files", "mention")
# Confidence of a reference by its form, below a full text's (its F1, >= 0.9 when found) and a notice's (0.9): a
# name says which licence, not that its terms are what the text holds. A bare family name loses FAMILY_PENALTY.
SCORES = {"dep5_field": 0.85, "metadata": 0.85, "url": 0.8, "badge": 0.8, "statement": 0.8, "heading": 0.7}
FAMILY_PENALTY = 0.2
GNU_VERSIONS = {"GPL": ("1", "2", "3"), "LGPL": ("2", "2.1", "3"), "AGPL": ("1", "3"), "GFDL": ("1.1", "1.2", "1.3")}
GNU_BARE = {"GPL": "GPL-1.0-or-later", "LGPL": "LGPL-2.0-or-later", "AGPL": "AGPL-3.0-or-later",
            "GFDL": "GFDL-1.1-or-later"}  # "any version": the least specific id (as notices.py reads "the GNU GPL")
GNU_NAMES = ["GNU General Public License", "General Public License", "GNU GPL", "GPL", "GNU Lesser General Public "
             "License", "Lesser General Public License", "GNU Library General Public License", "Library General "
             "Public License", "GNU LGPL", "LGPL", "Lesser GPL", "GNU Affero General Public License", "Affero General "
             "Public License", "GNU AGPL", "AGPL", "GNU Free Documentation License", "Free Documentation License",
             "GNU FDL", "GFDL"]
VERSION = re.compile(r"(?:[ \t]*,?[ \t]*\n?[ \t]*\(?(?:version|ver\.?|v\.?)[ \t]*"
                     r"|[ \t-]?[vV]?)(\d{1,2}(?:\.\d{1,2}){0,2}[a-c]?)"
                     r"(?![\w.]*\d)(?!\.\w)")
LATER = re.compile(r"[ \t]*(?:\+|-or-later\b|,?[ \t]*\(?or[ \t]+(?:\(at[ \t]+your[ \t]+option\)[ \t]+)?(?:any[ \t]+)?"
                   r"(?:later|newer|greater|higher|above)(?:[ \t]+versions?)?\)?)", re.I)
ONLY = re.compile(r"-only\b|[ \t]+only\b", re.I)
# A grant right before a name: "licensed under the terms of the", "released under", "License: ", "is under the"
GRANT_BEFORE = re.compile(
    r"(?:\b(?:licen[cs]ed|released|distributed|available|published|provided|offered|covered|governed|shared|"
    r"dual[\s-]licen[cs]ed|licen[cs]able)(?:\s+\w+){0,2}?\s+(?:under|by|as)|\b(?:is|are|be)\s+under|\bunder)"
    r"\s+(?:the\s+)?(?:(?:terms|conditions)\s+(?:and\s+conditions\s+)?of\s+(?:the\s+)?)?(?:(?:an?|either)\s+)?"
    r"(?:open[\s-]source\s+|permissive\s+|liberal\s+)?(?:licen[cs]e[\s,:]+)?\(?[\"'`*_]*$", re.I)
# for a name that is also an ordinary word ("Python", "MIT"), "under" alone is no grant ("runs under Python")
WEAK_GRANT = re.compile(r"licen[cs]|released|distributed|available|published|provided|offered|covered|governed", re.I)
GRANT_AFTER = re.compile(r"[\"'`*_)]*[\s-]*(?:licen[cs]ed|licen[cs]e\s+applies)\b", re.I)
MENTION = re.compile(
    r"\b(?:in)?compatib|\bunlike\b|\bsuch\s+as\b|\be\.g\.|\bfor\s+example\b|\blike\s+the\b|\bother\s+licen|"
    r"\binstead\s+of\b|\bversus\b|\bvs\.|\bcompar|\brather\s+than\b|\bnot\s+(?:be\s+)?(?:licen[cs]ed\s+)?under\b|"
    r"\bwhether\b|\bdependenc|\bthird[\s-]party\b|\bbundled?\b|\bvendored\b|\bderived\s+from\b|\bbased\s+on\b|"
    r"\bcan\s+be\s+found|\bcomplete\s+text|\bfull\s+text|\bcopy\s+of\s+the|\bsee\s+(?:the\s+)?(?:\w+\s+){0,3}"
    r"(?:licen[cs]e\b|for\s+(?:more\s+)?details)|common-licenses|\bwe\s+(?:recommend|suggest)|\bif\s+you\s+"
    r"(?:want|wish|use)|\bchoose\b|\boriginally\b|\bformerly\b|\bprevious(?:ly)?\b|\bused\s+to\s+be\b|"
    r"\blist\s+of\b|\bapproved\b|\bplugins?\b|\bmodules?\s+(?:are|is)\b|\bpackages?\s+(?:are|is)\b|"
    r"\bno\s+requirement|\bnot\s+required|\bneed\s+not\b|\bdoes\s+not\s+need", re.I)
DUAL = re.compile(r"\bdual[\s-]*licen|\bat\s+your\s+(?:option|choice)|\beither\b|\bchoice\s+of\b|\bmulti[\s-]licen",
                  re.I)
HEADING = re.compile(r"^(?:#{1,6}[ \t]*(?:\W[ \t]*)?licen[cs](?:e|ing)\b[^\n]*|(?:\*\*|__)?licen[cs](?:e"
                     r"|ing)(?:\*\*|__)?"
                     r"[ \t]*:?[ \t]*\n[=\-~^*#]{3,}[ \t]*|\.\.[ \t]+rubric::[ \t]*licen[cs]e[^\n]*"
                     r"|(?:\*\*|__)licen[cs](?:e|ing)(?:\*\*|__)[ \t]*:?[ \t]*)$", re.I | re.M)
NEXT_HEADING = re.compile(r"^(?:#{1,6}[ \t]|[^\n]+\n[=\-~^]{3,}[ \t]*$)", re.M)
FIELD = re.compile(
    r"^[ \t]*[-*]?[ \t]*(?:\*\*|__)?(?:licen[cs]e(?:[-_]expression)?|licen[cs]e[-_ ]?type)(?:\*\*|__)?[ \t]*[:=]"
    r"(?:\*\*|__)?[ \t]*[\"'{\[]?[ \t]*(?:text[ \t]*=[ \t]*[\"'])?(?P<v>[^\n\"'}\]]{1,120}?)[\"'}\]]*[ \t]*,?[ \t]*$"
    r"|[\"']licen[cs]e[\"'][ \t]*:[ \t]*[\"'](?P<j>[^\"'\n]{1,120})[\"']"
    r"|\blicen[cs]e[ \t]*=[ \t]*[\"'](?P<k>[^\"'\n]{1,120})[\"']", re.I | re.M)
HEAD_LEAD = re.compile(r"[\s*_\[`>:|-]*")
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
DEP5_FORMAT = re.compile(r"^Format:[ \t]*\S*(?:dep5|copyright-format)", re.I | re.M)
DEP5_FIELD = re.compile(r"^License:[ \t]*(?P<v>\S[^\n]*?)[ \t]*$", re.M)
DEP5_FILES = re.compile(r"^Files:", re.M)
DEP5_GNU = re.compile(r"(?P<f>a?gpl|lgpl|gfdl(?P<niv>-niv)?)(?:-?(?P<v>\d(?:\.\d)?))?(?P<plus>\+)?", re.I)
DEP5_VERSIONED = re.compile(r"(?P<n>.*?)-?(?P<v>\d+(?:\.\d+)*[a-c]?)(?P<plus>\+)?", re.I)
DEP5_EXCEPTIONS = {"autoconf": {"2": "Autoconf-exception-2.0", "3": "Autoconf-exception-3.0"},
                   "bison": "Bison-exception-2.2", "linux-syscall-note": "Linux-syscall-note",
                   "classpath": "Classpath-exception-2.0", "gcc": "GCC-exception-3.1", "libtool": "Libtool-exception",
                   "font": "Font-exception-2.0", "llvm": "LLVM-exception", "openssl": None}
URLS = re.compile(
    r"(?:https?://)?(?:www\.)?(?:opensource\.org/licen[cs]es?/(?P<osi>[\w.+-]+?)(?:\.php|\.html?)?"
    r"|spdx\.org/licenses/(?P<spdx>[\w.+-]+?)(?:\.html|\.json)?"
    r"|gnu\.org/(?:licenses/|copyleft/)(?:old-licenses/)?(?P<gnu>a?gpl|lgpl|fdl)(?:-(?P<gv>\d\.\d))?"
    r"(?:\.en)?(?:\.html|\.txt)?"
    r"|apache\.org/licenses/LICENSE-(?P<apache>\d\.\d)(?:\.txt|\.html)?)(?=[\s)\]>\"'#?,;]|\.?$|\.\s)", re.I | re.M)
OSI_OLD = {"mit-license": "MIT", "bsd-license": "LicenseRef-BSD", "apache2.0": "Apache-2.0", "zlib-license": "Zlib",
           "isc-license": "ISC", "gpl-license": "GPL-1.0-or-later", "lgpl-license": "LGPL-2.0-or-later",
           "bsd-3-clause": "BSD-3-Clause", "bsd-2-clause": "BSD-2-Clause", "mit": "MIT"}
BADGE = re.compile(r"img\.shields\.io/badge/(?P<b>licen[cs]e-[^/?)\"'\s]+?)(?:\.svg|\.png)?(?=[?)\"'\s])", re.I)
BADGE_ALT = re.compile(r"!\[(?P<alt>[^\]\n]{1,60})\]\((?P<u>[^)\s]*licen[cs]e[^)\s]*"
                       r"|[^)\s]*shields\.io/pypi/l/[^)\s]*)\)"
                       r"|image::[ \t]*(?P<ru>\S*(?:licen[cs]e"
                       r"|shields\.io/pypi/l/)\S*)[ \t]*\n(?:[ \t]+:\w+:.*\n){0,4}?"
                       r"[ \t]+:alt:[ \t]*(?P<ralt>[^\n]{1,60})", re.I)
URL_TOKEN = re.compile(r"\b(?:https?://|www\.)[^\s)\]>\"']+|\b[\w-]+(?:\.[\w-]+)+/[^\s)\]>\"']+")
SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\[*#`])|\n[ \t]*\n|\n(?=[ \t]*(?:[-*+][ \t]|#|\d+\.[ \t]))")
LIST_SEP = re.compile(r"[\"'`*_]*[ \t]*(?:,[ \t]*(?:and|or)?|/|\band\b|\bor\b"
                      r"|\band/or\b)[ \t]+(?:the[ \t]+)?(?:terms[ \t]+"
                      r"of[ \t]+(?:the[ \t]+)?)?[\"'`*_]*$", re.I)
ANCHORS = ("licen", "gpl", "gnu", "bsd", "mpl", "epl", "cddl", "eupl", "wtfpl", "shields.io", "opensource.org",
           "spdx.org", "gnu.org", "apache.org", "public license")


@dataclass(frozen=True)
class Ref:
    license: str
    form: str
    scope: str
    start: int
    end: int
    family: bool = False  # a family named without a version: LicenseRef-<family> or its least specific id

    @property
    def score(self) -> float:
        return round(SCORES[self.form] - (FAMILY_PENALTY if self.family else 0.0), 3)


@dataclass(frozen=True)
class Family:
    id: str | None
    versions: dict[str, str]
    bare: str | None
    strong: bool


@dataclass(eq=False)
class Names:
    """The references table: DEP-5 short names and the names of licence families, with one regex over all names."""

    version: str
    dep5: dict[str, dict]
    families: dict[str, Family]  # normalised name -> family
    spdx_ids: dict[str, str]  # lower-case SPDX id -> id
    regex: re.Pattern = field(init=False)

    def __post_init__(self):
        names = sorted(set(self.families) | {_norm(n) for n in GNU_NAMES}, key=len, reverse=True)
        alts = "|".join(r"[\s_-]+".join(re.escape(w).replace("license", "licen[cs]e") for w in n.split(" "))
                        for n in names)
        # a name ends at a non-letter, or where a version is glued on ("GPLv2", "GPL2")
        self.regex = re.compile(rf"(?<![\w/.@-])(?:{alts})(?=[vV]?\d|[^\w]|_|$)(?!-[A-Za-z])", re.I)

    @classmethod
    def load(cls, path: Path) -> Names:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        fams = {}
        for f in raw["family"]:
            fam = Family(f.get("id"), dict(f.get("versions", {})), f.get("bare"), bool(f.get("strong", True)))
            for n in f["names"]:
                fams[_norm(n)] = fam
        return cls(str(raw["version"]), {k.lower(): v for k, v in raw["dep5"].items()}, fams, _spdx_ids())


@functools.lru_cache(maxsize=1)
def _spdx_ids() -> dict[str, str]:
    from curate.stages.licenses.expressions import _licensing

    return {k.lower(): s.key for k, s in _licensing().known_symbols.items()
            if not s.is_exception and not k.startswith("LicenseRef-")}


@functools.lru_cache(maxsize=1024)
def _spdx_alias(name: str) -> str | None:
    from curate.stages.licenses.expressions import _licensing

    try:
        out = _licensing().parse(name, validate=True, strict=True)
    except Exception:  # noqa: BLE001 - license-expression raises several kinds on unknown keys
        return None
    return normalize_expression(out.render()) if out is not None and " " not in out.render() else None


@functools.lru_cache(maxsize=4)
def load_names(path: str) -> Names:
    return Names.load(Path(path))


def _norm(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", name.lower().replace("licence", "license")).strip()


def _gnu_family(norm: str) -> str | None:
    if "affero" in norm or norm.endswith("agpl"):
        return "AGPL"
    if "lesser" in norm or "library" in norm or norm.endswith("lgpl"):
        return "LGPL"
    if "documentation" in norm or norm.endswith(("fdl", "gfdl")):
        return "GFDL"
    if "general public" in norm or norm.endswith("gpl"):
        return "GPL"
    return None


def _gnu_id(fam: str, v: str | None, later: bool, only: bool) -> tuple[str, bool] | None:
    """A GNU licence as stated: version and "or later" kept; without a version, the family's least specific id."""
    if v is None:
        return GNU_BARE[fam], True
    v = v.removesuffix(".0") if v.removesuffix(".0") in GNU_VERSIONS[fam] else v
    if v not in GNU_VERSIONS[fam]:
        return None
    v = v if "." in v else v + ".0"
    return f"{fam}-{v}-{'or-later' if later and not only else 'only'}", False


def read_name(names: Names, text: str, m: re.Match) -> tuple[str, bool, int, bool] | None:
    """The licence a name match names, with what follows it (version, "or later"): (SPDX id, family only, end,
    strong name) or None when the version is not one of the family's."""
    norm = _norm(m.group())
    end = m.end()
    vm = VERSION.match(text, end)
    v = vm.group(1) if vm else None
    if norm in names.families:
        fam = names.families[norm]
        if fam.id:
            return fam.id, False, end, fam.strong
        if v is not None:
            lic = fam.versions.get(v) or fam.versions.get(v + ".0") or fam.versions.get(v.removesuffix(".0"))
            if lic:
                return lic, False, vm.end(), fam.strong
        return (fam.bare, True, end, fam.strong) if fam.bare else None
    fam = _gnu_family(norm)
    if fam is None:
        return None
    if v is not None:
        end = vm.end()
    later = LATER.match(text, end)
    only = ONLY.match(text, end)
    got = _gnu_id(fam, v, bool(later), bool(only))
    if got is None:
        return None
    if v is not None and (later or only):
        end = (later or only).end()
    return got[0], got[1], end, True


def value_license(names: Names, value: str, dep5: bool = False) -> tuple[str, bool] | None:
    """A field's value (`License: X`, `"license": "X"`, a badge's message): an SPDX expression, a DEP-5 short-name
    expression, or one licence name; (expression, family only) or None."""
    value = value.strip().strip("\"'`*_ ").rstrip(".;,")
    if not value:
        return None
    if dep5:
        return dep5_expression(names, value)
    low = value.lower()
    if re.fullmatch(r"[A-Za-z0-9.+\-() ]+", value) and all(
            t.lower() in names.spdx_ids or t.lower() in ("and", "or", "with") or t.lower().endswith("+")
            and t[:-1].lower() in names.spdx_ids for t in re.findall(r"[^\s()]+", value)):
        norm = normalize_expression(value)
        if norm:
            return norm, False
    m = names.regex.match(value)
    if m:
        got = read_name(names, value, m)
        if got and not value[got[2]:].strip(" .;,-)("):
            return got[0], got[1]
    if low in names.dep5 or DEP5_GNU.fullmatch(low):
        return dep5_expression(names, value)
    return None


def _dep5_one(names: Names, name: str) -> tuple[str, bool] | None:
    name = name.strip().strip("()")
    low = name.lower()
    exc = None
    if low in names.dep5 or low in names.spdx_ids or DEP5_GNU.fullmatch(low) or " " in low:
        pass
    elif (key := _spdx_alias(name)) is not None:  # a deprecated or aliased id license-expression knows
        return key, False
    if (w := re.fullmatch(r"(.+?)\s+with\s+(.+?)\s+exception", low)) is not None:
        low, exc_name = w.group(1), w.group(2)
        exc = DEP5_EXCEPTIONS.get(exc_name.lower().replace(" ", "-"))
    if m := DEP5_GNU.fullmatch(low):
        fam = "GFDL" if low.startswith("gfdl") else m.group("f").upper()
        got = _gnu_id(fam, m.group("v"), bool(m.group("plus")), False)
        if got is None:
            return None
        lic, family = got
        if m.group("niv"):
            lic = lic.replace("-or-later", "-no-invariants-or-later").replace("-only", "-no-invariants-only")
        if isinstance(exc, dict):
            exc = exc.get((m.group("v") or "").split(".")[0])
    elif low in names.dep5:
        lic, family = names.dep5[low].get("bare"), "versions" in names.dep5[low]
        if lic is None:
            return None
    elif low in names.spdx_ids:
        lic, family = names.spdx_ids[low], False
    elif (m := DEP5_VERSIONED.fullmatch(low)) and m.group("n") in names.dep5:
        vers = names.dep5[m.group("n")].get("versions", {})
        v = m.group("v")
        lic = vers.get(v) or vers.get(v + ".0") or vers.get(v.removesuffix(".0"))
        if lic is None:
            return None
        family = False
    else:
        return None
    return (f"{lic} WITH {exc}" if isinstance(exc, str) and " " not in lic else lic), family


def dep5_expression(names: Names, value: str) -> tuple[str, bool] | None:
    """A DEP-5 `License:` value ("GPL-2+ or Artistic", "BSL-1.0 and MIT", "GPL-2+ with Autoconf exception") as an
    SPDX expression; None when any name in it is not in the table (a partial expression would be a wrong one)."""
    ands = []
    family = False
    for part in re.split(r"\s*,\s*and\s+|\s+and\s+|\s*,\s*", value.strip(), flags=re.I):
        ors = []
        for name in re.split(r"\s+or\s+", part, flags=re.I):
            got = _dep5_one(names, name)
            if got is None:
                return None
            ors.append(got[0])
            family |= got[1]
        ands.append(ors[0] if len(ors) == 1 else "(" + " OR ".join(ors) + ")")
    expr = normalize_expression(" AND ".join(ands))
    return (expr, family) if expr else None


def _sentence(text: str, start: int, end: int) -> tuple[int, int]:
    """The sentence around [start, end): from the previous sentence break to the next (at most 300 chars each)."""
    lo = max(0, start - 300)
    s = lo
    for b in SENTENCE.finditer(text, lo, start):
        s = b.end()
    e = SENTENCE.search(text, end, end + 300)
    return s, (e.start() if e else min(len(text), end + 300))


def _headed(text: str) -> list[tuple[int, int]]:
    """Spans of licence sections: from a "License" heading to the next heading (at most 600 chars)."""
    out = []
    for h in HEADING.finditer(text):
        nxt = NEXT_HEADING.search(text, h.end() + 1, h.end() + 600)
        out.append((h.end(), nxt.start() if nxt else min(len(text), h.end() + 600)))
    return out


def paragraph(text: str, start: int, end: int) -> tuple[int, int]:
    """The paragraph (between blank lines) holding [start, end)."""
    p0 = 0
    for b in PARAGRAPH_BREAK.finditer(text, max(0, start - 20000), start):
        p0 = b.end()
    brk = PARAGRAPH_BREAK.search(text, end)
    return p0, brk.start() if brk else len(text)


def dep5_refs(names: Names, text: str) -> list[Ref]:
    """`License:` fields of DEP-5 paragraphs: `files` in a paragraph with `Files:`, `self` in the header paragraph
    (`Format:`), `mention` in a stand-alone licence paragraph (it defines a short name the Files paragraphs use)."""
    fields = list(DEP5_FIELD.finditer(text))
    if not fields:
        return []
    is_dep5 = bool(DEP5_FORMAT.search(text) or DEP5_FILES.search(text))
    if not is_dep5:
        return []
    out = []
    for m in fields:
        p0, p1 = paragraph(text, m.start(), m.end())
        para = text[p0:p1]
        scope = "files" if DEP5_FILES.search(para) else "self" if DEP5_FORMAT.search(para) else "mention"
        got = dep5_expression(names, m.group("v"))
        if got:
            out.append(Ref(got[0], "dep5_field", scope, m.start(), m.end(), got[1]))
    return out


def find(names: Names, text: str, low: str | None = None) -> list[Ref]:
    """Every reference to a licence by name in one document, with form and scope."""
    low = text.lower() if low is None else low
    if not any(a in low for a in ANCHORS):
        return []
    refs = dep5_refs(names, text)
    taken = [(r.start, r.end) for r in refs]
    # metadata fields outside DEP-5 paragraphs: `License: X`, `"license": "X"`, `license = "X"`
    if "licen" in low:
        for m in FIELD.finditer(text):
            if any(s <= m.start() < e for s, e in taken):
                continue
            key = "v" if m.group("v") is not None else "j" if m.group("j") is not None else "k"
            got = value_license(names, m.group(key))
            if got:
                refs.append(Ref(got[0], "metadata", "self", m.start(), m.end(), got[1]))
                taken.append((m.start(), m.end()))
    urls = [(u.start(), u.end()) for u in URL_TOKEN.finditer(text)] if ("/" in text) else []
    for m in BADGE.finditer(text):
        parts = [p.replace("\0", "-").replace("_", " ") for p in unquote(m.group("b").replace("--", "\0")).split("-")]
        if len(parts) >= 2 and (got := value_license(names, parts[1])):
            refs.append(Ref(got[0], "badge", scope_at(text, m.start(), m.end()), m.start(), m.end(), got[1]))
            taken.append((m.start(), m.end()))
    for m in BADGE_ALT.finditer(text):
        alt = (m.group("alt") or m.group("ralt") or "").strip()
        alt = re.sub(r"(?i)^licen[cs]e\s*[:-]?\s*", "", alt)
        if not any(s <= m.start() < e for s, e in taken) and (got := value_license(names, alt)):
            refs.append(Ref(got[0], "badge", scope_at(text, m.start(), m.end()), m.start(), m.end(), got[1]))
            taken.append((m.start(), m.end()))
    for m in URLS.finditer(text):
        got = _url_license(names, m)
        if got and not any(s <= m.start() < e for s, e in taken):
            refs.append(Ref(got[0], "url", scope_at(text, m.start(), m.end()), m.start(), m.end(), got[1]))
    heads = _headed(text) if "licen" in low else []
    named: list[tuple[int, int, str, bool, bool]] = []
    for m in names.regex.finditer(text):
        if any(s <= m.start() < e for s, e in taken) or any(s <= m.start() < e for s, e in urls):
            continue
        got = read_name(names, text, m)
        if got:
            named.append((m.start(), got[2], got[0], got[1], got[3]))
    i = 0
    while i < len(named):
        s, e, lic, family, strong = named[i]
        before = text[max(0, s - 120):s]
        g = GRANT_BEFORE.search(before)
        if g is not None and not strong and not WEAK_GRANT.search(g.group()):
            g = None
        after = GRANT_AFTER.match(text, e)
        grant = g is not None or after is not None or text[s:e].lower().endswith("licensed")  # "BSD-licensed"
        # in a licence section, a name counts as the answer when it comes first ("## License\n\nMIT")
        in_head = any(a <= s < b and HEAD_LEAD.fullmatch(text, a, s) for a, b in heads)
        if not (grant or in_head or strong):
            i += 1
            continue
        # names listed after one grant: "dual-licensed under the MIT and Apache 2.0 licenses" is one expression
        group = [named[i]]
        while i + 1 < len(named) and LIST_SEP.fullmatch(text[group[-1][1]:named[i + 1][0]].replace("\n", " ")) \
                and named[i + 1][0] - group[-1][1] <= 12:
            i += 1
            group.append(named[i])
        i += 1
        sent = _sentence(text, s, group[-1][1])
        form = "statement" if grant else "heading" if in_head else "statement"
        scope = "self" if grant or in_head else "mention"
        # a cue near the grant makes it a mention ("is compatible with code licensed under the GPL"); a cue in
        # another clause of the sentence does not ("to maximise compatibility with X, this code is licensed ...")
        lo = max(sent[0], (s - 120 + g.start() if g is not None else s) - 40)
        if scope == "self" and MENTION.search(text[lo:min(sent[1], group[-1][1] + 40)]):
            scope = "mention"
        if len(group) > 1:
            between = " ".join(text[a[1]:b[0]].lower() for a, b in zip(group, group[1:], strict=False))
            joiner = " OR " if "or" in between.split() or DUAL.search(text[sent[0]:sent[1]]) else " AND "
            expr = normalize_expression(joiner.join(f"({g[2]})" if " " in g[2] else g[2] for g in group))
            if expr:
                refs.append(Ref(expr, form, scope, s, group[-1][1], any(g[3] for g in group)))
            continue
        refs.append(Ref(lic, form, scope, s, e, family))
    return refs


def scope_at(text: str, start: int, end: int) -> str:
    s, e = _sentence(text, start, end)
    return "mention" if MENTION.search(text[s:min(e, end + 80)]) else "self"


def _url_license(names: Names, m: re.Match) -> tuple[str, bool] | None:
    if m.group("osi"):
        key = m.group("osi").lower()
        if key in OSI_OLD:
            lic = OSI_OLD[key]
            return lic, lic.startswith("LicenseRef-") or lic.endswith("1.0-or-later") or lic == "LGPL-2.0-or-later"
        lic = names.spdx_ids.get(key)
        return (normalize_expression(lic), False) if lic else None
    if m.group("spdx"):
        lic = names.spdx_ids.get(m.group("spdx").lower())
        return (normalize_expression(lic), False) if lic else None
    if m.group("gnu"):
        fam = {"gpl": "GPL", "lgpl": "LGPL", "agpl": "AGPL", "fdl": "GFDL"}[m.group("gnu").lower()]
        # a versioned URL names one version and no "or later": the -only id; without a version, the family
        return _gnu_id(fam, m.group("gv"), False, True)
    if m.group("apache"):
        lic = {"1.0": "Apache-1.0", "1.1": "Apache-1.1", "2.0": "Apache-2.0"}.get(m.group("apache"))
        return (lic, False) if lic else None
    return None


def default_names() -> Names:
    """The references table of the rules directory in force."""
    from curate.util.assets import rules_dir

    return load_names(str(rules_dir() / "licenses" / "references.toml"))


def base(lic: str) -> str:
    """A licence without its GNU "only"/"or later" terms (`GPL-2.0-or-later` -> `GPL-2.0`), to compare readings."""
    return re.sub(r"-(?:or-later|only)$|\+$", "", lic)


def family_of(lic: str) -> str:
    """The family of a licence id: `GPL-2.0-or-later` -> `GPL`, `LicenseRef-BSD` -> `BSD`, `BSD-3-Clause` -> `BSD`."""
    return re.split(r"[-\s]", lic.removeprefix("LicenseRef-"), maxsplit=1)[0].upper()
