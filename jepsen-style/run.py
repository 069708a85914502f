#!/usr/bin/env python3
"""Jepsen-style fault injection against a real kvstore cluster.

    jepsen-style/run.py --nodes 5 --time 60 --nemesis kill,pause,partition --workload register --seed 1
    jepsen-style/run.py --check jepsen-style/runs/<dir>   # check a recorded history again
    jepsen-style/run.py --cleanup      # remove namespaces/bridges/processes left by a killed run

Exit status: 0 every checker passed, 1 a checker found a violation, 2 unknown (checker budget
ran out), 3 the run could not be carried out. See README.md, "Fault injection".
"""

from __future__ import annotations

import argparse
import json
import pathlib
import random
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from jepsen import hosts, nemesis  # noqa: E402
from jepsen.runner import Options, recheck, run  # noqa: E402


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=5)
    p.add_argument("--time", type=float, default=60.0, help="seconds of workload under faults")
    p.add_argument("--nemesis", default="kill,pause,partition",
                   help=f"comma-separated families from {','.join(nemesis.FAMILIES)}, or 'all' or 'none'")
    p.add_argument("--workload", choices=["register", "set"], default="register")
    p.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--rate", type=float, default=100.0, help="target ops/s over all workers")
    p.add_argument("--keys", type=int, default=16)
    p.add_argument("--buckets", type=int, default=64)
    p.add_argument("--replication", type=int, default=3)
    p.add_argument("--hosts", choices=["auto", "netns", "loopback"], default="auto")
    p.add_argument("--runs-dir", default=None)
    p.add_argument("--bug", default=None, help="KVSTORE_BUG for the nodes (testing the checker only)")
    p.add_argument("--client-timeout", type=float, default=2.0)
    p.add_argument("--check", metavar="RUN_DIR", default=None,
                   help="check RUN_DIR/history.jsonl again (no cluster) and exit")
    p.add_argument("--budget", type=int, default=2_000_000, help="linearizability search steps per key")
    p.add_argument("--cleanup", action="store_true", help="remove leftovers of dead runs and exit")
    p.add_argument("--force", action="store_true", help="with --cleanup: also slots whose lock is held")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse(sys.argv[1:] if argv is None else argv)
    if a.cleanup:
        done = hosts.cleanup_stale(force=a.force)
        print(f"cleaned slots {done}" if done else "nothing to clean")
        return 0
    if a.check:
        status, result = recheck(pathlib.Path(a.check), a.budget)
        brief = {k: v for k, v in result.items() if k not in ("invalid_keys", "unknown_keys")}
        brief.update(invalid_keys=[k["key"] for k in result.get("invalid_keys", [])],
                     unknown_keys=[k["key"] for k in result.get("unknown_keys", [])])
        print(json.dumps(brief, default=str))
        for bad in result.get("invalid_keys", [])[:3]:
            print(json.dumps(bad, default=str))
        return status
    fams = {"all": list(nemesis.FAMILIES), "none": []}.get(a.nemesis)
    if fams is None:
        fams = [f.strip() for f in a.nemesis.split(",") if f.strip()]
    unknown = [f for f in fams if f not in nemesis.FAMILIES]
    if unknown:
        print(f"unknown nemesis {unknown}; known: {', '.join(nemesis.FAMILIES)}"
              + (" (membership changes are not supported by the node yet)" if "membership" in unknown else ""),
              file=sys.stderr)
        return 3
    if a.nodes < 1 or a.time <= 0 or a.concurrency < 1 or a.keys < 1:
        print("--nodes, --time, --concurrency and --keys must be positive", file=sys.stderr)
        return 3
    seed = a.seed if a.seed is not None else random.randrange(1 << 31)
    opts = Options(nodes=a.nodes, time_s=a.time, lin_budget_per_key=a.budget, nemesis=fams, workload=a.workload, seed=seed,
                   concurrency=a.concurrency, rate=a.rate, keys=a.keys, buckets=a.buckets,
                   replication=a.replication, hosts=a.hosts, bug=a.bug, client_timeout_s=a.client_timeout)
    if a.runs_dir:
        opts.runs_dir = a.runs_dir
    try:
        status, _ = run(opts)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # SIGTERM arrives as an exception; everything is torn down by now
        print(f"stopped: {exc}", file=sys.stderr)
        return 143
    return status


if __name__ == "__main__":
    sys.exit(main())
