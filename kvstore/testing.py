"""LocalCluster: start, kill, pause, restart and stop real `kvstore serve` processes.

For tests, the jepsen suite and benchmarks:

    with LocalCluster(nodes=3, buckets=8, base_dir=tmp_path) as c:
        c.start()                    # spawns the processes, waits until every bucket is writable
        c.addrs                      # ["127.0.0.1:PORT", ...]
        c.kill(2)                    # SIGKILL node 2;  c.restart(2) starts it again (same dir)
        c.pause(3); c.resume(3)      # SIGSTOP / SIGCONT
    # leaving the block kills every process it started (also when the test failed)

Ports are free ports picked by binding port 0 on 127.0.0.1; every wait has a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

from .rawclient import RawConn, wait_writable


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class LocalCluster:
    def __init__(self, nodes: int = 3, *, buckets: int = 8, replication: int = 3,
                 base_dir: str | os.PathLike | None = None, extra_args: list[str] | None = None,
                 ports: list[int] | None = None, env: dict | None = None,
                 node_env: dict[int, dict] | None = None) -> None:
        self.n = nodes
        self.buckets = buckets
        self.replication = replication
        self._tmp = None
        if base_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="kvstore-cluster-")
            base_dir = self._tmp.name
        self.base_dir = os.fspath(base_dir)
        self.extra_args = list(extra_args or [])
        self.ports = list(ports) if ports else free_ports(nodes)
        self.addrs = [f"127.0.0.1:{p}" for p in self.ports]
        self.ids = list(range(1, nodes + 1))
        self.spec = ",".join(f"{i}={a}" for i, a in zip(self.ids, self.addrs))
        self.env = dict(os.environ if env is None else env)
        self.node_env = dict(node_env or {})
        self.procs: dict[int, subprocess.Popen] = {}
        self._logs: dict[int, object] = {}

    # -- paths and addresses --
    def data_dir(self, node_id: int) -> str:
        return os.path.join(self.base_dir, f"node{node_id}")

    def log_path(self, node_id: int) -> str:
        return os.path.join(self.data_dir(node_id), "node.log")

    def addr(self, node_id: int) -> str:
        return self.addrs[node_id - 1]

    @property
    def seeds(self) -> str:
        return ",".join(self.addrs)

    def argv(self, node_id: int) -> list[str]:
        return [sys.executable, "-m", "kvstore", "serve", "--id", str(node_id),
                "--cluster", self.spec, "--data-dir", self.data_dir(node_id),
                "--buckets", str(self.buckets), "--replication", str(self.replication),
                *self.extra_args]

    # -- lifecycle --
    def start(self, wait_s: float = 60.0) -> None:
        for i in self.ids:
            self.spawn(i)
        if wait_s:
            self.wait_writable(wait_s)

    def spawn(self, node_id: int) -> None:
        p = self.procs.get(node_id)
        if p is not None and p.poll() is None:
            raise RuntimeError(f"node {node_id} is already running")
        os.makedirs(self.data_dir(node_id), exist_ok=True)
        if node_id in self._logs:
            self._logs[node_id].close()
        log = open(self.log_path(node_id), "ab")
        self._logs[node_id] = log
        env = dict(self.env)
        env.update(self.node_env.get(node_id, {}))
        self.procs[node_id] = subprocess.Popen(
            self.argv(node_id), stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)

    def wait_writable(self, deadline_s: float = 60.0, buckets: list[int] | None = None) -> None:
        self._check_alive()
        wait_writable([self.addr(i) for i in self.running()], deadline_s, buckets=buckets)

    def wait_port(self, node_id: int, deadline_s: float = 30.0) -> None:
        end = time.monotonic() + deadline_s
        while True:
            try:
                with RawConn(self.addr(node_id), timeout_s=1.0) as c:
                    c.call("map")
                    return
            except OSError:
                if time.monotonic() > end:
                    raise TimeoutError(f"node {node_id} does not answer on {self.addr(node_id)}")
                p = self.procs.get(node_id)
                if p is not None and p.poll() is not None:
                    raise RuntimeError(f"node {node_id} exited with {p.returncode}; "
                                       f"log: {self.tail_log(node_id)}")
                time.sleep(0.05)

    def running(self) -> list[int]:
        return [i for i, p in self.procs.items() if p.poll() is None]

    def _check_alive(self) -> None:
        for i, p in self.procs.items():
            if p.poll() is not None and p.returncode not in (-signal.SIGKILL, 0, -signal.SIGTERM):
                raise RuntimeError(f"node {i} exited with {p.returncode}; log: {self.tail_log(i)}")

    def kill(self, node_id: int) -> None:
        p = self.procs[node_id]
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.kill()
        p.wait(timeout=10)

    def terminate(self, node_id: int, timeout_s: float = 15.0) -> int:
        p = self.procs[node_id]
        if p.poll() is None:
            p.send_signal(signal.SIGCONT)
            p.terminate()
        try:
            return p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
            raise

    def pause(self, node_id: int) -> None:
        self.procs[node_id].send_signal(signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        self.procs[node_id].send_signal(signal.SIGCONT)

    def restart(self, node_id: int) -> None:
        self.kill(node_id)
        self.spawn(node_id)

    def stop(self) -> None:
        """SIGTERM every node, and soon a second one: when the whole cluster stops, handing
        leaderships over is pointless (the second signal skips it; the stop stays graceful)."""
        for _round in range(2):
            for i, p in self.procs.items():
                if p.poll() is None:
                    try:
                        p.send_signal(signal.SIGCONT)
                        p.terminate()
                    except ProcessLookupError:
                        pass
            time.sleep(0.2)
        end = time.monotonic() + 10
        for p in self.procs.values():
            try:
                p.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        for f in self._logs.values():
            f.close()
        self._logs.clear()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> "LocalCluster":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- inspection --
    def tail_log(self, node_id: int, lines: int = 30) -> str:
        try:
            with open(self.log_path(node_id), "rb") as f:
                return b"".join(f.readlines()[-lines:]).decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def status(self, node_id: int) -> dict:
        with RawConn(self.addr(node_id)) as c:
            st, payload = c.call("status")
            return payload

    def leader_counts(self) -> dict[int, int]:
        """node id -> number of buckets it leads (from each running node's status)."""
        out = {}
        for i in self.running():
            try:
                out[i] = len(self.status(i)["leader_of"])
            except OSError:
                out[i] = 0
        return out
