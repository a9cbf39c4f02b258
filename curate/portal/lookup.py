"""The lookup index of a release, and the lookups answered from it.

`publish(ws, store)` writes, for each document of a release's manifest, no text: its canonical URL key, its
host (labels reversed, so a domain and its subdomains are one index range), the SHA-256 of its exact text,
its action, the rules that fired and the opt-out entries it matched, and a MinHash signature of its word
5-gram shingles with its LSH band buckets. A lookup answers with counts, actions, rules and entry ids only:
never a document's text, id, URL or any personal data.

Entries come from the workspace's current opt-out matches: publish a release right after the `optout apply`
that made it (the default publishes the workspace's current manifest).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from curate.core.errors import NotFound, UserError
from curate.core.workspace import Workspace
from curate.dedup import minhash
from curate.portal.store import Store
from curate.stages.optout.normalize import entry_domain, normalize_url, url_key

THRESHOLD = 0.7  # the opt-out stage's default work_jaccard: a "near copy" means the same as for a work entry
NUM_PERM = 128
BATCH = 5000
MAX_TEXT = 1024 * 1024


def rhost(host: str) -> str:
    return ".".join(reversed(host.split(".")))


def publish(ws: Workspace, store: Store, release: str | None = None) -> dict[str, Any]:
    """Index a release of `ws` (default: its current manifest) into the store; replaces an index of that name."""
    from curate.core import manifest

    rels = manifest.releases(ws)
    chosen = [r for r in rels if (r["name"] == release if release else r["current"])]
    if not chosen:
        names = ", ".join(r["name"] for r in rels) or "none"
        raise NotFound(f"no release {release or '(current)'} in {ws.path} (releases: {names})")
    rel = chosen[0]
    path = Path(rel["path"]) / manifest.MANIFEST
    bands, rows = minhash.lsh_params(THRESHOLD, NUM_PERM, 0.99)
    table = pq.read_table(path, columns=["doc_id", "action", "rule_ids"])
    with ws.connect() as con:
        con.register("_pl_manifest", table)
        has_matches = "optout_matches" in {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()")
                                           .fetchall()}
        entries_sql = ("(SELECT doc_id, string_agg(DISTINCT entry_id, ',' ORDER BY entry_id) AS entries "
                       "FROM optout_matches GROUP BY doc_id)") if has_matches else \
            "(SELECT NULL AS doc_id, '' AS entries)"
        rel_sql = f"""SELECT m.action, array_to_string(m.rule_ids, ',') AS rules, coalesce(x.entries, '') AS entries,
                             d.url, d.sha256, d.text
                      FROM _pl_manifest m JOIN documents d USING (doc_id) LEFT JOIN {entries_sql} x USING (doc_id)
                      ORDER BY d.seq"""
        cur = con.execute(rel_sql)
        at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        per_entry: Counter[tuple[str, bool]] = Counter()
        n = 0
        with store.tx(write=True) as sc:
            for t in ("lookup_docs", "lookup_bands", "lookup_entries", "releases"):
                sc.execute(f"DELETE FROM {t} WHERE {'name' if t == 'releases' else 'release'} = ?",  # t: constant
                           [rel["name"]])
            order = sc.one("SELECT coalesce(max(ord), 0) + 1 FROM releases")[0]
            while batch := cur.fetchmany(BATCH):
                sigs = minhash.signatures([b[5] or "" for b in batch], NUM_PERM)
                buckets = minhash.band_hashes(sigs, bands, rows)
                docs, band_rows = [], []
                for i, (action, rules, entries, url, sha, _) in enumerate(batch):
                    canon = normalize_url(url)
                    key = url_key(canon) if canon else None
                    host = key.split("/", 1)[0].split(":", 1)[0] if key else None
                    docs.append((rel["name"], n + i, key, rhost(host) if host else None, sha, action, rules, entries,
                                 sigs[i].astype("<u4").tobytes()))
                    band_rows.extend((rel["name"], int(b), j, n + i) for j, b in enumerate(buckets[i]))
                    for e in filter(None, entries.split(",")):
                        per_entry[(e, action == "drop")] += 1
                sc.executemany("INSERT INTO lookup_docs (release, n, url_key, rhost, sha256, action, rules, entries, "
                               "sig) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", docs)
                sc.executemany("INSERT INTO lookup_bands (release, bucket, band, n) VALUES (?, ?, ?, ?)", band_rows)
                n += len(batch)
            ids = sorted({e for e, _ in per_entry})
            sc.executemany("INSERT INTO lookup_entries (release, entry_id, documents, dropped) VALUES (?, ?, ?, ?)",
                           [(rel["name"], e, per_entry[(e, True)] + per_entry[(e, False)], per_entry[(e, True)])
                            for e in ids])
            sc.execute("INSERT INTO releases (name, root_hash, documents, bands, rows_per_band, threshold, "
                       "published_at, ord) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       [rel["name"], rel["root_hash"] or "", n, bands, rows, THRESHOLD, at, order])
        con.unregister("_pl_manifest")
    return {"release": rel["name"], "documents": n, "root_hash": rel["root_hash"], "entries": len(ids)}


def releases(store: Store) -> list[dict[str, Any]]:
    with store.tx() as cur:
        rows = cur.all("SELECT name, root_hash, documents, published_at FROM releases ORDER BY ord DESC")
    return [{"release": r[0], "root_hash": r[1], "documents": r[2], "published_at": r[3]} for r in rows]


def _release(cur: Any, release: str | None) -> tuple:
    if release:
        row = cur.one("SELECT name, bands, rows_per_band, threshold FROM releases WHERE name = ?", [release])
    else:
        row = cur.one("SELECT name, bands, rows_per_band, threshold FROM releases ORDER BY ord DESC LIMIT 1")
    if row is None:
        raise NotFound("no such release" if release else "no release has been published yet")
    return row


def _answer(release: str, rows: list[tuple[str, str, str]], **extra: Any) -> dict[str, Any]:
    actions = Counter(r[0] for r in rows)
    rules = sorted({x for r in rows for x in r[1].split(",") if x})
    entries = sorted({x for r in rows for x in r[2].split(",") if x})
    return {"release": release, "found": bool(rows), "documents": len(rows), "actions": dict(sorted(actions.items())),
            "excluded": actions.get("drop", 0) > 0, "rules": rules, "entries": entries, **extra}


def lookup(store: Store, release: str | None = None, url: str | None = None, domain: str | None = None,
           text: str | None = None) -> dict[str, Any]:
    """Is this URL / domain / text in the release, and what happened to it? Exactly one of url, domain, text."""
    given = [k for k, v in (("url", url), ("domain", domain), ("text", text)) if v not in (None, "")]
    if len(given) != 1:
        raise UserError("give exactly one of url, domain or text")
    with store.tx() as cur:
        name, bands, rows_per_band, threshold = _release(cur, release)
        if url:
            canon = normalize_url(url) if isinstance(url, str) and len(url) <= 2048 else None
            if not canon:
                raise UserError("url: not an absolute http(s) URL")
            found = cur.all("SELECT action, rules, entries FROM lookup_docs WHERE release = ? AND url_key = ?",
                            [name, url_key(canon)])
            return _answer(name, found, query="url")
        if domain:
            try:
                host = entry_domain(domain if isinstance(domain, str) else "").removeprefix("*.")
            except ValueError as e:
                raise UserError(f"domain: {e}") from None
            r = rhost(host)
            found = cur.all("""SELECT action, rules, entries FROM lookup_docs WHERE release = ?
                               AND (rhost = ? OR (rhost >= ? AND rhost < ?))""", [name, r, r + ".", r + "/"])
            return _answer(name, found, query="domain")
        if not isinstance(text, str) or len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT:
            raise UserError(f"text: at most {MAX_TEXT} bytes")
        sha = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        exact = cur.all("SELECT action, rules, entries FROM lookup_docs WHERE release = ? AND sha256 = ?", [name, sha])
        sig = minhash.signatures([text], NUM_PERM)
        near: list[tuple[str, str, str]] = []
        if not (sig == np.iinfo(np.uint32).max).all():  # a text without words has no shingles and no near copies
            buckets = [int(b) for b in minhash.band_hashes(sig, bands, rows_per_band)[0]]
            candidates: set[int] = set()
            for j, b in enumerate(buckets):  # a bucket matches in its own band only
                rows = cur.all("SELECT band, n FROM lookup_bands WHERE release = ? AND bucket = ?", [name, b])
                candidates.update(n for band, n in rows if band == j)
            for n in sorted(candidates):
                action, rules, entries, blob = cur.one(
                    "SELECT action, rules, entries, sig FROM lookup_docs WHERE release = ? AND n = ?", [name, n])
                other = np.frombuffer(bytes(blob), "<u4")
                if float(minhash.estimate_jaccard(sig[0], other)) >= threshold:
                    near.append((action, rules, entries))
        answer = _answer(name, near, query="text", threshold=threshold)
        answer["exact_copies"] = len(exact)
        answer["found"] = bool(exact or near)
        return answer
