"""A real two-node Ray cluster for tests: a head and a second node joining it, on 127.0.0.1 only.

Works without pytest:

    with RayCluster(some_dir, nodes=2) as cluster:
        os.environ.update(cluster.env())      # what a driver needs (token auth, loopback)
        ... curate run WS --engine ray --ray-address cluster.address ...

Every process is started from Ray's own CLI (`ray start --head`, `ray start --address`) with `--block`, in a
session of its own; stopping kills every process of those sessions by PID, SIGTERM then SIGKILL. Never
`ray stop`: it kills every Ray process on the machine by name, other people's included.

The recipe (DESIGN.md, "Known facts and traps", measured with Ray 2.60 on this machine):
- Ray rewrites 127.0.0.1 to the interface address unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (the head and
  every driver set it; curate's Ray executor sets it itself for a loopback address);
- that variable makes a joining `ray start --address` refuse, so the second node runs Ray's CLI from a small
  wrapper that makes `resolve_ip_for_localhost` keep the host it is given;
- joining nodes and drivers enable token auth only when told: RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH (a
  file of our own, mode 600) in every process;
- every port given (GCS outside the default worker range 10002-19999), a temp dir per node, a small object
  store, dashboard and usage stats off.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
READY = b"Ray runtime started"
# Ray's CLI, with 127.0.0.1 kept as given (the second node; see the module docstring).
JOIN_WRAPPER = ("import ray._private.services as s; s.resolve_ip_for_localhost = lambda host: host; "
                "import ray.scripts.scripts as c; c.main()")
HEAD_WRAPPER = "import ray.scripts.scripts as c; c.main()"
NODE_PORTS = ("node_manager", "object_manager", "runtime_env_agent", "metrics", "agent_listen", "agent_grpc")
WORKER_PORTS = 12  # per node: worker processes (actors, tasks) each listen on one


def free_port_run(count: int, low: int = 20000, high: int = 30000) -> int:
    """First port of `count` consecutive ports free on 127.0.0.1, above Ray's default worker range."""
    rng = secrets.SystemRandom()
    for _ in range(200):
        base = rng.randrange(low, high - count)
        held = []
        try:
            for p in range(base, base + count):
                s = socket.socket()
                held.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError(f"no {count} consecutive free ports in {low}-{high}")


def free_ports(count: int) -> list[int]:
    held, ports = [], []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in held:
            s.close()
    return ports


def session_pids(sid: int) -> list[int]:
    """PIDs of every process in session `sid` (all that one `ray start --block` started, unless one left it)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # after the command: state, ppid, pgrp, session
            out.append(int(entry))
    return out


def descendants(pid: int) -> list[int]:
    """PIDs of every process below `pid` (by parent), for processes that started a session of their own."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def listening(pids: list[int]) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket these processes listen on (ss -ltnp, which names the PIDs)."""
    done = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True)
    wanted = {f"pid={p}," for p in pids}
    found = []
    for line in done.stdout.splitlines():
        if any(w in line for w in wanted):
            local = line.split()[3]
            host, _, port = local.rpartition(":")
            found.append((host.strip("[]"), int(port)))
    return sorted(set(found))


