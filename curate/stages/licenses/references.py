"""Licences named, not quoted: DEP-5 `License:` fields, statements ("licensed under the MIT License"), licence
headings, metadata fields, licence URLs and shields-style badges, each read as an SPDX expression with its form and
its scope (`self`: the document's own licence, `files`: a DEP-5 paragraph naming files, `mention`: a licence the
text only talks about). Names and Debian short names come from `rules/licenses/references.toml`.
"""

from __future__ import annotations

import bisect
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
VERSION = re.compile(r"(?:[ \t]*,?[ \t]*\n?[ \t]*\(?(?:[Vv]ersion|VERSION|[Vv]er\.?|[vV]\.?)[ \t]*"
                     r"|[ \t-]?[vV]?)(\d{1,2}(?:\.\d{1,2}){0,2}[a-c]?)"
                     r"(?![\w.]*\d)(?!\.\w)")  # "Apache License, Version 2.0", "GPL version 3", "GPLv2"
LATER = re.compile(r"[ \t]*(?:\+|-or-later\b|,?[ \t]*\(?or[ \t]+(?:\(at[ \t]+your[ \t]+option\)[ \t]+)?(?:any[ \t]+)?"
                   r"(?:later|newer|greater|higher|above)(?:[ \t]+versions?)?\)?)", re.I)
ONLY = re.compile(r"-only\b|[ \t]+only\b", re.I)
# A grant right before a name: "licensed under the terms of the", "released under", "License: ", "is under the"
GRANT_BEFORE = re.compile(
    r"(?:\b(?:licen[cs]ed|released|distributed|available|published|provided|offered|covered|governed|shared|"
    r"dual[\s-]licen[cs]ed|licen[cs]able)(?:\s+\w+){0,2}?\s+(?:under|by|as)|\b(?:is|are|be)\s+under|\bunder)"
    r"\s+(?:the\s+)?(?:(?:terms|conditions)\s+(?:and\s+conditions\s+)?of\s+(?:the\s+)?)?"
    r"(?:(?:an?\s+)?dual[\s-]licen[cs]e[\s,:;-]*)?(?:(?:an?|either|both)\s+(?:the\s+)?)?"
    r"(?:open[\s-]source\s+|permissive\s+|liberal\s+)?(?:licen[cs]e[\s,:]+)?\(?[\"'`*_\[]*$", re.I)
# "The project has an MIT open-source license", "comes with the Apache License 2.0": a grant only before a name that
# says "license" itself (checked in find), not before a bare family ("has the GPL" is talk about the GPL)
HAS_GRANT = re.compile(r"\b(?:has|have|comes\s+with|come\s+with|ships\s+with|carries)\s+(?:an?|the|its)\s+"
                       r"(?:own\s+)?[\"'`*_\[]*$", re.I)
# "Switched from LGPL to MIT license", "relicensed from the GPL to the Apache License": the licence after "to" is
# the one in force (the one after "from" is talk about the past, a mention)
RELICENSED = re.compile(r"\b(?:switch(?:ed|ing)?|chang(?:ed|ing)|mov(?:ed|ing)|migrat(?:ed|ing)|relicen[cs](?:ed|ing))"
                        r"\b[^.\n]{0,60}?\bfrom\b[^.\n]{1,80}?\bto\s+(?:the\s+)?[\"'`*_\[]*$", re.I)
LICENSE_WORD = re.compile(r"licen[cs]e", re.I)
# "Apache 2.0 License": the word after a name's version is part of the name ("license applies" is a grant after it)
LICENSE_AFTER = re.compile(r"[ \t]+licen[cs]e\b(?!\s+applies\b)", re.I)
# a grant over a list of licences, one per item below it: "Licensed under either of\n\n * Apache License, Version 2.0
# (...)\n * MIT license (...)\n\nat your option." (`OR` for either/any/one of, `AND` for both/all of)
LIST_GRANT = re.compile(r"\b(?:licen[cs]ed|released|distributed|available|provided)\s+under\s+(?:the\s+terms\s+of\s+)?"
                        r"(?P<q>either|any|one|both|all)\s+of(?:\s+the\s+following(?:\s+licen[cs]es)?)?"
                        r"[ \t]*:?[ \t]*\n", re.I)
