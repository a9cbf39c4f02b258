"""How long a creator's update takes to reach the manifest, next to a full `curate run`.

Builds a synthetic workspace (default 1,000,000 documents: text cut from data/samples, URLs on
~40,000 sites with realistic paths, tracking parameters and fragments, accented author names, a few
noai markers), registers a 100,000-entry opt-out registry (every kind, most entries hitting real
documents in another spelling), runs the full pipeline once (timed), then registers 1,000 new entries
and runs `curate optout apply` (timed), then revokes them and applies again (timed).
Targets (issue 5): apply <= 5% of the full run and <= 30 s.

    PYTHONPATH=. python benchmarks/optout_update.py [--docs 1000000] [--dir /tmp/optout-bench] [--keep]
                                                    [--skip-stages pii quality]

The full run leaves out the stages named by --skip-stages: by default pii and quality (about 2.5 h
and 40 min of CPU on a million documents here) and dedup_fuzzy (the synthetic documents are
overlapping windows of one text, so nearly every document has hundreds of near copies to verify).
That makes the full run shorter, so the share it reports is an upper bound of the share against a
run of every stage.

With --keep an existing workspace of the right size is reused (only the timings after the full run
are repeated). When the near-duplicate stage (dedup_fuzzy) is left out, its LSH band index is built
here from curate.stages.dedup_fuzzy.minhash, untimed, so `work` entries take the same path as in production.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curate import Workspace  # noqa: E402
from curate.stages.optout import registry  # noqa: E402
from curate.stages.optout.reapply import apply  # noqa: E402

FIRST = ["José", "María", "Zoë", "Søren", "Łukasz", "Anaïs", "Björn", "Chloé", "Dušan", "Émile", "François", "Gülşen",
         "Håkon", "Inès", "Jürgen", "Kateřina", "Léa", "Miloš", "Noémie", "Ömer", "Pål", "Renée", "Sébastien",
         "Tomáš", "Ulrike", "Zoltán", "Aoife", "Ngozi", "Wei", "Hiroshi", "Priya", "Kwame", "Olga", "Liam", "Emma",
         "Noah", "Olivia", "Mateo", "Sofía", "Lucas", "Amelia", "Ethan", "Mia", "James", "Ava", "Ahmed", "Fatima",
         "Yusuf", "Leila", "Arjun", "Ananya", "Chen", "Mei", "Kenji", "Yuki", "Dmitri", "Anastasia", "Sven", "Ingrid"]
LAST = ["Müller", "García", "Sørensen", "Nowak", "Dubois", "Ångström", "Čapek", "Østergaard", "Kovačević", "Łaski",
        "Martínez", "Rodríguez", "Fernández", "López", "González", "Pérez", "Sánchez", "Gómez", "Díaz", "Núñez",
        "Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Taylor", "O'Brien",
        "Murphy", "Kelly", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker", "Hoffmann",
        "Rossi", "Russo", "Ferrari", "Esposito", "Bianchi", "Romano", "Colombo", "Ricci", "Marino", "Greco",
        "Silva", "Santos", "Oliveira", "Souza", "Lima", "Pereira", "Costa", "Carvalho", "Almeida", "Ribeiro",
        "Nguyễn", "Trần", "Lê", "Phạm", "Kim", "Lee", "Park", "Choi", "Tanaka", "Suzuki", "Takahashi", "Watanabe",
        "Ivanov", "Smirnov", "Kuznetsov", "Popov", "Novák", "Svoboda", "Dvořák", "Černý", "Horváth", "Nagy",
        "Kowalski", "Wiśniewski", "Wójcik", "Kowalczyk", "Kamiński", "Lewandowski", "Zieliński", "Szymański"]
TLDS = ["com", "org", "net", "de", "fr", "co.uk", "io", "info", "es", "it", "nl", "com.au", "ca", "se", "pl", "blog"]
SUBS = ["www", "www", "www", "", "", "blog", "news", "forum", "docs", "shop", "en", "magazine"]
SECTIONS = ["articles", "blog", "news", "stories", "posts", "wiki", "reviews", "guides", "opinion", "p"]
TRACKING = ["utm_source=newsletter", "utm_medium=email&utm_campaign=spring", "fbclid=IwAR2x", "gclid=Cj0KCQ",
            "ref_src=twsrc"]


def words_from_samples() -> list[str]:
    import duckdb

    con = duckdb.connect()
    samples = ROOT / "data" / "samples"
    texts = con.execute(f"""SELECT text FROM read_json('{samples}/changelogs.jsonl', format='newline_delimited',
                                                       columns={{'text': 'VARCHAR'}})
                            UNION ALL SELECT text FROM read_parquet('{samples}/manpages.parquet')
                            UNION ALL SELECT text FROM read_csv('{samples}/docs.csv', header=true, all_varchar=true)
                         """).fetchall()
    return " ".join(t for (t,) in texts if t).split()


def generate(path: Path, n_docs: int, seed: int = 7) -> dict:
    """Write n_docs documents as JSONL shards of 100,000; return what the registry will refer to."""
    rng = np.random.default_rng(seed)
    random.seed(seed)
    words = words_from_samples()
    vocab = sorted({w.lower() for w in words[:200_000] if w.isalpha() and 3 <= len(w) <= 10})[:5000]
    n_sites = max(n_docs // 25, 100)
    sites = []
    for i in range(n_sites):
        name = f"{vocab[rng.integers(len(vocab))]}{vocab[rng.integers(len(vocab))]}{'' if i % 3 else i}"
        sites.append((SUBS[i % len(SUBS)], f"{name}.{TLDS[i % len(TLDS)]}"))
    # A few big sites (the largest holds ~1.5% of the documents) and a long tail.
    site_of_doc = (n_sites * rng.random(n_docs) ** 2.5).astype(np.int64)
    names = [f"{f} {m}. {last}" for f in FIRST for m in "ABCDEFGHIJKLMNOPRSTW" for last in LAST]
    author_of_doc = rng.integers(0, len(names), n_docs)
    lengths = rng.integers(120, 420, n_docs)
    starts = rng.integers(0, len(words) - 420, n_docs)
    slugs = rng.integers(0, len(vocab), (n_docs, 4))
    path.mkdir(parents=True, exist_ok=True)
    picks: dict = {"urls": [], "prefixes": [], "domains": [], "texts": [], "authors": []}
    shard_size = 100_000
    for start in range(0, n_docs, shard_size):
        lines = []
        for i in range(start, min(start + shard_size, n_docs)):
            sub, host = sites[site_of_doc[i]]
            full_host = f"{sub}.{host}" if sub else host
            year, month = 2015 + i % 10, 1 + i % 12
            section = SECTIONS[i % len(SECTIONS)]
            slug = "-".join(vocab[j] for j in slugs[i])
            url = f"{'http' if i % 9 == 0 else 'https'}://{full_host}/{section}/{year}/{month:02d}/{slug}-{i}"
            if i % 10 == 3:
                url += "?" + TRACKING[i % len(TRACKING)]
            elif i % 17 == 5:
                url += "#comments"
            text = " ".join(words[starts[i]:starts[i] + lengths[i]]) + f" [{i}]"
            meta: dict = {"source": "synthetic-web"}
            if i % 5 < 3:
                meta["author"] = names[author_of_doc[i]]
            if i % 400 == 0:
                meta["html_meta"] = {"robots": "noai"}
            elif i % 400 == 1:
                meta["headers"] = {"X-Robots-Tag": "noai"}
            lines.append(json.dumps({"id": f"web-{i:07d}", "text": text, "url": url, "meta": meta},
                                    ensure_ascii=False))
            if i % 29 == 0:
                picks["urls"].append(url)
            if i % 149 == 0:
                picks["prefixes"].append(f"https://{full_host}/{section}/{year}/")
            if i % 67 == 0:
                picks["domains"].append(host)
            if i % 83 == 0:
                picks["texts"].append(text)
        (path / f"web-{start // shard_size:03d}.jsonl").write_text("\n".join(lines) + "\n")
    picks["authors"] = names
    picks["domains"] = sorted(set(picks["domains"]))
    return picks


def variant_url(url: str, i: int) -> str:
    """The same page spelled another way: host case, default port, tracking parameter, slash, fragment."""
    scheme, rest = url.split("://", 1)
    host, path = rest.split("/", 1)
    path = path.split("#", 1)[0]
    forms = [f"{scheme}://{host.upper()}/{path}", f"https://{host}:443/{path}", f"{scheme}://{host}/{path}/",
             f"{scheme}://{host}/{path}{'&' if '?' in path else '?'}utm_source=registry#top"]
    return forms[i % len(forms)]


def fold_case(name: str, i: int) -> str:
    import unicodedata

    plain = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    return [name.upper(), name.lower(), plain, plain.lower()][i % 4]


def entries(picks: dict, n: int, offset: int, rng: random.Random) -> list[dict]:
    """n registry requests in a realistic mix; ~70% of them hit documents of the workspace."""
    mix = [("url", 0.40), ("author", 0.24), ("domain", 0.15), ("url_prefix", 0.10), ("sha256", 0.10), ("work", 0.01)]
    out = []
    for kind, share in mix:
        for j in range(max(1, int(n * share))):
            k = offset + j
            hit = rng.random() < 0.7

            def pick(name: str, k: int = k) -> str:  # spread over the candidates, few repeats
                return picks[name][(k * 7919) % len(picks[name])]
            if kind == "url":
                value = variant_url(pick("urls"), k) if hit else f"https://gone{k}.example.net/post/{k}"
            elif kind == "author":
                value = fold_case(pick("authors"), k) if hit else f"Writer Number{k}"
            elif kind == "domain":
                value = pick("domains") if hit else f"site{k}.example-{k % 97}.org"
            elif kind == "url_prefix":
                value = pick("prefixes") if hit else f"https://old{k}.example.com/archive/"
            elif kind == "sha256":
                value = hashlib.sha256(pick("texts").encode()).hexdigest() if hit else \
                    hashlib.sha256(str(k).encode()).hexdigest()
            else:
                words = pick("texts").split()
                for _ in range(3):
                    words[rng.randrange(len(words))] = "edited"
                value = " ".join(words)
            out.append({"kind": kind, "value": value, "creator": f"creator-{k % 5000}",
                        "evidence": f"request #{k}", "received_at": "2026-06-01T00:00:00Z", "verified": k % 3 == 0})
    while len(out) < n:  # rounding: top up with URLs
        k = offset + len(out)
        out.append({"kind": "url", "value": f"https://gone{k}.example.net/x/{k}", "creator": f"creator-{k % 5000}",
                    "received_at": "2026-06-01T00:00:00Z"})
    return out[:n]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def build_band_index(ws: Workspace) -> float:
    """Stand-in for the dedup_fuzzy stage when it is not registered: its LSH bands (minhash)."""
    from curate.dedup import minhash

    t0 = time.monotonic()
    bands, rows = minhash.lsh_params(0.8, 128)
    with ws.connect(write=True) as con:
        con.execute("CREATE OR REPLACE TABLE dedup_bands (seq BIGINT, band SMALLINT, bucket BIGINT)")
        con.execute("CREATE OR REPLACE TABLE dedup_fuzzy_state (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
        con.execute("INSERT INTO dedup_fuzzy_state VALUES ('lsh', ?)", [json.dumps(
            {"shingle": "word", "ngram": 5, "num_perm": 128, "seed": 1, "scheme": "affine32", "bands": bands,
             "rows": rows})])
        reader = con.cursor().sql("SELECT seq, text FROM documents").to_arrow_reader(20_000)
        for batch in reader:
            sigs = minhash.signatures(batch.column("text").to_pylist(), 128, 1)
            buckets = minhash.band_hashes(sigs, bands, rows)
            t = pa.table({"seq": np.repeat(batch.column("seq").to_numpy(), bands),
                          "band": np.tile(np.arange(bands, dtype=np.int16), batch.num_rows),
                          "bucket": buckets.ravel()})
            con.register("_b", t)
            con.execute("INSERT INTO dedup_bands SELECT * FROM _b")
            con.unregister("_b")
    return time.monotonic() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--registry", type=int, default=100_000)
    ap.add_argument("--new", type=int, default=1_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/optout-bench"))
    ap.add_argument("--keep", action="store_true", help="reuse the workspace and full-run timing if present")
    ap.add_argument("--skip-stages", nargs="*", default=["pii", "quality", "dedup_fuzzy"],
                    help="stages the full run leaves out (a shorter full run: the share is an upper bound)")
    args = ap.parse_args()
    d = args.dir
    ws_path, state_file = d / "ws", d / "state.json"
    rng = random.Random(11)
    state = json.loads(state_file.read_text()) if args.keep and state_file.exists() else {}
    if state.get("docs") != args.docs:
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        t = time.monotonic()
        picks = generate(d / "shards", args.docs)
        print(f"generated {args.docs:,} documents in {time.monotonic() - t:.0f}s", flush=True)
        ws = Workspace.init(ws_path)
        t = time.monotonic()
        ws.ingest([str(d / "shards")])
        state = {"docs": args.docs, "ingest_s": time.monotonic() - t}
        print(f"ingest: {state['ingest_s']:.1f}s", flush=True)
        from curate.core.stage import load_builtin

        if "dedup_fuzzy" not in load_builtin() or "dedup_fuzzy" in args.skip_stages:
            state["band_index_s"] = build_band_index(ws)
            print(f"LSH band index (stand-in for dedup_fuzzy, untimed): {state['band_index_s']:.1f}s", flush=True)
        t = time.monotonic()
        rep = registry.import_file(ws, write_jsonl(d / "registry.jsonl", entries(picks, args.registry, 0, rng)))
        state["registry_import_s"] = time.monotonic() - t
        assert not rep.errors, rep.errors[:5]
        print(f"registry: {rep.added:,} entries imported in {state['registry_import_s']:.1f}s", flush=True)
        stages = [s for s in sorted(load_builtin()) if s not in args.skip_stages]
        t = time.monotonic()
        summary = ws.run(stages=stages)
        state["full_run_s"] = time.monotonic() - t
        state["stages"] = {r.name: round(r.seconds, 1) for r in summary.stages}
        print(f"full curate run: {state['full_run_s']:.1f}s {state['stages']}", flush=True)
        (d / "picks.json").write_text(json.dumps(picks))
        shutil.copytree(ws_path, d / "ws-after-run")
        state_file.write_text(json.dumps(state))
    else:  # start again from the workspace as the full run left it
        shutil.rmtree(ws_path)
        shutil.copytree(d / "ws-after-run", ws_path)
        picks = json.loads((d / "picks.json").read_text())
    ws = Workspace(ws_path)
    with ws.connect() as con:
        n_docs = con.execute("SELECT count(*) FROM documents").fetchall()[0][0]
        active = registry.state(con).active
    new = entries(picks, args.new, 10_000_000, random.Random(12))
    t = time.monotonic()
    rep = registry.import_file(ws, write_jsonl(d / "new.jsonl", new))
    import_s = time.monotonic() - t
    t = time.monotonic()
    r = apply(ws)
    apply_s = time.monotonic() - t
    with ws.connect() as con:
        added = [e for (e,) in con.execute("SELECT entry_id FROM optout_events WHERE seq > ? AND op = 'add'",
                                          [r.before.version]).fetchall()]
    revokes = [{"op": "revoke", "entry_id": e, "creator": "benchmark", "received_at": "2026-07-01T00:00:00Z"}
               for e in added]
    registry.import_file(ws, write_jsonl(d / "revoke.jsonl", revokes))
    t = time.monotonic()
    r2 = apply(ws)
    revoke_s = time.monotonic() - t
    full = state["full_run_s"]
    print()
    print(f"workspace: {n_docs:,} documents, registry {active:,} active entries before the update")
    print(f"full curate run (stages {state.get('stages')}, policy, manifest): {full:.1f}s")
    print(f"import {rep.added:,} new entries: {import_s:.2f}s")
    print(f"optout apply (+{rep.added:,} entries): {apply_s:.2f}s = {100 * apply_s / full:.2f}% of the full run "
          f"[{', '.join(f'{k} {v:.2f}s' for k, v in r.seconds.items())}]; "
          f"{r.summary['excluded']:,} newly excluded, {r.summary['re-included']:,} re-included; patched {r.patched}")
    print(f"optout apply (revoke those {len(revokes):,}): {revoke_s:.2f}s = {100 * revoke_s / full:.2f}% "
          f"[{', '.join(f'{k} {v:.2f}s' for k, v in r2.seconds.items())}]; "
          f"{r2.summary['excluded']:,} newly excluded, {r2.summary['re-included']:,} re-included")
    ok = apply_s <= 0.05 * full and apply_s <= 30
    print(f"target (<= 5% of the full run and <= 30 s): {'met' if ok else 'NOT met'}")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} (shared with other jobs)")


if __name__ == "__main__":
    main()
