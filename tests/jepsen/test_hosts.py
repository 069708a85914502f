"""Network namespaces and blackhole partitions (skipped without root and `ip`)."""

import subprocess
import sys

import pytest

from jepsen import hosts

OK, WHY = hosts.netns_available()
pytestmark = pytest.mark.skipif(not OK, reason=f"netns unavailable: {WHY}")

SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(16); s.settimeout(20)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.sendall(b"hi"); c.close()
"""

PROBE = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.7) as c:
        print(c.recv(2).decode())
except OSError:
    print("unreachable")
"""


def reach(h, src, dst):
    """Connects from node src's namespace (0: the root namespace) to a server on node dst."""
    ip, port = h.addr(dst).split(":")
    argv = [sys.executable, "-c", PROBE, ip, port]
    if src:
        argv = h.wrap(src, argv)
    return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()


def test_namespaces_partitions_and_teardown():
    h = hosts.NetnsHosts(3)
    servers = []
    try:
        h.setup()
        for i in (1, 2, 3):
            ip, port = h.addr(i).split(":")
            p = subprocess.Popen(h.wrap(i, [sys.executable, "-c", SERVER, ip, port]), stdout=subprocess.PIPE, text=True)
            servers.append(p)
            assert p.stdout.readline().strip() == "ready"
        assert reach(h, 1, 2) == "hi" and reach(h, 0, 3) == "hi"
        h.set_blocked({(1, 2)})  # one-way: 1 cannot send to 2 (so TCP from 1 to 2 fails)
        assert reach(h, 1, 2) == "unreachable"
        assert reach(h, 1, 3) == "hi" and reach(h, 0, 2) == "hi"  # others and the client unaffected
        h.set_blocked({(2, 3), (3, 2)})  # replaces the previous cut
        assert reach(h, 1, 2) == "hi" and reach(h, 2, 3) == "unreachable" and reach(h, 3, 2) == "unreachable"
        h.heal()
        assert reach(h, 2, 3) == "hi"
        slot = h.slot
    finally:
        for p in servers:
            p.kill()
            p.wait(timeout=10)
        h.teardown()
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"kvj{slot}n" not in names
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert f"kvjbr{slot}" not in links and f"kvj{slot}v" not in links


def test_cleanup_removes_leftovers_of_a_dead_run():
    h = hosts.NetnsHosts(2)
    h.setup()
    slot = h.slot
    # simulate a run that died: release the lock without tearing down
    import os
    os.close(h._lock_fd)
    h._lock_fd = None
    assert slot in hosts.cleanup_stale()
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"kvj{slot}n" not in names
