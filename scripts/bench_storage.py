#!/usr/bin/env python3
"""Benchmark of the LMDB storage engine against raw py-lmdb, measured in the same run.

    .venv/bin/python scripts/bench_storage.py [--seconds 1.0] [--dir /path] [--json]

Prints, for batches of 1, 16 and 128 entries spread over 64 groups: durable persist commits/s,
entries/s and CPU per commit, next to raw LMDB durable commits of the same puts measured in
alternating slices (ratio = store / raw throughput; CPU ratio = store / raw CPU); apply
commands/s; MVCC point reads/s and scan rows/s (next to raw gets / cursor rows); raw bare puts/s.
A benchmark, not a test: figures depend on the machine and on what else runs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import sys
import tempfile
import time

import lmdb

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from raft.types import Entry, HardState  # noqa: E402
from storage import GroupApply, GroupWrite, NodeStore, Put  # noqa: E402

GROUPS = 64
PAYLOAD = 100
_Q = struct.Struct(">Q")


class Meter:
    """Calls, wall time and CPU time of fn(prepare()) (the time spent in `prepare`, building
    the input, is not counted)."""

    def __init__(self, fn, prepare=None) -> None:
        self.fn, self.prepare = fn, prepare
        self.calls, self.wall, self.cpu = 0, 0.0, 0.0

    def run(self, seconds: float) -> "Meter":
        clock, cpu = time.perf_counter, time.thread_time
        end = self.wall + seconds
        while self.wall < end:
            arg = self.prepare() if self.prepare is not None else None
            t0, c0 = clock(), cpu()
            self.fn(arg) if self.prepare is not None else self.fn()
            self.cpu += cpu() - c0
            self.wall += clock() - t0
            self.calls += 1
        return self


def timed(fn, seconds: float, prepare=None) -> tuple[int, float]:
    m = Meter(fn, prepare).run(seconds)
    return m.calls, m.wall


def persist_meter(store: NodeStore, batch: int) -> Meter:
    nxt = {g: store.group(g).last_index() + 1 for g in range(1, GROUPS + 1)}
    data = os.urandom(PAYLOAD)
    rr = [0]

    def prepare():
        per: dict[int, list[Entry]] = {}
        for _ in range(batch):
            g = rr[0] % GROUPS + 1
            rr[0] += 1
            i = nxt[g]
            nxt[g] = i + 1
            per.setdefault(g, []).append(Entry(1, i, data=data))
        return [GroupWrite(g, entries=es, hard_state=HardState(1, 1, es[-1].index))
                for g, es in per.items()]

    return Meter(store.persist, prepare)


def raw_commit_meter(env, db, batch: int) -> Meter:
    nxt = [0]
    data = b"\x01" + os.urandom(PAYLOAD + 9)  # the same record size as an encoded entry

    def prepare():
        puts, groups = [], set()
        for _ in range(batch):
            i = nxt[0]
            nxt[0] = i + 1
            g = i % GROUPS + 1
            groups.add(g)
            puts.append((_Q.pack(g) + _Q.pack(i // GROUPS + 1), data))
        puts += [(_Q.pack(g) + b"h", b"\x01\x93\x01\x01\x01") for g in groups]  # hard states
        return puts

    def one(puts):
        with env.begin(write=True, db=db) as txn:
            for k, v in puts:
                txn.put(k, v)

    return Meter(one, prepare)


def compare_commits(store: NodeStore, env, db, batch: int, seconds: float) -> dict:
    """Ours and raw LMDB in alternating slices, so that load from other processes (fsync
    contention above all) hits both alike."""
    ours, raw = persist_meter(store, batch), raw_commit_meter(env, db, batch)
    for _ in range(10):
        ours.run(seconds / 10)
        raw.run(seconds / 10)

    def figures(m: Meter) -> dict:
        return {"commits_per_s": m.calls / m.wall, "entries_per_s": m.calls * batch / m.wall,
                "cpu_us_per_commit": m.cpu / m.calls * 1e6}

    return {"store": figures(ours), "raw": figures(raw),
            "ratio": (ours.calls / ours.wall) / (raw.calls / raw.wall),
            "cpu_ratio": (ours.cpu / ours.calls) / (raw.cpu / raw.calls)}


def bench_apply(store: NodeStore, env, db, seconds: float, keys: int) -> dict:
    """Durable apply of 128 random-key puts per transaction, alternating with raw LMDB
    durable commits of 128 random-key puts of the same size."""
    applied = {g: store.applied_index(g) for g in range(1, GROUPS + 1)}
    rng = random.Random(1)
    value = os.urandom(PAYLOAD)

    def prepare():
        batch = []
        for g in range(1, GROUPS + 1, 32):  # 128 commands over 2 groups' buckets
            cmds = [Put(b"user%08d" % rng.randrange(keys), value, 0) for _ in range(64)]
            applied[g] += len(cmds)
            batch.append(GroupApply(g, g, applied[g], cmds))
        return batch

    def raw_prepare():
        return [(struct.pack(">I", rng.randrange(2)) + b"user%08d\x00\x01" % rng.randrange(keys)
                 + os.urandom(8), b"\x01" + value) for _ in range(128)]

    def raw_one(puts):
        with env.begin(write=True, db=db) as txn:
            for k, v in puts:
                txn.put(k, v)

    ours, raw = Meter(store.apply, prepare), Meter(raw_one, raw_prepare)
    for _ in range(10):
        ours.run(seconds / 10)
        raw.run(seconds / 10)
    return {"commits_per_s": ours.calls / ours.wall, "commands_per_s": ours.calls * 128 / ours.wall,
            "cpu_us_per_commit": ours.cpu / ours.calls * 1e6,
            "raw_commits_per_s": raw.calls / raw.wall,
            "raw_cpu_us_per_commit": raw.cpu / raw.calls * 1e6}


def fill_bucket(store: NodeStore, keys: int, versions: int) -> None:
    value = os.urandom(PAYLOAD)
    idx = store.applied_index(999)
    for _ in range(versions):
        for lo in range(0, keys, 5000):
            cmds = [Put(b"user%08d" % k, value, 0) for k in range(lo, min(keys, lo + 5000))]
            idx += len(cmds)
            store.apply([GroupApply(999, 999, idx, cmds)])


def bench_reads(store: NodeStore, env, db, keys: int, seconds: float) -> dict:
    """Point reads and full scans, ours and raw (one read transaction per get, a C cursor over
    the latest values for the scan), in alternating slices."""
    rng = random.Random(2)
    ks = [b"user%08d" % rng.randrange(keys) for _ in range(4096)]
    pos = [0]

    def get():
        store.get(999, ks[pos[0] & 4095])
        pos[0] += 1

    def raw_get():
        with env.begin(db=db) as txn:
            txn.get(ks[pos[0] & 4095])
        pos[0] += 1

    rows = [0, 0]

    def scan():
        after = None
        while True:
            items, more = store.scan(999, b"user", start_after=after, limit=1000)
            rows[0] += len(items)
            if not more:
                return
            after = items[-1][0]

    def raw_scan():
        with env.begin(db=db) as txn:
            for _ in txn.cursor():
                rows[1] += 1

    meters = [Meter(f) for f in (get, raw_get, scan, raw_scan)]
    for _ in range(10):
        for m in meters:
            m.run(seconds / 10)
    g, rg, sc, rsc = meters
    return {"gets_per_s": g.calls / g.wall, "raw_gets_per_s": rg.calls / rg.wall,
            "get_cpu_us": g.cpu / g.calls * 1e6, "raw_get_cpu_us": rg.cpu / rg.calls * 1e6,
            "scan_rows_per_s": rows[0] / sc.wall, "raw_scan_rows_per_s": rows[1] / rsc.wall}


def bench_raw_put(env, db, seconds: float) -> float:
    data = os.urandom(PAYLOAD)
    txn = env.begin(write=True, db=db)
    i = [0]

    def put():
        txn.put(_Q.pack(1) + _Q.pack(i[0]), data)
        i[0] += 1

    n, dt = timed(put, seconds)
    txn.abort()
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    ap.add_argument("--dir", default=None, help="where to create the stores (default: tmp)")
    ap.add_argument("--keys", type=int, default=20_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="bench-storage-", dir=args.dir)
    out: dict = {"groups": GROUPS, "payload_bytes": PAYLOAD}
    try:
        store = NodeStore.open(os.path.join(root, "store"), map_size=1 << 30)
        env = lmdb.open(os.path.join(root, "raw"), map_size=1 << 30, max_dbs=4)
        raw_log, raw_data = env.open_db(b"log"), env.open_db(b"data")
        raw_mvcc = env.open_db(b"mvcc")
        for batch in (1, 16, 128):
            out[f"commit_{batch}"] = compare_commits(store, env, raw_log, batch, 2 * args.seconds)
        out["apply_128"] = bench_apply(store, env, raw_mvcc, 2 * args.seconds, args.keys)
        fill_bucket(store, args.keys, 3)
        with env.begin(write=True, db=raw_data) as txn:
            v = os.urandom(PAYLOAD)
            for k in range(args.keys):
                txn.put(b"user%08d" % k, v)
        out["reads"] = bench_reads(store, env, raw_data, args.keys, 2 * args.seconds)
        out["raw_bare_puts_per_s"] = bench_raw_put(env, raw_log, args.seconds)
        store.close()
        env.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{'durable persist, 64 groups':28} {'commits/s':>9} {'entries/s':>9} "
          f"{'raw commits/s':>13} {'ratio':>5} {'CPU us/commit':>13} {'raw CPU':>7} "
          f"{'ratio':>5}")
    for batch in (1, 16, 128):
        c = out[f"commit_{batch}"]
        o, r = c["store"], c["raw"]
        print(f"  batch of {batch:<3} entries{'':8} {o['commits_per_s']:>9.0f} "
              f"{o['entries_per_s']:>9.0f} {r['commits_per_s']:>13.0f} {c['ratio']:>5.2f} "
              f"{o['cpu_us_per_commit']:>13.0f} {r['cpu_us_per_commit']:>7.0f} "
              f"{c['cpu_ratio']:>5.2f}")
    a = out["apply_128"]
    print(f"apply, 128 random-key puts per commit: {a['commits_per_s']:.0f} commits/s, "
          f"{a['commands_per_s']:.0f} commands/s, {a['cpu_us_per_commit']:.0f} us CPU/commit "
          f"(raw LMDB, same puts: {a['raw_commits_per_s']:.0f} commits/s, "
          f"{a['raw_cpu_us_per_commit']:.0f} us CPU/commit)")
    r = out["reads"]
    print(f"MVCC point reads: {r['gets_per_s']:.0f}/s (raw get, own read txn: "
          f"{r['raw_gets_per_s']:.0f}/s, ratio {r['gets_per_s'] / r['raw_gets_per_s']:.2f}); "
          f"CPU per get {r['get_cpu_us']:.1f} us (raw {r['raw_get_cpu_us']:.1f} us)")
    print(f"MVCC scan: {r['scan_rows_per_s']:.0f} rows/s over {args.keys} keys x 3 versions "
          f"(raw cursor over {args.keys} keys: {r['raw_scan_rows_per_s']:.0f} rows/s)")
    print(f"raw bare put inside one txn: {out['raw_bare_puts_per_s']:.0f}/s")


if __name__ == "__main__":
    main()
