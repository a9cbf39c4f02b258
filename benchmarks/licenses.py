"""Licence detection accuracy and speed, Curate's `licenses` stage next to ScanCode, on the same files in one run.

Ground truth is licence metadata neither tool's authors wrote for this test:
- Debian: every `License:` paragraph with a text body in machine-readable (DEP-5) /usr/share/doc/*/copyright files;
  the body is the document (the `License:` line itself is removed), the short name mapped to SPDX is the answer;
- Python: the single licence file of each installed distribution (*.dist-info/licenses/ or LICENSE*/COPYING* in
  *.dist-info), answered by its METADATA `License-Expression`, else a `License` field that is an SPDX id, else an
  unambiguous classifier.
Only single-licence answers are kept (no AND/OR/WITH), and each distinct text once. A prediction is right when it is
the same SPDX expression (license-expression's equivalence): Curate's is the AND of the licences it found, ScanCode's
its `detected_license_expression_spdx`. Speed: documents per second of one process each (2 cores, shared), model or
index loading excluded for both and reported apart.

    bash benchmarks/setup_scancode.sh          # once: /work/bench-venvs/scancode
    PYTHONPATH=. .venv/bin/python benchmarks/licenses.py [--limit N] [--json out.json]
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
from collections import Counter
from pathlib import Path

from license_expression import get_spdx_licensing

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curate.licenses import Scanner, expression, scan  # noqa: E402

SCANCODE_VENV = Path(os.environ.get("SCANCODE_VENV", "/work/bench-venvs/scancode"))
L = get_spdx_licensing()

DEBIAN = {  # Debian short names (lower-case) that are not SPDX ids themselves
    "expat": "MIT", "mit/x11": "X11", "bsd-2": "BSD-2-Clause", "bsd-3": "BSD-3-Clause", "bsd-4": "BSD-4-Clause",
    "apache-2": "Apache-2.0", "artistic": "Artistic-1.0-Perl", "artistic-2": "Artistic-2.0", "cc0": "CC0-1.0",
    "boost-1.0": "BSL-1.0", "psf-2": "PSF-2.0", "zope-2.1": "ZPL-2.1", "public-domain": None, "permissive": None,
    "bsd": None, "gpl": "GPL-1.0-or-later", "lgpl": "LGPL-2.0-or-later",
}
GNU_LABEL = re.compile(r"(a|l)?gpl-?(\d(?:\.\d)?)(\+)?", re.I)
GFDL_LABEL = re.compile(r"gfdl-(1\.[123])(\+)?", re.I)
CLASSIFIERS = {
    "License :: OSI Approved :: MIT License": "MIT", "License :: OSI Approved :: Apache Software License": "Apache-2.0",
    "License :: OSI Approved :: ISC License (ISCL)": "ISC", "License :: OSI Approved :: zlib/libpng License": "Zlib",
    "License :: OSI Approved :: Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "License :: OSI Approved :: The Unlicense (Unlicense)": "Unlicense",
    "License :: OSI Approved :: Python Software Foundation License": "PSF-2.0",
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
        return f"GFDL-{m.group(1)}-{'or-later' if m.group(2) else 'only'}"
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
                cases.append({"source": f"debian:{f.parent.name}", "label": label, "text": body})
    return cases


LICENCE_FILE = re.compile(r"(?i)^(licen[cs]e|copying)([-_.].*)?$")


def python_cases(site: Path) -> list[dict]:
    cases = []
    for dist in sorted(site.glob("*.dist-info")):
        meta_path = dist / "METADATA"
        if not meta_path.exists():
            continue
        meta = email.message_from_string(meta_path.read_text(encoding="utf-8", errors="replace"))
        files = [p for p in sorted((dist / "licenses").rglob("*")) if p.is_file()] if (dist / "licenses").is_dir() \
            else [p for p in sorted(dist.iterdir()) if p.is_file() and LICENCE_FILE.match(p.name)]
        files = [p for p in files if LICENCE_FILE.match(p.name)]
        if len(files) != 1:
            continue
        label = None
        if meta.get("License-Expression"):
            label = spdx_id(meta["License-Expression"])
        elif meta.get("License") and len(meta["License"]) < 40:
            label = spdx_id(meta["License"])
        if not label and not meta.get("License-Expression"):
            found = {CLASSIFIERS[c] for c in meta.get_all("Classifier") or [] if c in CLASSIFIERS}
            label = found.pop() if len(found) == 1 else None
        text = files[0].read_text(encoding="utf-8", errors="replace").strip()
        if label and len(text) >= 100:
            cases.append({"source": f"python:{dist.name}", "label": label, "text": text})
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


def run_curate(paths: list[str], batch: int = 1000) -> dict:
    t0 = time.perf_counter()
    scanner = Scanner()
    load = time.perf_counter() - t0
    preds: list[str | None] = []
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(paths), batch):
        texts = [Path(p).read_text(encoding="utf-8", errors="replace") for p in paths[i:i + batch]]
        for text, full in zip(texts, scanner.index.find_batch(texts), strict=True):
            preds.append(expression(scan(text, scanner.index, full)))
    return {"predictions": preds, "seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0,
            "load_seconds": load}


def same(pred: str | None, label: str) -> bool:
    if not pred:
        return False
    try:
        return bool(L.is_equivalent(pred, label))
    except Exception:  # noqa: BLE001 - an unparsable prediction is wrong
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--limit", type=int, default=0, help="use only the first N cases (0: all)")
    ap.add_argument("--site-packages", type=Path, default=Path(sysconfig.get_paths()["purelib"]))
    ap.add_argument("--json", type=Path, help="write every case with both predictions here")
    ap.add_argument("--no-scancode", action="store_true")
    args = ap.parse_args()
    cases = dedupe(debian_cases() + python_cases(args.site_packages))
    if args.limit:
        cases = cases[:args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, c in enumerate(cases):
            p = Path(tmp) / f"{i:05d}.txt"
            p.write_text(c["text"], encoding="utf-8")
            paths.append(str(p))
        ours = run_curate(paths)
        theirs = None if args.no_scancode else run_scancode(paths)
    n = len(cases)
    by_source = Counter(c["source"].split(":")[0] for c in cases)
    print(f"{n} licence files ({by_source['debian']} Debian copyright paragraphs, {by_source['python']} Python "
          f"package licence files), {sum(len(c['text']) for c in cases) / 1e6:.2f} M characters, "
          f"{len({c['label'] for c in cases})} distinct SPDX ids")
    rows = [("curate licenses", ours)] + ([("scancode-toolkit-mini 32.5.0", theirs)] if theirs else [])
    print(f"{'tool':<30} {'accuracy':>9} {'debian':>7} {'python':>7} {'docs/s':>9} {'docs/cpu-s':>10} {'load s':>7}")
    for name, r in rows:
        ok = [same(p, c["label"]) for p, c in zip(r["predictions"], cases, strict=True)]
        acc = {s: sum(o for o, c in zip(ok, cases, strict=True) if c["source"].startswith(s)) / max(by_source[s], 1)
               for s in ("debian", "python")}
        r["correct"] = ok
        print(f"{name:<30} {sum(ok) / n:>9.1%} {acc['debian']:>7.1%} {acc['python']:>7.1%} "
              f"{n / r['seconds']:>9.1f} {n / r['cpu_seconds']:>10.1f} {r['load_seconds']:>7.1f}")
    if theirs:
        print(f"speed ratio curate/scancode: {theirs['seconds'] / ours['seconds']:.0f}x wall-clock, "
              f"{theirs['cpu_seconds'] / ours['cpu_seconds']:.0f}x CPU time (machine shared: see README)")
        wrong = Counter((c["label"], p) for c, p, ok in zip(cases, ours["predictions"], ours["correct"], strict=True)
                        if not ok)
        print("curate's most frequent misses (label -> prediction):",
              ", ".join(f"{a} -> {b} ({k})" for (a, b), k in wrong.most_common(8)))
    if args.json:
        out = [{"source": c["source"], "label": c["label"], "curate": ours["predictions"][i],
                "scancode": theirs["predictions"][i] if theirs else None} for i, c in enumerate(cases)]
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
