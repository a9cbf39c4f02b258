"""A real PostgreSQL server for tests: Debian's `postgresql` package, on 127.0.0.1 only, in a temporary directory.

Works without pytest:

    with PgServer() as pg:
        store = Store(pg.dsn)            # postgresql://curate:<random password>@127.0.0.1:<port>/portal

The server runs as the `postgres` account when the tests run as root (PostgreSQL refuses to run as root), with
its data directory, socket and log under its own temporary directory, password (SCRAM) authentication on
127.0.0.1 and no Unix socket for others. It is stopped (fast shutdown, then SIGKILL) and its directory removed
whatever happens: at the end of the `with` block, the fixture, or the interpreter (atexit). The fixture `pg`
(session scope) fails, never skips, when PostgreSQL is missing.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

INSTALL_HINT = "apt-get install postgresql  (Debian's package; the tests start their own server from its binaries)"


class PostgresMissing(RuntimeError):
    pass


def bindir() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian: /usr/lib/postgresql/<major>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise PostgresMissing(f"PostgreSQL is not installed: {INSTALL_HINT}")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self, root: str | os.PathLike | None = None, fsync: bool = True, ready_timeout: float = 30):
        self._own_root = root is None
        self.root = Path(root or tempfile.mkdtemp(prefix="curate-pg-"))
        self.fsync, self.ready_timeout = fsync, ready_timeout
        self.password = secrets.token_hex(16)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.user = "postgres" if os.geteuid() == 0 else None
        atexit.register(self.stop)

    @property
    def dsn(self) -> str:
        return f"postgresql://curate:{self.password}@127.0.0.1:{self.port}/portal"

    def _run_as(self) -> dict:
        if self.user is None:
            return {}
        pw = pwd.getpwnam(self.user)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def start(self) -> PgServer:
        bins = bindir()
        data, sock = self.root / "data", self.root / "sock"
        sock.mkdir(parents=True, exist_ok=True)
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.user:
            pw = pwd.getpwnam(self.user)
            for p in (self.root, sock, pwfile):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(pwfile, 0o600)
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": str(self.root), "TZ": "UTC"}
        subprocess.run([str(bins / "initdb"), "-D", str(data), "-U", "curate", f"--pwfile={pwfile}",
                        "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--locale=C",
                        "--no-sync"], check=True, capture_output=True, env=env, cwd=self.root, **self._run_as())
        pwfile.unlink()
        self._log = open(self.root / "postgres.log", "ab")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(bins / "postgres"), "-D", str(data), "-p", str(self.port), "-c", "listen_addresses=127.0.0.1",
             "-c", f"unix_socket_directories={sock}", "-c", "unix_socket_permissions=0700",
             "-c", f"fsync={'on' if self.fsync else 'off'}", "-c", "max_connections=60",
             "-c", "shared_buffers=64MB", "-c", "logging_collector=off"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=self.root,
            start_new_session=True, **self._run_as())
        try:
            self._wait_ready(started)
        except BaseException:
            self.stop()
            raise
        self.ready_seconds = time.monotonic() - started
        return self

    def _wait_ready(self, started: float) -> None:
        import psycopg

        admin = f"postgresql://curate:{self.password}@127.0.0.1:{self.port}/postgres"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=2) as con:
                    con.execute("CREATE DATABASE portal")
                return
            except psycopg.OperationalError:
                pass
            if time.monotonic() - started > self.ready_timeout:
                raise RuntimeError(f"postgres not ready after {self.ready_timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join((self.root / "postgres.log").read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self, timeout: float = 10.0) -> None:
        """Fast shutdown (SIGINT: disconnect clients, checkpoint), SIGKILL to the group after `timeout` s."""
        proc, self.proc = self.proc, None
        if proc is not None:
            for sig in (signal.SIGINT, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout)
                    break
                except subprocess.TimeoutExpired:
                    continue
            proc.wait()
            self._log.close()
        if self._own_root and self.root.exists():
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


try:
    import pytest
except ImportError:  # used as a plain helper (the load benchmark)
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def pg():
        """A running PostgreSQL on 127.0.0.1 with database `portal`; stopped at the end of the session."""
        server = PgServer(fsync=False)  # the tests check behaviour, not durability: no fsync (~2x faster setup)
        server.start()
        try:
            yield server
        finally:
            server.stop()
