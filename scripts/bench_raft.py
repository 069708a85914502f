#!/usr/bin/env python3
"""CPU cost of the Raft core: three in-process nodes, instant delivery, no I/O.

Each round the leader gets `batch` proposals; the cluster is then driven (Ready, persist to
MemoryStorage, deliver, apply, advance) until every node has applied them. Prints committed-
and-applied entries per second and CPU microseconds per entry (all three nodes together,
time.process_time), for batches of 1, 16 and 128.

    .venv/bin/python scripts/bench_raft.py [--entries 20000] [--payload 64] [--profile 128]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import time
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from raft import Config, ConfState, MemoryStorage, RawNode, Role  # noqa: E402


class Cluster:
    def __init__(self, size: int = 3) -> None:
        ids = tuple(range(1, size + 1))
        self.storages = {}
        self.nodes = {}
        for node in ids:
            storage = MemoryStorage()
            storage.bootstrap(ConfState(voters=ids))
            self.storages[node] = storage
            self.nodes[node] = RawNode(Config(node, rng=random.Random(node)), storage)
        self.applied = dict.fromkeys(ids, 0)
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
                    rn.advance(rd)
            if not queue and not busy:
                return
            while queue:
                m = queue.popleft()
                nodes[m.to].step(m)
        raise AssertionError("cluster did not quiesce")


def bench(batch: int, entries: int, payload: int) -> tuple[float, float, int]:
    cluster = Cluster()
    leader = cluster.nodes[1]
    data = b"x" * payload
    rounds = max(1, entries // batch)
    base = dict(cluster.applied)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        for _ in range(batch):
            leader.propose(data)
        cluster.run()
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    done = rounds * batch
    for node, count in cluster.applied.items():
        assert count - base[node] == done, (node, count - base[node], done)
    return done / wall, cpu / done * 1e6, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entries", type=int, default=20000, help="entries per batch size")
    ap.add_argument("--payload", type=int, default=64, help="bytes per entry")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 16, 128])
    ap.add_argument("--profile", type=int, metavar="BATCH", help="cProfile this batch size")
    args = ap.parse_args()
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        bench(args.profile, args.entries, args.payload)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    print(f"{'batch':>6} {'entries':>8} {'entries/s':>11} {'CPU us/entry':>13}")
    for batch in args.batches:
        rate, cpu_us, done = bench(batch, args.entries, args.payload)
        print(f"{batch:>6} {done:>8} {rate:>11.0f} {cpu_us:>13.2f}")


if __name__ == "__main__":
    main()
