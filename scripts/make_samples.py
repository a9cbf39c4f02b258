#!/usr/bin/env python3
"""Build Curate's bundled sample shards (data/samples/) from files on a Debian 12 system.

The shards are made of real, redistributable English text that ships with Debian
(changelog.Debian.gz and copyright files under /usr/share/doc, the licence texts in
/usr/share/common-licenses, man pages, README files, SPDX-tagged source files) plus
about 40 non-English documents assembled from translated strings (msgstr) in the .mo
catalogues under /usr/share/locale.  On top of that the script deliberately injects the
things Curate has to find: exact and near duplicates, personal data and fake secrets,
licence/opt-out signals, low-quality text, and a damaged shard.  Everything it did is
written to data/samples/README.md.

Usage (the script needs ``zstandard`` and ``pyarrow``):

    python3 -m venv /tmp/samples-venv
    /tmp/samples-venv/bin/pip install zstandard pyarrow
    /tmp/samples-venv/bin/python scripts/make_samples.py            # writes data/samples/

Determinism: file lists are sorted, every random choice comes from one seeded
``random.Random``, gzip members are written with mtime=0 and no file name, zstd and
parquet use fixed settings.  Re-running on the same machine (same installed packages,
same pyarrow/zstandard versions) gives byte-identical files.  The output depends on the
packages installed on the machine, so the README records the Debian release.
"""

import argparse
import base64
import csv
import gettext
import glob
import gzip
import hashlib
import io
import json
import os
import random
import re
import string
import subprocess
import sys
import textwrap
import zlib
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

SEED = 20240611
CODENAME = "bookworm"
MAX_TOTAL_BYTES = 5_000_000

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Target number of *base* (unmodified, real) documents per shard.
N_CHANGELOG = 880
N_COPYRIGHT = 200
N_MANPAGES = 640
N_README = 150
N_LICPARA = 50
N_SPDX = 12

NEAR_BAND = (0.85, 0.95)
FAR_BAND = (0.45, 0.55)
REPORT_THRESHOLD = 0.45  # every pair at or above this Jaccard is listed in the README

WORD = re.compile(r"\w+")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------
# Reading the machine
# ----------------------------------------------------------------------------------

def strip_epoch(v):
    return v.split(":", 1)[1] if ":" in v else v


def load_dpkg():
    """binary package -> (source package, source version); file path -> binary package."""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package}\t${source:Package}\t${source:Version}\t${Version}\n"],
        capture_output=True, text=True, check=True).stdout
    pkgs = {}
    for line in sorted(out.splitlines()):
        p, src, sver, ver = line.split("\t")
        pkgs.setdefault(p, (src or p, strip_epoch(sver or ver)))
    # Keep only packages that exist in the Debian archive: third-party packages installed
    # from other repositories (here google-cloud-cli*, kubectl) are not Debian and are skipped.
    archive = debian_archive_names()
    excluded = []
    if archive:
        excluded = sorted(p for p in pkgs if p not in archive)
        pkgs = {p: v for p, v in pkgs.items() if p in archive}
    else:
        log("WARNING: no Debian Packages index under /var/lib/apt/lists; not filtering by origin")
    owner = {}
    for lst in sorted(glob.glob("/var/lib/dpkg/info/*.list")):
        p = os.path.basename(lst)[:-5].split(":")[0]
        with open(lst, encoding="utf-8", errors="replace") as f:
            for line in f:
                owner.setdefault(line.rstrip("\n"), p)
    return pkgs, owner, excluded


def debian_archive_names():
    """Binary package names in the machine's Debian main Packages indices (apt lists)."""
    names = set()
    for path in sorted(glob.glob("/var/lib/apt/lists/*debian*_main_binary-*_Packages*")):
        r = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", path], capture_output=True)
        if r.returncode != 0:
            continue
        for line in r.stdout.decode("utf-8", "replace").splitlines():
            if line.startswith("Package: "):
                names.add(line[9:].strip())
    return names


