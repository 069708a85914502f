"""Child process of test_crash.py: writes batches like a node until it is killed.

Each batch appends entries to every group (one transaction, one fsync), prints `P <index>`,
then applies them to every group's bucket (one transaction), prints `A <index>`. A line is
printed only after the call returned, i.e. once the batch is durable. On start, entries that
were persisted but not applied are applied first (what a node does after a crash).
The command of entry i of group g depends only on (g, i), so the parent can rebuild the
expected state: see `command`.

Mode "turn" (third argument) does what a node with `write_turn` does: each batch persists new
entries AND applies a random prefix of the not yet applied ones (possibly including the
entries persisted by the same call) in one `write_turn`, then prints `P <index>` and
`A <applied index>`.

A fourth argument "wal" opens the store with log="wal" and small WAL segments (rotation and
segment deletion happen within a run), deferred LMDB commits, and short (random) bounds for
committing them and for checkpoints, so the kill finds every stage: deferred writes pending,
a commit or a checkpoint's segment deletion under way.
"""

from __future__ import annotations

import random
import sys

from raft.types import Entry, HardState
from storage import Delete, GroupApply, GroupWrite, NodeStore, Put
from storage.codec import decode_command, encode_command

GROUPS = 6
KEYS = 40
WAL_SEGMENT_BYTES = 32 << 10


def open_store(path: str, log: str = "lmdb", sync: bool = True) -> NodeStore:
    return NodeStore.open(path, sync=sync, log=log,
                          wal_segment_bytes=WAL_SEGMENT_BYTES if log == "wal" else None)


def command(g: int, i: int):
    key = b"k%d" % (i * 7 % KEYS)
    if i % 5 == 0:
        return Delete(key, ts=i * 10, session=g, seq=i)
    return Put(key, b"%d:%d" % (g, i) * (1 + i % 3), ts=i * 10, session=g, seq=i)


def apply_range(store: NodeStore, lo: int, hi: int) -> None:
    batch = []
    for g in range(1, GROUPS + 1):
        ents = store.group(g).entries(lo, hi + 1)
        batch.append(GroupApply(g, g, hi, [decode_command(e.data) for e in ents]))
    store.apply(batch)


def group_applies(lo: int, hi: int) -> list[GroupApply]:
    return [GroupApply(g, g, hi, [command(g, i) for i in range(lo, hi + 1)])
            for g in range(1, GROUPS + 1)]


def main(path: str, seed: int, mode: str = "split", log: str = "lmdb") -> None:
    rng = random.Random(seed)
    if log == "wal":
        from storage import store as store_module, wal_store

        store_module.DEFER_MAX_S = rng.choice([0.001, 0.01, 0.1])
        wal_store.CHECKPOINT_S = rng.choice([0.005, 0.05, 0.5])
    store = open_store(path, log)
    applied = store.applied_index(1)
    last = store.group(1).last_index()
    if last > applied and mode != "turn":
        apply_range(store, applied + 1, last)
    print(f"R {applied} {last}", flush=True)
    n = last
    while True:
        k = rng.randint(1, 6)
        hi = n + k
        writes = [
            GroupWrite(g, entries=[Entry(1, i, data=encode_command(command(g, i)))
                                   for i in range(n + 1, hi + 1)],
                       hard_state=HardState(1, 0, hi))
            for g in range(1, GROUPS + 1)]
        if mode == "turn":
            upto = rng.randint(applied, hi)
            store.write_turn(writes, group_applies(applied + 1, upto) if upto > applied else [])
            print(f"P {hi}", flush=True)
            print(f"A {upto}", flush=True)
            applied, n = upto, hi
            if rng.random() < 0.05 and applied > 1:
                g = rng.randint(1, GROUPS)
                store.compact(g, max(1, applied - 10))  # only applied entries
                store.gc(g, (applied - 30) * 10, max_keys=rng.randint(1, 50))
            continue
        store.persist(writes)
        print(f"P {hi}", flush=True)
        apply_range(store, n + 1, hi)
        print(f"A {hi}", flush=True)
        n = hi
        if rng.random() < 0.05:
            g = rng.randint(1, GROUPS)
            store.compact(g, max(1, n - 10))
            store.gc(g, (n - 30) * 10, max_keys=rng.randint(1, 50))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:5])