LIST_ITEM = re.compile(r"[ \t]*(?:[-*+\u2022]|\d{1,2}[.)])[ \t]+[*_`\[]*")
# a link around a name: Markdown `[MIT License](LICENSE)`, reStructuredText `` `MIT license <url>`_ ``
LINK_TAIL = re.compile(r"\]\([^)\s]*\)|[ \t]*<[^>\s]*>`_{0,2}|`_{1,2}")
# for a name that is also an ordinary word ("Python", "MIT"), "under" alone is no grant ("runs under Python")
WEAK_GRANT = re.compile(r"licen[cs]|released|distributed|available|published|provided|offered|covered|governed", re.I)
GRANT_AFTER = re.compile(r"(?:\]\([^)\s]*\)|[ \t]*<[^>\s]*>`_{0,2})?[\"'`*_)]*[\s-]*"
                         r"(?:licen[cs]ed|licen[cs]e\s+applies)\b", re.I)
# Cues that the licence near them is talked about, not granted ("compatible with", "unlike", "such as", ...);
# "modules are", "packages are" speak of other components, while "this package is licensed under X" is a grant
CONTEXT = re.compile(
    r"\b(?:in)?compatib|\bunlike\b|\bsuch\s+as\b|\be\.g\.|\bfor\s+example\b|\blike\s+the\b|\bother\s+licen|"
    r"\binstead\s+of\b|\bversus\b|\bvs\.|\bcompar|\brather\s+than\b|\bnot\s+(?:be\s+)?(?:licen[cs]ed\s+)?under\b|"
    r"\bwhether\b|\bdependenc|\bthird[\s-]party\b|\bbundled?\b|\bvendored\b|\bderived\s+from\b|\bbased\s+on\b|"
    r"\bwe\s+(?:recommend|suggest)|\bif\s+you\s+"
    r"(?:want|wish|use)|\bchoose\b|\boriginally\b|\bformerly\b|\bprevious(?:ly)?\b|\bused\s+to\s+be\b|"
    r"\blist\s+of\b|\bapproved\b|\bplugins?\b|\bmodules\s+are\b|\bpackages\s+are\b|"
    r"\bno\s+requirement|\bnot\s+required|\bneed\s+not\b|\bdoes\s+not\s+need", re.I)
# Pointers to a licence's text ("the complete text of the GPL can be found in ..."): a mention when they lead to
# the name, not when they follow a grant ("licensed under the GPLv3 - see the LICENSE file for details",
# "distributed under the Apache License 2.0, which can be found in the LICENSE file")
POINTER = re.compile(
    r"\bcan\s+be\s+found|\bcomplete\s+text|\bfull\s+text|\bcopy\s+of\s+the|\bsee\s+(?:the\s+)?(?:\w+\s+){0,3}"
    r"(?:licen[cs]e\b|for\s+(?:more\s+)?details)|common-licenses", re.I)
MENTION = re.compile(f"{CONTEXT.pattern}|{POINTER.pattern}", re.I)
DUAL = re.compile(r"\bdual\b|\bdual[\s-]*licen|\bat\s+your\s+(?:option|choice)|\beither\b|\bchoice\s+of\b"
                  r"|\bmulti[\s-]licen", re.I)
HEADING = re.compile(r"^(?:#{1,6}[ \t]*(?:\W[ \t]*)?licen[cs](?:e|ing)\b[^\n]*|(?:\*\*|__)?licen[cs](?:e"
                     r"|ing)(?:\*\*|__)?"
                     r"[ \t]*:?[ \t]*\n[=\-~^*#]{3,}[ \t]*|\.\.[ \t]+rubric::[ \t]*licen[cs]e[^\n]*"
                     r"|(?:\*\*|__)licen[cs](?:e|ing)(?:\*\*|__)[ \t]*:?[ \t]*"
                     # a line holding the word alone, maybe emphasised or asked: "License", "*License?*", "LICENSE:"
                     r"|[ \t]*[*_]{0,2}licen[cs](?:e|ing)[?:]?[*_]{0,2}[ \t]*)$", re.I | re.M)
