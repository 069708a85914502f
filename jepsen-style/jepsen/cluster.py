"""The cluster under test: `kvstore serve` processes on the hosts, and what a nemesis does to
them (kill -9 and restart, SIGSTOP / SIGCONT, restart with a skewed clock).

Each node logs to <run dir>/nodes/n<i>.log (appended across restarts, with a marker line per
start). Data lives in a temporary directory removed at the end: a run's artefacts stay small.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from client.wire import FrameDecoder, Status, encode_frame

from .hosts import Hosts


def kvstore_argv() -> list[str]:
    exe = Path(sys.executable).with_name("kvstore")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-c", "import sys; from kvstore.cli import main; sys.exit(main())"]


class Node:
    def __init__(self, i: int) -> None:
        self.id = i
        self.proc: subprocess.Popen | None = None
        self.paused = False
        self.clock_offset_ms = 0
        self.starts = 0

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class Cluster:
    def __init__(
        self,
        hosts: Hosts,
        run_dir: Path,
        data_root: Path,
        buckets: int = 64,
        replication: int = 3,
        bug: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.hosts = hosts
        self.n = hosts.n
        self.run_dir = Path(run_dir)
        self.data_root = Path(data_root)
        self.buckets = buckets
        self.replication = min(replication, hosts.n)
        self.bug = bug
        self.extra_args = extra_args or []
        self.nodes = {i: Node(i) for i in range(1, self.n + 1)}
        self.lock = threading.Lock()  # nemeses run from one thread, the final teardown from another
        (self.run_dir / "nodes").mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ addresses
    def addr(self, i: int) -> str:
        return self.hosts.addr(i)

    def addrs(self) -> list[str]:
        return [self.addr(i) for i in self.nodes]

    def cluster_arg(self) -> str:
        return ",".join(f"{i}={self.addr(i)}" for i in self.nodes)

    # ------------------------------------------------------------------ process control
    def start(self, i: int) -> None:
        node = self.nodes[i]
        with self.lock:
            if node.running:
                return
            data = self.data_root / f"n{i}"
            data.mkdir(parents=True, exist_ok=True)
            argv = kvstore_argv() + [
                "serve", "--id", str(i), "--data-dir", str(data), "--cluster", self.cluster_arg(),
                "--buckets", str(self.buckets), "--replication", str(self.replication), *self.extra_args,
            ]
            env = dict(os.environ)
            env.pop("KVSTORE_BUG", None)
            if self.bug:
                env["KVSTORE_BUG"] = self.bug
            env["KVSTORE_CLOCK_OFFSET_MS"] = str(node.clock_offset_ms)
            log = open(self.run_dir / "nodes" / f"n{i}.log", "ab")
            node.starts += 1
            log.write(
                f"\n==== jepsen: start #{node.starts} of node {i} at {time.strftime('%H:%M:%S')}"
                f" clock offset {node.clock_offset_ms} ms{' bug ' + self.bug if self.bug else ''}\n".encode()
            )
            log.flush()
            node.proc = subprocess.Popen(
                self.hosts.wrap(i, argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,  # Ctrl-C reaches the runner, which tears down in order
            )
            log.close()
            node.paused = False
            self.hosts.record_pid(node.proc.pid)

    def start_all(self) -> None:
        for i in self.nodes:
            self.start(i)

    def kill(self, i: int) -> None:
        """kill -9 (a paused node is killed too: SIGKILL needs no SIGCONT)."""
        node = self.nodes[i]
        with self.lock:
            if node.proc is None:
                return
            try:
                node.proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                node.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            node.paused = False

    def pause(self, i: int) -> None:
        node = self.nodes[i]
        with self.lock:
            if node.running and not node.paused:
                node.proc.send_signal(signal.SIGSTOP)
                node.paused = True

    def resume(self, i: int) -> None:
        node = self.nodes[i]
        with self.lock:
            if node.proc is not None and node.paused:
                try:
                    node.proc.send_signal(signal.SIGCONT)
                except ProcessLookupError:
                    pass
                node.paused = False

    def restart(self, i: int, clock_offset_ms: int | None = None) -> None:
        if clock_offset_ms is not None:
            self.nodes[i].clock_offset_ms = clock_offset_ms
        self.kill(i)
        self.start(i)

    def stop_all(self) -> None:
        for i in self.nodes:
            self.resume(i)
            self.kill(i)

    def crashed(self) -> list[int]:
        """Nodes that exited although no nemesis killed them (a crash is a finding)."""
        return [i for i, nd in self.nodes.items() if nd.proc is not None and nd.proc.poll() not in (None, -9)]

    # ------------------------------------------------------------------ observing the cluster
    def request(self, i: int, op: str, args: dict | None = None, timeout: float = 1.0):
        """One raw wire request to node i (no client library): (status, payload) or None."""
        host, port = self.addr(i).rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=timeout) as s:
                s.settimeout(timeout)
                s.sendall(encode_frame([[1, op, args or {}]]))
                dec = FrameDecoder()
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    data = s.recv(65536)
                    if not data:
                        return None
                    for frame in dec.feed(data):
                        for msg in frame:
                            if isinstance(msg, list) and len(msg) == 3 and msg[0] == 1:
                                return msg[1], msg[2]
        except (OSError, ValueError):
            return None
        return None

    def leaders(self, timeout: float = 0.5) -> dict[int, int]:
        """bucket -> node id, from each reachable node's own claim to lead it."""
        out: dict[int, int] = {}
        for i, node in self.nodes.items():
            if not node.running or node.paused:
                continue
            r = self.request(i, "map", timeout=timeout)
            if not r or r[0] != Status.OK or not isinstance(r[1], dict):
                continue
            for b, entry in enumerate(r[1].get("buckets") or []):
                try:
                    leader = entry[2]
                except (TypeError, IndexError):
                    continue
                if leader is not None and str(leader) == str(i):
                    out[b] = i
        return out

    def wait_ready(self, probe, timeout_s: float) -> bool:
        """Calls probe() (True when the cluster serves) until it succeeds or the deadline."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if probe():
                    return True
            except Exception:
                pass
            time.sleep(0.25)
        return False
