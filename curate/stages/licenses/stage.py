"""Licences: full licence texts, licence notices, SPDX lines, Creative Commons markers, copyright notices.

Full texts are found by similarity, not by one regex per licence: the document and every template in
`rules/licenses/templates/` are cut into word 3-grams (lower-cased, numbers and bullets aside), a cheap sorted-array
lookup finds which templates share 3-grams with the document, and each candidate region is scored by how much of the
template it contains (recall) and how much of the region the template explains (precision). A licence under another
copyright holder, re-wrapped, re-bulleted or in a comment block still matches; a BSD-2 text is not taken for BSD-3
(precision) nor an MIT-0 for MIT (recall). Every finding becomes a `license_signals` row with its evidence kind,
span and score, and a use class from `rules/licenses/use_classes.toml`; the policy decides.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.core.stage import Detector, register
from curate.util.assets import file_asset, rules_dir

CLASSES = ("public-domain", "permissive", "copyleft", "no-derivatives", "noncommercial", "all-rights-reserved",
           "unknown")
GRANTING = ("public-domain", "permissive", "copyleft", "no-derivatives", "noncommercial")
PUBLIC_DOMAIN = "LicenseRef-Public-Domain"
EVIDENCE = ("full_text", "notice", "spdx_identifier", "cc_url", "cc_name", "rel_license", "public_domain",
            "copyright_notice", "all_rights_reserved", "restrictive_notice")

# -- licence expressions (license-expression does the parsing and normalising) --------------------------------


@functools.lru_cache(maxsize=1)
def _licensing():
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


@functools.lru_cache(maxsize=4096)
def normalize_expression(expr: str) -> str | None:
    """The canonical SPDX form of an expression (`GPL-2.0+` -> `GPL-2.0-or-later`); None if it does not parse.
    LicenseRef-* and unknown ids are kept as written."""
    try:
        parsed = _licensing().parse(expr.strip(), validate=False)
    except Exception:  # noqa: BLE001 - license-expression raises several kinds on bad input
        return None
    return parsed.render() if parsed is not None else None


@dataclass(frozen=True, eq=False)
class UseClasses:
    version: str
    by_id: dict[str, str]
    rank: dict[str, int]

    @classmethod
    def load(cls, path: Path) -> UseClasses:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        by_id = {lic.lower(): name for name, ids in raw["classes"].items() for lic in ids}
        return cls(str(raw["version"]), by_id, {c: i for i, c in enumerate(raw["order"])})

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one instance per rules dir, cached itself
    def of(self, expr: str | None) -> str:
        """Use class of an expression: OR takes the least restrictive known option, AND the most restrictive."""
        if not expr:
            return "unknown"
        try:
            parsed = _licensing().parse(expr, validate=False)
        except Exception:  # noqa: BLE001
            return "unknown"
        return self._walk(parsed) if parsed is not None else "unknown"

    def _walk(self, node: Any) -> str:
        from license_expression import LicenseWithExceptionSymbol

        if isinstance(node, LicenseWithExceptionSymbol):  # an exception only loosens the licence
            node = node.license_symbol
        args = getattr(node, "args", None)
        if not args:
            return self.by_id.get(str(getattr(node, "key", node)).lower(), "unknown")
        classes = [self._walk(a) for a in args]
        known = [c for c in classes if c in self.rank]
        if type(node).__name__ == "OR":
            return min(known, key=self.rank.__getitem__) if known else "unknown"
        return "unknown" if len(known) < len(classes) else max(known, key=self.rank.__getitem__)


# -- full texts by similarity ----------------------------------------------------------------------------------
VAR = "<<var>>"
OPTIONAL = re.compile(r"<<beginOptional>>(.*?)<<endOptional>>", re.S)  # SPDX template syntax
SYNONYMS = {"licence": "license", "licences": "licenses", "sublicence": "sublicense", "licenced": "licensed",
            "licencing": "licensing", "authorised": "authorized", "organisation": "organization", "favour": "favor"}
K = 3  # words per shingle
W = 9  # keys per window when telling copies of one template apart
BITS = 21  # bits per word id in a shingle key (2M words)
BASE = np.uint64(0x100000001B3)  # odd, so invertible modulo 2**64
BASE_INV = np.uint64(pow(int(BASE), -1, 2**64))
MAX_CHUNK = 4_000_000  # code points tokenised at once
# A partial copy (a licence without its disclaimer, a truncated paste) still counts when it is a long, nearly
# verbatim run: at least half of the template, PARTIAL_MIN 3-grams, and PARTIAL_PRECISION of the region explained.
PARTIAL_RECALL, PARTIAL_PRECISION, PARTIAL_MIN = 0.5, 0.95, 60


@dataclass
class Tokens:
    """Words of several documents at once: hash (lower-case), document number and code-point span."""
    hashes: np.ndarray
    doc: np.ndarray
    start: np.ndarray
    end: np.ndarray


def tokenize(texts: list[str]) -> Tokens:
    """Words = runs of ASCII letters/digits (a dot between digits kept: `2.0`), lower-cased, 1-character tokens
    (bullets, list numbers) dropped. Vectorised over all texts: numpy over UTF-32 code points, no Python loop."""
    sizes = np.array([len(t) + 1 for t in texts], np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    c = np.frombuffer("\0".join(texts).encode("utf-32-le") + b"\0\0\0\0", np.uint32)
    c = _LOWER[np.minimum(c, 128)].astype(np.int64) | np.where(c > 127, c, 0)  # ASCII lower-cased, others kept
    digit = (c >= 48) & (c <= 57)
    word = _WORD[np.minimum(c, 128)]
    word[1:-1] |= (c[1:-1] == 46) & digit[:-2] & digit[2:]
    edges = np.diff(word.astype(np.int8), prepend=np.int8(0))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    keep = ends - starts > 1
    starts, ends = starts[keep], ends[keep]
    powers, inv = _powers(len(c))
    with np.errstate(over="ignore"):
        cum = np.cumsum(c.astype(np.uint64) * powers)
        before = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], np.uint64(0))
        hashes = (cum[ends - 1] - before) * inv[starts] ^ (ends - starts).astype(np.uint64)
    doc = np.searchsorted(offsets, starts, side="right") - 1
    return Tokens(hashes, doc, starts - offsets[doc], ends - offsets[doc])


_LOWER = np.array([ord(ch.lower()) for ch in map(chr, range(128))] + [0], np.int64)
_WORD = np.array([ch.isascii() and ch.isalnum() for ch in map(chr, range(128))] + [False])
_POWERS: list[np.ndarray] = []


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """BASE**i and BASE**-i modulo 2**64 for i < n (cached, grown by doubling)."""
    if not _POWERS or len(_POWERS[0]) < n:
        size = max(n, 2 * len(_POWERS[0]) if _POWERS else 1 << 16)
        with np.errstate(over="ignore"):
            p = np.concatenate([[np.uint64(1)], np.cumprod(np.full(size - 1, BASE, np.uint64))])
            q = np.concatenate([[np.uint64(1)], np.cumprod(np.full(size - 1, BASE_INV, np.uint64))])
        _POWERS[:] = [p, q]
    return _POWERS[0][:n], _POWERS[1][:n]


def _distinct(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values (np.unique's hash path is ~50x slower on these int64 arrays)."""
    x = np.sort(x)
    return x[np.concatenate([[True], x[1:] != x[:-1]])] if len(x) else x


