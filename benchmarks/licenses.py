"""Licence detection accuracy and speed, Curate's `licenses` stage next to ScanCode, on the same files in one run.

Ground truth is licence metadata neither tool's authors wrote for this test:
- Debian: every `License:` paragraph with a text body in machine-readable (DEP-5) /usr/share/doc/*/copyright files;
  the body is the document (the `License:` line itself is removed), the short name mapped to SPDX is the answer;
- Python: the single licence file of each installed distribution (*.dist-info/licenses/ or LICENSE*/COPYING* in
  *.dist-info), answered by its METADATA `License-Expression`, else a `License` field that is an SPDX id or a
  one-licence name ("Apache 2.0"), else an unambiguous classifier.
- dep5-files: `Files:` paragraphs of the same DEP-5 files with their `License:` line kept (at most 5 per file),
  labelled by that field (licences named, not quoted);
- description: the long description (README) of each installed distribution whose METADATA names one licence.
Only single-licence answers are kept (no AND/OR/WITH), and each distinct text once; no document holds its own label
(the `License:` line, the METADATA file). A prediction is right when it is the same SPDX expression
(license-expression's equivalence): Curate's is the AND of the licences it found, ScanCode's its
`detected_license_expression_spdx`. The headline uses every label as given; a second figure leaves out the labels
that benchmarks/licenses_contradicted.toml shows, one by one, to be contradicted by their own text.
Speed: documents per second of ONE process each (no pool for either; 2 cores, shared), model or index loading
excluded for both and reported apart; the speed ratio is taken on CPU time (wall-clock printed too). Curate's
second-long scan is run 5 times and its median run reported; ScanCode's (minutes) once.

    bash benchmarks/setup_scancode.sh          # once: /work/bench-venvs/scancode
    PYTHONPATH=. .venv/bin/python benchmarks/licenses.py [--limit N] [--json out.json] [--misses]
"""

from __future__ import annotations

import argparse
import email
import hashlib
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
from collections import Counter
from pathlib import Path

from license_expression import get_spdx_licensing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curate.stages.licenses.expressions import normalize_expression  # noqa: E402
from curate.stages.licenses.notices import expression, scan  # noqa: E402
from curate.stages.licenses.scanner import Scanner  # noqa: E402

CONTRADICTED = Path(__file__).resolve().parent / "licenses_contradicted.toml"
SCANCODE_VENV = Path(os.environ.get("SCANCODE_VENV", "/work/bench-venvs/scancode"))
L = get_spdx_licensing()

DEBIAN = {  # Debian short names (lower-case) that are not SPDX ids themselves
    "expat": "MIT", "mit/x11": "X11", "bsd-2": "BSD-2-Clause", "bsd-3": "BSD-3-Clause", "bsd-4": "BSD-4-Clause",
    "apache-2": "Apache-2.0", "artistic": "Artistic-1.0-Perl", "artistic-2": "Artistic-2.0", "cc0": "CC0-1.0",
    "boost-1.0": "BSL-1.0", "psf-2": "PSF-2.0", "zope-2.1": "ZPL-2.1", "public-domain": None, "permissive": None,
    "bsd": None, "gpl": "GPL-1.0-or-later", "lgpl": "LGPL-2.0-or-later", "mpl-2": "MPL-2.0", "apache": None,
    "gfdl-niv": None, "python": None,
}
GNU_LABEL = re.compile(r"(a|l)?gpl-?(\d(?:\.\d)?)(\+)?", re.I)
# GFDL-NIV-1.3+ is Debian's name for the GFDL with no invariant sections (SPDX GFDL-1.3-no-invariants-or-later)
GFDL_LABEL = re.compile(r"gfdl-(niv-)?(1\.[123])(\+)?", re.I)
PYPI_NAMES = {  # free-text `License:` fields of Python metadata that name exactly one licence
    "apache 2.0": "Apache-2.0", "apache-2": "Apache-2.0", "apache license 2.0": "Apache-2.0",
    "apache license, version 2.0": "Apache-2.0", "apache software license 2.0": "Apache-2.0",
    "mit license": "MIT", "the mit license": "MIT", "isc license": "ISC", "isc license (iscl)": "ISC",
    "bsd 3-clause": "BSD-3-Clause", "3-clause bsd": "BSD-3-Clause", "bsd 3-clause license": "BSD-3-Clause",
    "bsd 2-clause": "BSD-2-Clause", "2-clause bsd": "BSD-2-Clause", "bsd 2-clause license": "BSD-2-Clause",
}
CLASSIFIERS = {
    "License :: OSI Approved :: MIT License": "MIT", "License :: OSI Approved :: Apache Software License": "Apache-2.0",
    "License :: OSI Approved :: ISC License (ISCL)": "ISC", "License :: OSI Approved :: zlib/libpng License": "Zlib",
    "License :: OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "License :: OSI Approved :: The Unlicense (Unlicense)": "Unlicense",
    # not "Python Software Foundation License": OSI's Python licence is Python-2.0, packages use it for PSF-2.0 and
    # for PSF-derived licences (matplotlib's): it names no single SPDX id
    "License :: CC0 1.0 Universal (CC0 1.0) Public Domain Dedication": "CC0-1.0",
    "License :: OSI Approved :: GNU General Public License v2 or later (GPLv2+)": "GPL-2.0-or-later",
    "License :: OSI Approved :: GNU General Public License v3 or later (GPLv3+)": "GPL-3.0-or-later",
    "License :: OSI Approved :: GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.0-or-later",
    "License :: OSI Approved :: GNU Lesser General Public License v3 or later (LGPLv3+)": "LGPL-3.0-or-later",
    "License :: OSI Approved :: Boost Software License 1.0 (BSL-1.0)": "BSL-1.0",
}


