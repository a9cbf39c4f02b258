"""The `licenses` stage: full texts by similarity, notices, SPDX/CC markers, use classes, policy signals."""

from __future__ import annotations

import json
import re
import textwrap
import tomllib
from pathlib import Path

import pyarrow as pa
import pytest
import zstandard
from conftest import SAMPLES, write_jsonl

from curate.core.errors import ConfigError
from curate.stages.licenses.expressions import normalize_expression
from curate.stages.licenses.notices import EVIDENCE, expression, scan
from curate.stages.licenses.scanner import Scanner, licenses_dir
from curate.stages.licenses.stage import Licenses

TEMPLATES = licenses_dir() / "templates"


@pytest.fixture(scope="module")
def scanner() -> Scanner:
    return Scanner()


def template(name: str, optional: bool = True) -> str:
    """A template as a project would ship it: its holder slots filled, its optional parts kept or left out."""
    text = (TEMPLATES / f"{name}.txt").read_text(encoding="utf-8").replace("<<var>>", "Jane Example")
    text = re.sub(r"<<beginOptional>>(.*?)<<endOptional>>", r"\1" if optional else "", text, flags=re.S)
    return text


def rewrap(text: str, width: int, prefix: str = "") -> str:
    """The same licence as another project would ship it: other line width, maybe inside a comment block."""
    paras = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "\n\n".join(textwrap.fill(" ".join(p.split()), width, initial_indent=prefix, subsequent_indent=prefix)
                       for p in paras)


def full_texts(scanner: Scanner, text: str) -> list[str]:
    return [f.license for f in scan(text, scanner.index) if f.evidence == "full_text"]


def sample_rows() -> dict[str, dict]:
    raw = zstandard.ZstdDecompressor().stream_reader((SAMPLES / "licenses.jsonl.zst").open("rb")).read()
    return {r["id"]: r for r in map(json.loads, raw.decode().splitlines())}


@pytest.mark.parametrize("doc_id, expected", [
    ("lic-00076", "MIT"), ("lic-00086", "BSD-2-Clause"), ("lic-00082", "BSD-3-Clause"), ("lic-00089", "Zlib"),
    ("lic-00094", "Apache-2.0"), ("lic-00095", "MPL-2.0"), ("lic-00092", "GPL-3.0-or-later"),
])
def test_licence_texts_under_other_copyright_holders(scanner, doc_id, expected):
    rows = sample_rows()
    assert doc_id in rows, f"{doc_id} is not in data/samples/licenses.jsonl.zst any more"
    assert full_texts(scanner, rows[doc_id]["text"]) == [expected]


@pytest.mark.parametrize("name, expected", [
    ("MIT", "MIT"), ("MIT-0", "MIT-0"), ("BSD-2-Clause", "BSD-2-Clause"), ("BSD-3-Clause", "BSD-3-Clause"),
    ("ISC", "ISC"), ("Zlib", "Zlib"), ("Unlicense", "Unlicense"), ("CC0-1.0", "CC0-1.0"),
    ("Apache-2.0", "Apache-2.0"), ("MPL-2.0", "MPL-2.0"), ("GPL-2.0-only", "GPL-2.0-only"),
    ("GPL-3.0-only", "GPL-3.0-only"), ("LGPL-2.0-only", "LGPL-2.0-only"), ("LGPL-2.1-only", "LGPL-2.1-only"),
    ("LGPL-3.0-only", "LGPL-3.0-only"), ("AGPL-3.0-only", "AGPL-3.0-only"), ("Artistic-2.0", "Artistic-2.0"),
    ("CC-BY-4.0", "CC-BY-4.0"), ("CC-BY-SA-4.0", "CC-BY-SA-4.0"), ("CC-BY-NC-4.0", "CC-BY-NC-4.0"),
    ("CC-BY-ND-4.0", "CC-BY-ND-4.0"), ("CC-BY-NC-SA-4.0", "CC-BY-NC-SA-4.0"), ("CC-BY-NC-ND-4.0", "CC-BY-NC-ND-4.0"),
    ("CC-BY-SA-3.0", "CC-BY-SA-3.0"), ("CC-BY-NC-3.0", "CC-BY-NC-3.0"), ("CC-BY-2.5", "CC-BY-2.5"),
])
def test_rewrapped_texts_in_comment_blocks_get_the_right_id_not_a_sibling(scanner, name, expected):
    body = rewrap(template(name), 66, prefix=" * ")
    doc = f"/*\n * Copyright (c) 2019 Jane Example <jane@example.org>\n *\n{body}\n */\nint main(void);\n"
    assert full_texts(scanner, doc) == [expected]


