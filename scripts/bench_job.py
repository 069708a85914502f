#!/usr/bin/env python3
"""CPU of the store per node job, as kvstore's write benchmark drives it.

    .venv/bin/python scripts/bench_job.py [--jobs 3000] [--groups-per-job 10] [--no-sync]
        [--runs 1] [--profile out.prof]

Opens a NodeStore the way kvstore/node.py does (WAL log, deferred commits, fsync on unless
--no-sync), bootstraps 64 groups as a fresh node does, then calls `write_turn` once per job.
A job models what `scripts/bench_cluster.py --workloads write` (64 clients over 64 buckets)
gives a leader: about 10 groups, each with ONE new entry (8-byte proposal id + an encoded
`Put` of a 100-byte value with a client session, ~30 % of them a `Batch` of two puts) and a
hard state whose commit moved to the group's previous entry, plus the apply of that previous
entry (its commands decoded by the node's `group_apply`). Building the input is not
measured; the figure is `time.process_time` (user + system CPU, so the fdatasync's kernel
time too) around `write_turn` alone, which includes the deferred LMDB commits (every 100 ms)
and WAL checkpoints it triggers. Prints CPU µs per job and per entry written.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import struct
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from raft.storage import bootstrap_snapshot  # noqa: E402
from raft.types import ConfState, Entry, EntryType, HardState  # noqa: E402
from kvstore.node import group_apply  # noqa: E402
from storage import Batch, GroupApply, GroupWrite, NodeStore, Put  # noqa: E402
from storage.codec import encode_command  # noqa: E402

GROUPS = 64
CLIENTS = 64
KEYS = 10_000
VALUE = b"v" * 100
_PID = struct.Struct(">Q")


class Workload:
    """Per group: its log's last index, the entries not applied yet; per client: session."""

    def __init__(self, rng: random.Random, batch_frac: float) -> None:
        self.rng = rng
        self.batch_frac = batch_frac
        self.term = 2
        self.last = {g: 1 for g in range(1, GROUPS + 1)}  # the bootstrap snapshot is index 1
        self.unapplied: dict[int, list[Entry]] = {g: [] for g in self.last}
        self.sessions = [[rng.getrandbits(63) or 1, 0] for _ in range(CLIENTS)]
        self.pid = 1 << 40
        self.ts = time.time_ns()

    def _put(self) -> Put:
        s = self.rng.choice(self.sessions)
        s[1] += 1
        self.ts += self.rng.randrange(1, 50_000)
        return Put(b"bench:%d" % self.rng.randrange(KEYS), VALUE, self.ts, s[0], s[1])

    def job(self, groups_per_job: int) -> tuple[list[GroupWrite], list[GroupApply], int]:
        writes, applies = [], []
        for gid in self.rng.sample(sorted(self.last), groups_per_job):
            # the previous entry is committed now: apply it, move the commit index
            done = self.unapplied[gid]
            if done:
                applies.append(group_apply(gid, gid, done))
            commit = self.last[gid]
            cmd = self._put()
            if self.rng.random() < self.batch_frac:
                cmd = Batch((cmd, self._put()))
            self.pid += 1
            e = Entry(self.term, self.last[gid] + 1, EntryType.NORMAL,
                      _PID.pack(self.pid) + encode_command(cmd))
            self.last[gid] = e.index
            self.unapplied[gid] = [e]
            writes.append(GroupWrite(gid, entries=[e],
                                     hard_state=HardState(self.term, gid % 3 + 1, commit)))
        return writes, applies, len(writes)




def open_store(path: str, sync: bool) -> NodeStore:
    store = NodeStore.open(path, sync=sync, log="wal")  # as Node.open: defer_commits default
    writes = []
    for gid in range(1, GROUPS + 1):
        cs = ConfState(voters=(1, 2, 3))
        writes.append(GroupWrite(gid, snapshot=bootstrap_snapshot(cs),
                                 hard_state=HardState(term=1, vote=0, commit=1), conf_state=cs))
    store.persist(writes)
    return store


def run(args, seed: int) -> tuple[float, float, int]:
    d = tempfile.mkdtemp(prefix="bench_job_", dir=args.dir)
    try:
        store = open_store(os.path.join(d, "store"), not args.no_sync)
        wl = Workload(random.Random(seed), args.batch_frac)
        # a new leader's first entries of the term: not measured
        store.write_turn([GroupWrite(g, hard_state=HardState(wl.term, g % 3 + 1, 1))
                          for g in wl.last], [])
        for _ in range(args.warmup):
            w, a, _n = wl.job(args.groups_per_job)
            store.write_turn(w, a)
        prof = None
        if args.profile:
            import cProfile
            prof = cProfile.Profile()
        cpu = 0.0
        entries = 0
        clock = time.process_time
        wall0 = time.perf_counter()
        for _ in range(args.jobs):
            w, a, n = wl.job(args.groups_per_job)
            if prof is not None:
                prof.enable()
            c0 = clock()
            store.write_turn(w, a)
            cpu += clock() - c0
            if prof is not None:
                prof.disable()
            entries += n
        wall = time.perf_counter() - wall0
        store.close()
        if prof is not None:
            prof.dump_stats(args.profile)
        return cpu, wall, entries
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--groups-per-job", type=int, default=10)
    ap.add_argument("--batch-frac", type=float, default=0.3,
                    help="share of entries holding a Batch of two puts (~1.3 commands/entry)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-sync", action="store_true", help="no fsync (takes it out of the CPU)")
    ap.add_argument("--dir", default=None, help="where to make the temporary store")
    ap.add_argument("--profile", default=None, help="write a cProfile of the measured calls")
    args = ap.parse_args()
    per_job = []
    for r in range(args.runs):
        cpu, wall, entries = run(args, args.seed + r)
        us_job = cpu / args.jobs * 1e6
        per_job.append(us_job)
        print(f"run {r + 1}: {args.jobs} jobs, {entries} entries, {wall:.2f} s wall: "
              f"{us_job:.1f} µs CPU/job, {cpu / entries * 1e6:.2f} µs CPU/entry"
              f"{' (no fsync)' if args.no_sync else ''}", flush=True)
    if args.runs > 1:
        per_job.sort()
        med = per_job[len(per_job) // 2]
        print(f"median: {med:.1f} µs CPU/job, {med / args.groups_per_job:.2f} µs CPU/entry")


if __name__ == "__main__":
    main()
