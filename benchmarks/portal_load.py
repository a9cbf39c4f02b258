"""Load test of the opt-out portal on loopback: submissions and lookups from concurrent clients, SQLite and PostgreSQL.

For each backend: a fresh store, a release of a synthetic workspace published into it, the portal served by
`curate portal serve` in its own process (one uvicorn worker, rate limits off, mail to a directory), then
N submissions and M lookups (URL 60%, domain 30%, text 10%) from C concurrent keep-alive clients (asyncio, one
process). Prints requests/s and p50/p99 latency per phase, and checks that every accepted submission is in the
store exactly once (and nothing else is). PostgreSQL is a real server on 127.0.0.1 (tests/pgserver.py).

    .venv/bin/python benchmarks/portal_load.py [--submissions 10000] [--lookups 100000] [--clients 32]
        [--backends sqlite postgres] [--docs 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

WORDS = ("river stone light morning paper garden window silver letter harbour quiet winter orange field "
         "mirror lantern evening thread valley copper").split()


def corpus(path: Path, docs: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(docs):
        text = " ".join(rng.choice(WORDS) + str(rng.randrange(50)) for _ in range(rng.randrange(60, 200)))
        rows.append({"id": f"d{i}", "text": text, "url": f"https://site{i % 500}.example.com/a/{i}",
                     "meta": {"author": f"Author {i % 97}"}})
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return rows


def build_workspace(tmp: Path, docs: int) -> tuple[Path, list[dict]]:
    from curate import Workspace
    from curate.stages import optout

    rows = corpus(tmp / "docs.jsonl", docs)
    ws = Workspace.init(tmp / "ws")
    ws.ingest([str(tmp / "docs.jsonl")])
    for h in range(0, 500, 25):  # some exclusions, so lookups see both actions
        optout.add(ws, "domain", f"site{h}.example.com", "bench", verified=True)
    ws.run(workers=1, stages=["optout"])
    return tmp / "ws", rows


class Client:
    """One keep-alive HTTP/1.1 connection (the server is ours: Content-Length responses only)."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            k, _, v = line.decode("latin-1").partition(":")
            if k.lower() == "content-length":
                length = int(v)
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def phase(port: int, clients: int, jobs: list[tuple[str, str, bytes | None]]) -> tuple[list[float], list]:
    queue = list(reversed(jobs))
    latencies: list[float] = []
    results: list[tuple[int, bytes]] = []

    async def worker() -> None:
        c = Client("127.0.0.1", port)
        try:
            while queue:
                method, path, body = queue.pop()
                t = time.perf_counter()
                status, data = await c.request(method, path, body)
                latencies.append(time.perf_counter() - t)
                results.append((status, data))
        finally:
            c.close()

    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, results


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000


def serve(dsn: str, port: int, mail: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "portal", "serve", "--store", dsn, "--port",
                             str(port), "--write-rate", "0", "--read-rate", "0", "--mail", f"dir:{mail}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    import urllib.request

    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"portal did not start: {proc.stderr.read().decode()[-2000:]}") from None
            time.sleep(0.1)


def run_backend(name: str, dsn: str, ws: Path, rows: list[dict], args: argparse.Namespace, tmp: Path) -> dict:
    from pgserver import free_port

    from curate import Workspace
    from curate.portal import lookup
    from curate.portal.store import Store

    store = Store(dsn)
    t = time.perf_counter()
    pub = lookup.publish(Workspace(ws), store)
    publish_s = time.perf_counter() - t
    port = free_port()
    proc = serve(dsn, port, tmp / f"mail-{name}")
    rng = random.Random(11)
    try:
        subs = []
        for i in range(args.submissions):
            r = rng.random()
            if r < 0.5:
                body = {"kind": "domain", "value": f"s{i}.bench.example.org"}
            elif r < 0.8:
                body = {"kind": "url", "value": f"https://site{i % 500}.example.com/a/{i}",
                        "contact": f"c{i}@example.org"}
            else:
                body = {"kind": "author", "value": f"Writer {i}", "contact": f"w{i}@example.org",
                        "prefs": "train-ai=n, search=y"}
            subs.append(("POST", "/api/v1/requests", json.dumps(body).encode()))
        looks = []
        for _ in range(args.lookups):
            r, d = rng.random(), rows[rng.randrange(len(rows))]
            if r < 0.6:
                looks.append(("GET", f"/api/v1/lookup?url={d['url']}", None))
            elif r < 0.9:
                looks.append(("GET", f"/api/v1/lookup?domain=site{rng.randrange(600)}.example.com", None))
            else:
                looks.append(("POST", "/api/v1/lookup", json.dumps({"text": d["text"]}).encode()))
        out = {"backend": name, "publish_s": round(publish_s, 1), "documents": pub["documents"]}
        for label, jobs in (("submit", subs), ("lookup", looks)):
            t = time.perf_counter()
            lat, res = asyncio.run(phase(port, args.clients, jobs))
            wall = time.perf_counter() - t
            codes: dict[int, int] = {}
            for status, _ in res:
                codes[status] = codes.get(status, 0) + 1
            out[label] = {"requests": len(res), "per_s": round(len(res) / wall, 1), "p50_ms": round(pct(lat, 50), 1),
                          "p99_ms": round(pct(lat, 99), 1), "status": codes}
            if label == "submit":
                accepted = [json.loads(d)["id"] for s, d in res if s == 201]
                with store.tx() as cur:
                    stored = cur.all("SELECT id, count(*) FROM requests GROUP BY id")
                counts = dict(stored)
                out["submit"]["accepted"] = len(accepted)
                out["submit"]["in_store_once"] = (len(accepted) == len(set(accepted)) == len(counts)
                                                  and set(counts) == set(accepted)
                                                  and all(c == 1 for c in counts.values()))
            if label == "lookup":
                found = sum(1 for s, d in res if s == 200 and json.loads(d)["found"])
                out["lookup"]["found"] = found
        return out
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--submissions", type=int, default=10_000)
    ap.add_argument("--lookups", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--backends", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="curate-portal-load-") as d:
        tmp = Path(d)
        t = time.perf_counter()
        ws, rows = build_workspace(tmp, args.docs)
        print(f"workspace: {args.docs} documents in {time.perf_counter() - t:.1f} s; load average "
              f"{os.getloadavg()[0]:.2f}", flush=True)
        ok = True
        for backend in args.backends:
            if backend == "sqlite":
                r = run_backend("sqlite", str(tmp / "portal.sqlite"), ws, rows, args, tmp)
            else:
                from pgserver import PgServer

                with PgServer() as pg:
                    r = run_backend("postgres", pg.dsn, ws, rows, args, tmp)
            print(json.dumps(r), flush=True)
            for label in ("submit", "lookup"):
                x = r[label]
                print(f"{backend:9s} {label:7s} {x['requests']:7d} requests  {x['per_s']:8.1f}/s  "
                      f"p50 {x['p50_ms']:7.1f} ms  p99 {x['p99_ms']:7.1f} ms  status {x['status']}", flush=True)
            ok &= r["submit"]["in_store_once"]
            print(f"{backend:9s} every accepted submission in the store exactly once: {r['submit']['in_store_once']}"
                  f" ({r['submit']['accepted']} accepted); load average {os.getloadavg()[0]:.2f}", flush=True)
        sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