NEXT_HEADING = re.compile(r"^(?:#{1,6}[ \t]|[^\n]+\n[=\-~^]{3,}[ \t]*$)", re.M)
FIELD = re.compile(
    r"^[ \t]*[-*]?[ \t]*(?:\*\*|__)?(?:licen[cs]e(?:[-_]expression)?|licen[cs]e[-_ ]?type)(?:\*\*|__)?[ \t]*[:=]"
    r"(?:\*\*|__)?[ \t]*[\"'{\[]?[ \t]*(?:text[ \t]*=[ \t]*[\"'])?(?P<v>[^\n\"'}\]]{1,120}?)[\"'}\]]*[ \t]*,?[ \t]*$"
    r"|[\"']licen[cs]e[\"'][ \t]*:[ \t]*[\"'](?P<j>[^\"'\n]{1,120})[\"']"
    r"|\blicen[cs]e[ \t]*=[ \t]*[\"'](?P<k>[^\"'\n]{1,120})[\"']"
    # a table row of a README or model card: `| **License** | `MIT` |`
    r"|^[ \t]*\|[ \t]*(?:\*\*|__)?licen[cs]e(?:\*\*|__)?[ \t]*\|[ \t]*(?P<t>[^|\n]{1,120}?)[ \t]*\|", re.I | re.M)
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
LIST_SEP = re.compile(r"[\"'`*_\]]*[ \t]*(?:,[ \t]*(?:and|or)?|/|\band\b|\bor\b"
                      r"|\band/or\b)[ \t]+(?:the[ \t]+)?(?:terms[ \t]+"
                      r"of[ \t]+(?:the[ \t]+)?)?[\"'`*_\[]*$", re.I)
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
        # One regex over all names, written as a trie (`m(?:it(?:[\s_-]+licen[cs]e)?|pl)`) rather than 125
        # alternatives: Python's engine tries alternatives one by one at every position, the trie only the branch
        # of the next character. Measured on the benchmark's 1,822 documents: 0.10 s instead of 0.56 s, the same
        # matches (also on every /usr/share/doc/*/copyright). `lower` is for lower-cased text (no re.I: 0.10 s
        # against 0.16 s), `regex` for text whose lower-casing changes its length.
        names = {_norm(n) for n in set(self.families) | set(GNU_NAMES)}
        body = _trie(names)
        # a name ends at a non-letter, or where a version is glued on ("GPLv2", "GPL2")
        pattern = rf"(?<![\w/.@-])(?:{body})(?=[vV]?\d|[^\w]|_|$)(?!-[A-Za-z])"
        self.regex = re.compile(pattern, re.I)
        self.lower = re.compile(pattern)

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


def _trie(names: set[str]) -> str:
    """A regex matching any of these normalised names (words separated by spaces, "license" for both spellings),
    factored as a trie; at each node the deepest branch is tried first, so the longest name wins as it would in
    an alternation sorted longest first."""
    root: dict = {}
    for n in names:
        node = root
        for tok in re.findall(r"license|.", n, re.S):
            node = node.setdefault(tok, {})
        node[""] = {}

    def depth(node: dict) -> int:
        return 1 + max((depth(v) for k, v in node.items() if k), default=0)

    def piece(tok: str) -> str:
        if tok == "license":  # "an MIT open-source license" names the MIT License
            return r"(?:open[\s_-]*source[\s_-]+)?licen[cs]e"
        return r"[\s_-]+" if tok == " " else re.escape(tok)

    def emit(node: dict) -> str:
        alts = [piece(k) + emit(node[k]) for k in sorted((k for k in node if k), key=lambda k: (-depth(node[k]), k))]
        if not alts:
            return ""
        if "" in node:
            return "(?:" + "|".join(alts) + ")?"
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return emit(root)