def test_two_licences_in_one_file_are_both_found_with_their_spans(scanner):
    mit, bsd = rewrap(template("MIT"), 72), rewrap(template("BSD-2-Clause"), 80)
    doc = f"Parts of this package are under MIT:\n\n{mit}\n\nThe parser is under BSD-2-Clause:\n\n{bsd}\n"
    found = [f for f in scan(doc, scanner.index) if f.evidence == "full_text"]
    assert [f.license for f in found] == ["MIT", "BSD-2-Clause"]
    assert "Permission is hereby granted" in doc[found[0].start:found[0].end]
    assert doc[found[1].start:found[1].end].startswith("Redistribution and use")
    assert all(0.9 <= f.score <= 1 for f in found)


def test_unrelated_text_mentioning_licences_is_not_a_full_text(scanner):
    doc = ("This package provides a command line tool. It is free software; see the file COPYING for the "
           "licence terms, and the warranty disclaimer in the manual. Redistribution is welcome.\n") * 5
    assert full_texts(scanner, doc) == []


@pytest.mark.parametrize("notice, expected", [
    ("This program is free software; you can redistribute it and/or modify it under the terms of the GNU General "
     "Public License as published by the Free Software Foundation; either version 2 of the License, or (at your "
     "option) any later version.", "GPL-2.0-or-later"),
    ("This is free software; you can redistribute it and/or modify it under the terms of version 2 of the GNU "
     "General Public License as published by the Free Software Foundation.", "GPL-2.0-only"),
    ("This library is free software; you can redistribute it and/or modify it under the terms of the GNU Lesser "
     "General Public License as published by the Free Software Foundation; either version 2.1 of the License, or "
     "(at your option) any later version.", "LGPL-2.1-or-later"),
    ("This library is free software; you can redistribute it and/or modify it under the terms of the GNU Library "
     "General Public License as published by the Free Software Foundation; version 2.", "LGPL-2.0-only"),
    ("This program is free software: you can redistribute it and/or modify it under the terms of the GNU Affero "
     "General Public License as published by the Free Software Foundation, either version 3 of the License, or "
     "(at your option) any later version.", "AGPL-3.0-or-later"),
    ("Permission is granted to copy, distribute and/or modify this document under the terms of the GNU Free "
     "Documentation License, Version 1.3 or any later version published by the Free Software Foundation.",
     "GFDL-1.3-or-later"),
    ('Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file except in '
     "compliance with the License.", "Apache-2.0"),
    ("This Source Code Form is subject to the terms of the Mozilla Public License, v. 2.0.", "MPL-2.0"),
    ("This library is free software; you can redistribute it and/or modify it under the same terms as Perl itself.",
     "Artistic-1.0-Perl OR GPL-1.0-or-later"),
])
def test_notices_give_version_and_or_later(scanner, notice, expected):
    found = [f for f in scan("Copyright (C) 2001 Jane Example\n\n" + notice, scanner.index)
             if f.evidence == "notice"]
    assert [f.license for f in found] == [expected]


def test_pointer_to_the_full_text_is_not_a_grant(scanner):
    doc = ("On Debian systems, the complete text of the GNU General Public License version 2 can be found in "
           "`/usr/share/common-licenses/GPL-2'.")
    found = [f for f in scan(doc, scanner.index) if f.license]
    assert [(f.evidence, f.license, f.scope) for f in found] == [("reference", "GPL-2.0-only", "mention")]
    assert expression(found) is None
    # a pointer after a grant says where the granted licence's text is: still a grant
    for doc, lic in [("This project is licensed under the GPLv3 - see the LICENSE file for details", "GPL-3.0-only"),
                     ("Distributed under the Apache License 2.0, which can be found in the LICENSE file.",
                      "Apache-2.0"),
                     ("The Debian packaging is licensed under Apache-2.0\nsee `/usr/share/common-licenses/Apache-2.0'.",
                      "Apache-2.0")]:
        assert expression(scan(doc, scanner.index)) == lic, doc


def test_gpl_full_text_alone_is_only_and_with_a_later_notice_is_or_later(scanner):
    gpl = template("GPL-3.0-only")
    assert expression(scan(gpl, scanner.index)) == "GPL-3.0-only"  # its own "How to apply" appendix is no grant
    notice = ("This program is free software: you can redistribute it and/or modify it under the terms of the GNU "
              "General Public License as published by the Free Software Foundation, either version 3 of the "
              "License, or (at your option) any later version.\n\n")
    assert expression(scan(notice + gpl, scanner.index)) == "GPL-3.0-or-later"