def read_text(path):
    """UTF-8 text of a (possibly gzipped) file, or None if it is not clean text."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if path.endswith(".gz"):
            data = gzip.decompress(data)
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
        return None
    if "\x00" in text or "\x1b" in text:
        return None
    text = text.replace("\r\n", "\n")
    return text.strip("\n") + "\n"


def pool_letter(src):
    return src[:4] if src.startswith("lib") and len(src) > 3 else src[:1]


def person_name(s):
    """'Full Name <mail>' -> 'Full Name'."""
    s = re.sub(r"<[^>]*>", "", s or "").strip().strip(",").strip()
    return s or None


# ---- changelogs -------------------------------------------------------------------

CL_HEAD = re.compile(r"^([a-z0-9][a-z0-9.+-]+) \(([^()\s]+)\) ([^;]*);\s*(.*)$")
CL_TRAIL = re.compile(r"^ -- (.+?) <([^>]+)>  (.+)$")


def parse_changelog(text):
    entries, cur = [], None
    for line in text.splitlines():
        if cur is None:
            m = CL_HEAD.match(line)
            if m:
                cur = {"pkg": m.group(1), "ver": m.group(2), "dist": m.group(3).strip(), "lines": [line]}
        else:
            cur["lines"].append(line)
            m = CL_TRAIL.match(line)
            if m:
                cur["author"], cur["email"], cur["date"] = m.group(1).strip(), m.group(2), m.group(3).strip()
                cur["text"] = "\n".join(cur.pop("lines")).strip("\n") + "\n"
                entries.append(cur)
                cur = None
            elif CL_HEAD.match(line):  # malformed entry without trailer: restart
                m = CL_HEAD.match(line)
                cur = {"pkg": m.group(1), "ver": m.group(2), "dist": m.group(3).strip(), "lines": [line]}
    return entries


def collect_changelogs(pkgs):
    seen_src, entries = set(), []
    for path in sorted(glob.glob("/usr/share/doc/*/changelog.Debian.gz")):
        if path.split("/")[4] not in pkgs:
            continue
        text = read_text(path)
        if not text:
            continue
        es = parse_changelog(text)
        if not es or es[0]["pkg"] in seen_src:
            continue
        src = es[0]["pkg"]
        seen_src.add(src)
        top_ver = strip_epoch(es[0]["ver"])
        for i, e in enumerate(es):
            if not (180 <= len(e["text"].encode()) <= 6000):
                continue
            e["src"], e["top_ver"], e["index"] = src, top_ver, i
            entries.append(e)
    return entries


def changelog_doc(e):
    src = e["src"]
    url = (f"https://metadata.ftp-master.debian.org/changelogs/main/{pool_letter(src)}/{src}/"
           f"{src}_{e['top_ver']}_changelog#v{strip_epoch(e['ver'])}")
    meta = {"source": "debian-changelog", "package": src, "version": e["ver"],
            "distribution": e["dist"], "author": e["author"], "date": e["date"]}
    return {"text": e["text"], "url": url, "meta": meta}


# ---- copyright files (DEP-5) -------------------------------------------------------

def parse_dep5(text):
    paras, cur, field = [], {}, None
    for line in text.splitlines():
        if not line.strip():
            if cur:
                paras.append(cur)
            cur, field = {}, None
            continue
        if line[0] in " \t" and field:
            cur[field] += "\n" + line
            continue
        m = re.match(r"^([A-Za-z][A-Za-z0-9-]*):\s?(.*)$", line)
        if m:
            field = m.group(1).lower()
            cur[field] = m.group(2)
        elif field:
            cur[field] += "\n" + line
    if cur:
        paras.append(cur)
    return paras


def dep5_body(value):
    lines = value.split("\n")
    out = []
    for l in lines[1:]:
        l = l[1:] if l[:1] in (" ", "\t") else l
        out.append("" if l.strip() == "." else l.rstrip())
    return "\n".join(out).strip("\n")


def collect_copyright(pkgs):
    docs, licparas, holders = [], [], set()
    seen = set()
    for path in sorted(glob.glob("/usr/share/doc/*/copyright")):
        pkg = path.split("/")[4]
        if pkg not in pkgs:
            continue
        text = read_text(path)
        if not text:
            continue
        key = hashlib.sha1(text.encode()).hexdigest()
        if key in seen:
            continue
        seen.add(key)
        src, ver = pkgs[pkg]
        paras = parse_dep5(text) if text.startswith("Format:") else []
        lic_names, contact = [], None
        for p in paras:
            if "license" in p:
                name = p["license"].split("\n")[0].strip()
                if name and name not in lic_names:
                    lic_names.append(name)
                body = dep5_body(p["license"])
                if "files" not in p and len(body) >= 400:
                    licparas.append({"pkg": pkg, "src": src, "ver": ver, "name": name, "body": body})
            if "upstream-contact" in p and not contact:
                contact = person_name(p["upstream-contact"].split("\n")[0])
            if "copyright" in p:
                for line in p["copyright"].split("\n"):
                    line = line.strip().lstrip("©").strip()
                    if re.match(r"^(Copyright\s*(\([cC]\))?\s*)?\d{4}", line):
                        line = re.sub(r"^Copyright\s*(\([cC]\))?\s*", "", line).rstrip(",;")
                        if 12 <= len(line) <= 70 and re.search(r"[A-Za-z]{3}", line):
                            holders.add(line)
        if 400 <= len(text.encode()) <= 40000:
            meta = {"source": "debian-copyright", "package": pkg}
            if lic_names:
                meta["licenses"] = lic_names[:12]
            if contact and "@" not in contact and "http" not in contact:
                meta["author"] = contact
            docs.append({"text": text, "url": f"https://sources.debian.org/src/{src}/{ver}/debian/copyright",
                         "meta": meta, "_pkg": pkg})
    return docs, licparas, sorted(holders)


# ---- README files ------------------------------------------------------------------

def collect_readmes(pkgs):
    docs, seen = [], set()
    for path in sorted(glob.glob("/usr/share/doc/*/README*")):
        if os.path.isdir(path) or re.search(r"\.(html?|pdf|png|svg|jpg|css|js)(\.gz)?$", path, re.I):
            continue
        pkg = path.split("/")[4]
        if pkg not in pkgs:
            continue
        text = read_text(path)
        if not text or not (300 <= len(text.encode()) <= 20000):
            continue
        if sum(c.isalpha() for c in text) < 0.5 * len(text):
            continue
        key = hashlib.sha1(text.encode()).hexdigest()
        if key in seen:
            continue
        seen.add(key)
        src, ver = pkgs[pkg]
        name = os.path.basename(path)
        name = name[:-3] if name.endswith(".gz") else name
        sub = "debian/" if ".Debian" in name else ""
        docs.append({"text": text, "url": f"https://sources.debian.org/src/{src}/{ver}/{sub}{name}",
                     "meta": {"source": "readme", "package": pkg, "file": name}})
    return docs


# ---- man pages ---------------------------------------------------------------------

OVERSTRIKE = re.compile(r".\x08")
SGR = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def render_man(path):
    env = {"PATH": "/usr/bin:/bin", "MANWIDTH": "80", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
           "MANPAGER": "cat", "PAGER": "cat", "HOME": "/tmp"}
    try:
        r = subprocess.run(["man", "-l", "-P", "cat", path], capture_output=True, env=env,
                           cwd="/usr/share/man", timeout=60)
    except subprocess.TimeoutExpired:
        return None
    try:
        out = r.stdout.decode("utf-8")
    except UnicodeDecodeError:
        return None
    out = SGR.sub("", OVERSTRIKE.sub("", out))
    out = "\n".join(l.rstrip() for l in out.splitlines()).strip("\n") + "\n"
    return out


def collect_manpages(pkgs, owner, rng, want):
    cands = []
    for sec in ("1", "5", "8"):
        for path in sorted(glob.glob(f"/usr/share/man/man{sec}/*.gz")):
            if os.path.islink(path) or os.path.getsize(path) < 900:
                continue
            pkg = owner.get(path)
            if pkg not in pkgs:
                continue
            cands.append((path, pkg))
    picked = rng.sample(cands, min(len(cands), int(want * 1.7)))
    with ThreadPoolExecutor(max_workers=8) as ex:
        rendered = list(ex.map(lambda pp: render_man(pp[0]), picked))
    docs = []
    for (path, pkg), text in zip(picked, rendered):
        if not text or not (1500 <= len(text.encode()) <= 30000) or "NAME" not in text:
            continue
        base = os.path.basename(path)[:-3]
        cmd, _, sec = base.rpartition(".")
        docs.append({"text": text, "url": f"https://manpages.debian.org/{CODENAME}/{pkg}/{cmd}.{sec}.en.html",
                     "meta": {"source": "manpage", "package": pkg, "section": sec, "command": cmd}})
    return docs


# ---- common-licenses ---------------------------------------------------------------

def collect_common_licenses(pkgs):
    ver = pkgs.get("base-files", ("base-files", "12"))[1]
    docs, seen = [], set()
    for path in sorted(glob.glob("/usr/share/common-licenses/*")):
        name = os.path.basename(path)
        real = os.path.realpath(path)
        text = read_text(real)
        if not text:
            continue
        key = hashlib.sha1(text.encode()).hexdigest()
        if key in seen or os.path.islink(path):
            continue
        seen.add(key)
        docs.append({"text": text, "url": f"https://sources.debian.org/src/base-files/{ver}/licenses/{name}",
                     "meta": {"source": "common-licenses", "license": name}})
    return docs


CANONICAL_LICENCE_URL = {
    "GPL-3": "https://www.gnu.org/licenses/gpl-3.0.txt",
    "GPL-2": "https://www.gnu.org/licenses/old-licenses/gpl-2.0.txt",
    "LGPL-2.1": "https://www.gnu.org/licenses/old-licenses/lgpl-2.1.txt",
    "Apache-2.0": "https://www.apache.org/licenses/LICENSE-2.0.txt",
    "MPL-2.0": "https://www.mozilla.org/media/MPL/2.0/index.txt",
    "CC0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/legalcode.txt",
}


# ---- SPDX-tagged code --------------------------------------------------------------

def collect_spdx(pkgs, owner):
    out = subprocess.run(["grep", "-rlI", "--include=*.py", "--include=*.h", "--include=*.c",
                          "--include=*.sh", "--include=*.pl", "--include=*.pm", "--include=*.cmake",
                          "SPDX-License-Identifier:", "/usr/lib/python3/dist-packages", "/usr/share",
                          "/usr/include"],
                         capture_output=True, text=True).stdout
    docs, seen_dir = [], set()
    for path in sorted(out.splitlines()):
        if os.path.islink(path):
            continue
        d = os.path.dirname(path)
        if d in seen_dir:
            continue
        pkg = owner.get(path)
        if pkg not in pkgs:
            continue
        text = read_text(path)
        if not text or not (800 <= len(text.encode()) <= 12000):
            continue
        m = re.search(r"SPDX-License-Identifier:\s*([A-Za-z0-9.+ ()-]+)", text)
        if not m:
            continue
        seen_dir.add(d)
        src, ver = pkgs[pkg]
        docs.append({"text": text, "url": f"https://sources.debian.org/src/{src}/{ver}/{os.path.basename(path)}",
                     "meta": {"source": "source-code", "package": pkg, "path": path,
                              "spdx": m.group(1).strip()}})
    return docs


# ---- translations (.mo) ------------------------------------------------------------

NONEN_PLAN = [("fr", 7), ("de", 7), ("es", 7), ("it", 4), ("pt_BR", 3), ("nl", 3),
              ("sv", 2), ("pl", 2), ("cs", 2), ("fi", 1), ("ru", 1), ("ja", 1)]


def mo_sentences(path, lang):
    try:
        with open(path, "rb") as f:
            t = gettext.GNUTranslations(f)
    except Exception:
        return [], None
    sents = []
    for k, v in t._catalog.items():
        if isinstance(k, tuple) or not k or v == k:
            continue
        v = " ".join(v.split())
        if re.search(r"[%$<>{}\\|_=@`/]|--|\.\.\.|\s-[a-zA-Z]", v):
            continue
        if lang == "ja":
            ok = 15 <= len(v) <= 200 and v.endswith("。")
        else:
            ok = 35 <= len(v) <= 260 and v.endswith(".") and v.count(" ") >= 4
        if ok:
            sents.append(v)
    sents = sorted(set(sents))
    return sents, person_name(t.info().get("last-translator", ""))


def collect_nonenglish(pkgs, owner, rng):
    docs = []
    for lang, n in NONEN_PLAN:
        eligible = []
        for path in sorted(glob.glob(f"/usr/share/locale/{lang}/LC_MESSAGES/*.mo")):
            dom = os.path.basename(path)[:-3]
            if dom.startswith("iso_") or os.path.islink(path):
                continue
            pkg = owner.get(path)
            if pkg not in pkgs:
                continue
            sents, translator = mo_sentences(path, lang)
            if len(sents) >= 14:
                eligible.append((dom, pkg, sents, translator))
        for dom, pkg, sents, translator in rng.sample(eligible, min(n, len(eligible))):
            chosen = rng.sample(sents, min(len(sents), rng.randint(14, 26)))
            paras, i = [], 0
            while i < len(chosen):
                k = rng.randint(3, 6)
                paras.append(" ".join(chosen[i:i + k]))
                i += k
            text = "\n\n".join(paras) + "\n"
            src, ver = pkgs[pkg]
            meta = {"source": "gettext-translation", "package": src, "domain": dom}
            if translator and "FULL NAME" not in translator.upper():
                meta["author"] = translator
            docs.append({"text": text, "url": f"https://sources.debian.org/src/{src}/{ver}/po/{lang}.po",
                         "meta": meta, "_lang": lang})
    return docs


# ----------------------------------------------------------------------------------
# Similarity
# ----------------------------------------------------------------------------------

def shingle_hashes(text, n=5):
    w = WORD.findall(text.lower())
    if len(w) < n:
        return frozenset()
    return frozenset(int.from_bytes(hashlib.blake2b(" ".join(w[i:i + n]).encode(), digest_size=8).digest(), "big")
                     for i in range(len(w) - n + 1))


def shingle_tuples(text, n=5):
    w = WORD.findall(text.lower())
    return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}


def jaccard(a, b):
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def jac_text(a, b):
    return jaccard(shingle_tuples(a), shingle_tuples(b))


def jac_ws(a, b, n=5):
    """Same measure on whitespace tokens (case-folded), reported for reference."""
    def sh(t):
        w = t.lower().split()
        return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}
    return jaccard(sh(a), sh(b))


def similar_pairs(texts, threshold):
    """All pairs (i, j, J) with word-5-gram Jaccard >= threshold (exact, no false negatives
    for J >= threshold >= 0.3 in practice: small docs are compared exhaustively via a full
    inverted index, large docs through a 1/8 sample of their shingles)."""
    S = [shingle_hashes(t) for t in texts]
    small_idx = defaultdict(list)
    samp_idx = defaultdict(list)
    for i, s in enumerate(S):
        if not s:
            continue
        if len(s) <= 180:
            for h in s:
                small_idx[h].append(i)
        if len(s) >= 80:
            for h in s:
                if h % 8 == 0:
                    samp_idx[h].append(i)
    cand = set()
    for posting in small_idx.values():
        if len(posting) > 1:
            for a in range(len(posting)):
                for b in range(a + 1, len(posting)):
                    cand.add((posting[a], posting[b]))
    counts = Counter()
    for posting in samp_idx.values():
        if len(posting) > 1:
            for a in range(len(posting)):
                pa_ = posting[a]
                for b in range(a + 1, len(posting)):
                    counts[(pa_, posting[b])] += 1
    for (a, b), c in counts.items():
        if c >= 2:
            cand.add((a, b))
    out = []
    for a, b in sorted(cand):
        la, lb = len(S[a]), len(S[b])
        if min(la, lb) / max(la, lb) < threshold:
            continue
        j = jaccard(S[a], S[b])
        if j >= threshold:
            out.append((a, b, j))
    return out


# ----------------------------------------------------------------------------------
# Edits used to manufacture near duplicates
# ----------------------------------------------------------------------------------

REPLACEMENT_WORDS = ["system", "package", "version", "support", "update", "program", "module",
                     "option", "default", "release", "library", "service", "request", "network",
                     "feature", "project", "process", "machine", "archive", "project", "handler"]


def search_edit(orig, build, maxp, target):
    """Smallest p in [1, maxp] with J(orig, build(p)) <= target (J is ~monotone in p)."""
    S0 = shingle_tuples(orig)

    def J(p):
        return jaccard(S0, shingle_tuples(build(p)))
    if maxp < 1 or J(maxp) > target:
        return None
    lo, hi = 1, maxp
    while lo < hi:
        mid = (lo + hi) // 2
        if J(mid) <= target:
            hi = mid
        else:
            lo = mid + 1
    return build(lo), J(lo), lo


def op_words(orig, rng, target):
    spans = [m.span() for m in re.finditer(r"\b[A-Za-z]{4,}\b", orig)]
    rng.shuffle(spans)
    repl = [rng.choice(REPLACEMENT_WORDS) for _ in spans]

    def build(k):
        chosen = sorted(zip(spans[:k], repl[:k]))
        out, pos = [], 0
        for (s, e), w in chosen:
            out.append(orig[pos:s])
            word = orig[s:e]
            out.append(w if w != word.lower() else "component")
            pos = e
        out.append(orig[pos:])
        return "".join(out)
    r = search_edit(orig, build, len(spans), target)
    return r and (r[0], r[1], f"{r[2]} words replaced")


def op_append(orig, donor, target):
    dl = [l for l in donor.splitlines()]

    def build(k):
        return orig.rstrip("\n") + "\n\n" + "\n".join(dl[:k]).strip("\n") + "\n"
    r = search_edit(orig, build, len(dl), target)
    return r and (r[0], r[1], f"{r[2]} lines of another document appended")


def op_remove(orig, rng, target):
    lines = orig.splitlines()
    starts = [i for i in range(1, len(lines)) if not lines[i - 1].strip() and lines[i].strip()] or [1]
    s = rng.choice(starts[: max(1, len(starts) // 2)])

    def build(k):
        return "\n".join(lines[:s] + lines[s + k:]).strip("\n") + "\n"
    r = search_edit(orig, build, len(lines) - s, target)
    return r and (r[0], r[1], f"{r[2]} lines removed from line {s}")


def op_holder(orig, rng, holders, target):
    """Change the copyright line(s), then (if needed) a few words, keeping the rest intact."""
    new_holder = rng.choice(holders)
    changed = re.sub(r"(?m)^(\s*Copyright:?\s*(?:\([cC]\)|©)?\s*).*$",
                     lambda m: m.group(1) + new_holder, orig)
    if changed == orig:
        return None
    j = jac_text(orig, changed)
    if j <= target:
        return changed, j, f"copyright line(s) changed to '{new_holder}'"
    r = op_words(changed, rng, target)
    if not r:
        return None
    return r[0], jac_text(orig, r[0]), f"copyright line(s) changed to '{new_holder}' and {r[2]}"


# ----------------------------------------------------------------------------------
# Injected content
# ----------------------------------------------------------------------------------

LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation ullamco laboris "
    "nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in reprehenderit in voluptate velit "
    "esse cillum dolore eu fugiat nulla pariatur. Excepteur sint occaecat cupidatat non proident, sunt in "
    "culpa qui officia deserunt mollit anim id est laborum.\n\n"
    "Sed ut perspiciatis unde omnis iste natus error sit voluptatem accusantium doloremque laudantium, "
    "totam rem aperiam, eaque ipsa quae ab illo inventore veritatis et quasi architecto beatae vitae dicta "
    "sunt explicabo. Nemo enim ipsam voluptatem quia voluptas sit aspernatur aut odit aut fugit, sed quia "
    "consequuntur magni dolores eos qui ratione voluptatem sequi nesciunt.\n")

JS_PAGE = (
    "Skip to main content\nMenu\nHome  Products  Documentation  Blog  Sign in\n\n"
    "JavaScript must be enabled to use this site.\n"
    "Please enable JavaScript in your browser settings and reload the page.\n"
    "You need to enable JavaScript to run this app.\n\nLoading...\n\n"
    "Privacy Policy | Terms of Use | Cookie Settings | Contact\n")

COOKIE_PAGE = (
    "We use cookies to improve your experience on our website. By continuing to browse this site you "
    "agree to our use of cookies.\nAccept all   Reject all   Manage preferences\n\n"
    "Sign in | Register | Forgot password?\n"
    "Share on Facebook  Share on Twitter  Share on LinkedIn  Email this page\n"
    "Subscribe to our newsletter\nEnter your email address  Subscribe\n"
    "Related posts\nPrevious post  Next post\nBack to top\n")

SHORT_DOCS = ["See changelog.", "TODO", "N/A", "ok", "Page 1 of 1", "Click here to download."]

AWS_KEY_ID = "AKIAIOSFODNN7EXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def fake_rsa_block(rng):
    raw = bytes(rng.getrandbits(8) for _ in range(1190))
    b64 = "MIIEowIBAAKCAQEA" + base64.b64encode(raw).decode()
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    return "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END RSA PRIVATE KEY-----"


def fake_ghp(rng):
    return "ghp_" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(36))


def pii_templates(rng):
    """(label, text inserted into a real document).  All values are documentation/test values."""
    ghp = fake_ghp(rng)
    rsa = fake_rsa_block(rng)
    return [
        ("credit card 4111 1111 1111 1111 + phone +1 212-555-0143",
         "Billing contact for the support contract is Jane Roe, +1 212-555-0143; the contract is charged "
         "to the card 4111 1111 1111 1111 (expiry 12/29)."),
        ("IBANs GB82 WEST 1234 5698 7654 32 and DE89 3704 0044 0532 0130 00",
         "Donations to the project can be wired to IBAN GB82 WEST 1234 5698 7654 32 (BIC WESTGB2L) or, "
         "from the euro area, to DE89 3704 0044 0532 0130 00."),
        ("IPv4 203.0.113.42, IPv6 2001:db8:85a3::8a2e:370:7334, phone (415) 555-0199",
         "If the primary mirror at 203.0.113.42 (IPv6 2001:db8:85a3::8a2e:370:7334) does not answer, "
         "call the on-call administrator at (415) 555-0199."),
        ("phone +44 20 7946 0958 + US SSN 078-05-1120",
         "For the London office dial +44 20 7946 0958. The contractor's social security number on file "
         "is 078-05-1120."),
        ("test cards 5555 5555 5555 4444, 3782 822463 10005, 6011-1111-1111-1117 (all Luhn-valid) and "
         "4111 1111 1111 1112 (Luhn-INVALID, should not be flagged as a card)",
         "The payment test suite uses the cards 5555 5555 5555 4444, 3782 822463 10005 and "
         "6011-1111-1111-1117; the number 4111 1111 1111 1112 fails the Luhn check and must be rejected."),
        ("AWS access key AKIAIOSFODNN7EXAMPLE + documented example secret",
         f"To reproduce the upload failure, run:\n\n    export AWS_ACCESS_KEY_ID={AWS_KEY_ID}\n"
         f"    export AWS_SECRET_ACCESS_KEY={AWS_SECRET}\n    aws s3 cp build.tar.gz s3://example-bucket/\n"),
        ("RSA private key block (random base64)",
         "The test key used by the TLS fixtures is reproduced below.\n\n" + rsa),
        ("database URL with password postgres://user:hunter2@db.example.com/app",
         "The staging configuration sets DATABASE_URL=postgres://user:hunter2@db.example.com/app and "
         "reloads the service."),
        (f"GitHub token {ghp}",
         f"CI publishes the documentation with GITHUB_TOKEN={ghp} from the release job."),
        ("IPv4 198.51.100.7, 192.0.2.254 and IPv6 fe80::1ff:fe23:4567:890a",
         "The firewall blocked 198.51.100.7 and 192.0.2.254 after repeated failed logins; the IPv6 peer "
         "fe80::1ff:fe23:4567:890a was not affected."),
        ("credit card 4111 1111 1111 1111 + US SSN 078-05-1120 in a changelog bullet",
         "Remove a test fixture that contained a customer's card number 4111 1111 1111 1111 and "
         "SSN 078-05-1120."),
        ("email + phone: José Núñez <jose.nunez@example.org>, +34 912 345 678",
         "Questions about the Spanish translation go to José Núñez <jose.nunez@example.org>, "
         "tel. +34 912 345 678."),
    ]


def insert_text(doc_text, snippet, rng, kind):
    if kind == "changelog":
        lines = doc_text.rstrip("\n").split("\n")
        trailer = max(i for i, l in enumerate(lines) if l.startswith(" -- "))
        at = trailer - 1 if trailer >= 1 and not lines[trailer - 1].strip() else trailer
        if "\n" in snippet:
            bullet = "  * " + "\n    ".join(snippet.split("\n"))
        else:
            bullet = textwrap.fill(snippet, width=78, initial_indent="  * ", subsequent_indent="    ",
                                   break_long_words=False, break_on_hyphens=False)
        return "\n".join(lines[:at] + [bullet] + lines[at:]) + "\n"
    if kind == "code":
        lines = doc_text.rstrip("\n").split("\n")
        at = min(len(lines), max(i for i, l in enumerate(lines[:60]) if not l.strip()) + 1
                 if any(not l.strip() for l in lines[:60]) else 1)
        block = ["# " + l if l else "#" for l in snippet.split("\n")]
        return "\n".join(lines[:at] + block + [""] + lines[at:]) + "\n"
    paras = doc_text.rstrip("\n").split("\n\n")
    at = rng.randint(1, max(1, len(paras) - 1))
    # match the indentation of the paragraph that follows (man pages are indented by 7)
    nxt = paras[at] if at < len(paras) else paras[-1]
    ind = re.match(r"[ ]*", nxt.lstrip("\n")).group(0)
    if "\n" in snippet:
        block = "\n".join(ind + l if l else l for l in snippet.split("\n"))
    else:
        block = textwrap.fill(snippet, width=78, initial_indent=ind, subsequent_indent=ind,
                              break_long_words=False, break_on_hyphens=False)
    return "\n\n".join(paras[:at] + [block] + paras[at:]) + "\n"


OPTOUT_MARKERS = [
    ("html_meta", {"robots": "noai"}),
    ("html_meta", {"robots": "noimageai, noai"}),
    ("html_meta", {"tdm-reservation": "1"}),
    ("headers", {"X-Robots-Tag": "noai"}),
]

MIRROR_HOSTS = ["mirror.example-mirror.net", "ftp.example-mirror.org", "docs.example.org",
                "www.docs.example.org", "archive.example.com", "cdn.example.net"]


def mirror_url(url, rng):
    u = urlsplit(url)
    host = rng.choice(MIRROR_HOSTS)
    prefix = {"mirror.example-mirror.net": "/debian-meta", "ftp.example-mirror.org": "/pub/debian-docs",
              "archive.example.com": "/snapshots/2024-06"}.get(host, "")
    frag = f"#{u.fragment}" if u.fragment else ""
    return f"https://{host}{prefix}/{u.netloc}{u.path}{frag}"


def ws_variant(text, rng):
    kind = rng.choice(["crlf", "collapse", "reflow"])
    if kind == "collapse":
        v = re.sub(r"[ \t]+", " ", text)
        v = "\n".join(l.strip() for l in v.split("\n"))
        v = "\n" + v.rstrip("\n") + "  \n\n"
    elif kind == "reflow":
        v = re.sub(r"(?<=\S)\n(?=\S)", " ", text)
        v = v.replace("\n\n", "\n \n")
    else:
        v = text.replace("\n", "\r\n") + "\t"
    if v == text:
        v = text.replace("\n", "\r\n") + " "
        kind = "crlf"
    return v, {"crlf": "whitespace: CRLF line ends + trailing tab",
               "collapse": "whitespace: runs of blanks collapsed, lines stripped, extra blank lines",
               "reflow": "whitespace: single newlines joined into spaces"}[kind]


def norm(t):
    return " ".join(t.split()).lower()


# ----------------------------------------------------------------------------------
# Building the shards
# ----------------------------------------------------------------------------------

class Builder:
    def __init__(self, rng):
        self.rng = rng
        self.rows = {}        # shard -> list of docs
        self.counter = Counter()
        self.features = defaultdict(list)   # (shard, feature) -> list of dicts
        self.near_pairs = []  # (orig_id, var_id, op, J)
        self.exact_groups = []  # (orig_id, [(copy_id, kind)])

    PREFIX = {"changelogs.jsonl": "chg", "copyright.jsonl.gz": "cpy", "licenses.jsonl.zst": "lic",
              "manpages.parquet": "man", "docs.csv": "doc", "damaged.jsonl.gz": "dmg"}

    def add(self, shard, doc, role="base"):
        self.counter[shard] += 1
        doc = dict(doc)
        doc["id"] = f"{self.PREFIX[shard]}-{self.counter[shard]:05d}"
        doc["role"] = role
        doc["meta"] = json.loads(json.dumps(doc["meta"]))
        self.rows.setdefault(shard, []).append(doc)
        return doc


def natural_filter(docs, exempt=lambda d: False):
    """Drop documents that are near duplicates (J >= REPORT_THRESHOLD) of an earlier document
    or exact duplicates after whitespace/case normalisation, so that every similar pair in the
    final shards is one we made on purpose (licence texts are exempt; see README)."""
    keep, seen = [], set()
    for d in docs:
        k = norm(d["text"])
        if k in seen:
            continue
        seen.add(k)
        keep.append(d)
    pairs = similar_pairs([d["text"] for d in keep], REPORT_THRESHOLD)
    drop = set()
    for a, b, _ in pairs:
        if a in drop or b in drop:
            continue
        ea, eb = exempt(keep[a]), exempt(keep[b])
        if ea and eb:
            continue
        drop.add(a if eb else b)
    return [d for i, d in enumerate(keep) if i not in drop], len(drop)


def build(out_dir):
    rng = random.Random(SEED)
    log("reading dpkg database ...")
    pkgs, owner, excluded = load_dpkg()
    log(f"  {len(pkgs)} Debian packages; skipped (not in the Debian archive): {' '.join(excluded)}")

    log("collecting changelogs, copyright files, READMEs, licences ...")
    cl_entries = collect_changelogs(pkgs)
    cp_docs, licparas, holders = collect_copyright(pkgs)
    readmes = collect_readmes(pkgs)
    common = collect_common_licenses(pkgs)
    spdx = collect_spdx(pkgs, owner)
    log(f"  changelog entries={len(cl_entries)} copyright={len(cp_docs)} licence paragraphs={len(licparas)} "
        f"holders={len(holders)} readmes={len(readmes)} common-licenses={len(common)} spdx={len(spdx)}")
    log("rendering man pages ...")
    mans = collect_manpages(pkgs, owner, rng, N_MANPAGES)
    log(f"  man pages rendered and kept={len(mans)}")
    log("reading translations ...")
    nonen = collect_nonenglish(pkgs, owner, rng)
    log(f"  non-English docs={len(nonen)}")

    # ---- sample the changelog entries (<= 3 per source package) -------------------
    rng.shuffle(cl_entries)
    per_src, cl_pick, cl_rest = Counter(), [], []
    for e in cl_entries:
        if per_src[e["src"]] < 3 and len(cl_pick) < int(N_CHANGELOG * 1.3):
            per_src[e["src"]] += 1
            cl_pick.append(changelog_doc(e))
        else:
            cl_rest.append(changelog_doc(e))
    rng.shuffle(cp_docs)
    rng.shuffle(readmes)
    rng.shuffle(licparas)
    rng.shuffle(mans)
    rng.shuffle(spdx)

    # ---- licence texts with different copyright holders on top -----------------
    canon = {}
    canon_names = {"Expat": ("expat", "mit"), "BSD-2-clause": ("bsd-2-clause",),
                   "BSD-3-clause": ("bsd-3-clause",), "ISC": ("isc",), "Zlib": ("zlib",)}
    for want, names in canon_names.items():
        c = Counter(lp["body"] for lp in licparas if lp["name"].strip().lower() in names
                    and "copyright" not in lp["body"][:200].lower())
        if c:
            canon[want] = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
    hold = list(holders)
    rng.shuffle(hold)
    hold_iter = iter(hold)
    srcnames = sorted({v[0] for v in pkgs.values()})
    proj_iter = iter(rng.sample(srcnames, 80))
    common_by = {d["meta"]["license"]: d for d in common}

    def holder_doc(lic, body, notice=""):
        h = next(hold_iter)
        p = next(proj_iter)
        text = f"Copyright (c) {h}\n\n" + (notice + "\n\n" if notice else "") + body.strip("\n") + "\n"
        host = rng.choice(["git.example.org", "code.example.com", "src.example.net"])
        fname = rng.choice(["LICENSE", "LICENSE.txt", "COPYING"])
        full = "full " if notice or lic in common_by else ""
        return {"text": text, "url": f"https://{host}/{p}/-/raw/main/{fname}",
                "meta": {"source": "license-file", "license": lic,
                         "author": person_name(re.sub(r"^[\d ,\-–]+", "", h))},
                "_what": f"{full}{lic} text under 'Copyright (c) {h}'"}

    holder_docs = []
    for lic, n in [("Expat", 6), ("BSD-3-clause", 4), ("BSD-2-clause", 3), ("ISC", 3), ("Zlib", 2)]:
        if lic in canon:
            holder_docs += [holder_doc(lic, canon[lic]) for _ in range(n)]
    gpl_notice = ("This program is free software: you can redistribute it and/or modify it under the terms of "
                  "the GNU General Public License as published by the Free Software Foundation, either version 3 "
                  "of the License, or (at your option) any later version.")
    apache_notice = ('Licensed under the Apache License, Version 2.0 (the "License"); you may not use this file '
                     "except in compliance with the License.")
    for lic, notice, n in [("GPL-3", gpl_notice, 2), ("Apache-2.0", apache_notice, 2), ("MPL-2.0", "", 1)]:
        if lic in common_by:
            holder_docs += [holder_doc(lic, common_by[lic]["text"], notice) for _ in range(n)]

    # licence paragraphs from copyright files -> documents
    lic_docs = []
    skip_names = {n for names in canon_names.values() for n in names}
    for lp in licparas:
        if lp["name"].strip().lower() in skip_names:
            continue
        lic_docs.append({"text": f"License: {lp['name']}\n\n{lp['body']}\n",
                         "url": f"https://sources.debian.org/src/{lp['src']}/{lp['ver']}/debian/copyright"
                                f"#license-{re.sub(r'[^A-Za-z0-9.+-]+', '-', lp['name']).strip('-')}",
                         "meta": {"source": "debian-copyright-license", "package": lp["pkg"],
                                  "license": lp["name"]}})

    # ---- natural near-duplicate filter over all base material --------------------
    pools = [("cm", common), ("hv", holder_docs), ("cl", cl_pick), ("cp", cp_docs),
             ("rd", readmes), ("man", mans), ("lp", lic_docs), ("sp", spdx), ("ne", nonen)]
    flat = []
    for tag, docs in pools:
        for d in docs:
            d["_pool"] = tag
            flat.append(d)
    log(f"natural near-duplicate filter over {len(flat)} docs ...")
    kept, ndrop = natural_filter(flat, exempt=lambda d: d["_pool"] in ("cm", "hv"))
    log(f"  dropped {ndrop} natural near duplicates; kept per pool: "
        + str(sorted(Counter(d["_pool"] for d in kept).items())))
    by_pool = defaultdict(list)
    for d in kept:
        by_pool[d["_pool"]].append(d)

    cl_base, cl_spare = by_pool["cl"][:N_CHANGELOG], by_pool["cl"][N_CHANGELOG:]
    cp_base, cp_spare = by_pool["cp"][:N_COPYRIGHT], by_pool["cp"][N_COPYRIGHT:]
    man_base, man_spare = by_pool["man"][:N_MANPAGES], by_pool["man"][N_MANPAGES:]
    rd_all = by_pool["rd"]
    rd_base, rd_spare = rd_all[:N_README], rd_all[N_README:]
    lp_base = by_pool["lp"][:N_LICPARA]
    sp_py = [d for d in by_pool["sp"] if d["meta"]["path"].endswith(".py")]
    sp_other = [d for d in by_pool["sp"] if not d["meta"]["path"].endswith(".py")]
    sp_base = sp_py[:N_SPDX // 2] + sp_other[:N_SPDX - N_SPDX // 2]
    nonen_k = by_pool["ne"]
    common_k = by_pool["cm"]
    holder_docs = by_pool["hv"]
    log(f"  spare: changelog={len(cl_spare)} copyright={len(cp_spare)} man={len(man_spare)} readme={len(rd_spare)}")

    # donors for "append" edits and carriers for injected notices come from unused material
    spare_cl = list(cl_spare)
    spare_rd = list(rd_spare)
    spare_cp = list(cp_spare)
    spare_man = list(man_spare)

    B = Builder(rng)
    CL, CP, LIC, MAN, DOC, DMG = ("changelogs.jsonl", "copyright.jsonl.gz", "licenses.jsonl.zst",
                                  "manpages.parquet", "docs.csv", "damaged.jsonl.gz")

    # ---- base rows -----------------------------------------------------------------
    for d in cl_base:
        B.add(CL, d)
    for d in cp_base:
        B.add(CP, d)
    for d in common_k:
        B.add(LIC, d)
    for d in lp_base:
        B.add(LIC, d)
    for d in sp_base:
        B.add(LIC, d)
    for d in man_base:
        B.add(MAN, d)
    for d in rd_base:
        B.add(DOC, d)

    # non-English: 6 in changelogs.jsonl, 6 in manpages.parquet, rest in docs.csv
    ne_sorted = list(nonen_k)
    rng.shuffle(ne_sorted)
    for i, d in enumerate(ne_sorted):
        shard = CL if i < 6 else MAN if i < 12 else DOC
        r = B.add(shard, d)
        B.features[(shard, "nonen")].append({"id": r["id"], "what": f"{d['_lang']} — msgstr sentences from "
                                             f"{d['meta']['domain']}.mo ({d['meta']['package']})"})

    for d in holder_docs:
        r = B.add(LIC, d, role="holder")
        B.features[(LIC, "holder")].append({"id": r["id"], "what": d.pop("_what")})
        r.pop("_what", None)

    # ---- Creative Commons and All-rights-reserved notices on real README text -----
    cc_list = [("https://creativecommons.org/licenses/by-nc/4.0/", "Creative Commons Attribution-NonCommercial 4.0 International License", DOC),
               ("https://creativecommons.org/licenses/by-nc/4.0/", "CC BY-NC 4.0", LIC),
               ("https://creativecommons.org/licenses/by-nc-sa/4.0/", "Creative Commons Attribution-NonCommercial-ShareAlike 4.0 International License", DOC),
               ("https://creativecommons.org/licenses/by-nd/4.0/", "Creative Commons Attribution-NoDerivatives 4.0 International License", LIC),
               ("https://creativecommons.org/licenses/by-sa/4.0/", "Creative Commons Attribution-ShareAlike 4.0 International License", DOC),
               ("https://creativecommons.org/licenses/by/4.0/", "Creative Commons Attribution 4.0 International License", LIC)]
    for url, name, shard in cc_list:
        d = spare_rd.pop(0)
        d = dict(d, text=d["text"].rstrip("\n") + f"\n\nThis work is licensed under a {name}. To view a copy of "
                 f"this license, visit {url}\n")
        r = B.add(shard, d, role="notice")
        B.features[(shard, "cc")].append({"id": r["id"], "what": f"CC notice {url}"})
    arr = [("Copyright © 2023 Northwind Analytics Ltd. All rights reserved.\nNo part of this document may be "
            "reproduced or transmitted in any form without the prior written permission of the publisher.", DOC),
           ("Copyright (c) 2021 Contoso Systems GmbH. All Rights Reserved. Proprietary and confidential; "
            "unauthorized copying of this file, via any medium, is strictly prohibited.", DOC),
           ("(C) 2019 Initech Corp. All rights reserved.", LIC),
           ("Copyright 2020 Example Widgets Inc. ALL RIGHTS RESERVED.", LIC),
           ("Copyright (c) 2022 Fabrikam Media. All rights reserved. Internal use only.", MAN)]
    for notice, shard in arr:
        d = spare_man.pop(0) if shard == MAN else spare_rd.pop(0)
        d = dict(d, text=notice + "\n\n" + d["text"])
        r = B.add(shard, d, role="notice")
        B.features[(shard, "arr")].append({"id": r["id"], "what": f"synthetic notice: {notice.splitlines()[0]}"})

    # ---- low-quality documents -------------------------------------------------------
    lq = [("lorem ipsum", LOREM, "https://www.example.com/blog/sample-post", DOC),
          ("JavaScript-required page", JS_PAGE, "https://app.example.com/dashboard", DOC),
          ("cookie banner / navigation boilerplate", COOKIE_PAGE, "https://news.example.net/2024/05/article", DOC),
          ("one line repeated 40 times", "Loading...\n" * 40, "https://status.example.org/", DOC)]
    lists = []
    for lst in sorted(glob.glob("/var/lib/dpkg/info/*.list")):
        n = sum(1 for _ in open(lst, encoding="utf-8", errors="replace"))
        if 40 <= n <= 160:
            lists.append(lst)
    for lst in rng.sample(lists, 3):
        p = os.path.basename(lst)[:-5].split(":")[0]
        text = open(lst, encoding="utf-8", errors="replace").read()
        lq.append((f"list of file names (dpkg file list of {p})", text,
                   f"https://packages.debian.org/{CODENAME}/amd64/{p}/filelist", DOC))
    for i, s in enumerate(SHORT_DOCS):
        shard = CL if i < 3 else DOC
        lq.append((f"very short document {s!r}", s + "\n" if i % 2 else s,
                   f"https://docs.example.org/stub/{i}", shard))
    for what, text, url, shard in lq:
        src = ("dpkg-filelist" if "filelist" in url else "stub" if "/stub/" in url else "web-boilerplate")
        r = B.add(shard, {"text": text, "url": url, "meta": {"source": src}}, role="lowq")
        B.features[(shard, "lowq")].append({"id": r["id"], "what": what})

    # ---- personal data / secrets inserted into real documents ----------------------
    pii = pii_templates(rng)
    plan = [(CL, "changelog"), (DOC, "para"), (MAN, "para"), (CP, "para"), (DOC, "para"), (LIC, "code"),
            (DOC, "para"), (DOC, "para"), (MAN, "para"), (CP, "para"), (CL, "changelog"), (CL, "changelog")]
    used_ids = set()
    for (label, snippet), (shard, kind) in zip(pii, plan):
        cands = [r for r in B.rows[shard] if r["role"] == "base" and r["id"] not in used_ids
                 and (kind != "code" or re.search(r"\.(py|sh|pl|pm|cmake)$", r["meta"].get("path", "")))
                 and (kind == "code" or r["meta"].get("source") != "source-code")
                 and r["meta"].get("source") != "gettext-translation"]
        r = rng.choice(cands)
        r["text"] = insert_text(r["text"], snippet, rng, kind)
        r["role"] = "pii"
        used_ids.add(r["id"])
        B.features[(shard, "pii")].append({"id": r["id"], "what": label})

    # ---- near duplicates ------------------------------------------------------------------
    def near(shard, orig, band, ops, label_extra=""):
        lo, hi = band
        target = rng.uniform(lo + 0.01, hi - 0.01)
        for op in ops:
            if op == "words":
                res = op_words(orig["text"], rng, target)
            elif op == "append":
                pool = spare_cl if shard == CL else spare_cp if shard == CP else spare_man if shard == MAN else spare_rd
                need = 1.3 * len(WORD.findall(orig["text"]))
                donor = ""
                while pool and len(WORD.findall(donor)) < need:
                    t = pool.pop(0)["text"]
                    if shard == CP:  # append Files: stanzas of another copyright file
                        st = [p for p in t.split("\n\n") if p.startswith("Files:")]
                        t = "\n\n".join(st[1:]) if len(st) > 1 else t
                    donor += t.rstrip("\n") + "\n\n"
                res = op_append(orig["text"], donor, target)
            elif op == "remove":
                res = op_remove(orig["text"], rng, target)
            elif op == "holder":
                res = op_holder(orig["text"], rng, holders, target)
            else:
                raise ValueError(op)
            if res and lo <= res[1] <= hi:
                text, j, desc = res
                d = {"text": text, "url": mirror_url(orig["url"], rng) if rng.random() < 0.3 else
                     re.sub(r"^https://[^/]+", "https://" + rng.choice(["git.example.org", "docs.example.org",
                                                                       "wiki.example.net", "mirror.example-mirror.net"]),
                            orig["url"]),
                     "meta": dict(orig["meta"])}
                d["meta"].pop("html_meta", None)
                v = B.add(shard, d, role="near")
                B.near_pairs.append({"shard": shard, "orig": orig["id"], "var": v["id"], "op": desc,
                                     "J": j, "Jws": jac_ws(orig["text"], text),
                                     "band": "near-dup (0.85-0.95)" if band == NEAR_BAND else "~0.5 (NOT a dup)"})
                orig["role"] = "near-orig"
                return True
        return False

    near_plan = {
        CL: [(NEAR_BAND, ["words"]), (NEAR_BAND, ["append"]), (NEAR_BAND, ["remove", "words"]),
             (NEAR_BAND, ["words"]), (NEAR_BAND, ["append"]), (NEAR_BAND, ["remove", "words"]),
             (FAR_BAND, ["remove", "append"]), (FAR_BAND, ["append"]), (FAR_BAND, ["remove", "append"])],
        CP: [(NEAR_BAND, ["holder"]), (NEAR_BAND, ["holder"]), (NEAR_BAND, ["append", "holder"]),
             (NEAR_BAND, ["remove", "holder"]), (NEAR_BAND, ["holder"]), (NEAR_BAND, ["append", "holder"]),
             (FAR_BAND, ["remove", "append"]), (FAR_BAND, ["append", "remove"])],
        MAN: [(NEAR_BAND, ["words"]), (NEAR_BAND, ["remove", "words"]), (NEAR_BAND, ["append", "words"]),
              (NEAR_BAND, ["words"]), (NEAR_BAND, ["remove", "words"]),
              (FAR_BAND, ["remove", "append"]), (FAR_BAND, ["append", "remove"])],
        DOC: [(NEAR_BAND, ["words"]), (NEAR_BAND, ["append", "words"]), (NEAR_BAND, ["remove", "words"]),
              (NEAR_BAND, ["words"]), (FAR_BAND, ["remove", "append"]), (FAR_BAND, ["append", "remove"])],
        LIC: [(FAR_BAND, ["append"]), (FAR_BAND, ["append"])],
    }
    for shard, items in near_plan.items():
        for band, ops in items:
            for _attempt in range(25):
                cands = [r for r in B.rows[shard] if r["role"] == "base"
                         and r["meta"].get("source") not in ("gettext-translation", "common-licenses")
                         and len(WORD.findall(r["text"])) >= (60 if band == NEAR_BAND else 80)]
                if shard == CP and "holder" in ops:
                    cands = [r for r in cands if re.search(r"(?m)^\s*Copyright", r["text"])]
                if shard == LIC:
                    cands = [r for r in cands if r["meta"].get("source") == "debian-copyright-license"]
                if near(shard, rng.choice(cands), band, ops):
                    break
            else:
                log(f"  WARNING: could not make a near duplicate in {shard} for {band} {ops}")

    # ---- exact duplicates (~5% of rows per shard, some case/whitespace-only variants) ----
    for shard in (CL, CP, LIC, MAN, DOC):
        base = [r for r in B.rows[shard] if r["role"] == "base" and len(r["text"]) >= 200
                and r["meta"].get("source") != "gettext-translation"]
        n_target = max(1, round(0.05 * len(B.rows[shard]) / 1.25))
        if shard == LIC:
            canon_rows = [r for r in B.rows[shard] if r["meta"].get("source") == "common-licenses"
                          and r["meta"]["license"] in CANONICAL_LICENCE_URL]
            others = [r for r in base if r not in canon_rows]
            origs = canon_rows + rng.sample(others, max(0, n_target - len(canon_rows)))
        else:
            origs = rng.sample(base, min(len(base), n_target))
        for o in origs:
            copies = []
            ncopies = 2 if rng.random() < 0.25 else 1
            for _ in range(ncopies):
                k = rng.random()
                if k < 0.6:
                    text, kind = o["text"], "exact"
                elif k < 0.8:
                    text, kind = ws_variant(o["text"], rng)
                else:
                    text, kind = o["text"].lower(), "case: lower-cased"
                assert norm(text) == norm(o["text"])
                if o["meta"].get("source") == "common-licenses" and o["meta"]["license"] in CANONICAL_LICENCE_URL and not copies:
                    url = CANONICAL_LICENCE_URL[o["meta"]["license"]]
                    text, kind = o["text"], "exact"
                else:
                    url = mirror_url(o["url"], rng)
                meta = dict(o["meta"])
                meta.pop("html_meta", None)
                c = B.add(shard, {"text": text, "url": url, "meta": meta}, role="dup")
                copies.append((c["id"], kind))
            o["role"] = "dup-orig"
            B.exact_groups.append({"shard": shard, "orig": o["id"], "copies": copies})
    # two cross-shard exact duplicates (same text in two shards)
    for src_shard, dst_shard in [(MAN, DOC), (CL, DOC)]:
        o = rng.choice([r for r in B.rows[src_shard] if r["role"] == "base" and len(r["text"]) > 300
                        and r["meta"].get("source") != "gettext-translation"])
        meta = dict(o["meta"])
        meta.pop("html_meta", None)
        c = B.add(dst_shard, {"text": o["text"], "url": mirror_url(o["url"], rng), "meta": meta}, role="dup")
        o["role"] = "dup-orig"
        B.exact_groups.append({"shard": f"{src_shard} -> {dst_shard}", "orig": o["id"], "copies": [(c["id"], "exact (cross-shard)")]})

    # ---- opt-out markers ------------------------------------------------------------------
    n_opt = {CL: 5, CP: 3, LIC: 2, MAN: 3, DOC: 4}
    mi = 0
    for shard, n in n_opt.items():
        cands = [r for r in B.rows[shard] if r["role"] in ("base", "dup", "pii")]
        for r in rng.sample(cands, n):
            key, val = OPTOUT_MARKERS[mi % len(OPTOUT_MARKERS)]
            mi += 1
            r["meta"][key] = dict(val)
            B.features[(shard, "optout")].append({"id": r["id"], "what": json.dumps({key: val}, ensure_ascii=False)})

    # ---- accented maintainer names: make sure a few are present ------------------------
    accented = [r for r in B.rows[CL] if re.search(r"[^\x00-\x7f]", r["meta"].get("author", "") or "")]
    if len(accented) < 5:
        extra = [d for d in spare_cl if re.search(r"[^\x00-\x7f]", d["meta"].get("author", ""))]
        for d in extra[:5 - len(accented)]:
            spare_cl.remove(d)
            B.add(CL, d)

    # ---- damaged shard --------------------------------------------------------------------
    dmg_src = spare_cl[:60] + spare_rd[:20]
    spare_cl = spare_cl[60:]
    dmg_rows = []
    for d in dmg_src:
        r = B.add(DMG, d)
        dmg_rows.append(r)

    # ---- shuffle and finalise ---------------------------------------------------------
    for shard in (CL, CP, LIC, MAN, DOC):
        rng.shuffle(B.rows[shard])
    missing_id_rows = [i for i in range(len(B.rows[CL])) if i % 20 == 3]
    for i in missing_id_rows:
        B.rows[CL][i]["_no_id"] = True

    B.excluded = excluded
    return B, dmg_rows, missing_id_rows, pkgs


# ----------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------

def row_obj(r, drop_id=False):
    o = {}
    if not drop_id:
        o["id"] = r["id"]
    o["text"] = r["text"]
    o["url"] = r["url"]
    o["meta"] = r["meta"]
    return o


def jline(obj):
    s = json.dumps(obj, ensure_ascii=False)
    # characters that str.splitlines() treats as line breaks must not appear raw in JSONL
    for ch in ("\u2028", "\u2029", "\x85"):
        s = s.replace(ch, "\\u%04x" % ord(ch))
    return s + "\n"


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def write_jsonl(path, rows, drop=lambda r: False):
    data = "".join(jline(row_obj(r, drop(r))) for r in rows).encode("utf-8")
    with open(path, "wb") as f:
        if path.endswith(".gz"):
            f.write(gz(data))
        elif path.endswith(".zst"):
            f.write(zstandard.ZstdCompressor(level=19, write_checksum=True, write_content_size=True).compress(data))
        else:
            f.write(data)


def write_parquet(path, rows):
    table = pa.table({
        "id": pa.array([r["id"] for r in rows], pa.string()),
        "text": pa.array([r["text"] for r in rows], pa.string()),
        "url": pa.array([r["url"] for r in rows], pa.string()),
        "meta": pa.array([json.dumps(r["meta"], ensure_ascii=False, sort_keys=True) for r in rows], pa.string()),
    })
    pq.write_table(table, path, compression="zstd", compression_level=9, use_dictionary=False,
                   row_group_size=128, data_page_size=1 << 20, version="2.6", write_statistics=False,
                   store_schema=True)


def write_csv(path, rows):
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    w.writerow(["id", "text", "url", "meta"])
    for r in rows:
        w.writerow([r["id"], r["text"], r["url"], json.dumps(r["meta"], ensure_ascii=False, sort_keys=True)])
    with open(path, "wb") as f:
        f.write(buf.getvalue().encode("utf-8"))


def write_damaged(path, rows):
    """Good rows with bad lines at fixed positions; then a second gzip member cut in half."""
    n_first = 50
    lines = [jline(row_obj(r)).encode("utf-8") for r in rows]
    bad = {}
    # 7: malformed JSON (unterminated string, no closing brace)
    r = rows[7]
    lines[7] = ('{"id": "%s", "text": "%s' % (r["id"], r["text"][:120].replace('"', "'").replace("\n", "\\n"))).encode() + b"\n"
    bad[7] = "malformed JSON: the string value of `text` is never terminated and the object is never closed"
    # 15: invalid UTF-8 bytes inside an otherwise valid JSON object
    r = rows[15]
    good = jline(row_obj(r)).encode("utf-8")
    cut = good.index(b'"text": "') + len(b'"text": "')
    lines[15] = good[:cut] + b"caf\xe9 \xff\xfe invalid \xc3\x28 bytes: " + good[cut:]
    bad[15] = ("invalid UTF-8: raw bytes 0xE9, 0xFF 0xFE and 0xC3 0x28 at the start of the `text` value "
               "(the line is valid JSON if decoded with errors='replace')")
    # 23: no text field
    r = rows[23]
    lines[23] = jline({"id": r["id"], "url": r["url"], "meta": r["meta"]}).encode("utf-8")
    bad[23] = "row without a `text` field"
    # 31: text is a number
    r = rows[31]
    lines[31] = jline({"id": r["id"], "text": 20240611, "url": r["url"], "meta": r["meta"]}).encode("utf-8")
    bad[31] = "wrong type: `text` is the number 20240611"
    # 39: empty line (kept as an extra line; the row it replaces is not in the file)
    lines[39] = b"\n"
    bad[39] = "empty line (no JSON at all)"
    first = b"".join(lines[:n_first])
    second = b"".join(lines[n_first:])
    m2 = gz(second)
    trunc = m2[: len(m2) // 2]
    with open(path, "wb") as f:
        f.write(gz(first) + trunc)
    return bad, n_first, len(lines), len(m2), len(trunc), len(gz(first))


def probe_damaged(path):
    """What Python's gzip module yields before it fails on the truncated member."""
    got, err = [], None
    try:
        with gzip.open(path, "rb") as f:
            for line in f:
                got.append(line)
    except (EOFError, gzip.BadGzipFile, OSError) as e:
        err = f"{type(e).__name__}: {e}"
    # what a streaming decompressor (zlib, member by member) recovers before the data ends
    data, out = open(path, "rb").read(), b""
    while data:
        d = zlib.decompressobj(wbits=31)
        out += d.decompress(data)
        if not d.eof:
            break
        data = d.unused_data
    return got, err, out.count(b"\n")


