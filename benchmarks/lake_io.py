"""Data-lake I/O: `curate ingest` of the same shards from local disk and from an S3 server on loopback.

Builds a corpus from real text on this machine (man pages, /usr/share/doc changelogs, copyright files and
READMEs, /usr/share/common-licenses, Python's standard library; never data/samples), shaped like a real
corpus: most documents are short (a changelog entry, a man page section, a function), some are long
(whole files), and some are edited or exact copies of earlier ones. The same amount of text goes into each
format (JSONL, JSONL.gz, JSONL.zst, Parquet, CSV), several shards each. Deterministic for a given seed.

The shards are uploaded to a SeaweedFS server on 127.0.0.1 (tests/s3server.py), then each ingest runs in
a fresh process (`.venv/bin/curate ingest WS PATH...`, the server's keys and endpoint in its environment;
wall clock, CPU and peak RSS from wait4 in a small launcher process): per format and place, then the whole
local directory and the whole s3:// prefix, whose two workspaces must hold exactly the documents generated
(ids and SHA-256, asserted); --repeat rounds, the median reported. A process ingesting one short document
gives the fixed cost of a run.

When s3 takes more than --target times local for a format (or with --breakdown), more processes ingest the
first shard of each format with timers around curate's phases (stat/HEAD, the SHA-256 pass, DuckDB's read
straight into documents, and when a shard needs it the Python row reader into the stage table and the stage
into documents) and count the bytes fetched through the lake layer: from local disk, from s3, from local disk
through the Python row reader (its own cost, without the network), and from s3 copied to a local file first.

    .venv/bin/python benchmarks/lake_io.py                 # ~250 MB of text, 2 shards per format
    .venv/bin/python benchmarks/lake_io.py --mb 50 --breakdown
"""

from __future__ import annotations

import argparse
import csv
import glob
import gzip
import hashlib
import io
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CURATE = str(next((p for p in (ROOT / ".venv/bin/curate", Path(sys.executable).parent / "curate") if p.exists()),
                   "curate"))
sys.path.insert(0, str(ROOT / "tests"))
from s3server import S3Server  # noqa: E402

FORMATS = {"jsonl": ".jsonl", "jsonl.gz": ".jsonl.gz", "jsonl.zst": ".jsonl.zst", "parquet": ".parquet", "csv": ".csv"}
BUCKET = "lake"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # keep \t and \n; \r and other controls go (CSV, JSON alike)
ROFF_MACRO = re.compile(r"^[.'](\w+)\s*(.*)$")
ROFF_ESCAPE = re.compile(r"\\f(\[[^]]*\]|\(..|.)|\\[(*](\(..|\[[^]]*\]|.)|\\[-&e|^/,%\"]")
ROFF_TEXT = {"SH", "SS", "TP", "IP", "B", "I", "BR", "IR", "RB", "RI", "BI", "IB", "Nm", "Nd", "Sh", "Ss", "Fl", "Ar"}
MAX_SOURCE = 1 << 20  # at most this much of one source file is used
GCLOUD_CAP = 1500
STAMPS = ["Last updated: 2023-11-02", "This page was last edited on 4 March 2024.", "Copyright (c) 2024",
          "Posted by admin", "Share this article", "-- Mirrored from the original archive --"]