def test_markers_spdx_cc_rel_license(scanner):
    doc = ("// SPDX-License-Identifier: GPL-2.0+\n// SPDX-License-Identifier: MIT OR Apache-2.0\n"
           '// SPDX-License-Identifier: " is the tag we look for\n'
           "Photos: https://creativecommons.org/licenses/by-nc-sa/4.0/ and CC BY-ND 3.0.\n"
           '<a rel="license" href="http://creativecommons.org/publicdomain/zero/1.0/">CC0</a>\n'
           '<link rel="license" href="/terms.html">\n')
    found = {(f.evidence, f.license) for f in scan(doc, scanner.index)}
    assert found == {("spdx_identifier", "GPL-2.0-or-later"), ("spdx_identifier", "MIT OR Apache-2.0"),
                     ("cc_url", "CC-BY-NC-SA-4.0"), ("cc_name", "CC-BY-ND-3.0"), ("cc_url", "CC0-1.0"),
                     ("rel_license", "CC0-1.0"), ("cc_name", "CC0-1.0"), ("rel_license", None)}


def test_use_classes_of_expressions(scanner):
    of = scanner.classes.of
    assert of("MIT OR GPL-3.0-only") == "permissive"  # the user may pick the least restrictive option
    assert of("MIT AND GPL-3.0-only") == "copyleft"  # both apply: the most restrictive one counts
    assert of("GPL-2.0-only WITH Linux-syscall-note") == "copyleft"
    assert of("CC-BY-NC-ND-4.0") == "noncommercial" and of("CC-BY-ND-4.0") == "no-derivatives"
    assert of("CC0-1.0") == "public-domain" and of("LicenseRef-Whatever") == "unknown"
    assert of("MIT AND LicenseRef-Whatever") == "unknown"
    assert normalize_expression("gpl-2.0+ or mit") == "GPL-2.0-or-later OR MIT"


def test_rights_notices(scanner):
    def kinds(text: str) -> set[str]:
        return {f.evidence for f in scan(text, scanner.index)}

    assert kinds("Copyright (c) 2021 Contoso Systems GmbH. All Rights Reserved.") == \
        {"copyright_notice", "all_rights_reserved"}
    assert "restrictive_notice" in kinds("Copyright 2020 Initech. Proprietary and confidential.")
    assert "restrictive_notice" in kinds("(C) 2019 Fabrikam. All rights reserved. Internal use only.")
    # a man page option described as internal is no rights notice
    assert kinds("OPTIONS\n  --debug-state\n      For internal use only.\n") == set()
    assert kinds("the copyright holders and contributors") == set()


def test_batches_give_the_same_rows_as_single_documents(scanner):
    rows = sample_rows()
    texts = [r["text"] for r in rows.values()][:60] + ["", "no licence here"]
    batch = scanner.rows([str(i) for i in range(len(texts))], texts)
    single: list[tuple] = []
    for i, t in enumerate(texts):
        r = scanner.rows([str(i)], [t])
        single += list(zip(*r.values(), strict=True))
    assert list(zip(*batch.values(), strict=True)) == single
    assert set(batch["evidence"]) <= set(EVIDENCE)


def test_stage_in_a_workspace_drops_noncommercial_and_flags_reserved(ws, tmp_path: Path):
    d = tmp_path / "in"
    d.mkdir()
    bsd = "Copyright (c) 1997 Jane Example. All rights reserved.\n\n" + template("BSD-2-Clause")
    write_jsonl(d / "a.jsonl", [
        {"id": "nc", "text": "Tutorial text.\n\nThis work is licensed under a Creative Commons Attribution-"
                             "NonCommercial 4.0 International License: https://creativecommons.org/licenses/by-nc/4.0/"},
        {"id": "arr", "text": "Annual report.\nCopyright 2023 Northwind Ltd. All rights reserved."},
        {"id": "bsd", "text": bsd},
        {"id": "plain", "text": "Just some words about the weather in April."},
    ])
    ws.ingest([str(d)])
    ws.run(stages=["licenses"], workers=1)
    decisions = {r[0]: (r[1], list(r[2])) for r in ws.sql("SELECT * FROM decisions").iter_rows()}
    assert decisions["nc"] == ("drop", ["license-noncommercial"])
    assert decisions["arr"] == ("keep", ["license-all-rights-reserved"])
    assert decisions["bsd"] == ("keep", [])  # "All rights reserved" above a licence grant is no reservation
    assert decisions["plain"] == ("keep", [])
    spans = ws.sql("""SELECT l.evidence, l.license, substr(d.text, l.start + 1, l."end" - l.start) AS span
                      FROM license_signals l JOIN documents d USING (doc_id) WHERE doc_id = 'nc'""").rows()
    assert ("cc_url", "CC-BY-NC-4.0", "creativecommons.org/licenses/by-nc/4.0") in spans
    sig = ws.sql("SELECT license_use_class, license_ids FROM signals WHERE doc_id = 'bsd'").rows()[0]
    assert sig == ("permissive", ["BSD-2-Clause"])


