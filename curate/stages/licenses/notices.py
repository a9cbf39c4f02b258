"""Licence notices and markers in one document: GNU grants with version and "or later", well-known one-line grants,
SPDX-License-Identifier lines, Creative Commons URLs and names, rel="license" links, public-domain dedications,
copyright, "all rights reserved" and restrictive notices; `scan` joins them with the document's full texts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from curate.stages.licenses import references
from curate.stages.licenses.expressions import normalize_expression
from curate.stages.licenses.fulltext import FullText, TemplateIndex

PUBLIC_DOMAIN = "LicenseRef-Public-Domain"  # the licence of a public-domain dedication
# What a finding rests on (`license_signals.evidence`).
EVIDENCE = ("full_text", "notice", "spdx_identifier", "cc_url", "cc_name", "rel_license", "public_domain",
            "copyright_notice", "all_rights_reserved", "restrictive_notice", "reference")

SPDX_LINE = re.compile(r"SPDX-License-Identifier:[ \t]*([^\n\r]*?)[ \t]*(?:\*/|-->|#\}|\"\"\"|$)", re.M | re.I)
CC_URL = re.compile(r"creativecommons\.org/(?:licenses/(by(?:-nc)?(?:-sa|-nd)?)/(\d\.\d)"
                    r"|publicdomain/(zero|mark)/1\.0)", re.I)
CC_NAME = re.compile(
    r"\bCreative\s+Commons\s+(?:(?:Legal\s+Code\s+)?Attribution((?:[-\s]+(?:Non-?Commercial|Share-?Alike|"
    r"No-?Derivatives|No-?Derivs))*)\s+(\d\.\d)|Zero\s+v?1\.0|CC0\s+1\.0)"
    r"|\bCC[-\s]BY((?:-(?:NC|SA|ND))*)[-\s]+(\d\.\d)\b|\bCC0\b", re.I)
REL_LICENSE = re.compile(r"<(?:a|link)\b[^>]*\brel\s*=\s*[\"']?(?:[^\"'>]*\s)?license\b[^>]*>", re.I)
HREF = re.compile(r"\bhref\s*=\s*[\"']?([^\"'\s>]+)", re.I)
COPYRIGHT = re.compile(r"(?:\bcopyright\b\s*(?:\(c\)|©)?|©|\(c\))[ \t]*(?:\d{4}|\(c\)|©)[^\n]{0,160}", re.I)
ALL_RIGHTS = re.compile(r"\ball\s+rights\s+reserved\b", re.I)
RESTRICTIVE = re.compile(
    r"\b(?:proprietary\s+and\s+confidential|confidential\s+and\s+proprietary|(?:for\s+)?internal\s+use\s+only"
    r"|unauthori[sz]ed\s+(?:copying|reproduction|distribution|use)[^.\n]{0,80}prohibited"
    r"|no\s+part\s+of\s+this\s+(?:document|publication|book|work|file)[^.\n]{0,40}\s+may\s+be\s+reproduced)", re.I)
PUBLIC_DOMAIN_NOTICE = re.compile(
    r"\b(?:(?:released|placed|dedicated|put|is|are)\s+(?:hereby\s+)?(?:in|into|to)\s+the\s+public\s+domain"
    r"|public\s+domain\s+dedication)", re.I)
GNU = re.compile(
    r"\b(?:under|terms(?:\s+and\s+conditions)?(?:\s+of)?|licen[cs]ed\s+under|released\s+under|distributed\s+under"
    r"|covered\s+by)\s+(?:the\s+)?(?:terms\s+of\s+)?(?:(?:version|v\.?)\s*(\d(?:\.\d)?)\s+(?:of\s+)?(?:the\s+)?)?"
    r"GNU\s+(?:(Affero\s+|Lesser\s+|Library\s+)?General\s+Public|(Free\s+Documentation))\s+Licen[cs]e", re.I)
GNU_TAIL = re.compile(r"[^\n]*(?:\n(?![ \t]*\n)[^\n]*){0,4}")  # the rest of the paragraph, at most 5 lines
VERSION = re.compile(r"\b(?:version|v\.?)\s*(\d(?:\.\d)?)\b|\bGPL-?v?(\d(?:\.\d)?)\b", re.I)
LATER = re.compile(r"\bany\s+later\s+version\b|\bor\s+later\b|\bor\s+newer\b|\bor\s+any\s+later\b|\d\+", re.I)
REFERENCE = re.compile(r"common-licenses|can\s+be\s+found|complete\s+text|full\s+text|copy\s+of\s+the", re.I)
SHORT = [  # well-known one-line grants: (regex, SPDX expression with {} for group 1, literals that must occur)
    (re.compile(r"\bLicen[cs]ed\s+under\s+the\s+Apache\s+Licen[cs]e,?\s+(?:Version\s+)?2\.0\b", re.I), "Apache-2.0",
     ("apache",)),
    (re.compile(r"\bsubject\s+to\s+the\s+(?:terms\s+of\s+the\s+)?Mozilla\s+Public\s+Licen[cs]e,?\s+(?:Version|v\.?)\s*"
                r"(1\.[01]|2\.0)\b", re.I), "MPL-{}", ("mozilla",)),
    (re.compile(r"\bunder\s+the\s+same\s+terms\s+as\s+Perl\s+itself", re.I), "Artistic-1.0-Perl OR GPL-1.0-or-later",
     ("perl",)),
    (re.compile(r"\bLicen[cs]ed\s+under\s+the\s+(?:terms\s+of\s+the\s+)?MIT\s+licen[cs]e", re.I), "MIT",
     ("mit licen", "mit\nlicen")),
    (re.compile(r"\bApache\s+License\s+v2\.0\s+with\s+LLVM\s+Exceptions", re.I), "Apache-2.0 WITH LLVM-exception",
     ("llvm",)),
    (re.compile(r"\bterms\s+of\s+the\s+[\"']?Artistic\s+Licen[cs]e[\"']?(?!,?\s+(?:version\s+)?2)", re.I),
     "Artistic-1.0-Perl", ("artistic",)),
]
PREFILTER = (r"licen[cs]|copyright|\(c\)|©|spdx|creativecommons|creative commons|public domain|rights reserved"
             r"|permission|redistribut|warrant|proprietary|internal use|reproduced|rel=")
PD_LICENCES = {"CC0-1.0", "Unlicense", "CC-PDDC", "CC-PDM-1.0"}
SPDX_EXPRESSION = re.compile(r"[A-Za-z0-9.+\-:() ]{1,200}")
SPDX_GNU = {"": "GPL", "affero": "AGPL", "lesser": "LGPL", "library": "LGPL"}
GNU_VERSIONS = {"GPL": {"1", "2", "3"}, "LGPL": {"2", "2.1", "3"}, "AGPL": {"1", "3"}, "GFDL": {"1.1", "1.2", "1.3"}}
SENTENCE_END = re.compile(r"\.(?=\s)|\n[ \t]*\.?[ \t]*\n")
GNU_FAMILIES = ("GPL-", "LGPL-", "AGPL-", "GFDL-")
NO_INVARIANTS = re.compile(r"\bno\s+Invariant\s+Sections\b", re.I)
DEFAULT_GNU_VERSION = {"GPL": "1.0", "LGPL": "2.0", "AGPL": "3.0", "GFDL": "1.1"}  # "any version" starts here


def _matches(rx: re.Pattern, text: str, low: str, literals: tuple[str, ...], before: int = 0,
             after: int = 200) -> list[re.Match]:
    """rx's matches, searched only in windows around occurrences of cheap literals (str.find is ~100x faster than
    a regex scan; most documents hold none of the literals)."""
    hits = []
    for lit in literals:
        i = low.find(lit)
        while i >= 0:
            hits.append(i)
            i = low.find(lit, i + 1)
    if not hits:
        return []
    if len(low) != len(text):  # lower() changed lengths (rare scripts): offsets differ, search everything
        return list(rx.finditer(text))
    hits.sort()
    out, start, end = [], 0, -1
    for h in hits:
        s, e = max(h - before, 0), h + after
        if s <= end:  # extend the current window
            end = max(end, e)
            continue
        if end >= 0:
            out += rx.finditer(text, start, end)
        start, end = s, e
    out += rx.finditer(text, start, end)
    return out


def _cc_id(kind: str, version: str) -> str:
    return f"CC-{kind.upper()}-{version}"


def _cc_words(words: str) -> str:
    w = words.lower().replace("-", " ")
    return "BY" + ("-NC" if "commercial" in w else "") + ("-SA" if "share" in w else "") + \
        ("-ND" if "deriv" in w else "")


def _gnu_notices(text: str, low: str) -> list[tuple[str, int, int]]:
    """GNU GPL/LGPL/AGPL/GFDL grants with their version and "or later"; references to the full text are skipped,
    and so is an unversioned mention when the same document also grants a version of that licence."""
    out = []
    for m in _matches(GNU, text, low, ("gnu",), before=160, after=80):
        tail = GNU_TAIL.match(text, m.end()).group()
        tail = tail[:end.start()] if (end := SENTENCE_END.search(tail)) else tail
        sentence_start = max(text.rfind(".", 0, m.start()), text.rfind("\n\n", 0, m.start())) + 1
        if REFERENCE.search(text[sentence_start:m.start()]) or REFERENCE.search(tail[:60]):
            continue
        family = "GFDL" if m.group(3) else SPDX_GNU[(m.group(2) or "").strip().lower()]
        v = m.group(1)
        if not v and (vm := VERSION.search(tail[:200])):
            v = vm.group(1) or vm.group(2)
        if v is not None and v.removesuffix(".0") not in GNU_VERSIONS[family]:
            v = None  # e.g. "version 2.2 of Bison" after an exception text: not a licence version
        versioned = v is not None
        if family == "LGPL" and (m.group(2) or "").strip().lower() == "library" and v in (None, "2"):
            v = "2.0"
        v = v or DEFAULT_GNU_VERSION[family]
        v = v if "." in v else v + ".0"
        later = bool(LATER.search(tail[:300])) or not versioned
        if family == "GFDL" and NO_INVARIANTS.search(tail):
            v += "-no-invariants"
        out.append((f"{family}-{v}-{'or-later' if later else 'only'}", m.start(), m.end() + len(tail.rstrip()),
                    versioned))
    families = {lic.split("-")[0] for lic, _, _, versioned in out if versioned}
    return [(lic, s, e) for lic, s, e, versioned in out if versioned or lic.split("-")[0] not in families]


@dataclass(frozen=True)
class Finding:
    license: str | None
    evidence: str
    start: int
    end: int
    score: float
    form: str | None = None  # a reference's form (references.FORMS): dep5_field, statement, heading, badge, url, ...
    scope: str = "self"  # self, files (a DEP-5 paragraph naming files), mention (talked about, not granted)
    family: bool = False  # a family named without a version (LicenseRef-<family> or its least specific id)


def scan(text: str, index: TemplateIndex, full: list[FullText] | None = None,
         names: references.Names | None = None) -> list[Finding]:
    """Every licence finding in one document (no use class yet); `full` = its full texts when already searched,
    `names` the references table (default: the rules directory's)."""
    full = index.find(text) if full is None else full
    names = names or references.default_names()
    low = text.lower()
    found: list[Finding] = [Finding(f.license, "full_text", f.start, f.end, f.score) for f in full]
    notices = [Finding(lic, "notice", s, e, 0.9) for lic, s, e in _gnu_notices(text, low)]
    for rx, lic, literals in SHORT:
        notices += [Finding(lic.format(*m.groups()), "notice", m.start(), m.end(), 0.9)
                    for m in _matches(rx, text, low, literals, 80)]
    notices += [Finding(PUBLIC_DOMAIN, "public_domain", m.start(), m.end(), 0.8)
                for m in _matches(PUBLIC_DOMAIN_NOTICE, text, low, ("domain",), 60, 20)]
    for m in _matches(CC_NAME, text, low, ("creative", "cc-by", "cc by", "cc0"), 0, 160):
        if m.group(2):
            lic = _cc_id(_cc_words(m.group(1) or ""), m.group(2))
        elif m.group(4):
            lic = _cc_id("BY" + (m.group(3) or "").upper(), m.group(4))
        else:
            lic = "CC0-1.0"
        notices.append(Finding(lic, "cc_name", m.start(), m.end(), 0.9))
    # a notice inside a recognised full text is part of that text (e.g. the GPL's "How to apply" appendix)
    found += [n for n in notices if not any(f.start <= n.start and n.end <= f.end for f in full)]
    # a full GNU text next to a grant of the same version takes the grant's terms ("or later", no invariants)
    grants = {f.license.rsplit("-", 1)[0].removesuffix("-or"): f.license for f in found if f.evidence == "notice"
              and f.license and f.license.startswith(GNU_FAMILIES) and not f.license.endswith("-only")}
    grants |= {lic.split("-no-invariants")[0]: lic for lic in list(grants.values()) if "-no-invariants" in lic}
    refs = _references(names, text, low, found)
    # a DEP-5 field or a statement granting a GNU licence "or later" is a grant too, for the full text it names
    grants |= {references.base(r.license): r.license for r in refs if r.scope != "mention"
               and r.license.startswith(GNU_FAMILIES) and r.license.endswith("-or-later")
               and references.base(r.license) not in grants}
    found = [Finding(grants[f.license.removesuffix("-only")], f.evidence, f.start, f.end, f.score)
             if f.evidence == "full_text" and f.license.endswith("-only")
             and f.license.removesuffix("-only") in grants else f for f in found]
    for m in _matches(SPDX_LINE, text, low, ("spdx-license-identifier",), 0, 300):
        raw = m.group(1).strip()[:200]
        norm = normalize_expression(raw) if SPDX_EXPRESSION.fullmatch(raw) else None
        if norm:  # anything else after the tag is not an expression (prose, a string literal)
            found.append(Finding(norm, "spdx_identifier", m.start(), m.end(), 1.0))
    for m in _matches(CC_URL, text, low, ("creativecommons.org",), 0, 60):
        lic = _cc_id(m.group(1), m.group(2)) if m.group(1) else \
            ("CC0-1.0" if m.group(3).lower() == "zero" else "CC-PDM-1.0")
        found.append(Finding(lic, "cc_url", m.start(), m.end(), 1.0))
    for m in _matches(REL_LICENSE, text, low, ("license",), 300, 300):
        href = HREF.search(m.group())
        cc = CC_URL.search(href.group(1)) if href else None
        lic = None
        if cc:
            lic = _cc_id(cc.group(1), cc.group(2)) if cc.group(1) else \
                ("CC0-1.0" if cc.group(3).lower() == "zero" else "CC-PDM-1.0")
        found.append(Finding(lic, "rel_license", m.start(), m.end(), 1.0 if lic else 0.5))
    notices = [Finding(None, "copyright_notice", m.start(), m.end(), 1.0)
               for m in _matches(COPYRIGHT, text, low, ("copyright", "(c)", "©"), 0, 200)]
    notices += [Finding(None, "all_rights_reserved", m.start(), m.end(), 1.0)
                for m in _matches(ALL_RIGHTS, text, low, ("reserved",), 30, 10)]
    found += notices
    notes = [(n.start, n.end) for n in notices]
    for m in _matches(RESTRICTIVE, text, low, ("proprietary", "confidential", "internal use", "unauthori",
                                                "reproduced"), 120, 160):
        # "internal use only" also describes program options: it counts only next to a copyright notice
        if "internal" not in m.group().lower() or any(abs(m.start() - e) < 200 or abs(s - m.end()) < 200
                                                       for s, e in notes):
            found.append(Finding(None, "restrictive_notice", m.start(), m.end(), 1.0))
    found += _subsumed(refs, found)
    # in a DEP-5 paragraph, the `License:` field says which licence its files are under; the text below it is that
    # licence's text and the Comment its explanation (copyright-format 1.0), not further grants
    paras = [references.paragraph(text, f.start, f.end) for f in found
             if f.form == "dep5_field" and f.scope in ("files", "self")]
    if paras:
        found = [f for f in found if not f.license or f.form == "dep5_field"
                 or not any(a <= f.start < b for a, b in paras)]
    # "dedicated to the public domain" inside a CC0/Unlicense grant is that grant, not another licence
    if any(f.license in PD_LICENCES for f in found):
        found = [f for f in found if f.evidence != "public_domain"]
    return sorted(set(found), key=lambda f: (f.start, f.end, f.evidence, f.license or ""))


def _references(names: references.Names, text: str, low: str, found: list[Finding]) -> list[Finding]:
    """The document's references by name, less those inside a stronger finding (a name inside a full text, a GNU
    notice or an SPDX line is part of it)."""
    spans = [(f.start, f.end) for f in found if f.license]
    return [Finding(r.license, "reference", r.start, r.end, r.score, r.form, r.scope, r.family)
            for r in references.find(names, text, low)
            if not any(s < r.end and r.start < e for s, e in spans)]


def _subsumed(refs: list[Finding], found: list[Finding]) -> list[Finding]:
    """The references that say something the stronger findings do not. A granting reference gives way to a stronger
    finding of the same licence version (a notice's "or later" wins over a URL's bare version), a family named without
    a version to any versioned reading of that family, and among references the higher score wins the same way.
    Mentions are kept as they are: they grant nothing."""
    kept: list[Finding] = []
    granting = [f for f in found if f.license and f.scope != "mention"]
    spans = [(f.start, f.end) for f in found if f.license]  # SPDX lines and CC/rel links are found after the names
    for r in sorted(refs, key=lambda f: (-f.score, f.start)):
        if any(s < r.end and r.start < e for s, e in spans):
            continue
        if r.scope != "mention" and r.form != "dep5_field":  # a DEP-5 field decides its paragraph (below)
            rivals = granting + [k for k in kept if k.scope != "mention"]
            if any(references.base(o.license) == references.base(r.license) and o.license != r.license
                   for o in rivals) and r.evidence == "reference":
                continue
            if r.family and any(not o.family and references.family_of(o.license) == references.family_of(r.license)
                                for o in rivals + [x for x in refs if x.scope != "mention"]):
                continue
        kept.append(r)
    return kept


def expression(findings: list[Finding]) -> str | None:
    """One licence expression for a document: the distinct licences it grants (mentions left out) joined with AND
    (None when it has none)."""
    lics = sorted({f.license for f in findings if f.license and f.scope != "mention"})
    if not lics:
        return None
    return normalize_expression(" AND ".join(f"({x})" if " " in x else x for x in lics)) or " AND ".join(lics)