# -- corpus ----------------------------------------------------------------------------------------
def roff_to_text(src: str) -> str:
    """A man page's prose: text lines and the text of font/heading macros, escapes dropped."""
    out = []
    for line in src.splitlines():
        if line.startswith((".\\\"", "'\\\"")):
            continue
        m = ROFF_MACRO.match(line)
        if m:
            if m.group(1) not in ROFF_TEXT:
                if m.group(1) in ("PP", "LP", "P", "Pp", "sp") and out and out[-1]:
                    out.append("")
                continue
            line = m.group(2).replace('"', "")
        out.append(ROFF_ESCAPE.sub(lambda e: "-" if e.group() == "\\-" else "", line).rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def source_files() -> dict[str, list[tuple[str, str]]]:
    """(path, url) of every text source, by kind, sorted (shuffled later with the seed)."""
    stdlib = sysconfig.get_paths()["stdlib"]
    docs = sorted(set(glob.glob("/usr/share/doc/*/changelog*")) | set(glob.glob("/usr/share/doc/*/NEWS*")))
    man = sorted(glob.glob("/usr/share/man/man*/*.gz"))
    gcloud = [p for p in man if Path(p).name.startswith("gcloud")]  # thousands of templated pages: a sample
    man = [p for p in man if not Path(p).name.startswith("gcloud")] + gcloud[:: max(1, len(gcloud) // GCLOUD_CAP)]
    kinds = {
        "man": [(p, "https://manpages.debian.org/{}/{}".format(*Path(p).parts[-2:])) for p in man],
        "changelog": [(p, f"https://sources.debian.org/src/{Path(p).parts[-2]}/{Path(p).name}") for p in docs],
        "legal": [(p, f"https://sources.debian.org/copyright/{Path(p).parts[-2]}") for p in
                  sorted(glob.glob("/usr/share/doc/*/copyright"))]
                 + [(p, f"https://spdx.org/licenses/{Path(p).name}") for p in
                    sorted(glob.glob("/usr/share/common-licenses/*"))],
        "python": [(p, f"https://github.com/python/cpython/blob/3.11/Lib/{os.path.relpath(p, stdlib)}") for p in
                   sorted(p for p in glob.glob(f"{stdlib}/**/*", recursive=True)
                          if p.endswith((".py", ".txt", ".rst")) and "site-packages" not in p)],
        "readme": [(p, f"https://sources.debian.org/src/{Path(p).parts[4]}/{Path(p).name}") for p in
                   sorted(glob.glob("/usr/share/doc/**/README*", recursive=True)
                          + glob.glob("/usr/share/doc/**/*.md*", recursive=True)
                          + glob.glob("/usr/share/doc/**/*.txt*", recursive=True))],
    }
    return {k: [(p, u) for p, u in v if os.path.isfile(p)] for k, v in kinds.items() if v}


# Shares of the documents by kind (most are short pieces: entries, sections, functions).
KIND_WEIGHTS = {"man": 0.3, "changelog": 0.3, "python": 0.2, "legal": 0.12, "readme": 0.08}


def read_text(kind: str, path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_SOURCE * 4)
        if path.endswith(".gz"):
            raw = gzip.GzipFile(fileobj=io.BytesIO(raw)).read(MAX_SOURCE * 4)
        text = raw.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile):
        return None
    if kind == "man":
        text = roff_to_text(text)
    text = CONTROL.sub("", text.replace("\r\n", "\n"))[:MAX_SOURCE]
    return text if len(text.strip()) > 20 else None


class Sources:
    """Consecutive pieces of each kind's files: each file is read once, cut into documents, then the next."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.files = source_files()
        for files in self.files.values():
            rng.shuffle(files)
        self.pos = dict.fromkeys(self.files, 0)
        self.current: dict[str, tuple[str, str, int]] = {}  # kind -> (text, url, cursor)
        self.kinds = [k for k in KIND_WEIGHTS if k in self.files]
        self.weights = [KIND_WEIGHTS[k] for k in self.kinds]

    def _next_file(self, kind: str) -> tuple[str, str]:
        files = self.files[kind]
        for _ in range(len(files)):
            path, url = files[self.pos[kind] % len(files)]
            self.pos[kind] += 1
            text = read_text(kind, path)
            if text:
                return text, url
        raise SystemExit(f"no readable {kind} text on this machine")

    def piece(self, size: int, whole: bool) -> tuple[str, str, str]:
        """(kind, url, text) of about `size` characters (the rest of a file when `whole`), cut at a line end."""
        kind = self.rng.choices(self.kinds, self.weights)[0]
        text, url, cur = self.current.get(kind) or (*self._next_file(kind), 0)
        if cur >= len(text) - 20:
            text, url, cur = *self._next_file(kind), 0
        end = len(text) if whole else text.find("\n", cur + size)
        end = len(text) if end < 0 or len(text) - end < 40 else end
        self.current[kind] = (text, url, end + 1)
        return kind, url, text[cur:end].strip("\n")


def edit(rng: random.Random, text: str, donor: str) -> str:
    """A near copy: a few words replaced (taken from another document), dropped or swapped, a line cut or a
    boilerplate line added, whitespace changed; one to three of these."""
    words = text.split(" ")
    donor_words = donor.split() or ["the"]
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        n = max(1, len(words) // rng.choice([20, 40, 80]))
        if op < 0.3:
            for _ in range(n):
                words[rng.randrange(len(words))] = rng.choice(donor_words)
        elif op < 0.5 and len(words) > n + 5:
            for _ in range(n):
                words.pop(rng.randrange(len(words)))
        elif op < 0.65:
            for _ in range(n):
                i, j = rng.randrange(len(words)), rng.randrange(len(words))
                words[i], words[j] = words[j], words[i]
        elif op < 0.85:
            stamp = rng.choice(STAMPS)
            words = (f"{stamp}\n\n" + " ".join(words)).split(" ") if rng.random() < 0.5 else words + [f"\n\n{stamp}"]
        else:
            lines = " ".join(words).split("\n")
            if len(lines) > 3:
                lines.pop(rng.randrange(len(lines)))
            words = "\n".join(line.rstrip() for line in lines).split(" ")
    return " ".join(words)


@dataclass
class Corpus:
    files: dict[str, list[Path]] = field(default_factory=dict)  # format -> shard files
    docs: dict[str, int] = field(default_factory=dict)  # format -> documents
    text_bytes: dict[str, int] = field(default_factory=dict)  # format -> UTF-8 bytes of the texts
    expected: set[tuple[str, str]] = field(default_factory=set)  # (doc_id, sha256 of the text)
    sizes: list[int] = field(default_factory=list)
    copies: int = 0
    exact: int = 0

    def file_bytes(self, fmt: str) -> int:
        return sum(p.stat().st_size for p in self.files[fmt])


def documents(rng: random.Random, sources: Sources, prefix: str, text_bytes: int,
              recent: list[str], corpus: Corpus) -> Iterator[dict]:
    """Documents until `text_bytes` of text: 15% edited copies and 4% exact copies of a recent document, 2.5%
    long (the rest of a source file, up to 1 MiB), the others lognormal around 450 bytes."""
    written = n = 0
    while written < text_bytes:
        r = rng.random()
        if recent and r < 0.19:
            original = recent[rng.randrange(len(recent))]
            if r < 0.04:
                text, corpus.exact = original, corpus.exact + 1
            else:
                text, corpus.copies = edit(rng, original, recent[rng.randrange(len(recent))]), corpus.copies + 1
            kind, url = "copy", f"https://mirror{rng.randrange(50)}.example.net/a/{rng.randrange(10**6)}"
        else:
            whole = r > 0.975
            size = int(min(64_000, rng.lognormvariate(6.1, 1.0)))
            kind, url, text = sources.piece(max(40, size), whole)
            if not text.strip():
                continue
        doc_id = f"{prefix}-{n:07d}"
        data = text.encode("utf-8")
        corpus.expected.add((doc_id, hashlib.sha256(data).hexdigest()))
        corpus.sizes.append(len(data))
        written += len(data)
        n += 1
        if len(recent) < 5000:
            recent.append(text)
        else:
            recent[rng.randrange(len(recent))] = text
        doc = {"id": doc_id, "text": text}
        if rng.random() < 0.9:
            doc["url"] = url
        doc["meta"] = {"source": kind, "lang": "en", "crawl": f"2024-{rng.randint(1, 12):02d}"}
        yield doc


def write_shard(path: Path, fmt: str, docs: list[dict]) -> None:
    if fmt.startswith("jsonl"):
        data = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs).encode("utf-8")
        if fmt == "jsonl.gz":
            data = gzip.compress(data, compresslevel=6, mtime=0)
        elif fmt == "jsonl.zst":
            import zstandard

            data = zstandard.ZstdCompressor(level=3).compress(data)
        path.write_bytes(data)
    elif fmt == "csv":
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "text", "url", "meta"])
            for d in docs:
                w.writerow([d["id"], d["text"], d.get("url", ""), json.dumps(d["meta"])])
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({"id": [d["id"] for d in docs], "text": [d["text"] for d in docs],
                          "url": [d.get("url") for d in docs], "meta": [json.dumps(d["meta"]) for d in docs]})
        pq.write_table(table, path, row_group_size=10_000, compression="zstd")


def build_corpus(out: Path, mb: float, shards_per_format: int, seed: int) -> Corpus:
    rng = random.Random(seed)
    sources = Sources(rng)
    corpus, recent = Corpus(), []
    per_shard = int(mb * 1e6 / len(FORMATS) / shards_per_format)
    out.mkdir(parents=True, exist_ok=True)
    for s in range(shards_per_format):
        for fmt, suffix in FORMATS.items():  # formats interleaved, so each gets the same mix of sources
            prefix = f"{fmt.replace('.', '')}{s}"
            docs = list(documents(rng, sources, prefix, per_shard, recent, corpus))
            path = out / f"part-{s:03d}{suffix}"
            write_shard(path, fmt, docs)
            corpus.files.setdefault(fmt, []).append(path)
            corpus.docs[fmt] = corpus.docs.get(fmt, 0) + len(docs)
            corpus.text_bytes[fmt] = corpus.text_bytes.get(fmt, 0) + sum(len(d["text"].encode()) for d in docs)
    return corpus


# -- measuring -------------------------------------------------------------------------------------
@dataclass
class Run:
    seconds: float
    rss_mb: float
    cpu: float  # user + system seconds of the process
    server_cpu: float  # of the S3 server meanwhile (it shares the machine's cores)
    shard_seconds: dict[str, float]  # shard name -> seconds since the previous shard's event (or the start)
    first: str | None = None  # the shard whose time includes the process's start-up


def group_cpu(pgid: int | None) -> float:
    """User + system seconds of every process in process group `pgid` (the S3 server runs in its own)."""
    total = 0
    for stat in glob.glob("/proc/[0-9]*/stat") if pgid else []:
        try:
            fields = open(stat).read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # pgrp; utime and stime are fields 14 and 15 of the whole line
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


# Runs a command and writes its wall clock, exit code and wait4 usage to a file. Linux keeps a process's
# peak RSS across exec, and a child made by fork or vfork starts from its parent's resident set, so a child
# of this (large) script would report at least this script's RSS: measured children are started from here,
# a fresh small interpreter (~10 MB), instead.
LAUNCH = """
import json, os, sys, time
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"seconds": time.perf_counter() - t, "code": os.waitstatus_to_exitcode(status),
               "rss_mb": ru.ru_maxrss / 1024, "cpu": ru.ru_utime + ru.ru_stime}, f)