def test_fingerprint_follows_the_rules_files(tmp_path, monkeypatch):
    import shutil

    rules = tmp_path / "rules"
    shutil.copytree(licenses_dir().parent, rules)
    monkeypatch.setenv("CURATE_RULES_DIR", str(rules))
    before = Licenses().fingerprint()
    p = rules / "licenses" / "use_classes.toml"
    p.write_text(p.read_text().replace('"WTFPL", ', ""))
    after = Licenses().fingerprint()
    assert after != before
    t = rules / "licenses" / "templates" / "MIT.txt"  # a template file counts, not only templates.toml
    t.write_text(t.read_text() + "\nAn edited template.\n")
    assert Licenses().fingerprint() != after
    assert {a["kind"] for a in Licenses().assets()} == {"license-templates", "license-use-classes",
                                                          "license-references"}


def test_settings_are_typed_and_checked():
    assert Licenses({"min_recall": 0.8}).settings.min_recall == 0.8
    with pytest.raises(ConfigError, match=r"my\.toml: \[stages\.licenses\] min_precision must be in \(0, 1\]"):
        Licenses({"min_precision": 1.5}, "my.toml")
    with pytest.raises(ConfigError, match=r"my\.toml: \[stages\.licenses\].*unknown.* min_recal\b"):
        Licenses({"min_recal": 0.8}, "my.toml")
    with pytest.raises(ConfigError, match=r"min_recall = '0\.8' is not a number"):
        Licenses({"min_recall": "0.8"}, "my.toml")


def test_empty_batch_has_the_table_schema():
    det = Licenses()
    out = det(pa.record_batch({"doc_id": pa.array([], pa.string()), "text": pa.array([], pa.string())}))
    assert out.num_rows == 0 and out.column_names == ["doc_id", "license", "use_class", "evidence", "start", "end",
                                                     "score", "form", "scope", "family"]


UC_ADVERTISING = ("3. All advertising materials mentioning features or use of this software must display the following "
                  "acknowledgement: This product includes software developed by the University of California, "
                  "Berkeley and its contributors.")


def test_bsd_4_clause_uc_against_bsd_4_clause_and_bsd_3_clause(scanner):
    uc = rewrap(template("BSD-4-Clause-UC").split("\n", 1)[1], 72)  # as copies ship it, without the SPDX title
    assert full_texts(scanner, uc) == ["BSD-4-Clause-UC"]
    # the same four clauses for another organisation are the generic BSD-4-Clause
    netbsd = uc.replace("the University of California, Berkeley", "The NetBSD Foundation, Inc.") \
        .replace("the University", "The NetBSD Foundation").replace("THE REGENTS", "THE NETBSD FOUNDATION")
    assert full_texts(scanner, netbsd) == ["BSD-4-Clause"]
    # the UC text with its advertising clause deleted (as the University allowed in 1999) is BSD-3-Clause
    rescinded = rewrap(template("BSD-4-Clause-UC").split("\n", 1)[1].replace(UC_ADVERTISING, "3. <deleted>"), 72)
    assert full_texts(scanner, rescinded) == ["BSD-3-Clause"]


