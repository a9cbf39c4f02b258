#!/usr/bin/env python3
"""Write the licence templates in rules/licenses/templates/ from public licence texts (run once; output is committed).

Sources, both offline once fetched: Debian's /usr/share/common-licenses (package base-files) and the SPDX licence
texts as packaged by the npm package spdx-license-list 6.12.0 (`npm pack spdx-license-list@6.12.0`, then pass the
unpacked `package/licenses` directory). Licence files of installed Python packages and Debian copyright files are
NOT used: they are the test set of benchmarks/licenses.py.

A template is the licence text with copyright lines removed and holder names that vary between copies replaced by
`<<var>>` (a token that never matches). `index.toml` lists every template with its SPDX id, source and SHA-256.

    python3 scripts/build_license_templates.py --spdx /tmp/spdxlist/package/licenses
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "rules" / "licenses" / "templates"

DEBIAN = {  # file in /usr/share/common-licenses -> (SPDX id, variant)
    "Apache-2.0": ("Apache-2.0", ""), "Artistic": ("Artistic-1.0-Perl", ""), "BSD": ("BSD-3-Clause", "regents"),
    "CC0-1.0": ("CC0-1.0", ""), "GFDL-1.2": ("GFDL-1.2-only", ""), "GFDL-1.3": ("GFDL-1.3-only", ""),
    "GPL-1": ("GPL-1.0-only", ""), "GPL-2": ("GPL-2.0-only", ""), "GPL-3": ("GPL-3.0-only", ""),
    "LGPL-2": ("LGPL-2.0-only", ""), "LGPL-2.1": ("LGPL-2.1-only", ""), "LGPL-3": ("LGPL-3.0-only", ""),
    "MPL-1.1": ("MPL-1.1", ""), "MPL-2.0": ("MPL-2.0", ""),
}
CC = [f"CC-BY{s}-{v}" for v in ("1.0", "2.0", "2.5", "3.0", "4.0")
      for s in ("", "-SA", "-NC", "-ND", "-NC-SA", "-NC-ND")]
SPDX = {  # SPDX id in the npm package -> SPDX id we report (current, non-deprecated form)
    "MIT": "MIT", "MIT-0": "MIT-0", "X11": "X11", "MIT-CMU": "MIT-CMU", "BSD-2-Clause": "BSD-2-Clause",
    "BSD-3-Clause": "BSD-3-Clause", "BSD-4-Clause": "BSD-4-Clause", "BSD-4-Clause-UC": "BSD-4-Clause-UC",
    "BSD-1-Clause": "BSD-1-Clause", "0BSD": "0BSD", "ISC": "ISC", "Zlib": "Zlib", "Unlicense": "Unlicense",
    "AGPL-3.0": "AGPL-3.0-only", "Artistic-1.0": "Artistic-1.0", "Artistic-2.0": "Artistic-2.0",
    "BSL-1.0": "BSL-1.0", "PSF-2.0": "PSF-2.0", "Python-2.0": "Python-2.0", "OFL-1.1": "OFL-1.1",
    "Unicode-DFS-2016": "Unicode-DFS-2016", "Unicode-3.0": "Unicode-3.0", "WTFPL": "WTFPL",
    "PostgreSQL": "PostgreSQL", "OpenSSL": "OpenSSL", "curl": "curl", "Libpng": "Libpng", "NCSA": "NCSA",
    "ZPL-2.1": "ZPL-2.1", "EPL-1.0": "EPL-1.0", "EPL-2.0": "EPL-2.0", "CDDL-1.0": "CDDL-1.0", "HPND": "HPND",
    "AFL-2.1": "AFL-2.1", "OLDAP-2.8": "OLDAP-2.8", "bzip2-1.0.6": "bzip2-1.0.6", "ICU": "ICU",
    "Apache-1.1": "Apache-1.1", "CC-PDDC": "CC-PDDC", "FSFAP": "FSFAP", "FSFULLR": "FSFULLR",
    "EUPL-1.2": "EUPL-1.2", "GFDL-1.1": "GFDL-1.1-only", "Vim": "Vim", "Beerware": "Beerware",
    "UPL-1.0": "UPL-1.0", "MPL-1.0": "MPL-1.0", "CPL-1.0": "CPL-1.0", "SGI-B-2.0": "SGI-B-2.0",
    "LPPL-1.3c": "LPPL-1.3c", "BlueOak-1.0.0": "BlueOak-1.0.0", "Unicode-TOU": "Unicode-TOU",
    **{c: c for c in CC},
    # other SPDX licences common in Debian and PyPI
    **{k: k for k in (
        "Latex2e", "TCL", "NTP", "MS-PL", "SMAIL-GPL", "Bitstream-Vera", "Sleepycat", "FTL", "GD", "Xfig",
        "Spencer-86", "Spencer-94", "Spencer-99", "Kazlib", "SWL", "AFL-2.0", "libutil-David-Nugent",
        "HPND-sell-variant", "MIT-Modern-Variant", "MIT-open-group", "ISC-Veillard", "Info-ZIP", "IJG", "libtiff",
        "PHP-3.01", "Ruby", "BSD-Source-Code", "CNRI-Python", "OFL-1.0", "W3C", "W3C-20150513", "JSON",
        "Unicode-DFS-2015", "TCP-wrappers", "MirOS", "BSD-2-Clause-Patent", "BSD-3-Clause-Clear",
        "BSD-3-Clause-LBNL", "Sendmail", "BSD-4.3TAHOE", "X11-distribute-modifications-variant", "Apache-1.0",
        "SSLeay-standalone", "MIT-advertising", "MIT-enna", "MIT-feh", "HPND-sell-variant-MIT-disclaimer",
        "BSD-3-Clause-Attribution", "ECL-2.0", "EFL-2.0", "Intel", "LPL-1.02", "dtoa", "Boehm-GC", "bzip2-1.0.5",
        "MS-RL", "Artistic-dist", "RSA-MD", "Linux-man-pages-copyleft",
    )},
}
# Words naming the licensor inside some texts; real copies put their own name there.
# SPDX marks them replaceable (<alt> in its XML templates, which the npm package drops).
BSD_HOLDERS = [("THE COPYRIGHT HOLDERS AND CONTRIBUTORS", "<<var>>"),
               ("THE COPYRIGHT HOLDER OR CONTRIBUTORS", "<<var>>"), ("the copyright holder", "<<var>>")]
HOLDERS = {
    "ISC": [("ISC DISCLAIMS", "<<var>> DISCLAIMS"), ("SHALL ISC BE", "SHALL <<var>> BE")],
    "BSD-2-Clause": BSD_HOLDERS, "BSD-3-Clause": BSD_HOLDERS,
    "BSD-4-Clause": [("<copyright holder>", "<<var>>"), ("COPYRIGHT HOLDER", "<<var>>"),
                     ("the organization", "<<var>>"), ("the copyright holder", "<<var>>")],
    "X11": [("X CONSORTIUM", "<<var>>"), ("X Consortium", "<<var>>")],
    "MIT": [("THE AUTHORS OR COPYRIGHT HOLDERS", "<<var>>")],
    "MIT-CMU": [("THE COPYRIGHT HOLDER", "<<var>>"), ("the copyright holder", "<<var>>")],
}
# A first line that only names the licence ("MIT License", "ISC License:"): copies often leave it out.
TITLE = re.compile(r"\A[ \t]*[^\n.]{0,70}\blicen[cs]e\b[^\n.]{0,30}:?[ \t]*\n", re.I)
COPYRIGHT_LINE = re.compile(r"(?im)^[ \t#*/]*(?:copyright\b|\(c\)|©).*\n?(?:[ \t]*all rights reserved\.?[ \t]*\n)?")


# Parts SPDX's templates mark <<beginOptional>> (copies often leave them out): appendices on how to apply a licence,
# MIT-CMU's preamble.
HOW_TO_APPLY = r"(?:Appendix: )?How to Apply These Terms to Your New (?:Programs|Libraries).*"
OPTIONAL = {
    "Apache-2.0": r"APPENDIX: How to apply the Apache License to your work\..*",
    **{k: HOW_TO_APPLY for k in ("GPL-1.0-only", "GPL-2.0-only", "GPL-3.0-only", "LGPL-2.0-only", "LGPL-2.1-only",
                                  "AGPL-3.0-only")},
    **{k: r"ADDENDUM: How to use this License for your documents.*"
       for k in ("GFDL-1.1-only", "GFDL-1.2-only", "GFDL-1.3-only")},
    "MIT-CMU": r"By obtaining, using, and/or copying this software and/or its associated documentation, you agree "
               r"that you have read, understood, and will comply with the following terms and conditions:",
}


def template_text(spdx_id: str, text: str) -> str:
    text = text.replace("\r\n", "\n")
    for old, new in HOLDERS.get(spdx_id, []):
        text = text.replace(old, new)
    text = re.sub(r"<(?!<)[^<>\n]{1,60}>(?!>)", "<<var>>", text)  # SPDX placeholders such as <year> <owner>
    text = TITLE.sub("", COPYRIGHT_LINE.sub("", text).strip()).strip()
    if spdx_id in OPTIONAL:
        text, n = re.subn(OPTIONAL[spdx_id], lambda m: f"<<beginOptional>>{m.group()}<<endOptional>>", text,
                          count=1, flags=re.S)
        assert n == 1, spdx_id
    return text + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spdx", required=True, type=Path, help="the `licenses` directory of spdx-license-list 6.12.0")
    ap.add_argument("--debian", default=Path("/usr/share/common-licenses"), type=Path)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*.txt"):
        old.unlink()
    entries = []

    def write(spdx_id: str, variant: str, text: str, source: str) -> None:
        name = spdx_id + (f"~{variant}" if variant else "") + ".txt"
        body = template_text(spdx_id, text)
        (OUT / name).write_text(body, encoding="utf-8")
        entries.append((name, spdx_id, source, hashlib.sha256(body.encode()).hexdigest()))

    for fname, (spdx_id, variant) in sorted(DEBIAN.items()):
        write(spdx_id, variant, (args.debian / fname).read_text(encoding="utf-8"),
              f"debian base-files /usr/share/common-licenses/{fname}")
    debian_ids = {v[0] for v in DEBIAN.values() if not v[1]}
    for key, spdx_id in sorted(SPDX.items()):
        path = args.spdx / f"{key}.json"
        if spdx_id in debian_ids or not path.exists():
            continue
        write(spdx_id, "", json.loads(path.read_text(encoding="utf-8"))["licenseText"],
              f"npm spdx-license-list 6.12.0 licenses/{key}.json")
    lines = ["# Licence templates: file, SPDX id, source, sha256 of the template. Written by",
             "# scripts/build_license_templates.py; edit a template by hand only with a note here.",
             'version = "2026.11.1"', ""]
    for name, spdx_id, source, sha in sorted(entries):
        lines += ["[[template]]", f'file = "{name}"', f'license = "{spdx_id}"', f'source = "{source}"',
                  f'sha256 = "{sha}"', ""]
    (OUT.parent / "templates.toml").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {len(entries)} templates to {OUT}")


if __name__ == "__main__":
    main()
