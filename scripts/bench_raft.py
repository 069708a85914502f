#!/usr/bin/env python3
"""CPU cost of the Raft core: three in-process nodes, instant delivery, no I/O.

Each round the leader gets `batch` proposals; the cluster is then driven (Ready, persist to
MemoryStorage, deliver, apply, advance) until every node has applied them. Prints committed-
and-applied entries per second and CPU microseconds per entry (all three nodes together,
time.process_time), for batches of 1, 16 and 128.

    .venv/bin/python scripts/bench_raft.py [--entries 20000] [--payload 64] [--profile 128]
    .venv/bin/python scripts/bench_raft.py --node-config --batches 1 --repeat 3

`--node-config` runs the nodes with the knobs kvstore's node sets (see `node_config`):
no commit broadcast, quiet heartbeats, lean reads. `--repeat N` runs each batch size N times
and prints every run and the median. `--reads` measures ReadIndex reads on the leader instead
of writes (`batch` reads per heartbeat round; CPU per read served).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import statistics
import sys
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raft import Config, ConfState, MemoryStorage, RawNode, Role  # noqa: E402


def node_config(node: int) -> Config:
    """The Config kvstore's node builds for a group (kvstore/node.py, `raft.Config(`)."""
    return Config(node, election_tick=10, heartbeat_tick=1, rng=random.Random(node),
                  max_size_per_msg=1 << 20, max_inflight_msgs=256, bcast_commit=False,
                  quiet_heartbeats=True, lean_reads=True)


def default_config(node: int) -> Config:
    return Config(node, rng=random.Random(node))


class Cluster:
    def __init__(self, size: int = 3, make_config=default_config) -> None:
        ids = tuple(range(1, size + 1))
        self.storages = {}
        self.nodes = {}
        for node in ids:
            storage = MemoryStorage()
            storage.bootstrap(ConfState(voters=ids))
            self.storages[node] = storage
            self.nodes[node] = RawNode(make_config(node), storage)
        self.applied = dict.fromkeys(ids, 0)
        self.reads = 0  # read states handed out (by any node)
        self.queue: deque = deque()
        self.nodes[1].campaign()
        self.run()
        assert self.nodes[1].role == Role.LEADER

    def run(self) -> None:
        nodes, storages, queue, applied = self.nodes, self.storages, self.queue, self.applied
        for _ in range(1_000_000):
            busy = False
            for node, rn in nodes.items():
                if rn.has_ready():
                    busy = True
                    rd = rn.ready()
                    queue.extend(rd.messages)
                    storages[node].persist_ready(rd)
                    queue.extend(rd.persisted_messages)
                    applied[node] += len(rd.committed_entries)
                    if rd.read_states:
                        self.reads += len(rd.read_states)
                    rn.advance(rd)
            if not queue and not busy:
                return
            while queue:
                m = queue.popleft()
                nodes[m.to].step(m)
        raise AssertionError("cluster did not quiesce")

    def settle(self) -> None:
        """Let followers learn the leader's commit index (without bcast_commit they learn it
        from the next append or heartbeat): heartbeat rounds until every node applied all."""
        leader = self.nodes[1]
        for _ in range(3):
            self.run()
            if len(set(self.applied.values())) == 1:
                return
            leader.tick()  # heartbeat_tick=1: a heartbeat round (quiet skips a fresh append)
        raise AssertionError(f"followers did not catch up: {self.applied}")


def bench(batch: int, entries: int, payload: int,
          make_config=default_config) -> tuple[float, float, int]:
    cluster = Cluster(make_config=make_config)
    leader = cluster.nodes[1]
    data = b"x" * payload
    rounds = max(1, entries // batch)
    cluster.settle()
    base = dict(cluster.applied)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        for _ in range(batch):
            leader.propose(data)
        cluster.run()
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    done = rounds * batch
    cluster.settle()
    for node, count in cluster.applied.items():
        assert count - base[node] == done, (node, count - base[node], done)
    return done / wall, cpu / done * 1e6, done


def bench_reads(batch: int, reads: int, make_config=default_config) -> tuple[float, float, int]:
    """ReadIndex reads on the leader, `batch` at a time (one heartbeat round confirms them)."""
    cluster = Cluster(make_config=make_config)
    leader = cluster.nodes[1]
    leader.propose(b"x")  # a committed entry of the leader's term (reads wait for one)
    cluster.settle()
    rounds = max(1, reads // batch)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    ctx = 0
    for _ in range(rounds):
        for _ in range(batch):
            ctx += 1
            leader.read_index(ctx.to_bytes(8, "big"))
        cluster.run()
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    done = rounds * batch
    assert cluster.reads == done, (cluster.reads, done)
    return done / wall, cpu / done * 1e6, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=20000, help="entries per batch size")
    ap.add_argument("--payload", type=int, default=64, help="bytes per entry")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 128])
    ap.add_argument("--profile", type=int, metavar="BATCH", help="cProfile this batch size")
    ap.add_argument("--node-config", action="store_true",
                    help="kvstore node's Config (bcast_commit off, quiet heartbeats, lean reads)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per batch size (median shown)")
    ap.add_argument("--reads", action="store_true", help="ReadIndex reads instead of writes")
    args = ap.parse_args()
    make_config = node_config if args.node_config else default_config
    print(f"config: {'node' if args.node_config else 'default'}"
          f"{'; ReadIndex reads on the leader' if args.reads else ''}")

    def one(batch: int) -> tuple[float, float, int]:
        if args.reads:
            return bench_reads(batch, args.entries, make_config)
        return bench(batch, args.entries, args.payload, make_config)

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        one(args.profile)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)
        return
    unit, units = ("read", "reads") if args.reads else ("entry", "entries")
    print(f"{'batch':>6} {units:>8} {units + '/s':>11} {'CPU us/' + unit:>13}")
    for batch in args.batches:
        cpus = []
        for _ in range(max(1, args.repeat)):
            rate, cpu_us, done = one(batch)
            cpus.append(cpu_us)
            print(f"{batch:>6} {done:>8} {rate:>11.0f} {cpu_us:>13.2f}")
        if len(cpus) > 1:
            print(f"{batch:>6} median CPU us/{unit} {statistics.median(cpus):.2f}")


if __name__ == "__main__":
    main()