@pytest.mark.parametrize("notice, expected", [
    ("under the terms of the GNU Free Documentation License, Version 1.3 or any later version published by the Free "
     "Software Foundation; with no Invariant Sections, no Front-Cover Texts, and no Back-Cover Texts.",
     "GFDL-1.3-no-invariants-or-later"),
    ("under the terms of the GNU Free Documentation License, Version 1.2 published by the Free Software Foundation; "
     "with the Invariant Sections being History.", "GFDL-1.2-only"),
    ("This program is free software; you can redistribute it and/or modify it under the terms of the GNU General "
     "Public License version 2 as published by the Free Software Foundation.", "GPL-2.0-only"),
    ("under the terms of the GNU Library General Public License version 2, or (at your option) any later version",
     "LGPL-2.0-or-later"),
    ("The contents of this file are subject to the Mozilla Public License Version 1.1 (the \"License\"); you may not "
     "use this file except in compliance with the License.", "MPL-1.1"),
    ("Licensed under the Apache License 2.0 (the \"License\"). You may not use this file except in compliance with "
     "the License.", "Apache-2.0"),
])
def test_more_notices(scanner, notice, expected):
    assert expression(scan(notice, scanner.index)) == expected


def test_gpl_2_grant_with_or_later_over_the_full_text_is_or_later(scanner):
    notice = ("This program is free software; you can redistribute it and/or modify it under the terms of the GNU "
              "General Public License as published by the Free Software Foundation; either version 2 of the License, "
              "or (at your option) any later version.\n\n")
    assert expression(scan(notice + template("GPL-2.0-only", optional=False), scanner.index)) == "GPL-2.0-or-later"


def test_a_longer_licence_wins_over_the_shorter_one_it_quotes(scanner):
    # Sendmail's licence embeds the University of California's BSD text word for word; an older edition of the rest
    # matches its template less well than the embedded part matches BSD's, yet the document is Sendmail's
    text = template("Sendmail")
    part_b = text[text.index("     (b)"):text.index("2. Redistributions")]
    older = text[text.index("License Terms:"):].replace(part_b, "")
    assert full_texts(scanner, rewrap(older, 70)) == ["Sendmail"]


@pytest.mark.parametrize("name", ["Apache-2.0", "GPL-3.0-only", "MIT-CMU"])
def test_optional_parts_may_be_left_out(scanner, name):
    text = template(name, optional=False).replace("THE COPYRIGHT HOLDER", "CARNEGIE MELLON UNIVERSITY")
    assert full_texts(scanner, rewrap(text, 76)) == [name]


def test_a_long_partial_copy_counts_but_a_disclaimer_alone_does_not(scanner):
    zpl = template("ZPL-2.1")
    conditions = zpl[zpl.index("Redistribution and use"):zpl.index("Disclaimer")]  # no preamble, no disclaimer
    assert full_texts(scanner, rewrap(conditions, 72)) == ["ZPL-2.1"]
    mit = template("MIT")
    grant = mit[mit.index("Permission is hereby"):mit.index("THE SOFTWARE IS PROVIDED")]
    bsd = template("BSD-3-Clause")
    disclaimer = bsd[bsd.index("THIS SOFTWARE IS PROVIDED"):]
    # the MIT grant and conditions verbatim, then another licence's disclaimer: an MIT licence, and no BSD one
    assert full_texts(scanner, rewrap(grant + "\n\n" + disclaimer, 72)) == ["MIT"]


def test_benchmark_ground_truth_mapping():
    import importlib.util

    root = Path(__file__).parent.parent
    spec = importlib.util.spec_from_file_location("bench_licenses", root / "benchmarks" / "licenses.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    debian = {"Expat": "MIT", "GPL-2": "GPL-2.0-only", "GPL-2+": "GPL-2.0-or-later", "LGPL-2.1+": "LGPL-2.1-or-later",
              "LGPL-2": "LGPL-2.0-only", "BSD-3-clause": "BSD-3-Clause", "Apache-2": "Apache-2.0", "MPL-2": "MPL-2.0",
              "GFDL-NIV-1.3+": "GFDL-1.3-no-invariants-or-later", "GFDL-1.2+": "GFDL-1.2-or-later",
              "Artistic": "Artistic-1.0-Perl", "public-domain": None, "Apache": None, "Python": None,
              "GPL-2+ with Autoconf exception": None, "MIT or GPL-2": None}
    assert {k: bench.spdx_id(k) for k in debian} == debian
    # the PSF classifier names no single SPDX id (OSI's Python licence is Python-2.0; matplotlib's is PSF-derived)
    assert not any("Python Software Foundation" in c for c in bench.CLASSIFIERS)
    toml = tomllib.loads((root / "benchmarks" / "licenses_contradicted.toml").read_text())
    assert all(e["kind"] in ("grant", "other-licence", "more-licences") and e["reason"] for e in toml["label"])


def refs(scanner: Scanner, text: str) -> list[tuple]:
    return [(f.license, f.form, f.scope, f.family) for f in scan(text, scanner.index, names=scanner.names)
            if f.evidence == "reference"]