def spdx_id(label: str) -> str | None:
    """A single SPDX id for a metadata label, or None when it is not one (compound, custom, ambiguous)."""
    label = label.strip()
    low = label.lower()
    if not label or any(w in f" {low} " for w in (" or ", " and ", " with ", ",", "|", "/ ")):
        return None
    if low in DEBIAN:
        return DEBIAN[low]
    if m := GNU_LABEL.fullmatch(low):
        fam, v, plus = (m.group(1) or "").upper() + "GPL", m.group(2), m.group(3)
        return f"{fam}-{v if '.' in v else v + '.0'}-{'or-later' if plus else 'only'}"
    if m := GFDL_LABEL.fullmatch(low):
        return f"GFDL-{m.group(2)}{'-no-invariants' if m.group(1) else ''}-{'or-later' if m.group(3) else 'only'}"
    try:
        norm = L.parse(label, validate=True, strict=True).render()
    except Exception:  # noqa: BLE001 - not an SPDX expression
        return None
    return norm if " " not in norm else None


def debian_cases(root: Path = Path("/usr/share/doc")) -> list[dict]:
    cases = []
    for f in sorted(root.glob("*/copyright")):
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if not re.match(r"(?i)format:\s*\S*(dep5|copyright-format)", text):
            continue
        for m in re.finditer(r"(?m)^License:[ \t]*(.*)\n((?:[ \t].*(?:\n|$))+)", text):
            label = spdx_id(m.group(1))
            lines = [ln[1:] if ln[:1] in " \t" else ln for ln in m.group(2).splitlines()]
            body = "\n".join("" if ln.strip() == "." else ln.rstrip() for ln in lines).strip()
            if label and len(body) >= 200:
                assert not re.search(r"(?im)^License:[ \t]*" + re.escape(m.group(1).strip()) + r"[ \t]*$", body)
                cases.append({"source": f"debian:{f.parent.name}", "label": label, "text": body})
    return cases


LICENCE_FILE = re.compile(r"(?i)^(licen[cs]e|copying)([-_.].*)?$")


def metadata_label(meta: email.message.Message) -> str | None:
    """The one licence a distribution's METADATA names: `License-Expression`, else a `License` field that is an SPDX
    id or a one-licence name ("Apache 2.0"), else an unambiguous classifier; None for anything else."""
    label = None
    if meta.get("License-Expression"):
        label = spdx_id(meta["License-Expression"])
    elif meta.get("License") and len(meta["License"]) < 40:
        label = PYPI_NAMES.get(meta["License"].strip().lower()) or spdx_id(meta["License"])
    if not label and not meta.get("License-Expression"):
        found = {CLASSIFIERS[c] for c in meta.get_all("Classifier") or [] if c in CLASSIFIERS}
        label = found.pop() if len(found) == 1 else None
    return label


