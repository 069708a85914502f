"""Start and stop the stores the comparison measures, each on 127.0.0.1 in a temp dir.

Every system is a context manager: `with EtcdCluster(dir) as endpoints: ...` starts it, waits
(with a deadline) until a write succeeds, and on exit (also on error or Ctrl-C) terminates
every process it started (SIGTERM, then SIGKILL after a deadline). Processes get their own
session, so a Ctrl-C of the terminal reaches only the comparison, which then stops them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

from kvstore.testing import free_ports

READY_TIMEOUT_S = 60.0


def ensure_apt_package(binary: str, package: str, log=print) -> str:
    """Path of `binary`; installs Debian's `package` with apt-get when it is missing."""
    path = shutil.which(binary)
    if path:
        return path
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"{binary} not found and apt-get is not available: install {package}")
    policy = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True)
    if "Candidate: (none)" in policy.stdout or not policy.stdout.strip():
        log(f"apt-cache has no candidate for {package}; running apt-get update once")
        subprocess.run(["apt-get", "update"], check=True, capture_output=True)
    log(f"installing {package} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package], check=True,
                   capture_output=True, env=env)
    path = shutil.which(binary)
    if not path:
        raise RuntimeError(f"{package} installed but {binary} is still not on PATH")
    return path


class _Processes:
    """Processes started by one system, stopped together."""

    def __init__(self, base_dir: str) -> None:
        self.base_dir = base_dir
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self._logs = []

    def spawn(self, name: str, argv: list[str], cwd: str | None = None) -> subprocess.Popen:
        log = open(os.path.join(self.base_dir, f"{name}.log"), "ab")
        self._logs.append(log)
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; log: {self.tail(name)}")

    def tail(self, name: str, lines: int = 15) -> str:
        try:
            with open(os.path.join(self.base_dir, f"{name}.log"), "rb") as f:
                return b"".join(f.readlines()[-lines:]).decode(errors="replace")
        except OSError:
            return "(no log)"

    def pids(self) -> list[int]:
        return [p.pid for _, p in self.procs if p.poll() is None]

    def stop(self, timeout_s: float = 10.0) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                try:
                    proc.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        end = time.monotonic() + timeout_s
        for _, proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        for log in self._logs:
            log.close()
        self._logs.clear()


def _wait(what: str, probe, procs: _Processes, timeout_s: float = READY_TIMEOUT_S) -> None:
    end = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < end:
        procs.check_alive()
        try:
            if probe():
                return
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout_s:.0f} s: {last!r}")


def _resp_call(port: int, *args: bytes, timeout_s: float = 3.0):
    from kvstore.bench.drivers.resp import RespParser, encode_command

    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        s.sendall(encode_command(*args))
        parser = RespParser()
        while True:
            data = s.recv(65536)
            if not data:
                raise ConnectionError("closed")
            parser.feed(data)
            ok, reply = parser.next_reply()
            if ok:
                if isinstance(reply, Exception):
                    raise reply
                return reply


class System:
    name = "system"
    replicas = 1

    def __init__(self, base_dir: str) -> None:
        # a fresh directory per start: a store never sees data of an earlier run (or round)
        os.makedirs(base_dir, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=self.name + "-", dir=base_dir)
        self.procs = _Processes(self.dir)
        self.endpoints: list[str] = []

    def driver_spec(self) -> dict:
        return {"name": self.name, "endpoints": self.endpoints}

    def pids(self) -> list[int]:
        return self.procs.pids()

    def internal_stats(self) -> dict | None:
        """The store's own counters (per node), if it exposes them; None otherwise."""
        return None

    def __enter__(self) -> "System":
        try:
            self.start()
        except BaseException:
            self.procs.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.procs.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self) -> None:
        raise NotImplementedError


class EtcdCluster(System):
    name = "etcd"
    replicas = 3

    def start(self) -> None:
        etcd = ensure_apt_package("etcd", "etcd-server")
        ports = free_ports(6)
        client, peer = ports[:3], ports[3:]
        cluster = ",".join(f"e{i}=http://127.0.0.1:{peer[i]}" for i in range(3))
        for i in range(3):
            self.procs.spawn(f"e{i}", [
                etcd, "--name", f"e{i}", "--data-dir", os.path.join(self.dir, f"e{i}"),
                "--listen-client-urls", f"http://127.0.0.1:{client[i]}",
                "--advertise-client-urls", f"http://127.0.0.1:{client[i]}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer[i]}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer[i]}",
                "--initial-cluster", cluster, "--initial-cluster-state", "new",
                "--initial-cluster-token", "bench", "--log-level", "warn",
                "--quota-backend-bytes", str(8 * 1024**3)])
        self.endpoints = [f"127.0.0.1:{p}" for p in client]

        def probe() -> bool:
            import urllib.request

            for p in client:
                req = urllib.request.Request(f"http://127.0.0.1:{p}/v3/kv/put",
                                             data=b'{"key": "cHJvYmU=", "value": "MQ=="}', method="POST")
                with urllib.request.urlopen(req, timeout=3) as r:
                    if r.status != 200:
                        return False
            return True

        _wait("etcd", probe, self.procs)