@pytest.mark.parametrize("text, expected", [
    ("This project is licensed under the terms of the BSD 3-Clause License.", ("BSD-3-Clause", "statement", "self")),
    ("Released under the GPLv2+.", ("GPL-2.0-or-later", "statement", "self")),
    ("distributed under the terms of the GNU GPL version 3", ("GPL-3.0-only", "statement", "self")),
    ("It is released under a two-clauses\nBSD license.", ("BSD-2-Clause", "statement", "self")),
    ("## License\n\nApache 2.0\n", ("Apache-2.0", "heading", "self")),
    ("[![License: MIT](https://img.shields.io/badge/License-MIT-yellow.svg)](LICENSE)", ("MIT", "badge", "self")),
    ("[![MIT License](https://img.shields.io/github/license/a/b.svg)](LICENCE)", ("MIT", "badge", "self")),
    ("See https://opensource.org/licenses/ISC for the terms.", ("ISC", "url", "self")),
    ("https://www.apache.org/licenses/LICENSE-2.0", ("Apache-2.0", "url", "self")),
    ("Name: pkg\nLicense: MPL-2.0\nAuthor: x\n", ("MPL-2.0", "metadata", "self")),
    ('{"name": "left-pad", "license": "WTFPL"}', ("WTFPL", "metadata", "self")),
    ("Files: src/*\nCopyright: 2001 Jane Example\nLicense: GPL-2+\n", ("GPL-2.0-or-later", "dep5_field", "files")),
    ("Files: *\nCopyright: 2001 Jane Example\nLicense: Expat\n", ("MIT", "dep5_field", "files")),
    ("Files: *\nCopyright: 2001 Jane Example\nLicense: GFDL-NIV-1.3+\n",
     ("GFDL-1.3-no-invariants-or-later", "dep5_field", "files")),
    ("Files: *\nCopyright: 2001 Jane Example\nLicense: GPL-1+ or Artistic\n",
     ("GPL-1.0-or-later OR Artistic-1.0-Perl", "dep5_field", "files")),
    ("Dual-licensed under the MIT and Apache 2.0 licenses.", ("MIT OR Apache-2.0", "statement", "self")),
    ("The code is licensed under MIT, the data under CC-BY-4.0.", ("MIT", "statement", "self")),
    # links around the name (Markdown, reStructuredText) are transparent
    ("spaCy is commercial open-source software, released under the\n[MIT license](https://github.com/x/y/LICENSE).",
     ("MIT", "statement", "self")),
    ("Polars is licensed under the [MIT License](LICENSE) (SPDX: `MIT`).", ("MIT", "statement", "self")),
    ("The project has an `MIT open-source\n  license <LICENSE>`__.", ("MIT", "statement", "self")),
    ("| **License** | `MIT` |\n| **Version** | 3.8 |", ("MIT", "metadata", "self")),
    ("*License?*\n\nMIT\n\n*Code of conduct?*\n", ("MIT", "heading", "self")),
    ("License\n\nApache 2.0\n", ("Apache-2.0", "heading", "self")),
    ("0.7.0 (2013-08-09)\n\n- Switched from LGPL to MIT license.\n- Added a class.", ("LGPL-2.0-or-later", "statement",
                                                                                     "mention")),
    ("released under dual license - either `Apache 2.0 License <https://www.apache.org/licenses/LICENSE-2.0>`_ or "
     "the `BSD 3-Clause License <https://opensource.org/licenses/BSD-3-Clause>`_.",
     ("Apache-2.0 OR BSD-3-Clause", "statement", "self")),
    # a grant over a list of licences, one per item (every Rust crate's README)
    ("Licensed under either of\n\n * Apache License, Version 2.0 ([LICENSE-APACHE](LICENSE-APACHE) or "
     "http://www.apache.org/licenses/LICENSE-2.0)\n * MIT license ([LICENSE-MIT](LICENSE-MIT) or "
     "http://opensource.org/licenses/MIT)\n\nat your option.", ("Apache-2.0 OR MIT", "statement", "self")),
    ("This crate is available under all of the following licenses:\n\n- MIT\n- Zlib\n",
     ("MIT AND Zlib", "statement", "self")),
    ("distributed under the terms of the Apache License, Version 2.0", ("Apache-2.0", "statement", "self")),
    ("distributed under the terms of both the MIT license and the Apache License (Version 2.0).",
     ("MIT AND Apache-2.0", "statement", "self")),
    # "this package is ..." is the grant itself; "packages are ..." speaks of other components
    ("This package is licensed under the BSD 3-Clause License.", ("BSD-3-Clause", "statement", "self")),
    ("Some packages are licensed under the GPL, others under MIT.", ("GPL-1.0-or-later", "statement", "mention")),
    # a list granted after its last name
    ("This crate is MIT and Apache-2.0 licensed.", ("MIT AND Apache-2.0", "statement", "self")),
    ("provided as an open-source dual [BSD](LICENSE) and [GPLv2](COPYING) licensed **C** library",
     ("LicenseRef-BSD OR GPL-2.0-only", "statement", "self")),
])
def test_references_by_name(scanner, text, expected):
    found = refs(scanner, text)
    assert found and found[0][:3] == expected, found


