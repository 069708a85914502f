"""Unit tests of the node's pure parts: peer codec, HLC, placement, request validation."""

import pytest
from hypothesis import given, strategies as st

from client.wire import MAX_KEY_BYTES, MAX_VALUE_BYTES, bucket_of
from kvstore import codec
from kvstore.hlc import HybridClock, clock_offset_ms_from_env
from kvstore.placement import initial_map, parse_cluster
from kvstore.protocol import Invalid, parse_request
from raft.types import ConfState, Entry, EntryType, Message, MessageType, Snapshot, SnapshotMetadata

ints = st.integers(0, 2**63 - 1)
entries = st.builds(Entry, ints, ints, st.sampled_from(list(EntryType)), st.binary(max_size=64))
snapshots = st.none() | st.builds(
    Snapshot,
    st.builds(SnapshotMetadata, ints, ints,
              st.builds(ConfState, st.tuples(ints), st.tuples(), st.tuples())),
    st.binary(max_size=16))
messages = st.builds(
    Message, st.sampled_from(list(MessageType)), ints, ints, ints, ints, ints,
    st.lists(entries, max_size=4).map(tuple), ints, st.booleans(), ints, snapshots,
    st.binary(max_size=8))


@given(ints, messages)
def test_raft_messages_round_trip(group, msg):
    import msgpack
    wire = msgpack.unpackb(msgpack.packb(codec.encode_message(group, msg), use_bin_type=True),
                           raw=False)
    assert codec.decode_message(wire) == (group, msg)


@pytest.mark.parametrize("bad", [
    None, [], [1] * 12, ["x"] * 13, [1, 99, 1, 1, 1, 1, 1, [], 1, False, 0, None, b""],
    [1, 1, 1, 1, 1, 1, 1, [1, 2, 3], 1, False, 0, None, b""],
    [1, 1, 1, 1, 1, 1, 1, [], 1, False, 0, [1, 2], b""],
    [1, 1, 1, 1, 1, 1, 1, [], 1, "no", 0, None, b""],
    [1, 1, True, 1, 1, 1, 1, [], 1, False, 0, None, b""],  # a bool is no node id
    [1, 1, 1, 1, 1, 1, 1.5, [], 1, False, 0, None, b""],
])
def test_malformed_raft_messages_are_codec_errors(bad):
    with pytest.raises(codec.CodecError):
        codec.decode_message(bad)


def test_hlc_is_monotonic_and_passes_observed_stamps():
    wall = [1000]
    c = HybridClock(lambda: wall[0])
    assert c.now() == 1000
    assert c.now() == 1001  # the wall clock did not move: logical tick
    wall[0] = 500  # the wall clock went backwards
    assert c.now() == 1002
    c.observe(5000)
    assert c.now() == 5001
    wall[0] = 9000
    assert c.now() == 9000


def test_clock_offset_comes_from_env():
    assert clock_offset_ms_from_env({"KVSTORE_CLOCK_OFFSET_MS": "-250"}) == -250
    assert clock_offset_ms_from_env({}) == 0
    with pytest.raises(ValueError):
        clock_offset_ms_from_env({"KVSTORE_CLOCK_OFFSET_MS": "soon"})


@pytest.mark.parametrize("n,buckets,r", [(3, 64, 3), (5, 64, 3), (5, 7, 3), (2, 8, 3), (1, 4, 3)])
def test_initial_placement_is_even_and_deterministic(n, buckets, r):
    nodes = {i: f"127.0.0.1:{7000 + i}" for i in range(1, n + 1)}
    m = initial_map(nodes, buckets, r)
    assert m.to_record() == initial_map(dict(reversed(nodes.items())), buckets, r).to_record()
    rr = min(r, n)
    assert all(len(set(reps)) == rr for reps in m.replicas)
    per_node = [sum(i in reps for reps in m.replicas) for i in nodes]
    assert max(per_node) - min(per_node) <= 1
    firsts = [sum(reps[0] == i for reps in m.replicas) for i in nodes]
    assert max(firsts) - min(firsts) <= 1
    assert m.meta_replicas == tuple(sorted(nodes))[:5]


def test_parse_cluster_rejects_bad_specs():
    assert parse_cluster("1=h:1, 2=h:2") == {1: "h:1", 2: "h:2"}
    for bad in ["", "1=h", "x=h:1", "0=h:1", "1=h:1,1=h:2", "1=h:99999", "1h:1"]:
        with pytest.raises(ValueError):
            parse_cluster(bad)


def test_request_validation():
    k = b"k"
    b = bucket_of(k, 8)
    req = parse_request([7, "put", {"key": k, "value": b"v", "bucket": b, "session": 5, "seq": 1}], 8)
    assert (req.rid, req.op, req.key, req.value, req.session, req.seq) == (7, "put", k, b"v", 5, 1)
    good = {"key": k, "value": b"v", "bucket": b}
    for msg, why in [
        ("x", r"is \[request_id"), ([1, 2], r"is \[request_id"), (["a", "put", good], "request_id"),
        ([1, 5, good], "op"), ([1, "put", []], "args"), ([1, "nope", good], "unknown op"),
        ([1, "put", {**good, "bucket": 8}], "bucket"), ([1, "put", {**good, "bucket": "0"}], "bucket"),
        ([1, "put", {**good, "value": 5}], "value"),
        ([1, "put", {**good, "value": b"x" * (MAX_VALUE_BYTES + 1)}], "limit"),
        ([1, "put", {**good, "key": b"x" * (MAX_KEY_BYTES + 1)}], "limit"),
        ([1, "put", {**good, "session": 1, "seq": -1}], "seq"),
        ([1, "get", {"key": k, "bucket": b, "consistency": "eventual"}], "consistency"),
        ([1, "scan", {"bucket": b, "limit": 0}], "limit"),
    ]:
        with pytest.raises(Invalid, match=why):
            parse_request(msg, 8)


def test_get_requests_parse_the_same_on_the_fast_and_the_general_path():
    k = b"k"
    b = bucket_of(k, 8)
    for args in ({"key": k, "bucket": b}, {"key": k, "bucket": b, "consistency": "follower"},
                 {"key": "k", "bucket": b}, {"key": k, "bucket": b, "consistency": "linearizable"}):
        req = parse_request([3, "get", args], 8)
        assert (req.rid, req.op, req.bucket, req.key) == (3, "get", b, k)
        assert req.consistency == args.get("consistency", "linearizable")
        assert (req.value, req.session, req.seq, req.prefix, req.start_after) == (None, None, 0, b"", None)
    for args, why in [({"key": k, "bucket": 8}, "bucket"), ({"key": k, "bucket": True}, "bucket"),
                      ({"key": k, "bucket": b, "consistency": ["x"]}, "consistency"),
                      ({"key": k, "bucket": b, "consistency": {}}, "consistency"),
                      ({"key": 5, "bucket": b}, "key"), ({"bucket": b}, "key"),
                      ({"key": b"x" * (MAX_KEY_BYTES + 1), "bucket": b}, "limit")]:
        with pytest.raises(Invalid, match=why):
            parse_request([3, "get", args], 8)