"""


def spawn(argv: list[str], env: dict[str, str], stdout, stderr) -> dict:
    """Run `argv` through LAUNCH: {seconds, code, rss_mb, cpu} of that process alone."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        subprocess.run([PY, "-c", LAUNCH, result.name, *argv], env=env, stdout=stdout, stderr=stderr, check=True)
        return json.load(result)


def measure(argv: list[str], env: dict[str, str], log: Path, server: int | None = None) -> Run:
    """Run one command in a fresh process: wall clock, its peak RSS and CPU (wait4: this process only), the
    server's CPU meanwhile, its events."""
    with open(log, "w") as err:
        server0 = group_cpu(server)
        wall0 = time.time()
        r = spawn(argv, env, subprocess.DEVNULL, err)
        server_cpu = group_cpu(server) - server0
    text = log.read_text()
    if r["code"] != 0:
        raise SystemExit(f"{' '.join(argv)} exited {r['code']}:\n{text[-3000:]}")
    shards, last, first = {}, wall0, None
    for line in text.splitlines():
        try:
            e = json.loads(line)
        except ValueError:
            continue
        ts = datetime.fromisoformat(e["ts"].replace("Z", "+00:00")).timestamp()
        if e.get("event") == "shard_ingested":
            name = e["uri"].rsplit("/", 1)[-1]
            shards[name], first = ts - last, first or name
        last = ts
    return Run(r["seconds"], r["rss_mb"], r["cpu"], server_cpu, shards, first)