def test_a_bare_family_says_so_and_never_guesses_a_version(scanner):
    assert refs(scanner, "Starlette is BSD licensed code.") == [("LicenseRef-BSD", "statement", "self", True)]
    assert refs(scanner, "This library is distributed under the GPL.") == \
        [("GPL-1.0-or-later", "statement", "self", True)]
    # a versioned reading of the same family makes the bare one redundant
    assert expression(scan("Licensed under the GPL. See below: released under the GPLv3 or later.",
                           scanner.index)) == "GPL-3.0-or-later"


def test_relicensing_grants_the_new_licence_and_a_link_target_is_part_of_its_name(scanner):
    assert expression(scan("- Switched from LGPL to MIT license.\n", scanner.index)) == "MIT"
    assert expression(scan("We relicensed the project from the GPL to the Apache License 2.0.", scanner.index)) == \
        "Apache-2.0"
    # the URLs the names link to say the same: one OR reference, not two more licences joined by AND
    text = ("All contributions after December 1, 2017 released under dual license - either `Apache 2.0 License "
            "<https://www.apache.org/licenses/LICENSE-2.0>`_ or the `BSD 3-Clause License "
            "<https://opensource.org/licenses/BSD-3-Clause>`_. Contributions before December 1, 2017 are released "
            "only under the BSD 3-Clause License.")
    found = [f for f in scan(text, scanner.index) if f.license]
    assert [(f.license, f.form) for f in found] == [("Apache-2.0 OR BSD-3-Clause", "statement"),
                                                    ("BSD-3-Clause", "statement")]
    # a licence URL that is not a link target of a name stays a reference of its own
    assert [r[:2] for r in refs(scanner, "Licensed under the BSD License; see https://opensource.org/licenses/ISC.")] \
        == [("LicenseRef-BSD", "statement"), ("ISC", "url")]


def test_windowed_scans_give_the_matches_of_whole_text_scans(scanner):
    """The name trie and the literal-windowed FIELD, badge, URL and in-URL checks find exactly what whole-text
    scans with the plain patterns find, on real documents of this machine (Debian copyright files)."""
    from curate.stages.licenses import references as r

    names = scanner.names
    plain = re.compile(r"(?<![\w/.@-])(?:" + "|".join(
        r"[\s_-]+".join(re.escape(w).replace("license", "(?:open[\\s_-]*source[\\s_-]+)?licen[cs]e")
                        for w in n.split(" "))
        for n in sorted({r._norm(n) for n in [*names.families, *r.GNU_NAMES]}, key=len, reverse=True))
        + r")(?=[vV]?\d|[^\w]|_|$)(?!-[A-Za-z])", re.I)
    docs = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(Path("/usr/share/doc").glob("*/copyright"))]
    docs = [d for d in docs if len(d) < 200_000][:300]
    docs.append("[![License](https://img.shields.io/pypi/l/x.svg)](LICENSE) see https://www.opensource.org/licenses/"
                "mit-license.php and http://gnu.org/licenses/gpl-2.0.html\n.. image:: https://x/license.svg\n"
                "   :alt: MIT License\nlicense = \"MIT\"\n\"license\": \"ISC\"\n| License | MIT |\n")
    docs.append("gnu.org/licenses/gpl-3.0.html, then www.spdx.org/licenses/ISC.html and opensource.org/licenses/MIT")
    assert len(docs) > 50
    for d in docs:
        low = d.lower()
        spans = [m.span() for m in plain.finditer(d)]
        assert [m.span() for m in names.regex.finditer(d)] == spans
        assert [m.span() for m in names.lower.finditer(low)] == spans
        if "licen" in low:
            assert [m.span() for m in r._field_matches(d, low)] == [m.span() for m in r.FIELD.finditer(d)]
        assert [m.span() for m in r._url_matches(d, low)] == [m.span() for m in r.URLS.finditer(d)]
        starts = r._finds(d, "![") + r._finds(low, "image::")
        assert [m.span() for m in r._starts_at(r.BADGE_ALT, d, starts)] == \
            [m.span() for m in r.BADGE_ALT.finditer(d)]
        urls = [u.span() for u in r.URL_TOKEN.finditer(d)]
        for s, _ in spans:
            assert r._in_url(d, s) == any(a <= s < b for a, b in urls)