def _norm(name: str) -> str:
    """A name as the table keys it: lower case, one space between words, "license", no "open-source" before it."""
    return re.sub(r"[\s_-]+", " ", name.lower().replace("licence", "license")).strip().replace(" open source license",
                                                                                             " license")


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
                return lic, False, (w.end() if (w := LICENSE_AFTER.match(text, vm.end())) else vm.end()), fam.strong
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
    if v is not None and (w := LICENSE_AFTER.match(text, end)):
        end = w.end()
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
    # Each pattern runs only where its literal occurs (str.find, ~100x faster than a regex scan), at the places a
    # match can start, and gives the matches a scan of the whole text would (see _field_matches, _starts_at);
    # lower-casing that changes the text's length (rare scripts) misaligns offsets: then the whole text is scanned.
    aligned = len(low) == len(text)
    refs = dep5_refs(names, text) if "License:" in text else []
    taken = [(r.start, r.end) for r in refs]
    # metadata fields outside DEP-5 paragraphs: `License: X`, `"license": "X"`, `license = "X"`
    if "licen" in low:
        for m in _field_matches(text, low) if aligned else FIELD.finditer(text):
            if any(s <= m.start() < e for s, e in taken):
                continue
            got = value_license(names, next(v for v in m.group("v", "j", "k", "t") if v is not None))
            if got:
                refs.append(Ref(got[0], "metadata", "self", m.start(), m.end(), got[1]))
                taken.append((m.start(), m.end()))
    if "shields.io/badge/" in low:
        for m in BADGE.finditer(text):
            parts = [p.replace("\0", "-").replace("_", " ")
                     for p in unquote(m.group("b").replace("--", "\0")).split("-")]
            if len(parts) >= 2 and (got := value_license(names, parts[1])):
                refs.append(Ref(got[0], "badge", scope_at(text, m.start(), m.end()), m.start(), m.end(), got[1]))
                taken.append((m.start(), m.end()))
    badges = _starts_at(BADGE_ALT, text, _finds(text, "![") + _finds(low, "image::")) if aligned \
        else BADGE_ALT.finditer(text)
    for m in badges:
        alt = (m.group("alt") or m.group("ralt") or "").strip()
        alt = re.sub(r"(?i)^licen[cs]e\s*[:-]?\s*", "", alt)
        if not any(s <= m.start() < e for s, e in taken) and (got := value_license(names, alt)):
            refs.append(Ref(got[0], "badge", scope_at(text, m.start(), m.end()), m.start(), m.end(), got[1]))
            taken.append((m.start(), m.end()))
    for m in _url_matches(text, low) if aligned else URLS.finditer(text):
        got = _url_license(names, m)
        if got and not any(s <= m.start() < e for s, e in taken):
            refs.append(Ref(got[0], "url", scope_at(text, m.start(), m.end()), m.start(), m.end(), got[1]))
    heads = _headed(text) if "licen" in low else []
    named: list[tuple[int, int, str, bool, bool]] = []
    for m in names.lower.finditer(low) if aligned else names.regex.finditer(text):
        if any(s <= m.start() < e for s, e in taken) or _in_url(text, m.start()):
            continue
        got = read_name(names, text, m)
        if got:
            named.append((m.start(), got[2], got[0], got[1], got[3]))
    url_starts = sorted(r.start for r in refs if r.form == "url")
    linked: set[int] = set()  # starts of URL references that are link targets of a name
    if any(q in low for q in ("either of", "any of", "one of", "both of", "all of")):
        named = _listed(text, named, refs, url_starts, linked)
    i = 0
    while i < len(named):
        s, e, lic, family, strong = named[i]
        before = text[max(0, s - 120):s]
        g = GRANT_BEFORE.search(before)
        if g is not None and not strong and not WEAK_GRANT.search(g.group()):
            g = None
        if g is None and strong:
            g = RELICENSED.search(before) or (HAS_GRANT.search(before) if LICENSE_WORD.search(text, s, e) else None)
        # names listed together: "dual-licensed under the MIT and Apache 2.0 licenses", "[BSD](LICENSE) and
        # [GPLv2](COPYING) licensed" are one expression, granted before the first name or after the last
        k = i
        while k + 1 < len(named) and len(sep := LINK_TAIL.sub("", text[named[k][1]:named[k + 1][0]])) <= 12 \
                and LIST_SEP.fullmatch(sep.replace("\n", " ")):
            k += 1
        after = GRANT_AFTER.match(text, named[k][1])
        grant = g is not None or after is not None or text[s:e].lower().endswith("licensed")  # "BSD-licensed"
        # in a licence section, a name counts as the answer when it comes first ("## License\n\nMIT")
        in_head = any(a <= s < b and HEAD_LEAD.fullmatch(text, a, s) for a, b in heads)
        if not (grant or in_head or strong):
            i += 1
            continue
        group = named[i:k + 1]
        i = k + 1
        sent = _sentence(text, s, group[-1][1])
        form = "statement" if grant else "heading" if in_head else "statement"
        scope = "self" if grant or in_head else "mention"
        # a cue near the grant makes it a mention ("is compatible with code licensed under the GPL"); a cue in
        # another clause of the sentence does not ("to maximise compatibility with X, this code is licensed ...")
        lo = max(sent[0], (s - 120 + g.start() if g is not None else s) - 40)
        if scope == "self" and (CONTEXT.search(text[lo:min(sent[1], group[-1][1] + 40)])
                                or POINTER.search(text[lo:s] if g is not None else text[lo:min(sent[1],
                                                                                        group[-1][1] + 40)])):
            scope = "mention"
        # a licence URL that is the link target of a name ("[MIT License](https://opensource.org/licenses/MIT)")
        # is part of that name's reference, not a reference of its own
        if url_starts:
            last = (tail.end() if (tail := LINK_TAIL.match(text, group[-1][1])) else group[-1][1])
            linked.update(url_starts[bisect.bisect_left(url_starts, s):bisect.bisect_left(url_starts, last)])
        if len(group) > 1:
            between = " ".join(text[a[1]:b[0]].lower() for a, b in zip(group, group[1:], strict=False))
            joiner = " OR " if "or" in between.split() or DUAL.search(text[sent[0]:sent[1]]) else " AND "
            expr = normalize_expression(joiner.join(f"({g[2]})" if " " in g[2] else g[2] for g in group))
            if expr:
                refs.append(Ref(expr, form, scope, s, group[-1][1], any(g[3] for g in group)))
            continue
        refs.append(Ref(lic, form, scope, s, e, family))
    return [r for r in refs if r.form != "url" or r.start not in linked] if linked else refs


