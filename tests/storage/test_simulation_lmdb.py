"""A share of the Raft simulator's seeded schedules, with every node's log in LMDB.

Crashes in the simulator close and reopen the node's store (`reopen`), so a restarted node
rebuilds itself from what LMDB persisted."""

from __future__ import annotations

import collections
import os

import pytest

from raft.simulation import run_seed
from storage import NodeStore
from storage.raft_adapter import LmdbRaftStorage

SEEDS = range(int(os.environ.get("KVSTORE_LMDB_SIM_SEEDS", "40")))


@pytest.fixture(params=["lmdb", "wal"])
def lmdb_factory(tmp_path, request):
    opened: list[NodeStore] = []
    runs = iter(range(1 << 30))

    def factory(node_id: int) -> LmdbRaftStorage:
        s = NodeStore.open(tmp_path / f"run{next(runs)}-n{node_id}", sync=False,
                           log=request.param)
        opened.append(s)
        return LmdbRaftStorage(s, 1)

    def reopen(node_id: int, storage: LmdbRaftStorage) -> LmdbRaftStorage:
        path = storage.store.path
        storage.store.close()
        s = NodeStore.open(path, sync=False, log=request.param)
        opened.append(s)
        return LmdbRaftStorage(s, 1)

    yield factory, reopen
    for s in opened:
        s.close()


def test_seeded_schedules_over_lmdb(lmdb_factory):
    factory, reopen = lmdb_factory
    total: collections.Counter = collections.Counter()
    for seed in SEEDS:  # a SimulationFailure names its seed
        total += run_seed(1000 + seed, nodes=3, steps=300, storage_factory=factory,
                          reopen=reopen).stats
    # the schedules did exercise what matters for storage
    assert total["crashes"] > 0 and total["restarts"] > 0
    assert total["compactions"] > 0 and total["snapshots_installed"] > 0
    assert total["applied"] > 1000


def test_five_nodes_over_lmdb(lmdb_factory):
    factory, reopen = lmdb_factory
    run_seed(77, nodes=5, steps=300, storage_factory=factory, reopen=reopen)