# ----------------------------------------------------------------------------------
# README
# ----------------------------------------------------------------------------------

SHARD_INFO = {
    "changelogs.jsonl": dict(
        fmt="JSON Lines, plain UTF-8, one object per line",
        contains="Entries (one `package (version) dist; urgency` block up to and including its ` -- Name <email>  date` "
                 "trailer) cut from Debian changelogs; a few non-English documents; three very short documents; "
                 "personal data inserted into three entries (as an extra `  * ` bullet).",
        source="`/usr/share/doc/*/changelog.Debian.gz` (one changelog per source package, at most 3 entries per package); "
               "translations from `/usr/share/locale/<lang>/LC_MESSAGES/*.mo`.",
        licence="Debian changelogs are distributed under the licence of the package they belong to (see each "
                "package's `/usr/share/doc/<pkg>/copyright`); translations likewise."),
    "copyright.jsonl.gz": dict(
        fmt="JSON Lines compressed with gzip (single member, mtime 0)",
        contains="Whole `debian/copyright` files (machine-readable DEP-5 and free-form), 400 B – 40 KB each, many of "
                 "them containing full licence texts and `All rights reserved.` lines of BSD-style licences.",
        source="`/usr/share/doc/*/copyright` (files with identical content are read once).",
        licence="Debian copyright files are distributed under the licence of their package; they exist to be "
                "redistributed with it."),
    "licenses.jsonl.zst": dict(
        fmt="JSON Lines compressed with Zstandard (level 19, content size + checksum)",
        contains="The full texts in `/usr/share/common-licenses` (Apache-2.0, Artistic, BSD, CC0-1.0, GFDL-1.2/1.3, "
                 "GPL-1/2/3, LGPL-2/2.1/3, MPL-1.1/2.0; symlinked duplicates such as GPL -> GPL-3 are read once); "
                 "licence texts (Expat/MIT, BSD-2/3-clause, ISC, Zlib, GPL-3, Apache-2.0, MPL-2.0) under different "
                 "`Copyright (c) <year> <holder>` lines (holders are real lines taken from Debian copyright files); "
                 "standalone `License:` paragraphs of DEP-5 copyright files; source files carrying "
                 "`SPDX-License-Identifier:` lines; Creative Commons and `All rights reserved` notices.",
        source="`/usr/share/common-licenses/*`, `/usr/share/doc/*/copyright`, SPDX-tagged files under "
               "`/usr/lib/python3/dist-packages`, `/usr/share` and `/usr/include`, README files for the notices.",
        licence="The licence texts are freely redistributable verbatim (and are reproduced verbatim here; the "
                "holder variants only put a copyright line, and for GPL/Apache a standard notice, on top). "
                "Source files are under the licence in their SPDX line."),
    "manpages.parquet": dict(
        fmt="Apache Parquet (pyarrow, zstd level 9, no dictionary, row groups of 128, format 2.6); columns "
            "`id`, `text`, `url`, `meta` — all strings, `meta` is a JSON string",
        contains="Man pages from sections 1, 5 and 8 rendered to plain text (1.5–30 KB each); six non-English "
                 "documents; two pages with inserted personal data; one page under a synthetic "
                 "`All rights reserved` notice.",
        source="`/usr/share/man/man{1,5,8}/*.gz` rendered with `MANWIDTH=80 LANG=C.UTF-8 man -l -P cat <file>`, "
               "backspace overstrikes and SGR escapes stripped, trailing blanks removed.",
        licence="Man pages are distributed under the licences of their packages (GPL, BSD, MIT, GFDL, ...)."),
    "docs.csv": dict(
        fmt="CSV (RFC 4180 style, `\\n` record separator, header `id,text,url,meta`, `meta` is a JSON string). "
            "Text fields contain embedded newlines, commas and quotes: read it with a real CSV parser.",
        contains="README files from /usr/share/doc; most of the non-English documents; the low-quality documents "
                 "(lorem ipsum, JavaScript-required page, cookie/navigation boilerplate, a repeated line, dpkg file "
                 "lists, very short documents); Creative Commons and `All rights reserved` notices; personal data "
                 "and secrets inserted into READMEs; two documents that are exact copies of rows in other shards.",
        source="`/usr/share/doc/*/README*` (300 B – 20 KB, text only), `/usr/share/locale/*/LC_MESSAGES/*.mo`, "
               "`/var/lib/dpkg/info/*.list` for the file lists.",
        licence="READMEs and translations are distributed under their package licences. The boilerplate/lorem "
                "ipsum texts were written for this sample (the lorem ipsum is the traditional public-domain filler)."),
    "damaged.jsonl.gz": dict(
        fmt="JSON Lines in gzip, deliberately damaged (see below)",
        contains="Changelog entries and README files (not used in any other shard) plus broken lines.",
        source="`/usr/share/doc/*/changelog.Debian.gz`, `/usr/share/doc/*/README*`.",
        licence="As for changelogs.jsonl and docs.csv."),
}