def _listed(text: str, named: list[tuple], refs: list[Ref], url_starts: list[int], linked: set[int]) -> list[tuple]:
    """Grants over a list of licences (LIST_GRANT): one reference per list, from the first name of each item; those
    names leave `named`, and licence URLs on the items' lines (where to find each text) join `linked`."""
    used: set[int] = set()
    for lm in LIST_GRANT.finditer(text):
        items: list[tuple] = []
        pos = lm.end()
        while pos < len(text):
            eol = text.find("\n", pos)
            eol = len(text) if eol < 0 else eol
            if not text[pos:eol].strip():
                if items:  # a blank line after the items ends the list
                    break
                pos = eol + 1
                continue
            item = LIST_ITEM.match(text, pos, eol)
            first = next((x for x in named if x[0] == item.end()), None) if item else None
            if first is None:
                break
            items.append(first)
            linked.update(url_starts[bisect.bisect_left(url_starts, first[1]):bisect.bisect_left(url_starts, eol)])
            pos = eol + 1
        if not items:
            continue
        joiner = " AND " if lm.group("q").lower() in ("both", "all") else " OR "
        expr = normalize_expression(joiner.join(f"({x[2]})" if " " in x[2] else x[2] for x in items))
        if expr:
            sent = _sentence(text, lm.start(), lm.end())
            scope = "mention" if CONTEXT.search(text[sent[0]:lm.end()]) else "self"
            refs.append(Ref(expr, "statement", scope, items[0][0], items[-1][1], any(x[3] for x in items)))
            used.update(x[0] for x in items)
    return [x for x in named if x[0] not in used] if used else named


def _finds(hay: str, lit: str) -> list[int]:
    """Every position of a literal."""
    out, i = [], hay.find(lit)
    while i >= 0:
        out.append(i)
        i = hay.find(lit, i + 1)
    return out


def _starts_at(rx: re.Pattern, text: str, starts: list[int]) -> list[re.Match]:
    """What rx.finditer(text) gives when every match of rx can only start at one of `starts` (its alternatives all
    begin with a literal found there): leftmost, non-overlapping."""
    out: list[re.Match] = []
    last = 0
    for h in sorted(set(starts)):
        if h >= last and (m := rx.match(text, h)):
            out.append(m)
            last = max(m.end(), h + 1)
    return out


def _field_matches(text: str, low: str) -> list[re.Match]:
    """FIELD's matches: each lies within one line that holds "licen", so only those lines are scanned."""
    out: list[re.Match] = []
    i = low.find("licen")
    while i >= 0:
        a = low.rfind("\n", 0, i) + 1
        b = low.find("\n", i)
        b = len(low) if b < 0 else b
        out += FIELD.finditer(text, a, b)  # `^`/`$` hold at a line's real start and end
        i = low.find("licen", b)
    return out


URL_DOMAINS = ("opensource.org/licen", "spdx.org/licenses/", "gnu.org/licenses/", "gnu.org/copyleft/",
               "apache.org/licenses/license-")


def _url_matches(text: str, low: str) -> list[re.Match]:
    """URLS's matches, tried only where a licence URL's domain occurs, from its leftmost possible start (the
    optional `https://` and `www.` before it)."""
    starts = []
    for lit in URL_DOMAINS:
        for h in _finds(low, lit):
            h -= 4 if h >= 4 and low.startswith("www.", h - 4) else 0
            h -= 8 if h >= 8 and low.startswith("https://", h - 8) else \
                7 if h >= 7 and low.startswith("http://", h - 7) else 0
            starts.append(h)
    return _starts_at(URLS, text, starts)


URL_CHARS = re.compile(r"[^\s)\]>\"']*")


def _in_url(text: str, pos: int) -> bool:
    """Whether pos lies inside a URL (URL_TOKEN): URLs hold none of whitespace and `)]>"'`, so only the run of
    other characters around pos is scanned, at most 400 characters either side (a minified file is one long run:
    scanning all of it for each name would be quadratic)."""
    a = pos
    lo = max(0, pos - 400)
    while a > lo and text[a - 1] not in " \t\n\r\f\v)]>\"'":
        a -= 1
    b = URL_CHARS.match(text, pos, pos + 400).end()
    if "/" not in text[a:b] and "www." not in text[a:b].lower():
        return False
    return any(u.start() <= pos < u.end() for u in URL_TOKEN.finditer(text, a, b))


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
