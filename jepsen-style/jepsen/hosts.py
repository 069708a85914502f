"""Where the nodes run: one network namespace per node on a private bridge, or plain loopback.

Netns mode (root and `ip` needed): a run takes a *slot* k (an flock on /tmp/kvj/slot{k}.lock,
so concurrent runs never share names or subnets) and creates
    bridge  kvjbr{k}         10.77.{k}.1/24   in the root namespace (the client talks from here)
    netns   kvj{k}n{i}       node i at 10.77.{k}.{10+i}, port 7000, veth kvj{k}v{i} <-> eth0
Only these namespaces and links are touched, and only traffic between them is affected.
Partitions are blackhole routes inside a node's namespace: `ip route add blackhole DST/32` in
node i's namespace drops everything i sends to DST (so a one-way cut is one route, a two-way
cut two). `tc netem` is not available, and neither is iptables on this machine: blackholes need
nothing but iproute2.

Loopback mode (fallback): every node on 127.0.0.1 with a free port; no network faults.

Teardown is idempotent and also runs from `cleanup_stale()` (`run.py --cleanup`), which
removes the leftovers of any slot whose lock nobody holds (a run that was SIGKILLed).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

STATE_DIR = Path("/tmp/kvj")
SLOTS = 8
NODE_PORT = 7000
PREFIX = "kvj"


class HostError(RuntimeError):
    pass


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and p.returncode != 0:
        raise HostError(f"ip {' '.join(args)}: {p.stderr.strip()}")
    return p


def netns_available() -> tuple[bool, str]:
    """(usable, why not): root, `ip`, and a namespace can actually be created."""
    if os.geteuid() != 0:
        return False, "not root"
    if shutil.which("ip") is None:
        return False, "no `ip` command"
    probe = f"{PREFIX}probe{os.getpid()}"
    p = _ip("netns", "add", probe, check=False)
    if p.returncode != 0:
        return False, f"cannot create a network namespace: {p.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return True, ""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _kill_pidfile(path: Path) -> None:
    """SIGKILLs the processes a (dead) run recorded, if they still look like ours."""
    if not path.exists():
        return
    for line in path.read_text().split():
        try:
            pid = int(line)
        except ValueError:
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"kvstore" in cmd and b"serve" in cmd:
            try:
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    path.unlink(missing_ok=True)


class Hosts:
    """Base: addresses of nodes, how to launch a command on a node, network faults."""

    mode = "?"
    supports_partition = False

    def __init__(self, n: int) -> None:
        self.n = n
        self.pidfile: Path | None = None

    def setup(self) -> None: ...

    def teardown(self) -> None: ...

    def addr(self, i: int) -> str:
        raise NotImplementedError

    def wrap(self, i: int, argv: list[str]) -> list[str]:
        return argv

    def record_pid(self, pid: int) -> None:
        if self.pidfile is not None:
            with open(self.pidfile, "a") as f:
                f.write(f"{pid}\n")

    # network faults: `blocked` is the set of (src, dst) pairs whose packets are dropped
    def set_blocked(self, pairs: set[tuple[int, int]]) -> None:
        if pairs:
            raise HostError(f"{self.mode} hosts cannot partition the network")

    def heal(self) -> None:
        self.set_blocked(set())


class LoopbackHosts(Hosts):
    mode = "loopback"

    def __init__(self, n: int) -> None:
        super().__init__(n)
        self.ports = [free_port() for _ in range(n)]
        self.pidfile = None

    def setup(self) -> None:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        self.pidfile = STATE_DIR / f"loopback-{os.getpid()}.pids"

    def teardown(self) -> None:
        if self.pidfile is not None:
            _kill_pidfile(self.pidfile)

    def addr(self, i: int) -> str:
        return f"127.0.0.1:{self.ports[i - 1]}"


class NetnsHosts(Hosts):
    mode = "netns"
    supports_partition = True

    def __init__(self, n: int) -> None:
        super().__init__(n)
        if not 1 <= n <= 200:
            raise ValueError("between 1 and 200 nodes")
        self.slot: int | None = None
        self._lock_fd: int | None = None
        self._blocked: set[tuple[int, int]] = set()
        self._up = False

    # names
    def ns(self, i: int) -> str:
        return f"{PREFIX}{self.slot}n{i}"

    def bridge(self) -> str:
        return f"{PREFIX}br{self.slot}"

    def ip_of(self, i: int) -> str:
        return f"10.77.{self.slot}.{10 + i}"

    def addr(self, i: int) -> str:
        return f"{self.ip_of(i)}:{NODE_PORT}"

    def wrap(self, i: int, argv: list[str]) -> list[str]:
        # `ip netns exec` execs the command itself: the child's pid is the node's pid
        return ["ip", "netns", "exec", self.ns(i), *argv]

    def setup(self) -> None:
        self.slot, self._lock_fd = _take_slot()
        self.pidfile = STATE_DIR / f"slot{self.slot}.pids"
        try:
            _remove_slot(self.slot)  # leftovers of a dead run in this slot
            k = self.slot
            br = self.bridge()
            _ip("link", "add", br, "type", "bridge")
            self._up = True
            _ip("addr", "add", f"10.77.{k}.1/24", "dev", br)
            _ip("link", "set", br, "up")
            for i in range(1, self.n + 1):
                ns, host_if = self.ns(i), f"{PREFIX}{k}v{i}"
                _ip("netns", "add", ns)
                _ip("-n", ns, "link", "set", "lo", "up")
                _ip("link", "add", host_if, "type", "veth", "peer", "name", f"{PREFIX}{k}p{i}")
                _ip("link", "set", f"{PREFIX}{k}p{i}", "netns", ns)
                _ip("-n", ns, "link", "set", f"{PREFIX}{k}p{i}", "name", "eth0")
                _ip("-n", ns, "addr", "add", f"{self.ip_of(i)}/24", "dev", "eth0")
                _ip("-n", ns, "link", "set", "eth0", "up")
                _ip("link", "set", host_if, "master", br)
                _ip("link", "set", host_if, "up")
        except BaseException:
            self.teardown()
            raise

    def teardown(self) -> None:
        if self.slot is None:
            return
        try:
            if self.pidfile is not None:
                _kill_pidfile(self.pidfile)
            _remove_slot(self.slot)
        finally:
            self._up = False
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None
            self.slot = None

    def set_blocked(self, pairs: set[tuple[int, int]]) -> None:
        """Makes exactly `pairs` (src, dst) blocked: adds and removes blackhole routes."""
        for src, dst in sorted(self._blocked - pairs):
            _ip("-n", self.ns(src), "route", "del", "blackhole", f"{self.ip_of(dst)}/32", check=False)
        for src, dst in sorted(pairs - self._blocked):
            if src == dst:
                continue
            _ip("-n", self.ns(src), "route", "replace", "blackhole", f"{self.ip_of(dst)}/32")
        self._blocked = {p for p in pairs if p[0] != p[1]}

    def heal(self) -> None:
        self.set_blocked(set())
        for i in range(1, self.n + 1):  # belt and braces: nothing of ours may stay blackholed
            _ip("-n", self.ns(i), "route", "flush", "type", "blackhole", check=False)


def _take_slot() -> tuple[int, int]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    for k in range(SLOTS):
        fd = os.open(STATE_DIR / f"slot{k}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return k, fd
        except BlockingIOError:
            os.close(fd)
    raise HostError(f"all {SLOTS} slots are in use (another run holds each lock in {STATE_DIR})")


def _remove_slot(k: int) -> None:
    """Kills what runs in slot k's namespaces and deletes them and the bridge."""
    names = [line.split()[0] for line in _ip("netns", "list", check=False).stdout.splitlines() if line.strip()]
    mine = [n for n in names if n.startswith(f"{PREFIX}{k}n") and n[len(f"{PREFIX}{k}n"):].isdigit()]
    for ns in mine:
        pids = _ip("netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGCONT)
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    deadline = time.monotonic() + 5
    for ns in mine:
        while _ip("netns", "pids", ns, check=False).stdout.split() and time.monotonic() < deadline:
            time.sleep(0.05)
        _ip("netns", "del", ns, check=False)
    _ip("link", "del", f"{PREFIX}br{k}", check=False)
    # host ends of veths go away with their peers; remove any orphan anyway
    links = _ip("-o", "link", "show", check=False).stdout.splitlines()
    for line in links:
        parts = line.split(":")
        if len(parts) > 1:
            name = parts[1].strip().split("@")[0]
            if name.startswith(f"{PREFIX}{k}v"):
                _ip("link", "del", name, check=False)


def cleanup_stale(force: bool = False) -> list[int]:
    """Removes leftovers of every slot nobody holds (all slots with force). Returns slots done."""
    done = []
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    for k in range(SLOTS):
        fd = os.open(STATE_DIR / f"slot{k}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not force:
                    continue
            _kill_pidfile(STATE_DIR / f"slot{k}.pids")
            if shutil.which("ip") and os.geteuid() == 0:
                _remove_slot(k)
            done.append(k)
        finally:
            os.close(fd)
    for pf in STATE_DIR.glob("loopback-*.pids"):
        pid = int(pf.stem.split("-")[1]) if pf.stem.split("-")[1].isdigit() else -1
        if force or not _pid_alive(pid):
            _kill_pidfile(pf)
    _remove_orphan_data_dirs()
    return done


def _remove_orphan_data_dirs() -> None:
    """Node data directories (tempfile kvj-data-*) that no running process mentions."""
    import tempfile

    dirs = list(Path(tempfile.gettempdir()).glob("kvj-data-*"))
    if not dirs:
        return
    cmdlines = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdlines.append((proc / "cmdline").read_bytes())
            except OSError:
                pass
    for d in dirs:
        try:
            fresh = time.time() - d.stat().st_mtime < 60  # a run may be starting its nodes
        except OSError:
            continue
        if not fresh and not any(str(d).encode() in c for c in cmdlines):
            shutil.rmtree(d, ignore_errors=True)