class RedisServer(System):
    name = "redis"

    def start(self) -> None:
        redis = ensure_apt_package("redis-server", "redis-server")
        (port,) = free_ports(1)
        self.procs.spawn("redis", [
            redis, "--port", str(port), "--bind", "127.0.0.1", "--dir", self.dir,
            "--appendonly", "yes", "--appendfsync", "always", "--save", "",
            "--protected-mode", "yes", "--daemonize", "no"])
        self.endpoints = [f"127.0.0.1:{port}"]
        _wait("redis", lambda: _resp_call(port, b"SET", b"probe", b"1") == b"OK", self.procs)


class PySyncObjCluster(System):
    """Three `kvstore bench pysyncobj-node` processes. `journal`: file journal on;
    `batch`: PySyncObj's appendEntriesUseBatch."""

    name = "pysyncobj"
    replicas = 3

    def __init__(self, base_dir: str, *, journal: bool = True, batch: bool = True, label: str | None = None) -> None:
        self.name = label or "pysyncobj"
        super().__init__(base_dir)
        self.journal, self.batch = journal, batch

    def driver_spec(self) -> dict:
        from kvstore.bench.drivers.pysyncobj import DEFAULT_DURABILITY

        durability = DEFAULT_DURABILITY if self.journal else DEFAULT_DURABILITY.replace(
            "file journal is an mmap without fsync (survives a process crash, not power loss)",
            "in memory only (no journal)")
        return {"name": "pysyncobj", "endpoints": self.endpoints, "durability": durability}

    def start(self) -> None:
        ports = free_ports(6)
        raft, front = ports[:3], ports[3:]
        for i in range(3):
            argv = [sys.executable, "-m", "kvstore.bench", "pysyncobj-node",
                    "--self", f"127.0.0.1:{raft[i]}",
                    "--partners", ",".join(f"127.0.0.1:{raft[j]}" for j in range(3) if j != i),
                    "--listen", f"127.0.0.1:{front[i]}"]
            if self.journal:
                argv += ["--journal", os.path.join(self.dir, f"n{i}")]
            if not self.batch:
                argv.append("--no-batch")
            self.procs.spawn(f"n{i}", argv)
        self.endpoints = [f"127.0.0.1:{p}" for p in front]
        _wait("pysyncobj", lambda: all(_resp_call(p, b"SET", b"probe", b"1", timeout_s=5) == b"OK"
                                       for p in front), self.procs)


class KvstoreCluster(System):
    name = "kvstore"
    replicas = 3

    def __init__(self, base_dir: str, *, buckets: int = 64, extra_args: list[str] | None = None) -> None:
        super().__init__(base_dir)
        self.buckets = buckets
        self.extra_args = list(extra_args or [])
        self.cluster = None

    def start(self) -> None:
        from kvstore.testing import LocalCluster

        self.cluster = LocalCluster(nodes=3, buckets=self.buckets, base_dir=self.dir, extra_args=self.extra_args)
        self.cluster.start(wait_s=READY_TIMEOUT_S)
        self.endpoints = list(self.cluster.addrs)

    def __exit__(self, *exc) -> None:
        if self.cluster is not None:
            self.cluster.close()
        super().__exit__(*exc)

    def pids(self) -> list[int]:
        return [] if self.cluster is None else [p.pid for p in self.cluster.procs.values() if p.poll() is None]

    def internal_stats(self) -> dict | None:
        from kvstore.rawclient import RawConn

        out = {}
        for addr in self.endpoints:
            try:
                with RawConn(addr, timeout_s=2.0) as conn:
                    status, payload = conn.call("status")
                if status == 0 and isinstance(payload, dict):
                    out[addr] = dict(payload.get("stats") or {}, leader_of=len(payload.get("leader_of") or ()))
            except OSError:
                pass
        return out