class Node:
    def __init__(self, cluster: RayCluster, index: int):
        self.cluster = cluster
        self.index = index
        self.dir = Path(tempfile.mkdtemp(prefix=f"rn{index}-", dir="/tmp"))  # unix socket paths must stay short
        self.ports = dict(zip(NODE_PORTS, free_ports(len(NODE_PORTS)), strict=True))
        self.worker_base = free_port_run(WORKER_PORTS)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "start.log"

    def command(self) -> list[str]:
        c = self.cluster
        head = self.index == 0
        args = [sys.executable, "-c", HEAD_WRAPPER if head else JOIN_WRAPPER, "start", "--block",
                "--node-ip-address=127.0.0.1", f"--temp-dir={self.dir / 'ray'}",
                f"--num-cpus={c.cpus}", f"--object-store-memory={c.object_store_memory}",
                f"--resources={{\"curate_node_{self.index}\": 1}}",
                f"--node-manager-port={self.ports['node_manager']}",
                f"--object-manager-port={self.ports['object_manager']}",
                f"--runtime-env-agent-port={self.ports['runtime_env_agent']}",
                f"--metrics-export-port={self.ports['metrics']}",
                f"--dashboard-agent-listen-port={self.ports['agent_listen']}",
                f"--dashboard-agent-grpc-port={self.ports['agent_grpc']}",
                f"--min-worker-port={self.worker_base}", f"--max-worker-port={self.worker_base + WORKER_PORTS - 1}",
                "--disable-usage-stats", "--log-style=record", "--log-color=false"]
        if head:
            # No --ray-client-server-port: without ray[client] (grpcio) Ray starts no client server, and refuses
            # the option.
            args += ["--head", f"--port={c.gcs_port}", "--include-dashboard=false",
                     f"--dashboard-port={c.dashboard_port}"]
        else:
            args += [f"--address={c.address}"]
        return args

    def env(self) -> dict[str, str]:
        env = self.cluster.env()
        if self.index:
            env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")  # it makes a joining node refuse: the wrapper instead
        return env

    def start(self) -> None:
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.command(), cwd=self.dir, env=self.env(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()

    def wait_ready(self, timeout: float) -> None:
        started = time.monotonic()
        while READY not in self.log_path.read_bytes():
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"ray node {self.index} exited:\n{self.log_tail()}")
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"ray node {self.index} not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)

    def pids(self) -> list[int]:
        if self.proc is None:
            return []
        return sorted({self.proc.pid, *session_pids(self.proc.pid), *descendants(self.proc.pid)})

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 3.0) -> None:
        """SIGTERM to every process of the node, then SIGKILL to those left after `timeout` s: Ray's teardown
        often outlasts 10 s (measured), and nothing of a test cluster needs it."""
        if self.proc is None:
            return
        pids = self.pids()
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(p) for p in pids):
            self.proc.poll()
            time.sleep(0.1)
        for pid in sorted(set(pids) | set(self.pids())):
            _signal(pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class RayCluster:
    """A head and `nodes - 1` nodes joining it, each with `cpus` CPUs, every address 127.0.0.1."""

    def __init__(self, root: str | os.PathLike, nodes: int = 2, cpus: int = 1,
                 object_store_memory: int = 96 * 2**20, ready_timeout: float = 60.0):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.cpus = cpus
        self.object_store_memory = object_store_memory
        self.ready_timeout = ready_timeout
        self.gcs_port, self.dashboard_port = free_ports(2)
        self.address = f"127.0.0.1:{self.gcs_port}"
        self.token_path = self.root / "auth_token"
        self.token_path.write_text(secrets.token_hex(32))
        self.token_path.chmod(0o600)
        self.home = self.root / "home"
        self.home.mkdir(exist_ok=True)
        self.nodes = [Node(self, i) for i in range(nodes)]
        atexit.register(self.stop)

    def env(self) -> dict[str, str]:
        """The environment of the nodes, and what a driver adds to its own to join (token auth, loopback)."""
        env = dict(os.environ)
        for k in [k for k in env if k.startswith("RAY_")]:
            env.pop(k)
        path = [str(ROOT), str(TESTS)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env.update({
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token_path), "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONPATH": os.pathsep.join(path),  # test-only stages import in the workers too
        })
        return env

    def driver_env(self) -> dict[str, str]:
        """Only the variables a driver needs on top of its own environment."""
        keys = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_USAGE_STATS_ENABLED")
        env = self.env()
        return {k: env[k] for k in keys}

    def pids(self) -> list[int]:
        return sorted({p for n in self.nodes for p in n.pids()})

    def driver_without_token(self) -> subprocess.Popen:
        """A driver that tries to join without the token (its own HOME: no ~/.ray/auth_token either). It prints
        JOINED or REFUSED; Ray retries for ~20 s before refusing (measured), so tests start it early and read
        it late."""
        env = {k: v for k, v in self.env().items() if k not in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
        home = self.root / "no-token-home"
        home.mkdir(exist_ok=True)
        env["HOME"] = str(home)
        code = (f"import ray\ntry:\n    ray.init(address={self.address!r}, log_to_driver=False)\n    print('JOINED')\n"
                "except Exception as e:\n    print('REFUSED', type(e).__name__)\n")
        return subprocess.Popen([sys.executable, "-c", code], env=env, cwd=home, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def listening(self) -> list[tuple[str, int]]:
        return listening(self.pids())

    def start(self) -> RayCluster:
        try:
            head, *others = self.nodes
            head.start()
            head.wait_ready(self.ready_timeout)
            for n in others:
                n.start()
            for n in others:
                n.wait_ready(self.ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def add_node(self) -> Node:
        node = Node(self, len(self.nodes))
        self.nodes.append(node)
        node.start()
        node.wait_ready(self.ready_timeout)
        return node

    def stop(self) -> None:
        for n in reversed(self.nodes):
            n.stop()

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


try:
    import pytest
except ImportError:  # used as a plain helper
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def ray_cluster(tmp_path_factory):
        """A running two-node Ray cluster (1 CPU each) on 127.0.0.1; stopped at the end of the session."""
        # Not imported here: Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when it is imported, and a
        # driver in this process must see it (curate's executor sets it before its own import).
        if importlib.util.find_spec("ray") is None:
            pytest.fail("ray is not installed: pip install 'ray[data]' (see the README)", pytrace=False)
        with RayCluster(tmp_path_factory.mktemp("ray")) as cluster:
            yield cluster