FEATURE_TITLES = [("nonen", "Non-English documents"), ("pii", "Inserted personal data / secrets"),
                  ("optout", "Opt-out markers in `meta`"), ("holder", "Licence texts under different copyright holders"),
                  ("cc", "Creative Commons notices"), ("arr", "`All rights reserved` notices"),
                  ("lowq", "Low-quality documents")]


def write_readme(path, B, shard_files, sizes, counts, row_index, missing_id_rows, dmg, pairs_report,
                 pkgs, dmg_probe):
    bad, n_first, n_lines, m2_len, trunc_len, m1_len = dmg
    got, err, zlib_lines = dmg_probe
    deb = open("/etc/debian_version").read().strip()
    L = []
    A = L.append
    A("# Curate sample shards")
    A("")
    A("Small, real shards for Curate's tests, examples and docs. They are produced by "
      "`scripts/make_samples.py` from text that ships with Debian; do not edit them by hand — change the script "
      "and re-run it:")
    A("")
    A("```sh")
    A("python3 -m venv /tmp/samples-venv && /tmp/samples-venv/bin/pip install zstandard pyarrow")
    A("/tmp/samples-venv/bin/python scripts/make_samples.py")
    A("```")
    A("")
    A(f"Generated on Debian {deb} (\"{CODENAME}\") with Python {sys.version.split()[0]}, pyarrow {pa.__version__}, "
      f"zstandard {zstandard.__version__}, from the {len(pkgs)} installed packages that come from the Debian "
      f"archive (installed third-party packages are skipped: {', '.join(B.excluded) or 'none'}). "
      "The script only reads the machine, "
      "so a machine with a different package set or release produces different (but equally valid) shards. "
      "On the same machine re-runs are byte-identical (sorted file lists, random seed "
      f"{SEED}, gzip mtime 0 and no file name, fixed zstd/parquet settings).")
    A("")
    A("## Licence")
    A("")
    A("Every source file used is part of a package from Debian main and is redistributable:")
    A("")
    A("* Debian `copyright` files and `changelog.Debian.gz` are distributed under the licence of their package.")
    A("* The licence texts in `/usr/share/common-licenses` may be copied and distributed verbatim; they are "
      "reproduced verbatim (never edited — near-duplicate edits are only applied to other kinds of text).")
    A("* Man pages, README files, source files and `.mo` translations are distributed under the licences of "
      "their packages (GPL, LGPL, BSD, MIT/Expat, GFDL, ...). Rows that are edited copies (near duplicates, "
      "inserted personal data) are marked as such in this README.")
    A("* Everything that was *written* for this sample — the personal data and secrets, the boilerplate pages, "
      "the Creative Commons and `All rights reserved` notices — is fake: telephone numbers are 555/Ofcom "
      "drama numbers, IP addresses are from the documentation ranges (RFC 5737, RFC 3849), card numbers are "
      "the public test numbers, IBANs are the standard examples, the SSN is the famous invalid 078-05-1120, "
      "the AWS key is the one from the AWS documentation, the RSA block and the GitHub token are random. "
      "Companies named in the synthetic notices are fictional. The lorem ipsum is traditional public-domain "
      "filler.")
    A("")
    A("Each row's `url` is where the text can be found (sources.debian.org, metadata.ftp-master.debian.org, "
      "manpages.debian.org, ...) or, for the deliberate copies, a made-up mirror under an `example` domain.")
    A("")
    A("## Overview")
    A("")
    A("| file | format | rows | bytes on disk |")
    A("|---|---|---:|---:|")
    total = 0
    for s in shard_files:
        A(f"| `{s}` | {s.split('.', 1)[1]} | {counts[s]} | {sizes[s]:,} |")
        total += sizes[s]
    A(f"| **total** (shards only) | | **{sum(counts.values())}** | **{total:,}** |")
    A("")
    A("Row fields: `id` (string), `text` (string), `url` (string), `meta` (object in JSONL; JSON string in "
      "parquet and CSV). `meta.source` says what the text is (`debian-changelog`, `debian-copyright`, "
      "`debian-copyright-license`, `common-licenses`, `license-file`, `source-code`, `manpage`, `readme`, "
      "`gettext-translation`, `web-boilerplate`, ...); `meta.author` is set on changelog entries (the "
      "maintainer in the trailer, including names such as Santiago Ruano Rincón or Moritz Mühlenhoff), on "
      "translations (Last-Translator), on the holder variants of licence texts and on some copyright files "
      "(Upstream-Contact).")
    A("")
    A("Row numbers below are 0-based positions in the shard (line index for JSONL, data row for CSV/parquet).")
    A("")

    def ref(i):
        s, idx = row_index[i]
        r = B.byid[i]
        return f"`{i}` (row {idx})" if not r.get("_no_id") else f"row {idx} (no `id`; derived `{s}:{idx}`)"

    for s in shard_files:
        info = SHARD_INFO[s]
        A(f"## `{s}`")
        A("")
        A(f"* **File:** `data/samples/{s}` — {sizes[s]:,} bytes")
        A(f"* **Format:** {info['fmt']}")
        if s == "damaged.jsonl.gz":
            A(f"* **Rows:** {counts[s]} lines written (see the table below for what a reader actually gets)")
        else:
            A(f"* **Rows:** {counts[s]}")
        A(f"* **Contains:** {info['contains']}")
        A(f"* **Source (Debian {deb}):** {info['source']}")
        A(f"* **Licence:** {info['licence']} Every source file is redistributable.")
        A("")
        if s == "changelogs.jsonl":
            A(f"**Rows without `id`** ({len(missing_id_rows)}; every row whose index is ≡ 3 mod 20): "
              + ", ".join(str(i) for i in missing_id_rows)
              + ". Curate should derive `changelogs.jsonl:<row>` for them (e.g. `changelogs.jsonl:3`).")
            A("")
        if s == "damaged.jsonl.gz":
            A("The file is two gzip members. Member 1 (bytes 0–%d) holds lines 0–%d; member 2 held lines %d–%d "
              "(%d bytes compressed) but only its first %d bytes were written, so the file ends in the middle of "
              "a deflate stream." % (m1_len - 1, n_first - 1, n_first, n_lines - 1, m2_len, trunc_len))
            A("")
            blank = sorted(k for k, v in bad.items() if v.startswith("empty line"))

            def nb(line):  # row number when blank lines are skipped (as Curate's JSONL reader does)
                return "—" if line in blank else str(line - sum(1 for b in blank if b < line))
            A("| line (0-based) | row if blank lines are skipped | problem |")
            A("|---:|---:|---|")
            for k in sorted(bad):
                A(f"| {k} | {nb(k)} | {bad[k]} |")
            A(f"| {n_first}–{n_lines - 1} | {nb(n_first)}–{nb(n_lines - 1)} | in the truncated second gzip member |")
            A("")
            A("Readers that skip blank lines (Curate's JSONL reader does) number the rows after line "
              + ", ".join(map(str, blank)) + " one lower than the line index; the second column gives that number.")
            A("")
            full = sum(1 for x in got if x.endswith(b"\n"))
            A(f"Python's `gzip.open(path)` yields {len(got)} lines ({full} complete, newline-terminated) and then "
              f"raises `{err}`. Lines {n_first}–{len(got) - 1} are thus readable from the damaged member before "
              "the error; a reader that wants only trustworthy data should keep lines 0–%d minus the bad ones "
              "above, i.e. %d good rows. A streaming `zlib.decompressobj(wbits=31)` reader recovers %d complete lines "
              "before the data runs out." % (n_first - 1, n_first - len(bad), zlib_lines))
            A("")
            A("Every other line of member 1 is a valid row (ids `dmg-00001` … in order; the bad lines keep the id "
              "of the row they replaced where they have one).")
            A("")
        # features
        for key, title in FEATURE_TITLES:
            items = B.features.get((s, key), [])
            if not items:
                continue
            A(f"**{title}** ({len(items)}):")
            A("")
            for it in items:
                A(f"* {ref(it['id'])}: {it['what']}")
            A("")
        groups = [g for g in B.exact_groups if g["shard"] == s or g["shard"].endswith(f"-> {s}")]
        if groups:
            ncopy = sum(len(g["copies"]) for g in groups)
            A(f"**Exact duplicates** ({len(groups)} originals, {ncopy} copies = "
              f"{100 * ncopy / counts[s]:.1f}% of rows; all copies have a different `url`):")
            A("")
            for g in groups:
                A(f"* {ref(g['orig'])} → " + "; ".join(f"{ref(c)} [{k}]" for c, k in g["copies"]))
            A("")
        nps = [p for p in B.near_pairs if p["shard"] == s]
        if nps:
            A(f"**Near duplicates made on purpose** ({len(nps)}; J = Jaccard of word 5-gram sets, words = "
              "`re.findall(r\"\\w+\", text.lower())`; J_ws = same on whitespace-split lowercase tokens):")
            A("")
            A("| original | variant | J | J_ws | class | edit |")
            A("|---|---|---:|---:|---|---|")
            for p in nps:
                A(f"| {ref(p['orig'])} | {ref(p['var'])} | {p['J']:.3f} | {p['Jws']:.3f} | {p['band']} | {p['op']} |")
            A("")
    A("## All similar pairs in the sample")
    A("")
    A(f"Every pair of rows (across all shards, damaged shard's parseable rows included) whose word-5-gram "
      f"Jaccard is ≥ {REPORT_THRESHOLD}, computed on the final data. Before the deliberate content was added, "
      "the script dropped naturally occurring near duplicates (e.g. copyright files of sibling packages) so "
      "that the pairs below are the planted ones — except the licence texts from /usr/share/common-licenses, "
      "which were kept as they are (different versions of the same licence are genuinely similar) and the "
      "licence-holder variants, which are all near duplicates of each other by design.")
    A("")
    A("| a | b | J | kind |")
    A("|---|---|---:|---|")
    for a, b, j, kind in pairs_report:
        A(f"| {ref(a)} | {ref(b)} | {j:.3f} | {kind} |")
    A("")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(L))


