"""Real text for the dedup benchmarks: documents from this machine's man pages, /usr/share/doc and
data/samples, and copies of them with controlled edits. Nothing is generated word by word; the only
invented tokens are the replacement words of the "replace" edit, taken from other real documents.

Deterministic: sorted file lists and seeded random generators.
"""

from __future__ import annotations

import glob
import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import zstandard

ROOT = Path(__file__).resolve().parent.parent
MACRO = re.compile(r"^[.'](\w+)\s*(.*)$")
TEXT_MACROS = {"SH", "SS", "TP", "IP", "B", "I", "BR", "IR", "RB", "RI", "BI", "IB", "SM", "Nm", "Nd", "Sh", "Ss",
               "Fl", "Ar", "Pa", "It", "Em", "Xr", "Dv", "Ev", "Cm", "Op", "Li", "Ql", "Dq", "Sq", "UR", "MT"}
ESCAPES = [(re.compile(r"\\f(\[[^]]*\]|\(..|.)"), ""), (re.compile(r"\\[(*](\(..|\[[^]]*\]|.)"), " "),
           (re.compile(r"\\[-&e|^/,%]"), lambda m: {"\\-": "-", "\\e": "\\"}.get(m.group(), "")),
           (re.compile(r'\\"'), "")]
GCLOUD_CAP = 1500  # the gcloud reference pages are thousands of templated near copies: keep a sample


def roff_to_text(src: str) -> str:
    """Man page source to its prose: text lines and the text of font/heading macros, escapes removed."""
    out = []
    for line in src.splitlines():
        if line.startswith((".\\\"", "'\\\"", '.\\"')):
            continue
        m = MACRO.match(line)
        if m:
            if m.group(1) not in TEXT_MACROS:
                if out and out[-1]:
                    out.append("") if m.group(1) in ("PP", "LP", "P", "Pp", "sp") else None
                continue
            line = m.group(2).replace('"', "")
        for pattern, repl in ESCAPES:
            line = pattern.sub(repl, line)
        out.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip() + "\n"


def _read(path: str) -> str | None:
    try:
        raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return None


def sample_texts() -> list[str]:
    """The texts of data/samples (every readable row)."""
    d = ROOT / "data" / "samples"
    texts = []
    for p in sorted(d.glob("*.jsonl*")):
        raw = p.read_bytes()
        if p.suffix == ".gz":
            try:
                raw = gzip.decompress(raw)
            except (OSError, EOFError):
                continue
        elif p.suffix == ".zst":
            raw = zstandard.ZstdDecompressor().stream_reader(raw).read()
        for line in raw.decode("utf-8", "replace").splitlines():
            try:
                t = json.loads(line).get("text")
            except (json.JSONDecodeError, AttributeError):
                continue
            if isinstance(t, str):
                texts.append(t)
    for p in sorted(d.glob("*.parquet")):
        texts += [t for t in pq.read_table(p, columns=["text"]).column("text").to_pylist() if t]
    return texts


def source_documents(max_chars: int = 20_000) -> Iterator[tuple[str, str]]:
    """(origin, text) of every real document on this machine we use, long ones split at paragraphs."""
    man = sorted(glob.glob("/usr/share/man/man[1-8]/*.gz"))
    gcloud = [p for p in man if "/gcloud" in p]
    man = [p for p in man if "/gcloud" not in p] + gcloud[:: max(1, len(gcloud) // GCLOUD_CAP)]
    docs = sorted(p for p in glob.glob("/usr/share/doc/**/*", recursive=True)
                  if Path(p).is_file() and re.search(r"(changelog|NEWS|README|copyright|\.txt|\.md)(\.gz)?$", p))
    licenses = sorted(glob.glob("/usr/share/common-licenses/*"))
    for path in sorted(man) + docs + licenses:
        text = _read(path)
        if not text:
            continue
        if "/man/" in path:
            text = roff_to_text(text)
        yield from ((path, chunk) for chunk in split(text, max_chars))
    for i, text in enumerate(sample_texts()):
        yield from ((f"samples:{i}", chunk) for chunk in split(text, max_chars))


def split(text: str, max_chars: int) -> Iterator[str]:
    """Pieces of at most about max_chars, cut at blank lines."""
    piece: list[str] = []
    size = 0
    for para in re.split(r"\n\s*\n", text):
        if size and size + len(para) > max_chars:
            yield "\n\n".join(piece)
            piece, size = [], 0
        piece.append(para)
        size += len(para) + 2
    if piece and size:
        yield "\n\n".join(piece)


# -- controlled edits -------------------------------------------------------------------------------
EDITS = ("replace", "delete", "append", "remove_lines", "swap_paragraphs", "case_space")


def edit(text: str, kind: str, strength: float, rng: np.random.Generator, donor: str) -> str:
    """A copy of `text` changed by one kind of edit; `strength` in [0, 1] is how much changes."""
    if kind == "replace":  # a fraction of words replaced by words of another document
        words, other = text.split(" "), donor.split() or ["x"]
        hit = rng.random(len(words)) < strength * 0.12
        return " ".join(other[rng.integers(len(other))] if h else w for w, h in zip(words, hit, strict=True))
    if kind == "delete":  # a fraction of words deleted
        words = text.split(" ")
        keep = rng.random(len(words)) >= strength * 0.12
        return " ".join(w for w, k in zip(words, keep, strict=True) if k)
    if kind == "append":  # lines of another document appended
        lines = donor.splitlines()
        n = int(len(text.splitlines()) * strength * 0.6) + 1
        return text.rstrip("\n") + "\n" + "\n".join(lines[:n]) + "\n"
    if kind == "remove_lines":  # a block of lines removed
        lines = text.splitlines()
        n = int(len(lines) * strength * 0.5) + 1
        at = int(rng.integers(max(1, len(lines) - n)))
        return "\n".join(lines[:at] + lines[at + n:]) + "\n"
    if kind == "swap_paragraphs":  # paragraphs reordered (changes only shingles across the cuts)
        paras = re.split(r"\n\s*\n", text)
        k = max(2, int(len(paras) * strength))
        idx = list(range(len(paras)))
        sub = sorted(rng.choice(len(paras), size=min(k, len(paras)), replace=False).tolist())
        shuffled = rng.permutation(sub).tolist()
        for a, b in zip(sub, shuffled, strict=True):
            idx[a] = b
        return "\n\n".join(paras[i] for i in idx)
    if kind == "case_space":  # case and white space only: the same shingles
        return re.sub(r"[ \t]+", "  ", text.upper() if strength > 0.5 else text.lower())
    raise ValueError(kind)
