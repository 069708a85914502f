"""The comparison's table from synthetic reports (no store is started here)."""

import argparse

from kvstore.bench.compare import markdown


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
