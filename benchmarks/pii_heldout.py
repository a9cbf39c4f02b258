"""A labelled personal-data set from real text on this machine other than data/samples (benchmarks/pii_quality.py).

Four sources, each labelled span by span from the structure its format gives a name or an address, never by
the detector under test:
  changelog:  /usr/share/doc/*/changelog.Debian.gz, one entry per case (header to trailer). Debian Policy 4.4
              fixes the trailer: ` -- Name <mail>  date`: Name is a PERSON, mail an EMAIL_ADDRESS; a team
              upload's `  [ Name ]` line holds a PERSON. Scored lines: the header, `[ ... ]` lines, the trailer.
  copyright:  /usr/share/doc/*/copyright lines `Copyright[:] [(C)] YEARS Name <mail>`: Name a PERSON, mail an
              EMAIL_ADDRESS. Scored line: that line (its neighbours given as context).
  metadata:   .venv/lib/python3.11/site-packages/*.dist-info/METADATA fields `Author:`, `Maintainer:` (the
              value a PERSON) and `Author-email:`/`Maintainer-email:` (`Name <mail>`: PERSON and EMAIL_ADDRESS).
              Scored lines: those fields.
  manpage:    the AUTHOR(S) sections of /usr/share/man/man1/*.gz (roff source; font escapes, `\\-` and macros
              stripped to plain text): an address in `<...>` is an EMAIL_ADDRESS; a PERSON is any occurrence of a
              name of the gazetteer built from the three sources above (names their formats label), so a name
              the gazetteer lacks is not labelled. Scored lines: those holding a gazetteer name.
Values that are not a person's name by the format's own words are left out of every source (a value holding
Team, Project, Foundation, Inc., Debian, ... : the list below), as are entries whose trailer or line also
occurs in data/samples. Files are read in sorted order; `limit` caps each source, taking every n-th case.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
TEAM = re.compile(r"(?i)\b(?:team|maintainers?|project|force|group|foundation|inc|ltd|llc|gmbh|corp|corporation"
                  r"|company|developers?|packagers?|list|janitor|bot|support|security|qa|debian|ubuntu|gnu|software"
                  r"|university|institute|contributors|authors|community|consortium|systems|technologies|labs?"
                  r"|the|and|others|et al|python|org)\b|[@/:]|\d")
HEADER = re.compile(r"^\S+ \([^)\n]+\) [^\n;]+; [^\n]*$", re.M)
TRAILER = re.compile(r"^ -- (?P<name>[^<>\n]+?) <(?P<email>[^<>\s@]+@[^<>\s@]+)>  (?P<date>[^\n]+)$", re.M)
TEAM_LINE = re.compile(r"^[ \t]*\[ (?P<name>[^\[\]\n]+?) \][ \t]*$", re.M)
COPYRIGHT = re.compile(r"^[ \t]*(?:Copyright:?)?[ \t]*(?i:copyright)?[ \t]*(?:\([Cc]\)|\u00a9)?[ \t]*"
                       r"(?:\d{4}(?:[ \t]*[-\u2013,][ \t]*\d{2,4})*,?[ \t]+)+(?P<name>[^<>\n,]+?)[ \t]+"
                       r"<(?P<email>[^<>\s@]+@[^<>\s@]+\.[^<>\s@]+)>[ \t]*$", re.M)
FIELD = re.compile(r"^(?P<key>Author|Maintainer)(?P<mail>-email)?: (?P<value>[^\n]+)$", re.M)
BARE_MAIL = re.compile(r"(?<![<\w.+\-])[\w.+\-]+@[\w\-]+\.[\w.\-]+(?![>\w])")
NAME_MAIL = re.compile(r"\"?(?P<name>[^<>,\"]+?)\"?[ \t]*<(?P<email>[^<>\s@]+@[^<>\s@]+)>")


def names_in(value: str, at: int) -> list[tuple[str, int, int]]:
    """PERSON spans of a metadata name list ('A B, C D', 'A B and C D'); a single word is a handle or a company
    ('Explosion', 'Pallets', 'Delgan'), not labelled."""
    out = []
    for part in re.finditer(r"[^,]+?(?=,|\s+and\s+|$)", value):
        name = re.sub(r"^and\s+", "", part.group().strip())
        if name and personal(name) and " " in name:
            s = at + part.start() + part.group().index(name)
            out.append(("PERSON", s, s + len(name)))
    return out


def personal(name: str, lower_ok: bool = False) -> bool:
    """A person's name by the format's words: not a team or company; capitalised, unless the format says the
    field is a name (a changelog's trailer or team line: 'gregor herrmann')."""
    return (bool(name.strip()) and len(name) <= 60 and not TEAM.search(name)
            and (lower_ok or any(c.isupper() for c in name)))


def name_only(value: str, at: int) -> tuple[int, int] | None:
    """The span of the name in a field value: a leading 'by ', a trailing ' (nickname)' and ' <mail>' left out
    ('by Stephen L. Moshier', 'Davide Puricelli (evo)', 'Shani Yosef <shani.yosef@...>')."""
    m = re.match(r"(?:by[ \t]+)?(?P<name>.+?)(?:[ \t]*\([^()]*\))?(?:[ \t]*<[^<>]*>)?[ \t]*$", value)
    return (at + m.start("name"), at + m.end("name")) if m else None


def _sample_text() -> str:
    import json

    return "\n".join(json.loads(line)["text"] for line in (SAMPLES / "changelogs.jsonl").read_text().splitlines())


def _every(items: list, limit: int) -> list:
    step = max(1, len(items) // limit) if limit else 1
    return items[::step][:limit] if limit else items


def changelog(limit: int) -> list[tuple[str, list[tuple[int, int]], list[tuple[str, int, int]]]]:
    seen = _sample_text()
    out = []
    for path in sorted(Path("/usr/share/doc").glob("*/changelog.Debian.gz")):
        try:
            text = gzip.open(path, "rt", encoding="utf-8").read()
        except (OSError, UnicodeDecodeError):
            continue
        starts = [m.start() for m in HEADER.finditer(text)] + [len(text)]
        for a, b in zip(starts, starts[1:], strict=False):
            entry = text[a:b].rstrip("\n") + "\n"
            m = TRAILER.search(entry)
            if not m or not personal(m["name"], lower_ok=True) or m.group() in seen:
                continue
            scope = [(0, entry.index("\n")), m.span()]
            truth = [("PERSON", *m.span("name")), ("EMAIL_ADDRESS", *m.span("email"))]
            for t in TEAM_LINE.finditer(entry):
                scope.append(t.span())
                span = name_only(t["name"], t.start("name"))
                if span and personal(entry[span[0]:span[1]], lower_ok=True):
                    truth.append(("PERSON", *span))
            out.append((entry, scope, truth))
            break  # the newest entry of each package: one case per file
    return _every(out, limit)


def copyright_lines(limit: int) -> list:
    out = []
    for path in sorted(Path("/usr/share/doc").glob("*/copyright")):
        try:
            lines = path.read_text(encoding="utf-8").split("\n")
        except (OSError, UnicodeDecodeError):
            continue
        for i, line in enumerate(lines):
            m = COPYRIGHT.match(line)
            if not m or not personal(m["name"]):
                continue
            before = "\n".join(lines[max(0, i - 2):i])
            text = (before + "\n" if before else "") + line + "\n" + "\n".join(lines[i + 1:i + 3]) + "\n"
            at = len(before) + 1 if before else 0
            span = name_only(m["name"], at + m.start("name"))
            if span is None or not personal(text[span[0]:span[1]]):
                continue
            truth = [("PERSON", *span), ("EMAIL_ADDRESS", at + m.start("email"), at + m.end("email"))]
            out.append((text, [(at, at + len(line))], truth))
            break  # one line per file
    return _every(out, limit)


def metadata(limit: int) -> list:
    out = []
    root = Path(__file__).resolve().parent.parent / ".venv" / "lib" / "python3.11" / "site-packages"
    for path in sorted(root.glob("*.dist-info/METADATA")):
        head = path.read_text(encoding="utf-8", errors="replace").split("\n\n", 1)[0] + "\n"
        scope, truth = [], []
        for m in FIELD.finditer(head):
            scope.append(m.span())
            if m["mail"]:
                for p in BARE_MAIL.finditer(m["value"]):  # 'Author-email: core@pytest.org'
                    truth.append(("EMAIL_ADDRESS", m.start("value") + p.start(), m.start("value") + p.end()))
                for p in NAME_MAIL.finditer(m["value"]):
                    at = m.start("value")
                    truth.append(("EMAIL_ADDRESS", at + p.start("email"), at + p.end("email")))
                    truth += names_in(p["name"], at + p.start("name"))
            else:  # 'Author: Brian E. Granger, Min Ragan-Kelley': each name of a list
                truth += names_in(m["value"], m.start("value"))
        if scope:
            out.append((head, scope, truth))
    return _every(out, limit)


ROFF = [(re.compile(r"\\f[BIRP]|\\f\(..|\\&|\\c"), ""), (re.compile(r"\\-"), "-"), (re.compile(r"\\\(em|\\\(en"), "-"),
        (re.compile(r"\\\(aq"), "'"), (re.compile(r"\\\(co"), "(C)"), (re.compile(r"\\[ ~]"), " "),
        (re.compile(r"^\.(?:B|I|BR|IR|RB|RI|BI|IB|SM)\s+", re.M), ""),
        (re.compile(r"^\.(?:PP|LP|P|br|sp|TP|IP)\b.*$", re.M), ""),
        (re.compile(r"^\.\\\".*$", re.M), ""), (re.compile(r"\n{2,}"), "\n")]
AUTHOR_SECTION = re.compile(r"^\.SH\s+\"?AUTHORS?\"?\s*\n(?P<body>.*?)(?=^\.SH|\Z)", re.M | re.S)
EMAIL_IN_BRACKETS = re.compile(r"<(?P<email>[\w.+\-]+@[\w\-]+\.[\w.\-]+)>")


def manpages(limit: int, gazetteer: set[str]) -> list:
    names = sorted((n for n in gazetteer if " " in n), key=len, reverse=True)
    pattern = re.compile(r"(?<![\w])(?:" + "|".join(re.escape(n) for n in names) + r")(?![\w])") if names else None
    out = []
    for path in sorted(Path("/usr/share/man/man1").glob("*.gz")):
        try:
            src = gzip.open(path, "rt", encoding="utf-8").read()
        except (OSError, UnicodeDecodeError, EOFError):
            continue
        m = AUTHOR_SECTION.search(src)
        if not m or pattern is None:
            continue
        body = m["body"]
        for rx, rep in ROFF:
            body = rx.sub(rep, body)
        text = body.strip("\n") + "\n"
        if not text.strip() or "\\" in text or text.lstrip().startswith("."):
            continue
        truth = [("PERSON", p.start(), p.end()) for p in pattern.finditer(text)]
        if not truth:
            continue
        truth += [("EMAIL_ADDRESS", e.start("email"), e.end("email")) for e in EMAIL_IN_BRACKETS.finditer(text)]
        scope = []
        pos = 0
        for line in text.split("\n"):
            if any(pos <= s < pos + len(line) for k, s, _ in truth if k == "PERSON"):
                scope.append((pos, pos + len(line)))
            pos += len(line) + 1
        truth = [t for t in truth if any(a <= t[1] < b for a, b in scope)]  # an address on another line: out
        out.append((text, scope, truth))
    return _every(out, limit)


def build(limit: int) -> dict[str, list]:
    """{source: [(text, scored line spans, [(type, start, end)])]}"""
    sets = {"changelog": changelog(limit), "copyright": copyright_lines(limit), "metadata": metadata(limit)}
    gazetteer = {text[s:e] for cases in sets.values() for text, _, truth in cases for k, s, e in truth
                 if k == "PERSON"}
    sets["manpage"] = manpages(limit, gazetteer)
    return sets


if __name__ == "__main__":
    for source, cases in build(200).items():
        labels = sum(len(t) for _, _, t in cases)
        print(f"{source:<10} {len(cases):>4} cases {labels:>5} labels")
