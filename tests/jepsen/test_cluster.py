"""The node launcher passes the cluster layout, the injected bug and the clock offset to each
node process, and kill / pause / restart act on the right process (a stand-in node script)."""

import json
import sys
import time

from jepsen import cluster as cluster_mod
from jepsen.cluster import Cluster
from jepsen.hosts import LoopbackHosts

FAKE_NODE = r"""
import json, os, sys, time
out = sys.argv[sys.argv.index("--data-dir") + 1] + "/seen.json"
with open(out, "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "bug": os.environ.get("KVSTORE_BUG"),
                        "offset": os.environ.get("KVSTORE_CLOCK_OFFSET_MS")}) + "\n")
time.sleep(60)
"""


def seen(data_root, i):
    path = data_root / f"n{i}" / "seen.json"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().endswith("\n"):
            return [json.loads(line) for line in path.read_text().splitlines()]
        time.sleep(0.05)
    raise AssertionError(f"node {i} never started")


def test_launch_environment_and_process_control(tmp_path, monkeypatch):
    monkeypatch.setattr(cluster_mod, "kvstore_argv", lambda: [sys.executable, "-c", FAKE_NODE])
    hosts = LoopbackHosts(2)
    hosts.setup()
    c = Cluster(hosts, tmp_path / "run", tmp_path / "data", buckets=8, replication=3, bug="stale-follower-read")
    try:
        c.start_all()
        first = seen(tmp_path / "data", 1)[0]
        assert first["bug"] == "stale-follower-read" and first["offset"] == "0"
        argv = first["argv"]
        assert argv[argv.index("--cluster") + 1] == f"1={hosts.addr(1)},2={hosts.addr(2)}"
        assert argv[argv.index("--replication") + 1] == "2"  # capped at the node count
        c.pause(2)
        assert c.nodes[2].paused and c.nodes[2].running
        c.resume(2)
        c.restart(1, clock_offset_ms=-2500)
        runs = []
        deadline = time.monotonic() + 10
        while len(runs) < 2 and time.monotonic() < deadline:
            runs = seen(tmp_path / "data", 1)
        assert [r["offset"] for r in runs] == ["0", "-2500"]
        c.kill(2)
        assert not c.nodes[2].running and c.crashed() == []
        log = (tmp_path / "run" / "nodes" / "n1.log").read_text()
        assert "start #2 of node 1" in log and "clock offset -2500 ms" in log
    finally:
        c.stop_all()
        hosts.teardown()
    assert not any(nd.running for nd in c.nodes.values())
