"""Full licence texts by similarity: documents and templates as word 3-grams, candidate templates by a sorted-array
lookup, each candidate region scored by recall (how much of the template it holds) and precision (how much of the
region the template explains).

The document and every template in `rules/licenses/templates/` are cut into word 3-grams (lower-cased, numbers and
bullets aside), a cheap sorted-array lookup finds which templates share 3-grams with the document, and each
candidate region is scored. A licence under another copyright holder, re-wrapped, re-bulleted or in a comment
block still matches; a BSD-2 text is not taken for BSD-3 (precision) nor an MIT-0 for MIT (recall).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import numpy as np

from curate.util.rolling import prefix_sums, span_hashes
from curate.util.tokens import runs

VAR = "<<var>>"
OPTIONAL = re.compile(r"<<beginOptional>>(.*?)<<endOptional>>", re.S)  # SPDX template syntax
SYNONYMS = {"licence": "license", "licences": "licenses", "sublicence": "sublicense", "licenced": "licensed",
            "licencing": "licensing", "authorised": "authorized", "organisation": "organization", "favour": "favor"}
K = 3  # words per shingle
W = 9  # keys per window when telling copies of one template apart
BITS = 21  # bits per word id in a shingle key (2M words)
BASE = 0x100000001B3  # odd base of the words' polynomial hashes (curate.util.rolling)
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
    starts, ends = runs(word)
    keep = ends - starts > 1
    starts, ends = starts[keep], ends[keep]
    hashes = span_hashes(prefix_sums(c, BASE), starts, ends, BASE) ^ (ends - starts).astype(np.uint64)
    doc = np.searchsorted(offsets, starts, side="right") - 1
    return Tokens(hashes, doc, starts - offsets[doc], ends - offsets[doc])

_LOWER = np.array([ord(ch.lower()) for ch in map(chr, range(128))] + [0], np.int64)
_WORD = np.array([ch.isascii() and ch.isalnum() for ch in map(chr, range(128))] + [False])


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
            matched = len(uniq)
            if matched < need:
                continue
            recall, precision, optional = self._measure(t, p[a:b], tp[a:b], j[a:b], req[a:b])
            full = recall >= self.min_recall and precision >= self.min_precision
            partial = recall >= PARTIAL_RECALL and matched >= PARTIAL_MIN and precision >= PARTIAL_PRECISION
            if not (full or partial) and recall >= PARTIAL_RECALL and matched >= PARTIAL_MIN:
                # the licence's own text, then other text that shares some of its phrases (an MIT grant under a
                # BSD-style disclaimer): the longest verbatim start of the copy may be a partial copy
                if (cut := self._verbatim_start(t, p[a:b], tp[a:b], j[a:b], req[a:b])) is not None:
                    b = a + cut
                    recall, precision, optional = self._measure(t, p[a:b], tp[a:b], j[a:b], req[a:b])
                    partial = True
            ps = p[a:b]
            score = 2 * recall * precision / (recall + precision)
            (out if full or partial else rejected).append(
                FullText(self.licenses[t], self.names[t], int(starts[ps[0]]), int(ends[ps[-1] + K - 1]),
                         round(float(score), 4), float(recall), float(precision), int(self.sizes[t]), optional,
                         partial and not full))
        return out, rejected

    def _covered(self, t: int, ps: np.ndarray, tps: np.ndarray) -> np.ndarray:
        """Per gap between consecutive matches, the document tokens the template explains there: K at most, the
        whole gap when the template positions around it enclose a <<var>> slot (the slot's filler)."""
        gaps = np.diff(ps)
        vb = self.var_before[t]
        filled = (tps[:-1] >= 0) & (tps[1:] > tps[:-1]) & (gaps > K)
        filled[filled] = vb[np.minimum(tps[1:][filled] + K, len(vb) - 1)] > vb[tps[:-1][filled]]
        return np.where(filled, gaps, np.minimum(gaps, K))

    def _measure(self, t: int, ps: np.ndarray, tps: np.ndarray, j: np.ndarray,
                 req: np.ndarray) -> tuple[float, float, int]:
        """Recall, precision and matched optional 3-grams of the copy made of these matches."""
        uniq = _distinct(j[req])
        optional = len(_distinct(j)) - len(uniq)
        covered = int(self._covered(t, ps, tps).sum()) + K
        return len(uniq) / self.sizes[t], covered / (int(ps[-1]) + K - int(ps[0])), optional

    def _verbatim_start(self, t: int, ps: np.ndarray, tps: np.ndarray, j: np.ndarray, req: np.ndarray) -> int | None:
        """How many of these matches, from the first, make the longest start of the copy that is a partial copy
        (PARTIAL_*), or None. Only a start: a licence is told by its grant and conditions, while the end of many
        is a disclaimer they share (measured: trying ends too read the BSD disclaimer under an MIT grant as a
        BSD-1-Clause, and MIT-style endings as MIT-open-group, in /usr/share/doc/*/copyright)."""
        covered = K + np.concatenate([[0], np.cumsum(self._covered(t, ps, tps))])
        precision = covered / (ps - ps[0] + K)
        # distinct required keys seen so far: each key counts at its first occurrence
        first = np.zeros(len(ps), np.int64)
        keys, idx = np.unique(np.where(req, j, -1), return_index=True)
        first[idx[keys >= 0]] = 1
        ok = np.flatnonzero((precision >= PARTIAL_PRECISION)
                            & (np.cumsum(first) >= max(PARTIAL_MIN, PARTIAL_RECALL * self.sizes[t])))
        return int(ok[-1]) + 1 if len(ok) else None


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