def ingest(ws: Path, paths: list[str], env: dict[str, str], server: int | None = None) -> Run:
    shutil.rmtree(ws, ignore_errors=True)
    subprocess.run([CURATE, "init", str(ws)], check=True, capture_output=True, env=env)
    return measure([CURATE, "ingest", "--no-progress", str(ws), *paths], env, ws.parent / f"{ws.name}.log", server)


def workspace_docs(ws: Path) -> tuple[set[tuple[str, str]], int, int]:
    """(doc_id, sha256) of every document, quarantined rows, and document count."""
    import duckdb

    con = duckdb.connect(str(ws / "curate.duckdb"), read_only=True)
    try:
        docs = set(con.execute("SELECT doc_id, sha256 FROM documents").fetchall())
        quarantined = con.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        count = con.execute("SELECT count(*) FROM documents").fetchone()[0]
    finally:
        con.close()
    return docs, quarantined, count


# A fresh process that ingests one shard with timers around curate's phases and counts the bytes fetched.
# Modes: "duckdb" (curate as it is), "rows" (DuckDB's readers refused: the row reader, as for a compressed
# remote shard), "copy" (the shard copied to local disk through the lake layer first, then ingested from there).
BREAKDOWN = r"""
import json, os, shutil, sys, tempfile, time
import fsspec.implementations.arrow as fa
from curate import Workspace
from curate.io import ingest as ing, lake

uri, mode = sys.argv[1], sys.argv[2]
phases, fetched, opens = {}, [0], [0]

def timed(name, fn):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            phases[name] = phases.get(name, 0.0) + time.perf_counter() - t
    return wrapper

class Counting:
    def __init__(self, f):
        self._f = f
    def read(self, *a):
        data = self._f.read(*a)
        fetched[0] += len(data)
        return data
    def readinto(self, b):
        n = self._f.readinto(b)
        fetched[0] += n or 0
        return n
    def __getattr__(self, name):
        return getattr(self._f, name)
    def __enter__(self):
        return self
    def __exit__(self, *e):
        self._f.close()

def counted(fn):
    def wrapper(*a, **k):
        opens[0] += 1
        return Counting(fn(*a, **k))
    return wrapper

fa.ArrowFSWrapper._open = counted(fa.ArrowFSWrapper._open)  # DuckDB's reads of remote files
lake.open_input = counted(lake.open_input)                   # the hash pass, the row reader, the copy
ing.file_sha256 = timed("hash", ing.file_sha256)
ing._insert_direct = timed("read", ing._insert_direct)    # DuckDB's reader straight into documents
ing._fill_stage = timed("rows", ing._fill_stage)          # the row reader into the stage table
ing._commit_rows = timed("insert", ing._commit_rows)      # the stage table into documents
lake.stat = timed("stat", lake.stat)
if mode == "rows":
    ing._insert_direct = lambda *a, **k: None
with tempfile.TemporaryDirectory() as d:
    ws = Workspace.init(d + "/ws")
    t = time.perf_counter()
    if mode == "copy":
        target = os.path.join(d, uri.rsplit("/", 1)[-1])
        with lake.open_input(uri) as src, open(target, "wb") as out:
            shutil.copyfileobj(src, out, 8 << 20)
        phases["copy"] = time.perf_counter() - t
        uri = target
    s = ws.ingest([uri])
    total = time.perf_counter() - t
assert s.documents > 0 and s.quarantined == 0, (s.documents, s.quarantined)
print(json.dumps({"total": total, **phases, "fetched": fetched[0], "opens": opens[0]}))
"""


