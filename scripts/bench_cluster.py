#!/usr/bin/env python3
"""Throughput and latency of a local 3-node cluster (fsync on), driven by the trio AsyncClient.

    .venv/bin/python scripts/bench_cluster.py [--seconds 10] [--concurrency 64] [--nodes 3]
        [--buckets 64] [--value-bytes 100] [--keys 10000] [--clients 1] [--profile DIR]

Runs two workloads against the same cluster: write-only, then 95% reads / 5% writes
(linearizable reads). `concurrency` tasks share `--clients` AsyncClient(s) (one connection per
node each, requests pipelined), so many requests travel per frame. Prints ops/s and latency
percentiles. `--profile DIR` runs the nodes under py-spy and writes collapsed stacks (py-spy raw format, only samples holding the GIL: a CPU view) there.
This is a benchmark, not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time

import trio

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from client import AsyncClient  # noqa: E402
from client.errors import KVError  # noqa: E402
from kvstore.testing import LocalCluster  # noqa: E402


def proc_cpu_s(pid: int) -> float:
    """user + system CPU seconds of a process (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return 0.0


def pct(sorted_vals: list[float], p: float) -> float:
    if not sorted_vals:
        return float("nan")
    return sorted_vals[min(len(sorted_vals) - 1, int(p / 100 * len(sorted_vals)))]


async def run_workload(addrs, seconds, concurrency, clients, read_frac, keys, value):
    lat: list[float] = []
    errors = 0
    done_ops = 0
    stop_at = 0.0

    async def worker(c: AsyncClient, wid: int):
        nonlocal errors, done_ops
        rng = random.Random(wid)
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            k = b"bench:%d" % rng.randrange(keys)
            try:
                if rng.random() < read_frac:
                    await c.get(k)
                else:
                    await c.put(k, value)
            except KVError:
                errors += 1
                continue
            t = time.perf_counter()
            lat.append(t - now)
            done_ops += 1

    async with contextlib.AsyncExitStack() as stack:  # clients close in reverse order
        cs = [await stack.enter_async_context(AsyncClient(addrs, timeout=10.0, max_inflight=4096))
              for _ in range(clients)]
        # warm up: the map and connections
        for c in cs:
            for i in range(64):
                await c.put(b"bench:%d" % i, value)
        lat.clear()
        start = time.perf_counter()
        cpu0 = time.process_time()
        stop_at = start + seconds
        async with trio.open_nursery() as n:
            for w in range(concurrency):
                n.start_soon(worker, cs[w % clients], w)
        elapsed = time.perf_counter() - start
        client_cpu = time.process_time() - cpu0
    lat.sort()
    return {
        "ops": done_ops,
        "ops_per_s": done_ops / elapsed,
        "p50_ms": pct(lat, 50) * 1000,
        "p99_ms": pct(lat, 99) * 1000,
        "max_ms": (lat[-1] * 1000) if lat else float("nan"),
        "errors": errors,
        "client_cpu": client_cpu / elapsed,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--buckets", type=int, default=64)
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--keys", type=int, default=10_000)
    ap.add_argument("--workloads", default="write,read95")
    ap.add_argument("--no-fsync", action="store_true", help="for comparison only (unsafe)")
    ap.add_argument("--node-args", default="", help="extra `kvstore serve` flags, one string")
    ap.add_argument("--profile", default=None, help="directory for py-spy flame graphs")
    args = ap.parse_args()
    extra = (["--no-fsync"] if args.no_fsync else []) + args.node_args.split()
    value = os.urandom(args.value_bytes // 2).hex().encode()[: args.value_bytes]
    with tempfile.TemporaryDirectory(prefix="kvbench-") as d, \
            LocalCluster(args.nodes, buckets=args.buckets, base_dir=d, extra_args=extra) as c:
        c.start(wait_s=120)
        print(f"cluster: {args.nodes} nodes, {args.buckets} buckets, fsync "
              f"{'OFF' if args.no_fsync else 'on'}; {args.concurrency} concurrent ops on "
              f"{args.clients} AsyncClient(s); {args.value_bytes}-byte values; {args.seconds:.0f} s each")
        for wl in args.workloads.split(","):
            read_frac = {"write": 0.0, "read95": 0.95, "read": 1.0}[wl]
            spies = []
            if args.profile:
                os.makedirs(args.profile, exist_ok=True)
                spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
                for i in c.ids:
                    out = os.path.join(os.path.abspath(args.profile), f"{wl}-node{i}.txt")
                    spies.append(subprocess.Popen(
                        [spy, "record", "--gil", "-f", "raw", "-o", out, "-r", os.environ.get("KVSTORE_PROFILE_RATE", "100"), "-d",
                         str(int(args.seconds) + 3), "-p", str(c.procs[i].pid)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            cpu0 = {i: proc_cpu_s(c.procs[i].pid) for i in c.ids}
            r = trio.run(run_workload, c.addrs, args.seconds, args.concurrency, args.clients,
                         read_frac, args.keys, value)
            node_cpu = sum(proc_cpu_s(c.procs[i].pid) - cpu0[i] for i in c.ids)
            print(f"{wl:>7}: {r['ops_per_s']:8.0f} ops/s   p50 {r['p50_ms']:6.2f} ms   "
                  f"p99 {r['p99_ms']:6.2f} ms   max {r['max_ms']:7.1f} ms   errors {r['errors']}   "
                  f"(load generator CPU {100 * r['client_cpu']:.0f}%; nodes' CPU "
                  f"{node_cpu * 1e6 / max(1, r['ops']):.0f} us/op)",
                  flush=True)
            for p in spies:
                p.wait(timeout=60)
        for i in c.ids:
            full = c.status(i)
            st = full["stats"]
            ws = full.get("store") or {}
            if ws.get("commits"):
                # WAL mode defers applies into one LMDB transaction: many store writes build
                # into each (synced) LMDB commit
                writes = max(ws.get("writes", 0), ws["commits"])
                print(f"node {i} store: {writes} store writes, {ws['commits']} LMDB commits; "
                      f"building {ws['build_s'] / writes * 1e6:.0f} us per write, "
                      f"{ws['commit_s'] / ws['commits'] * 1e6:.0f} us per LMDB commit")
            print(f"node {i}: turns {st['turns']} (Readies per turn {st['readies'] / max(1, st['turns']):.1f}), "
                  f"storage jobs with a persist {st['persists']}, proposed {st['proposed']}, "
                  f"applied entries {st['applied_entries']}; storage jobs took {st['storage_ms'] / 1000:.1f} s")
            if st.get("writes_timed"):
                n = st["writes_timed"]
                print(f"   a write on its leader, mean ms: arrival to proposal "
                      f"{st['write_queue_s'] / n * 1000:.1f}, to commit {st['write_replicate_s'] / n * 1000:.1f}, "
                      f"to reply {st['write_apply_s'] / n * 1000:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