@pytest.mark.parametrize("text", [
    "This library is compatible with the GPL.",
    "Unlike the GNU General Public License, the MIT License lets you do this.",
    "Code under other licences such as the Apache License 2.0 cannot be merged.",
    "On Debian systems, the complete text of the GNU Lesser General Public License version 2.1 can be found in "
    "/usr/share/common-licenses/LGPL-2.1.",
])
def test_mentions_grant_nothing(scanner, text):
    found = scan(text, scanner.index)
    assert [f.scope for f in found if f.license] and all(f.scope == "mention" for f in found if f.license)
    assert expression(found) is None


def test_a_dep5_paragraph_is_licensed_by_its_field(scanner):
    # the text under the field is that licence's text; a Comment about another licence grants nothing
    para = ("Files: build/shtool\nCopyright: 1994-2008 Jane Example\nLicense: GPL-2+\nComment:\n There is no "
            "requirement that your package itself is licensed under the GNU General Public License.\n")
    assert expression(scan(para, scanner.index)) == "GPL-2.0-or-later"
    whole = ("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: x\n\n" + para
             + "\nLicense: GPL-2+\n This program is free software; you can redistribute it under the terms of the "
             "GNU General Public License as published by the Free Software Foundation; either version 2 of the "
             "License, or (at your option) any later version.\n")
    got = refs(scanner, whole)
    assert ("GPL-2.0-or-later", "dep5_field", "files", False) in got
    assert ("GPL-2.0-or-later", "dep5_field", "mention", False) in got  # the stand-alone licence paragraph


def test_references_do_not_double_stronger_findings(scanner):
    # an SPDX line and a GNU notice already say it: no reference rows on top
    assert refs(scanner, "// SPDX-License-Identifier: GPL-2.0+\n") == []
    notice = ("This program is free software; you can redistribute it and/or modify it under the terms of the GNU "
              "General Public License as published by the Free Software Foundation; either version 2 of the "
              "License, or (at your option) any later version. https://www.gnu.org/licenses/old-licenses/gpl-2.0")
    assert expression(scan(notice, scanner.index)) == "GPL-2.0-or-later"
    # inside a full text, names are part of it (the LGPL text names the GPL throughout)
    assert expression(scan(template("LGPL-2.1-only"), scanner.index)) == "LGPL-2.1-only"


def test_mentions_do_not_reach_the_rules(ws, tmp_path: Path):
    d = tmp_path / "in"
    d.mkdir()
    write_jsonl(d / "a.jsonl", [
        {"id": "mention", "text": "Our notes: code licensed under the GPLv3 is not compatible with this project. "
                                  "We compare the Apache License 2.0 with the MIT License."},
        {"id": "grant", "text": "# Widget\n\nThis project is released under the BSD 3-Clause License."},
    ])
    ws.ingest([str(d)])
    ws.run(stages=["licenses"], workers=1)
    sig = {r[0]: r[1:] for r in ws.sql("""SELECT doc_id, license_ids, license_scope, license_by_reference,
                                                 license_mentions FROM signals""").iter_rows()}
    assert sig["grant"][:3] == (["BSD-3-Clause"], "self", True) and not sig["grant"][3]
    assert not sig["mention"][0] and sig["mention"][1] == "mention"
    assert "Apache-2.0" in sig["mention"][3]
    decisions = dict(ws.sql("SELECT doc_id, action FROM decisions").rows())
    assert decisions == {"mention": "keep", "grant": "keep"}


def test_references_table_is_an_asset(tmp_path, monkeypatch):
    import shutil

    rules = tmp_path / "rules"
    shutil.copytree(licenses_dir().parent, rules)
    monkeypatch.setenv("CURATE_RULES_DIR", str(rules))
    before = Licenses().fingerprint()
    p = rules / "licenses" / "references.toml"
    p.write_text(p.read_text().replace('expat = { bare = "MIT" }', ""))
    assert Licenses().fingerprint() != before