def word_hash(word: str) -> int:
    return int(tokenize([word]).hashes[0])


def _keys(ids: np.ndarray, doc: np.ndarray | None = None) -> np.ndarray:
    """3-gram keys (exact, no hashing); -1 where a shingle holds an unknown word or crosses documents."""
    if len(ids) < K:
        return np.empty(0, np.int64)
    a, b, c = ids[:-2], ids[1:-1], ids[2:]
    keys = (a << (2 * BITS)) | (b << BITS) | c
    bad = (a == 0) | (b == 0) | (c == 0)
    if doc is not None:
        bad |= doc[:-2] != doc[2:]
    keys[bad] = -1
    return keys


@dataclass
class FullText:
    license: str
    template: str
    start: int
    end: int
    score: float
    recall: float
    precision: float
    size: int = 0  # distinct required 3-grams of the template
    optional: int = 0  # distinct 3-grams of its optional parts that matched
    partial: bool = False  # accepted as a partial copy (see PARTIAL_*)

    @functools.cached_property
    def gain(self) -> float:
        """3-grams this match explains minus the template's missing ones and the region's unexplained ones: a
        long licence matched with a few edits beats a short one it contains (the BSD text inside Sendmail's)."""
        matched = self.recall * self.size + self.optional
        return 3 * matched - self.size - self.optional - matched / self.precision


