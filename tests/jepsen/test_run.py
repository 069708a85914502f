"""A real, short Jepsen-style run against a real cluster (the default suite's part), and the
longer ones behind KVSTORE_SLOW=1: each nemesis family on its own, and the injected bugs.

With root and `ip` the nodes get network namespaces (all four families); otherwise loopback
(kill, pause, clock). Nothing here asserts timing: only the checkers' verdicts and artefacts.
"""

import importlib.util
import json
import os
from pathlib import Path

import pytest

from jepsen import hosts
from jepsen.history import read_jsonl
from jepsen.runner import Options, run

NETNS, WHY = hosts.netns_available()
SLOW = pytest.mark.skipif(os.environ.get("KVSTORE_SLOW") != "1", reason="long run: set KVSTORE_SLOW=1")
ALL = ["kill", "pause", "partition", "clock"] if NETNS else ["kill", "pause", "clock"]


def opts(tmp_path, **kw):
    base = dict(nodes=5, time_s=30, seed=20, runs_dir=str(tmp_path), rate=80, concurrency=8,
                buckets=32, keys=16, quiet_s=(1.0, 2.0), fault_s=(2.5, 4.0), ready_timeout_s=60)
    base.update(kw)
    return Options(**base)


def test_short_run_with_every_nemesis_family_is_valid(tmp_path):
    status, v = run(opts(tmp_path, nemesis=list(ALL)), log=lambda *_: None)
    assert status == 0, v.get("summary") or v.get("error")
    rd = Path(v["run_dir"])
    events = read_jsonl(rd / "history.jsonl")
    started = {e.f[len("start-"):] for e in events if e.process == "nemesis" and e.f.startswith("start-")}
    assert started == set(ALL)
    assert v["ops"]["ok"] > 200 and v["linearizable"]["valid"] is True
    assert v["liveness"]["valid"] and v["crashes"]["valid"]
    assert json.loads((rd / "verdict.json").read_text())["valid"] is True
    assert (rd / "summary.txt").read_text().startswith("VALID")
    assert all((rd / "nodes" / f"n{i}.log").stat().st_size > 0 for i in range(1, 6))
    if importlib.util.find_spec("matplotlib") is None:
        return
    assert (rd / "plot.png").read_bytes()[:4] == b"\x89PNG"


@SLOW
@pytest.mark.slow
@pytest.mark.parametrize("family", ALL)
@pytest.mark.parametrize("workload", ["register", "set"])
def test_each_family_alone(tmp_path, family, workload):
    status, v = run(opts(tmp_path, nemesis=[family], time_s=45, workload=workload, seed=31), log=lambda *_: None)
    assert status == 0, v.get("summary") or v.get("error")


@SLOW
@pytest.mark.slow
@pytest.mark.parametrize("workload", ["register", "set"])
def test_all_families_combined_long(tmp_path, workload):
    status, v = run(opts(tmp_path, nemesis=list(ALL), time_s=90, workload=workload, seed=41, rate=150,
                         concurrency=12, keys=8), log=lambda *_: None)
    assert status == 0, v.get("summary") or v.get("error")


@pytest.mark.skipif(not NETNS, reason=f"needs partitions (netns: {WHY})")
def test_injected_stale_follower_read_is_caught(tmp_path):
    """KVSTORE_BUG=stale-follower-read: followers serve reads without ReadIndex. A partitioned
    follower keeps answering from its old state until its election timeout."""
    status, v = run(opts(tmp_path, nemesis=["partition"], time_s=20, bug="stale-follower-read", seed=11),
                    log=lambda *_: None)
    assert status == 1 and v["linearizable"]["valid"] is False, v.get("summary")
    bad = v["linearizable"]["invalid_keys"][0]
    assert bad["blocked_op"]["f"] == "read"


@SLOW
@pytest.mark.slow
@pytest.mark.skipif(not NETNS, reason=f"needs partitions (netns: {WHY})")
@pytest.mark.parametrize("bug", ["stale-follower-read", "ack-before-commit"])
def test_injected_bug_is_caught_long(tmp_path, bug):
    status, v = run(opts(tmp_path, nemesis=["partition"], time_s=30, bug=bug, seed=12), log=lambda *_: None)
    assert status == 1 and v["linearizable"]["valid"] is False, v.get("summary")