def _metadata(dist: Path) -> email.message.Message | None:
    meta_path = dist / "METADATA"
    if not meta_path.exists():
        return None
    return email.message_from_string(meta_path.read_text(encoding="utf-8", errors="replace"))


def python_cases(site: Path) -> list[dict]:
    cases = []
    for dist in sorted(site.glob("*.dist-info")):
        meta = _metadata(dist)
        if meta is None:
            continue
        files = [p for p in sorted((dist / "licenses").rglob("*")) if p.is_file()] if (dist / "licenses").is_dir() \
            else [p for p in sorted(dist.iterdir()) if p.is_file() and LICENCE_FILE.match(p.name)]
        files = [p for p in files if LICENCE_FILE.match(p.name)]
        if len(files) != 1:
            continue
        label = metadata_label(meta)
        text = files[0].read_text(encoding="utf-8", errors="replace").strip()
        assert "License-Expression:" not in text and "Classifier: License" not in text  # not the METADATA file
        if label and len(text) >= 100:
            cases.append({"source": f"python:{dist.name}", "label": label, "text": text})
    return cases


DEP5_PER_FILE = 5  # Files paragraphs taken per copyright file, in file order: Boost's alone has thousands


def dep5_files_cases(root: Path = Path("/usr/share/doc")) -> list[dict]:
    """`Files:` paragraphs of machine-readable Debian copyright files, their `License:` line kept and the licence
    text that may follow it: the document names its licence the way DEP-5 does, labelled by that field."""
    cases = []
    for f in sorted(root.glob("*/copyright")):
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if not re.match(r"(?i)format:\s*\S*(dep5|copyright-format)", text):
            continue
        taken = 0
        for para in re.split(r"\n[ \t]*\n", text):
            if taken >= DEP5_PER_FILE or not para.startswith("Files:"):
                continue
            m = re.search(r"(?m)^License:[ \t]*(.*)$", para)
            label = spdx_id(m.group(1)) if m else None
            if label:
                cases.append({"source": f"dep5-files:{f.parent.name}", "label": label, "text": para.strip() + "\n"})
                taken += 1
    return cases


def description_cases(site: Path) -> list[dict]:
    """The long description (the README PyPI shows) of each installed distribution whose METADATA names one
    licence; the METADATA headers are not in the document. Many descriptions never name their licence: no tool can
    get those, and they stay in (the figure says how much a README tells)."""
    cases = []
    for dist in sorted(site.glob("*.dist-info")):
        meta = _metadata(dist)
        if meta is None:
            continue
        label = metadata_label(meta)
        body = meta.get_payload() if not meta.is_multipart() else ""
        body = (body or meta.get("Description") or "").strip()
        if label and len(body) >= 200:
            assert "License-Expression:" not in body and "Classifier: License ::" not in body
            cases.append({"source": f"description:{dist.name}", "label": label, "text": body})
    return cases


def dedupe(cases: list[dict]) -> list[dict]:
    seen, out = set(), []
    for c in cases:
        key = hashlib.sha256(c["text"].encode()).hexdigest()
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


SCANCODE_SCRIPT = r"""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
t0 = time.perf_counter()
from scancode.api import get_licenses
files = json.load(open(sys.argv[1]))
get_licenses(files[0])  # loads the licence index
load = time.perf_counter() - t0
out, t0, c0 = [], time.perf_counter(), time.process_time()
for f in files:
    out.append(get_licenses(f).get("detected_license_expression_spdx") or None)
print(json.dumps({"predictions": out, "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
                  "load_seconds": load}))
"""