class TemplateIndex:
    """Every template's 3-gram keys in one sorted array, with a CSR map key -> (template, position in template)."""

    def __init__(self, templates: dict[str, tuple[str, str]], min_recall: float, min_precision: float,
                 max_gap: int = 60):
        self.names = sorted(templates)
        self.licenses = [templates[n][0] for n in self.names]
        self.min_recall, self.min_precision, self.max_gap = min_recall, min_precision, max_gap
        stripped = [_optional_spans(templates[n][1].replace(VAR, " zzvarzz ")) for n in self.names]
        optional = [spans for _, spans in stripped]
        toks = tokenize([text for text, _ in stripped])
        var = word_hash("zzvarzz")
        words = np.unique(toks.hashes[toks.hashes != var])
        self.vocab_hash, self.vocab_id = words, np.arange(1, len(words) + 1, dtype=np.int64)
        for alt, word in SYNONYMS.items():  # British spellings get the id of the American word
            h = word_hash(word)
            i = np.searchsorted(words, h)
            if i < len(words) and words[i] == h:
                self.vocab_hash = np.append(self.vocab_hash, np.uint64(word_hash(alt)))
                self.vocab_id = np.append(self.vocab_id, self.vocab_id[i])
        order = np.argsort(self.vocab_hash)
        self.vocab_hash, self.vocab_id = self.vocab_hash[order], self.vocab_id[order]
        ids = self._ids(toks.hashes)
        keys = _keys(ids, toks.doc)
        per: list[tuple[np.ndarray, np.ndarray]] = []
        tdoc = toks.doc[:-2] if len(keys) else np.empty(0, np.int64)
        first_of = np.searchsorted(toks.doc, np.append(np.arange(len(self.names)), len(self.names)))
        # per template: how many <<var>> slots come before each token, so that a copy's own words in a slot
        # (a holder's name) do not count against its precision
        is_var = toks.hashes == var
        self.var_before = [np.concatenate([[0], np.cumsum(is_var[first_of[t]:first_of[t + 1]])])
                           for t in range(len(self.names))]
        # a 3-gram touching an optional part (an appendix, a preamble) may match but is not required for recall
        opt_tok = np.zeros(len(toks.hashes), bool)
        for t, spans in enumerate(optional):
            for a, b in spans:
                opt_tok[first_of[t] + np.flatnonzero((toks.start[first_of[t]:first_of[t + 1]] >= a)
                                                     & (toks.start[first_of[t]:first_of[t + 1]] < b))] = True
        opt_key = opt_tok[:-2] | opt_tok[1:-1] | opt_tok[2:] if len(keys) else np.empty(0, bool)
        self.t_req: list[np.ndarray] = []
        for t in range(len(self.names)):
            sel = np.flatnonzero((tdoc == t) & (keys >= 0))
            uk, first, counts = np.unique(keys[sel], return_index=True, return_counts=True)
            pos = sel[first] - first_of[t]
            # a key seen more than once in its template gets position -1: useless for ordering checks
            per.append((uk, np.where(counts == 1, pos, -1)))
            self.t_req.append(np.isin(uk, keys[sel][~opt_key[sel]]))
        self.sizes = np.array([max(int(r.sum()), 1) for r in self.t_req], np.int64)
        # 3-grams a copy needs: a full copy's share, or a partial copy's (see PARTIAL_*)
        self.need = np.minimum(min_recall * self.sizes, np.maximum(PARTIAL_RECALL * self.sizes, PARTIAL_MIN))
        self.lengths = np.array([max((p.max() if len(p) else 0), 1) for _, p in per], np.int64)
        all_keys = np.concatenate([k for k, _ in per])
        all_t = np.concatenate([np.full(len(k), i, np.int64) for i, (k, _) in enumerate(per)])
        order = np.lexsort((all_t, all_keys))
        all_keys, self.pair_t = all_keys[order], all_t[order]
        self.keys, first = np.unique(all_keys, return_index=True)
        self.indptr = np.append(first, len(all_keys)).astype(np.int64)
        # per template: its keys as sorted indices into self.keys, with their positions in the template
        self.t_keys = [np.searchsorted(self.keys, k) for k, _ in per]
        self.t_pos = [tpos for _, tpos in per]

    def _ids(self, hashes: np.ndarray) -> np.ndarray:
        i = np.searchsorted(self.vocab_hash, hashes)
        i[i == len(self.vocab_hash)] = 0
        return np.where(self.vocab_hash[i] == hashes, self.vocab_id[i], 0)

    def find(self, text: str) -> list[FullText]:
        return self.find_batch([text])[0]

    def find_batch(self, texts: list[str]) -> list[list[FullText]]:
        """Full licence texts in each document; documents are tokenised together in chunks."""
        out: list[list[FullText]] = []
        chunk: list[str] = []
        size = 0
        for text in texts:
            if chunk and size + len(text) > MAX_CHUNK:
                out += self._find_chunk(chunk)
                chunk, size = [], 0
            chunk.append(text)
            size += len(text) + 1
        if chunk:
            out += self._find_chunk(chunk)
        return out

    def _find_chunk(self, texts: list[str]) -> list[list[FullText]]:
        found: list[list[FullText]] = [[] for _ in texts]
        toks = tokenize(texts)
        keys = _keys(self._ids(toks.hashes), toks.doc)
        pos = np.flatnonzero(keys >= 0)
        k = keys[pos]
        j = np.searchsorted(self.keys, k)
        j[j == len(self.keys)] = 0
        hit = self.keys[j] == k
        pos, j = pos[hit], j[hit]
        if len(pos) < 10:
            return found
        n_t, n_k, n_d = len(self.names), len(self.keys), len(texts)
        hit_doc = toks.doc[pos]  # ascending, as pos is
        # exact recall bound per (document, template): expand each document's distinct keys to their templates
        dj = _distinct(hit_doc * n_k + j)
        d_doc, d_j = dj // n_k, dj % n_k
        lens = self.indptr[d_j + 1] - self.indptr[d_j]
        pair = np.repeat(self.indptr[d_j] - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
        counts = np.bincount(np.repeat(d_doc, lens) * n_t + self.pair_t[pair], minlength=n_d * n_t)
        wanted = np.flatnonzero(counts >= np.tile(self.need, n_d))
        if not len(wanted):
            return found
        hit_first = np.searchsorted(hit_doc, np.arange(n_d + 1))
        tok_first = np.searchsorted(toks.doc, np.arange(n_d + 1))
        w_doc, w_t = wanted // n_t, wanted % n_t
        # gain <= 2 * (shared 3-grams) - template size (precision <= 1): candidates go best bound first, and one
        # whose matches all lie under copies already found with a higher gain cannot win there (see _best); once
        # found copies cover every hit of the document better than the next bound, the document is done
        bound = 2 * counts[wanted] - self.sizes[w_t]
        doc_first = np.searchsorted(w_doc, np.arange(n_d + 1))
        for d in np.unique(w_doc).tolist():
            first = tok_first[d]
            starts, ends = toks.start[first:tok_first[d + 1]], toks.end[first:tok_first[d + 1]]
            jd, pd = j[hit_first[d]:hit_first[d + 1]], pos[hit_first[d]:hit_first[d + 1]] - first
            sel = np.arange(doc_first[d], doc_first[d + 1])
            near: list[FullText] = []
            cover = np.full(len(starts), -np.inf)  # per token: the best gain of a copy found over it so far
            floor = -np.inf  # the least of cover over all the document's hits
            for c in sel[np.argsort(-bound[sel], kind="stable")].tolist():
                if floor > bound[c]:
                    break
                t = int(w_t[c])
                tk = self.t_keys[t]
                i = np.searchsorted(tk, jd)
                i[i == len(tk)] = 0
                m = tk[i] == jd
                p = pd[m]
                # matches under better copies cannot win there; the rest must be able to form a copy of their own
                if np.count_nonzero(cover[p] <= bound[c]) < self.need[t]:
                    continue
                kept, rejected = self._regions(t, p, jd[m], self.t_pos[t][i[m]], self.t_req[t][i[m]], starts, ends)
                found[d] += kept
                near += rejected
                for f in kept:
                    a, b = np.searchsorted(starts, f.start), np.searchsorted(ends, f.end) + 1
                    cover[a:b] = np.maximum(cover[a:b], f.gain)
                if kept:
                    floor = cover[pd].min()
            # a partial copy is only the best reading of its text if no other licence, even one that failed the
            # thresholds, explains that text better (a BSD disclaimer under an MIT grant is not a BSD licence)
            found[d] = [f for f in found[d] if not f.partial or not any(
                n.gain > f.gain and _overlap(n, f) > 0.5 * min(n.end - n.start, f.end - f.start) for n in near)]
        return [_best(f) for f in found]

    def _regions(self, t: int, p: np.ndarray, j: np.ndarray, tp: np.ndarray, req: np.ndarray, starts: np.ndarray,
                 ends: np.ndarray) -> tuple[list[FullText], list[FullText]]:
        """Split the matched positions of one template into copies, then score each copy: (kept, rejected)."""
        need = self.need[t]
        if len(p) < need:
            return [], []
        breaks = np.diff(p) > self.max_gap
        # Keys unique in the template give its reading order: where the median template position of the next W
        # such keys falls far behind that of the previous W, another copy starts (a lone outlier does not split).
        ordered = np.flatnonzero(tp >= 0)
        thr = max(30, self.lengths[t] // 4)
        if len(ordered) >= 2 * W and (np.diff(tp[ordered]) < -thr).any():
            windows = np.lib.stride_tricks.sliding_window_view(tp[ordered], W)
            med = np.partition(windows, W // 2, axis=1)[:, W // 2]  # W is odd: the median, without np.median's cost
            i = np.arange(W, len(ordered) - W + 1)
            back = med[i] < med[i - W] - thr
            first = i[back & ~np.concatenate([[False], back[:-1]])]
            breaks[ordered[first] - 1] = True
        out: list[FullText] = []
        rejected: list[FullText] = []
        bounds = [0, *(np.flatnonzero(breaks) + 1).tolist(), len(p)]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            if b - a < need:
                continue
            # trim stray matches at the edges (shared phrases of a neighbouring text): within a copy, template
            # position minus document position stays roughly constant
            u = a + np.flatnonzero(tp[a:b] >= 0)
            delta = tp[u] - p[u]
            if len(u) >= 3 and delta.max() - delta.min() > thr:
                mid = np.partition(delta, len(delta) // 2)[len(delta) // 2]  # a median, cheaper than np.median's
                inl = u[np.abs(delta - mid) <= thr]
                if len(inl):
                    a, b = int(inl[0]), int(inl[-1]) + 1
            uniq = _distinct(j[a:b][req[a:b]])
            matched, optional = len(uniq), len(_distinct(j[a:b])) - len(uniq)
            recall = matched / self.sizes[t]
            if matched < need:
                continue
            ps, tps = p[a:b], tp[a:b]
            gaps = np.diff(ps)
            # a gap between two matches whose template positions enclose a <<var>> slot is the slot's filler
            vb = self.var_before[t]
            filled = (tps[:-1] >= 0) & (tps[1:] > tps[:-1]) & (gaps > K)
            filled[filled] = vb[np.minimum(tps[1:][filled] + K, len(vb) - 1)] > vb[tps[:-1][filled]]
            covered = int(np.where(filled, gaps, np.minimum(gaps, K)).sum()) + K
            precision = covered / (int(ps[-1]) + K - int(ps[0]))
            full = recall >= self.min_recall and precision >= self.min_precision
            partial = recall >= PARTIAL_RECALL and matched >= PARTIAL_MIN and precision >= PARTIAL_PRECISION
            score = 2 * recall * precision / (recall + precision)
            (out if full or partial else rejected).append(
                FullText(self.licenses[t], self.names[t], int(starts[ps[0]]), int(ends[ps[-1] + K - 1]),
                         round(float(score), 4), float(recall), float(precision), int(self.sizes[t]), optional,
                         partial and not full))
        return out, rejected


def _optional_spans(text: str) -> tuple[str, list[tuple[int, int]]]:
    """The template without its optional markers, and the code-point spans of its optional parts."""
    out, spans, last = [], [], 0
    size = 0
    for m in OPTIONAL.finditer(text):
        out.append(text[last:m.start()])
        size += m.start() - last
        spans.append((size, size + len(m.group(1))))
        out.append(m.group(1))
        size += len(m.group(1))
        last = m.end()
    out.append(text[last:])
    return "".join(out), spans


def _overlap(a: FullText, b: FullText) -> int:
    return min(a.end, b.end) - max(a.start, b.start)


def _best(found: list[FullText]) -> list[FullText]:
    """Overlapping candidates: the one that explains most of the text wins (then the best score, then the name)."""
    kept: list[FullText] = []
    for f in sorted(found, key=lambda f: (-round(f.gain, 6), -f.score, f.template)):
        if all(_overlap(f, g) <= 0.5 * min(f.end - f.start, g.end - g.start) for g in kept):
            kept.append(f)
    return sorted(kept, key=lambda f: f.start)


# -- notices and markers ---------------------------------------------------------------------------------------
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


def scan(text: str, index: TemplateIndex, full: list[FullText] | None = None) -> list[Finding]:
    """Every licence finding in one document (no use class yet); `full` = its full texts when already searched."""
    full = index.find(text) if full is None else full
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
    # "dedicated to the public domain" inside a CC0/Unlicense grant is that grant, not another licence
    if any(f.license in PD_LICENCES for f in found):
        found = [f for f in found if f.evidence != "public_domain"]
    return sorted(set(found), key=lambda f: (f.start, f.end, f.evidence, f.license or ""))


def expression(findings: list[Finding]) -> str | None:
    """One licence expression for a document: its distinct licences joined with AND (None when it has none)."""
    lics = sorted({f.license for f in findings if f.license})
    if not lics:
        return None
    return normalize_expression(" AND ".join(f"({x})" if " " in x else x for x in lics)) or " AND ".join(lics)


# -- rules files -----------------------------------------------------------------------------------------------
def licenses_dir() -> Path:
    return rules_dir() / "licenses"


@functools.lru_cache(maxsize=4)
def load_index(directory: str, min_recall: float, min_precision: float) -> TemplateIndex:
    base = Path(directory)
    meta = tomllib.loads((base / "templates.toml").read_text(encoding="utf-8"))
    templates = {}
    for t in meta["template"]:
        text = (base / "templates" / t["file"]).read_text(encoding="utf-8")
        templates[t["file"].removesuffix(".txt")] = (t["license"], text)
    return TemplateIndex(templates, min_recall, min_precision)


@functools.lru_cache(maxsize=4)
def load_classes(directory: str) -> UseClasses:
    return UseClasses.load(Path(directory) / "use_classes.toml")


def _rules_files() -> list[Path]:
    base = licenses_dir()
    return [base / "templates.toml", base / "use_classes.toml"]


class Scanner:
    """What a worker needs: the template index and the use-class table, loaded once."""

    def __init__(self, min_recall: float = 0.75, min_precision: float = 0.75, directory: Path | None = None):
        d = str(directory or licenses_dir())
        self.index = load_index(d, min_recall, min_precision)
        self.classes = load_classes(d)
        self.prefilter = re.compile(PREFILTER, re.I)

    def rows(self, doc_ids: list[str], texts: list[str | None]) -> dict[str, list]:
        out: dict[str, list] = {k: [] for k in ("doc_id", "license", "use_class", "evidence", "start", "end",
                                               "score")}
        texts = [t or "" for t in texts]
        for doc_id, text, full in zip(doc_ids, texts, self.index.find_batch(texts), strict=True):
            for f in scan(text, self.index, full):
                cls = {"all_rights_reserved": "all-rights-reserved", "restrictive_notice": "all-rights-reserved",
                       "copyright_notice": "unknown"}.get(f.evidence) or self.classes.of(f.license)
                for key, value in zip(out, (doc_id, f.license, cls, f.evidence, f.start, f.end, f.score),
                                      strict=True):
                    out[key].append(value)
        return out


SCHEMA = pa.schema([("doc_id", pa.string()), ("license", pa.string()), ("use_class", pa.string()),
                    ("evidence", pa.string()), ("start", pa.int64()), ("end", pa.int64()), ("score", pa.float64())])


@register
class Licenses(Detector):
    name = "licenses"
    throughput = 4e6  # chars/s on one core, measured on data/samples
    version = "2"
    tables = {
        "license_signals": """CREATE TABLE license_signals (
            doc_id VARCHAR NOT NULL,
            license VARCHAR,          -- SPDX expression (CC licences by their SPDX ids), NULL for notices without one
            use_class VARCHAR NOT NULL,  -- rules/licenses/use_classes.toml: permissive, copyleft, noncommercial, ...
            evidence VARCHAR NOT NULL,   -- full_text, notice, spdx_identifier, cc_url, cc_name, rel_license,
                                         -- public_domain, copyright_notice, all_rights_reserved, restrictive_notice
            "start" BIGINT,           -- code-point span in documents.text
            "end" BIGINT,
            score DOUBLE              -- full_text: F1 of template recall and precision; notices: fixed confidence
        )""",
    }
    output = "license_signals"

    def fingerprint(self) -> str:
        """Version, config and the hashes of the templates and use-class table: editing either recomputes."""
        blob = json.dumps({"base": super().fingerprint(),
                           "rules": [hashlib.sha256(p.read_bytes()).hexdigest() for p in _rules_files()]})
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def _scanner(self) -> Scanner:
        if getattr(self, "_loaded", None) is None:
            self._loaded = Scanner(float(self.config.get("min_recall", 0.75)),
                                   float(self.config.get("min_precision", 0.75)))
        return self._loaded

    def __getstate__(self) -> dict[str, Any]:  # workers load their own index
        return {k: v for k, v in self.__dict__.items() if k != "_loaded"}

    def __call__(self, batch: pa.RecordBatch) -> pa.Table:
        texts = batch.column("text")
        mask = pc.fill_null(pc.match_substring_regex(texts, PREFILTER, ignore_case=True), False)
        idx = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        if not len(idx):
            return SCHEMA.empty_table()
        picked = pa.array(idx)
        rows = self._scanner().rows(batch.column("doc_id").take(picked).to_pylist(),
                                    texts.take(picked).to_pylist())
        return pa.table(rows, schema=SCHEMA)

    def assets(self) -> list[dict[str, str]]:
        base = licenses_dir()
        templates = tomllib.loads((base / "templates.toml").read_text(encoding="utf-8"))
        classes = load_classes(str(base))
        return [file_asset("license-templates", base / "templates.toml", str(templates.get("version", ""))),
                file_asset("license-use-classes", base / "use_classes.toml", classes.version)]

    def signals_sql(self, rules: dict[str, Any]) -> str:
        granting = ", ".join(f"'{c}'" for c in GRANTING)
        order = ", ".join(f"'{c}'" for c in CLASSES[:-1])
        return f"""
            SELECT doc_id,
                   list(DISTINCT license ORDER BY license) FILTER (license IS NOT NULL) AS license_ids,
                   list(DISTINCT use_class ORDER BY use_class)
                       FILTER (evidence <> 'copyright_notice') AS license_use_classes,
                   CASE WHEN bool_or(use_class IN ({granting}))
                        THEN arg_max(use_class, list_position([{order}], use_class))
                                 FILTER (use_class IN ({granting}))
                        WHEN bool_or(use_class = 'all-rights-reserved') THEN 'all-rights-reserved'
                        WHEN bool_or(license IS NOT NULL) THEN 'unknown' END AS license_use_class,
                   bool_or(use_class = 'noncommercial') AS license_noncommercial,
                   bool_or(use_class = 'no-derivatives') AS license_no_derivatives,
                   bool_or(use_class = 'copyleft') AS license_copyleft,
                   bool_or(evidence = 'full_text') AS license_full_text,
                   bool_or(evidence = 'all_rights_reserved') AND NOT coalesce(bool_or(use_class IN ({granting})),
                       false) AS license_all_rights_reserved,
                   bool_or(evidence = 'restrictive_notice') AND NOT coalesce(bool_or(use_class IN ({granting})),
                       false) AS license_restrictive,
                   count(*) FILTER (evidence = 'copyright_notice') AS license_copyright_notices
            FROM license_signals GROUP BY doc_id"""