def breakdown(uri: str, env: dict[str, str], mode: str = "duckdb") -> dict:
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        r = spawn([PY, "-c", BREAKDOWN, uri, mode], env, out, err)
        out.seek(0)
        err.seek(0)
        if r["code"] != 0:
            raise SystemExit(f"breakdown of {uri} ({mode}) failed:\n{err.read()[-3000:]}")
        return {**json.loads(out.read().strip().splitlines()[-1]), "rss": r["rss_mb"]}


# -- report ----------------------------------------------------------------------------------------
def table(rows: list[list[str]], header: list[str]) -> str:
    rule = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"
    lines = ["| " + " | ".join(header) + " |", rule]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def median_run(runs: list[Run]) -> Run:
    """The run of median wall clock, with the highest peak RSS of all."""
    run = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
    return Run(run.seconds, max(r.rss_mb for r in runs), run.cpu, run.server_cpu, run.shard_seconds, run.first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=250, help="MB of document text in all (split evenly over formats)")
    ap.add_argument("--shards", type=int, default=2, help="shards per format")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each ingest (the median is reported)")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--target", type=float, default=1.5, help="s3/local time ratio to meet")
    ap.add_argument("--breakdown", action="store_true", help="time curate's phases even when the target is met")
    ap.add_argument("--dir", type=Path, default=None, help="scratch directory (default: a temp dir, removed)")
    args = ap.parse_args()
    scratch = args.dir or Path(tempfile.mkdtemp(prefix="curate-lake-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load = os.getloadavg()
    print(f"# lake_io: {args.mb:g} MB, {args.shards} shards per format, {args.repeat} runs each, seed {args.seed}; "
          f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)
    server = None
    try:
        t = time.perf_counter()
        corpus = build_corpus(scratch / "shards", args.mb, args.shards, args.seed)
        sizes = sorted(corpus.sizes)
        print(f"corpus: {len(sizes):,} documents in {sum(len(v) for v in corpus.files.values())} shards, "
              f"{sum(sizes) / 1e6:.0f} MB of text, {sum(corpus.file_bytes(f) for f in FORMATS) / 1e6:.0f} MB of "
              f"files; document bytes median {statistics.median(sizes):,.0f}, p90 {sizes[len(sizes) * 9 // 10]:,}, "
              f"p99 {sizes[len(sizes) * 99 // 100]:,}, max {sizes[-1]:,}; {corpus.copies:,} edited and "
              f"{corpus.exact:,} exact copies ({time.perf_counter() - t:.0f} s)", flush=True)
        tiny = scratch / "tiny" / "one.jsonl"
        tiny.parent.mkdir(exist_ok=True)
        tiny.write_text(json.dumps({"id": "one", "text": "one short document"}) + "\n")

        server = S3Server(scratch / "s3", bucket=BUCKET).start()
        env = {**os.environ, **server.env(), "CURATE_LOG": "json"}
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
            env.pop(name, None)
        t = time.perf_counter()
        fs, prefix = server.filesystem(), f"bench-{args.seed}"
        for p in [tiny, *(p for paths in corpus.files.values() for p in paths)]:
            # compression=None: pyarrow's default ("detect") would gzip a .gz name once more
            key = f"{BUCKET}/{'tiny' if p == tiny else prefix}/{p.name}"
            with open(p, "rb") as src, fs.open_output_stream(key, compression=None) as out:
                shutil.copyfileobj(src, out, 8 << 20)
        print(f"uploaded to {server.endpoint}/{BUCKET}/{prefix}/ ({time.perf_counter() - t:.1f} s)", flush=True)
        s3_uri = lambda p: f"s3://{BUCKET}/{prefix}/{p.name}"  # noqa: E731

        # A process that ingests one short document: the fixed cost of each run (interpreter, imports, S3 client).
        fixed = {where: median_run([ingest(scratch / f"ws-tiny-{where}", [uri], env, server.pid)
                                    for _ in range(args.repeat)])
                 for where, uri in (("local", str(tiny)), ("s3", f"s3://{BUCKET}/tiny/one.jsonl"))}
        print(f"fixed cost of a process: local {fixed['local'].seconds:.2f} s, s3 {fixed['s3'].seconds:.2f} s")

        # per format and place, then the whole directory and the whole prefix; `repeat` rounds
        runs: dict[str, dict[str, list[Run]]] = {fmt: {"local": [], "s3": []} for fmt in [*FORMATS, "all"]}
        for rnd in range(args.repeat):
            for i, (fmt, paths) in enumerate(corpus.files.items()):
                for where in ["local", "s3"] if (i + rnd) % 2 == 0 else ["s3", "local"]:
                    ws = scratch / f"ws-{fmt}-{where}"
                    uris = [str(p) for p in paths] if where == "local" else [s3_uri(p) for p in paths]
                    runs[fmt][where].append(ingest(ws, uris, env, server.pid))
                    _, quarantined, count = workspace_docs(ws)
                    assert count == corpus.docs[fmt] and quarantined == 0, (fmt, where, count, quarantined)
                    shutil.rmtree(ws)
            for where in ["local", "s3"] if rnd % 2 == 0 else ["s3", "local"]:
                path = str(scratch / "shards") if where == "local" else f"s3://{BUCKET}/{prefix}"
                runs["all"][where].append(ingest(scratch / f"ws-all-{where}", [path], env, server.pid))
            local_docs, local_q, local_n = workspace_docs(scratch / "ws-all-local")
            s3_docs, s3_q, s3_n = workspace_docs(scratch / "ws-all-s3")
            assert local_n == s3_n == len(corpus.expected), (local_n, s3_n, len(corpus.expected))
            assert local_q == s3_q == 0, (local_q, s3_q)
            assert local_docs == s3_docs == corpus.expected, "the two workspaces differ from each other or the corpus"
            print(f"round {rnd + 1}: " + ", ".join(f"{fmt} {runs[fmt]['local'][-1].seconds:.1f}/"
                                                   f"{runs[fmt]['s3'][-1].seconds:.1f} s" for fmt in runs), flush=True)
        print(f"both workspaces hold the same {local_n:,} documents (doc_id and SHA-256 of each, as generated)")
        results = {fmt: {where: median_run(r) for where, r in v.items()} for fmt, v in runs.items()}

        rows, slow = [], []
        for fmt in [*FORMATS, "all"]:
            paths = [p for f in FORMATS for p in corpus.files[f]] if fmt == "all" else corpus.files[fmt]
            text = sum(corpus.text_bytes.values()) if fmt == "all" else corpus.text_bytes[fmt]
            loc, s3 = results[fmt]["local"], results[fmt]["s3"]
            ratio = s3.seconds / loc.seconds
            # taken out only where the fixed cost is under half the run (else the difference is mostly noise)
            net = None if fixed["local"].seconds > loc.seconds / 2 else \
                (s3.seconds - fixed["s3"].seconds) / (loc.seconds - fixed["local"].seconds)
            if fmt != "all" and ratio > args.target:
                slow.append(fmt)
            mark = lambda r: f"**{r:.2f}**" if r > args.target else f"{r:.2f}"  # noqa: E731
            docs = len(corpus.expected) if fmt == "all" else corpus.docs[fmt]
            rows.append(["**all** (directory / prefix)" if fmt == "all" else fmt, str(len(paths)), f"{docs:,}",
                         f"{sum(p.stat().st_size for p in paths) / 1e6:.0f}", f"{text / 1e6:.0f}",
                         f"{loc.seconds:.2f} ({text / 1e6 / loc.seconds:.1f})",
                         f"{s3.seconds:.2f} ({text / 1e6 / s3.seconds:.1f})", mark(ratio),
                         "–" if net is None else mark(net),
                         f"{loc.cpu:.1f} / {s3.cpu:.1f} + {s3.server_cpu:.1f}",
                         f"{loc.rss_mb:,.0f} / {s3.rss_mb:,.0f}"])
        print()
        print(table(rows, ["format", "shards", "documents", "file MB", "text MB", "local s (MB/s)", "s3 s (MB/s)",
                           "s3/local", "s3/local, fixed cost out", "CPU s: local / s3 + server",
                           "peak RSS MB: local / s3"]))
        print(f"\nSeconds: wall clock of a fresh `curate ingest` process, median of {args.repeat}; MB/s: MB of "
              f"document text (UTF-8) per second of it; CPU: the process's user + system seconds, and the S3 "
              f"server's during the s3 run; peak RSS: the process's (wait4), highest of the {args.repeat}. "
              f"Fixed cost out: both times less that of a process ingesting one short document (local "
              f"{fixed['local'].seconds:.2f} s, s3 {fixed['s3'].seconds:.2f} s; – where that is over half the run).")
        print("\nPer shard in the median total runs (seconds since the previous shard_ingested event):")
        loc, s3 = results["all"]["local"], results["all"]["s3"]
        for fmt in FORMATS:
            for p in corpus.files[fmt]:
                a, b = loc.shard_seconds.get(p.name), s3.shard_seconds.get(p.name)
                if a is not None and b is not None:
                    note = "  (first shard: includes start-up and listing)" if p.name in (loc.first, s3.first) else ""
                    print(f"  {p.name:<20} local {a:5.2f} s   s3 {b:5.2f} s   {b / a:4.2f}x{note}")

        if slow or args.breakdown:
            print(f"\nWhere the time goes (first shard of each format, ingested in a process of its own; s3/local "
                  f"above {args.target:g} for: {', '.join(slow) or 'none'}):\n")
            brows = []
            for fmt in FORMATS:
                p = corpus.files[fmt][0]
                cases = [("local", str(p), "duckdb"), ("s3", s3_uri(p), "duckdb")]
                if fmt.endswith((".gz", ".zst")):
                    cases.append(("local, row reader", str(p), "rows"))
                cases.append(("s3, copied to local disk first", s3_uri(p), "copy"))
                for where, uri, mode in cases:
                    b = breakdown(uri, env, mode)
                    phases = ("copy", "stat", "hash", "read", "rows", "insert")
                    other = b["total"] - sum(b.get(k, 0) for k in phases)
                    brows.append([p.name, where, f"{b['total']:.2f}", *(f"{b.get(k, 0):.2f}" for k in phases),
                                  f"{other:.2f}", f"{b['fetched'] / p.stat().st_size:.1f}x ({b['opens']})",
                                  f"{b['rss']:,.0f}"])
            print(table(brows, ["shard", "read from", "ingest s", "copy s", "stat/HEAD s", "SHA-256 pass s",
                                "DuckDB read into documents s", "row reader s", "stage into documents s",
                                "other s", "bytes via lake layer (opens)", "peak RSS MB"]))
            print("\nbytes via lake layer: what the SHA-256 pass, the row reader, the copy and DuckDB's reads of "
                  "s3:// files fetched, over the file's size (DuckDB's reads of local files are not counted).")
    finally:
        if server is not None:
            server.stop()
        if args.dir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"\n{time.perf_counter() - started:.0f} s in all; load average now "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