def run_scancode(paths: list[str]) -> dict:
    py = SCANCODE_VENV / "bin" / "python"
    if not py.exists():
        sys.exit(f"ScanCode venv missing: run `bash benchmarks/setup_scancode.sh` (looked in {SCANCODE_VENV})")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(paths, f)
    try:
        res = subprocess.run([str(py), "-c", SCANCODE_SCRIPT, f.name], capture_output=True, text=True, check=True)
    finally:
        os.unlink(f.name)
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_curate(paths: list[str], batch: int = 1000, repeats: int = 5) -> dict:
    """Curate's scan of every file, `repeats` times (its run lasts about a second, so one run on a shared machine is
    mostly noise; ScanCode's lasts minutes): the run with the median CPU time is reported, caches cleared each time."""
    t0 = time.perf_counter()
    scanner = Scanner()
    load = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        normalize_expression.cache_clear()
        preds: list[str | None] = []
        refs: list[list[tuple]] = []
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, len(paths), batch):
            texts = [Path(p).read_text(encoding="utf-8", errors="replace") for p in paths[i:i + batch]]
            for text, full in zip(texts, scanner.index.find_batch(texts), strict=True):
                found = scan(text, scanner.index, full, scanner.names)
                preds.append(expression(found))
                refs.append([(f.license, f.form, f.scope, text[f.start:f.end]) for f in found
                             if f.evidence == "reference"])
        runs.append({"predictions": preds, "references": refs, "seconds": time.perf_counter() - t0,
                     "cpu_seconds": time.process_time() - c0, "load_seconds": load})
    return sorted(runs, key=lambda r: r["cpu_seconds"])[len(runs) // 2]


def same(pred: str | None, label: str) -> bool:
    if not pred:
        return False
    try:
        return bool(L.is_equivalent(pred, label))
    except Exception:  # noqa: BLE001 - an unparsable prediction is wrong
        return False


def contradicted(cases: list[dict], path: Path = CONTRADICTED) -> list[str | None]:
    """Per case, the reason its label is contradicted by its own text (licenses_contradicted.toml), else None."""
    entries = tomllib.loads(path.read_text(encoding="utf-8"))["label"]
    by_key = {(e["source"], e["sha256"]): e for e in entries}
    out = []
    for c in cases:
        e = by_key.get((c["source"], hashlib.sha256(c["text"].encode()).hexdigest()[:16]))
        out.append(f"{e['kind']}: {e['reason']}" if e and e["label"] == c["label"] else None)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="use only the first N cases (0: all)")
    ap.add_argument("--site-packages", type=Path, default=Path(sysconfig.get_paths()["purelib"]))
    ap.add_argument("--json", type=Path, help="write every case with both predictions here")
    ap.add_argument("--misses", action="store_true", help="print every case Curate gets wrong, with ScanCode's answer")
    ap.add_argument("--no-scancode", action="store_true")
    ap.add_argument("--sources", nargs="*", help="only these sources (debian, python, dep5-files, description)")
    args = ap.parse_args()
    sources = ("debian", "python", "dep5-files", "description")
    cases = dedupe(debian_cases() + python_cases(args.site_packages) + dep5_files_cases()
                   + description_cases(args.site_packages))
    if args.limit:
        cases = cases[:args.limit]
    if args.sources:
        cases = [c for c in cases if c["source"].split(":")[0] in args.sources]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, c in enumerate(cases):
            p = Path(tmp) / f"{i:05d}.txt"
            p.write_text(c["text"], encoding="utf-8")
            paths.append(str(p))
        ours = run_curate(paths)
        theirs = None if args.no_scancode else run_scancode(paths)
    n = len(cases)
    why = contradicted(cases)
    src = [c["source"].split(":")[0] for c in cases]
    by_source = Counter(src)
    print(f"{n} documents: {by_source['debian']} Debian copyright licence paragraphs (License: line removed), "
          f"{by_source['python']} Python package licence files, {by_source['dep5-files']} DEP-5 Files: paragraphs "
          f"(License: line kept), {by_source['description']} Python package long descriptions; "
          f"{sum(len(c['text']) for c in cases) / 1e6:.2f} M characters, {len({c['label'] for c in cases})} distinct "
          f"SPDX ids; {sum(w is not None for w in why)} labels contradicted by their own text "
          f"(benchmarks/licenses_contradicted.toml)")
    rows = [("curate licenses", ours)] + ([("scancode-toolkit-mini 32.5.0", theirs)] if theirs else [])
    print(f"{'tool':<30} {'all':>7} {'excl.contra':>11} " + " ".join(f"{s:>11}" for s in sources)
          + f" {'full texts':>10} {'docs/s':>8} {'docs/cpu-s':>10} {'load s':>7}")
    for name, r in rows:
        ok = [same(p, c["label"]) for p, c in zip(r["predictions"], cases, strict=True)]
        acc = {s: sum(o for o, t in zip(ok, src, strict=True) if t == s) / max(by_source[s], 1) for s in sources}
        kept = [o for o, w in zip(ok, why, strict=True) if w is None]
        texts = [o for o, t in zip(ok, src, strict=True) if t in ("debian", "python")]
        r["correct"] = ok
        print(f"{name:<30} {sum(ok) / max(n, 1):>7.1%} {sum(kept) / max(len(kept), 1):>11.1%} "
              + " ".join(f"{acc[s]:>11.1%}" for s in sources)
              + f" {sum(texts) / max(len(texts), 1):>10.1%} {n / r['seconds']:>8.1f} {n / r['cpu_seconds']:>10.1f} "
              f"{r['load_seconds']:>7.1f}")
    print(f"all = exact SPDX expression on all {n} labels as given; excl.contra = on the {sum(w is None for w in why)} "
          f"left after removing the contradicted ones; full texts = the earlier benchmark's two sources (debian, "
          f"python)")
    if theirs:
        print(f"speed ratio curate/scancode, one process each: {theirs['cpu_seconds'] / ours['cpu_seconds']:.0f}x "
              f"CPU time (the figure we report), {theirs['seconds'] / ours['seconds']:.0f}x wall-clock "
              f"(machine shared: see README)")
    if theirs:
        # the ceiling: labels no tool reads from the text (a README that never names its licence)
        blank = [i for i, c in enumerate(cases) if src[i] == "description" and ours["predictions"][i] is None
                 and theirs["predictions"][i] is None]
        best = n - sum(w is not None for w in why) - len(blank)
        print(f"{len(blank)} of {by_source['description']} long descriptions name no licence either tool reads (both "
              f"answer nothing): the most a tool answering what the text says can reach is {best / n:.1%} of all "
              f"labels, {best / max(sum(w is None for w in why), 1):.1%} without the contradicted ones")
    scope_report(cases, src, ours)
    wrong = [(i, c) for i, c in enumerate(cases) if not ours["correct"][i]]
    print(f"curate's misses: {len(wrong)}, of which {sum(why[i] is not None for i, _ in wrong)} on contradicted "
          f"labels")
    if args.misses:
        for i, c in wrong:
            sc = f" | scancode: {theirs['predictions'][i]}" if theirs else ""
            print(f"  {c['source']}: label {c['label']} | curate: {ours['predictions'][i]}{sc}"
                  + (f" | contradicted ({why[i]})" if why[i] else ""))
    if args.json:
        out = [{"source": c["source"], "label": c["label"], "curate": ours["predictions"][i],
                "scancode": theirs["predictions"][i] if theirs else None, "contradicted": why[i],
                "references": ours["references"][i]}
               for i, c in enumerate(cases)]
        args.json.write_text(json.dumps(out, indent=1))


def scope_report(cases: list[dict], src: list[str], ours: dict) -> None:
    """How often a licence a README merely talks about is taken for its grant: on the long descriptions, the
    references Curate reads as granting (`self`) whose licence is not the metadata's, and those it reads as
    mentions, by whether the metadata's licence is among them."""
    grants = wrong = mentions = mention_of_label = docs_wrong = 0
    for i, c in enumerate(cases):
        if src[i] != "description":
            continue
        refs = ours["references"][i]
        bad = [r for r in refs if r[2] != "mention" and not same(r[0], c["label"])]
        grants += sum(r[2] != "mention" for r in refs)
        wrong += len(bad)
        docs_wrong += bool(bad)
        mentions += sum(r[2] == "mention" for r in refs)
        mention_of_label += sum(r[2] == "mention" and same(r[0], c["label"]) for r in refs)
    n = sum(s == "description" for s in src)
    if n:
        print(f"scope on {n} long descriptions: {grants} references read as grants, {wrong} of them not the "
              f"metadata's licence ({docs_wrong} documents, {docs_wrong / n:.1%}); {mentions} read as mentions, "
              f"{mention_of_label} of them the metadata's own licence")


if __name__ == "__main__":
    main()
