"""The comparison's table from synthetic reports (no store is started here)."""

import argparse

from kvstore.bench.compare import _median, markdown


def _report(name, ops, p99, durability="d"):
    return {"throughput_ops_s": ops, "errors_total": 0, "schedule": {"missed": None}, "warnings": [],
            "driver": {"name": name, "durability": durability},
            "all": {"latency_ms": {"p50": p99 / 3, "p99": p99}}}


def test_markdown_table_has_ratios_and_durability():
    results = [
        {"system": "kvstore", "workload": "W", "report": _report("kvstore", 6000.0, 20.0, "majority fsync")},
        {"system": "etcd", "workload": "W", "report": _report("etcd", 3000.0, 40.0, "wal fsync")},
        {"system": "redis", "workload": "E", "skipped": "no ordered range scan"},
    ]
    args = argparse.Namespace(concurrency=64, value_size=100, records=1000, rate=0, duration=10, warmup=3,
                              consistency="linearizable", distribution=None)
    md = markdown(results, args, "kvstore bench compare --workloads W")
    row = next(line for line in md.splitlines() if line.startswith("| W | etcd |"))
    assert "| 3000 |" in row and "2.00×" in row and "0.50×" in row
    assert "| E | redis | n/a (no ordered range scan)" in md
    assert "| kvstore | majority fsync |" in md and "| etcd | wal fsync |" in md
    assert md.startswith("Command: `kvstore bench compare --workloads W`")


def test_rounds_are_combined_into_medians_with_a_range():
    results = [{"system": "kvstore", "workload": "W", "round": i, "report": _report("kvstore", ops, p99)}
               for i, (ops, p99) in enumerate([(1000.0, 30.0), (3000.0, 10.0), (2000.0, 20.0)])]
    results += [{"system": "etcd", "workload": "W", "round": i, "report": _report("etcd", 1000.0, 40.0)}
                for i in range(3)]
    args = argparse.Namespace(concurrency=64, value_size=100, records=1000, rate=0, duration=10, warmup=3,
                              consistency="linearizable", distribution=None)
    md = markdown(results, args, "x")
    assert "median of 3 rounds" in md
    row = next(line for line in md.splitlines() if line.startswith("| W | kvstore |"))
    assert "| 2000 (1000–3000) |" in row and "| 20.0 |" in row
    assert _median([1.0, 4.0]) == 2.5
    row = next(line for line in md.splitlines() if line.startswith("| W | etcd |"))
    assert "2.00×" in row and "0.50×" in row


def test_plot_from_rounds(tmp_path):
    import pytest

    pytest.importorskip("matplotlib")
    from kvstore.bench.compare import plot

    results = [{"system": s, "workload": w, "round": i, "report": _report(s, 1000.0 * (i + 1), 20.0)}
               for s in ("kvstore", "etcd") for w in ("W", "B") for i in range(2)]
    plot(results, str(tmp_path / "c.png"))
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_sigterm_stops_the_stores_it_started(tmp_path):
    """`kill` of a running comparison (SIGTERM) stops the store processes it started, like
    Ctrl-C: Python's default handler would exit at once and leave them running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, TMPDIR=str(tmp_path))  # its store directories go under tmp_path
    proc = subprocess.Popen(
        [sys.executable, "-m", "kvstore", "bench", "compare", "--systems", "kvstore",
         "--workloads", "W", "--duration", "60", "--warmup", "1", "--records", "100",
         "--concurrency", "2", "--out-dir", str(tmp_path / "out")],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)

    def stores() -> list[str]:
        out = subprocess.run(["pgrep", "-f", str(tmp_path)], capture_output=True, text=True)
        return [p for p in out.stdout.split() if int(p) != proc.pid]

    try:
        deadline = time.monotonic() + 60
        for line in proc.stderr:  # wait until the cluster is up and the load runs
            if "== kvstore: up" in line or time.monotonic() > deadline:
                break
        assert stores(), "the kvstore nodes should be running"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) != 0
        deadline = time.monotonic() + 15
        while stores() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not stores(), "compare left store processes running"
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in stores():
            os.kill(int(pid), signal.SIGKILL)
