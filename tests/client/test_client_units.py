"""Pure pieces of the client: the bucket map cache, addresses, sessions."""

from __future__ import annotations

import random

import pytest

from client.connection import split_addr
from client.routing import BucketMap, MapError
from client.sessions import SessionPool


def wire_map(**over):
    m = {"epoch": 3, "num_buckets": 2, "nodes": {1: "127.0.0.1:1", 2: "127.0.0.1:2"},
         "buckets": [[3, [1, 2], 1], [2, [2, 1], None]]}
    m.update(over)
    return m


def test_bucket_map_from_wire_and_leader_hints():
    m = BucketMap.from_wire(wire_map())
    assert m.leader_addr(0) == "127.0.0.1:1" and m.leader_addr(1) is None
    assert m.replica_addrs(1) == ["127.0.0.1:2", "127.0.0.1:1"]
    m.note_leader(1, 3, "127.0.0.1:3")  # a node the map did not know yet
    assert m.leader_addr(1) == "127.0.0.1:3" and "127.0.0.1:3" in m.all_addrs()
    m.note_leader(1, 9, None)  # unknown node and no address: treated as no leader
    assert m.leader_addr(1) is None
    m.forget_leader(0, "127.0.0.1:2")  # not the leader: nothing changes
    assert m.leader_addr(0) == "127.0.0.1:1"
    m.forget_leader(0, "127.0.0.1:1")
    assert m.leader_addr(0) is None
    assert m.to_dict()["buckets"][0] == [3, [1, 2], None]


@pytest.mark.parametrize("bad", [
    None, [], {}, wire_map(num_buckets=3), wire_map(num_buckets=0), wire_map(buckets=[[1, [1]]] * 2),
    wire_map(epoch="x"), wire_map(nodes=[1, 2]), wire_map(buckets=None),
])
def test_malformed_maps_are_map_errors(bad):
    with pytest.raises(MapError):
        BucketMap.from_wire(bad)


def test_addresses():
    assert split_addr("127.0.0.1:7001") == ("127.0.0.1", 7001)
    assert split_addr("[::1]:7001") == ("::1", 7001)
    assert split_addr("localhost:1") == ("localhost", 1)
    for bad in ["localhost", ":7001", "h:", "h:port", "h:0", "h:70000"]:
        with pytest.raises(ValueError):
            split_addr(bad)


def test_sessions_are_reused_only_when_safe():
    pool = SessionPool(random.Random(1))
    s = pool.acquire()
    assert (s.next_seq(), s.next_seq()) == (1, 2)
    pool.release(s, reusable=True)
    assert pool.acquire() is s
    pool.release(s, reusable=False)  # e.g. its last write's outcome is unknown
    t = pool.acquire()
    assert t is not s and t.id != s.id and t.seq == 0