# ----------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "data", "samples"))
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    B, dmg_rows, missing_id_rows, pkgs = build(args.out)
    shard_files = ["changelogs.jsonl", "copyright.jsonl.gz", "licenses.jsonl.zst", "manpages.parquet",
                   "docs.csv", "damaged.jsonl.gz"]
    B.byid = {}
    row_index = {}
    for s in shard_files:
        for i, r in enumerate(B.rows[s]):
            B.byid[r["id"]] = r
            row_index[r["id"]] = (s, i)

    log("writing shards ...")
    p = lambda s: os.path.join(args.out, s)
    write_jsonl(p("changelogs.jsonl"), B.rows["changelogs.jsonl"], drop=lambda r: r.get("_no_id", False))
    write_jsonl(p("copyright.jsonl.gz"), B.rows["copyright.jsonl.gz"])
    write_jsonl(p("licenses.jsonl.zst"), B.rows["licenses.jsonl.zst"])
    write_parquet(p("manpages.parquet"), B.rows["manpages.parquet"])
    write_csv(p("docs.csv"), B.rows["docs.csv"])
    dmg = write_damaged(p("damaged.jsonl.gz"), dmg_rows)
    bad_lines = dmg[0]
    dmg_probe = probe_damaged(p("damaged.jsonl.gz"))

    # ---- final similarity report ------------------------------------------------------
    log("computing the similarity report ...")
    all_rows = []
    for s in shard_files:
        for i, r in enumerate(B.rows[s]):
            if s == "damaged.jsonl.gz" and (i in bad_lines or i >= dmg[1]):
                continue
            all_rows.append(r)
    pairs = similar_pairs([r["text"] for r in all_rows], REPORT_THRESHOLD)
    near_set = {frozenset((q["orig"], q["var"])): q for q in B.near_pairs}
    dup_set = set()
    for g in B.exact_groups:
        ids = [g["orig"]] + [c for c, _ in g["copies"]]
        for a in ids:
            for b in ids:
                if a != b:
                    dup_set.add(frozenset((a, b)))
    report, unexpected = [], []
    for a, b, j in pairs:
        ra, rb = all_rows[a], all_rows[b]
        key = frozenset((ra["id"], rb["id"]))
        if key in dup_set:
            kind = "exact duplicate" if ra["text"] == rb["text"] else "duplicate up to case/whitespace"
        elif key in near_set:
            kind = "planted: " + near_set[key]["band"]
        elif ra["role"] == "holder" or rb["role"] == "holder":
            kind = "licence text under different holders"
        elif ra["meta"].get("source") == "common-licenses" and rb["meta"].get("source") == "common-licenses":
            kind = f"natural: {ra['meta']['license']} vs {rb['meta']['license']}"
        elif {ra["role"], rb["role"]} & {"dup", "near"}:
            kind = "via a planted copy (copy of one side of a planted pair)"
        else:
            kind = "UNPLANNED"
            unexpected.append((ra["id"], rb["id"], j))
        report.append((ra["id"], rb["id"], j, kind))
    report.sort(key=lambda t: (t[3], -t[2], t[0], t[1]))
    for u in unexpected:
        log(f"  note: unplanned similar pair {u}")

    sizes, counts = {}, {}
    for s in shard_files:
        sizes[s] = os.path.getsize(p(s))
        counts[s] = len(B.rows[s])
    write_readme(p("README.md"), B, shard_files, sizes, counts, row_index, missing_id_rows, dmg, report,
                 pkgs, dmg_probe)

    total = sum(os.path.getsize(p(f)) for f in os.listdir(args.out))
    for s in shard_files:
        log(f"{s:24s} rows={counts[s]:5d} bytes={sizes[s]:9,d}")
    log(f"{'total (incl. README)':24s} rows={sum(counts.values()):5d} bytes={total:9,d}")
    if total >= MAX_TOTAL_BYTES:
        sys.exit(f"ERROR: data/samples is {total} bytes, over the {MAX_TOTAL_BYTES} limit")


if __name__ == "__main__":
    main()
