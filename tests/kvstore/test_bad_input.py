"""Whatever a client or a fake peer sends, the node answers or closes — and keeps serving."""

import random
import socket
import struct
import time

import msgpack
import pytest

from client.wire import MAX_FRAME_BYTES, MAX_VALUE_BYTES, Status, bucket_of, encode_frame
from kvstore.rawclient import RawConn


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from kvstore.testing import LocalCluster

    from .conftest import FAST

    c = LocalCluster(3, buckets=4, base_dir=tmp_path_factory.mktemp("bad"), extra_args=FAST)
    try:
        c.start(wait_s=60)
        yield c
    finally:
        c.close()


def leader_addr(c, key: bytes) -> str:
    with RawConn(c.addrs[0]) as conn:
        for _ in range(100):
            st, mp = conn.call("map")
            b = bucket_of(key, mp["num_buckets"])
            leader = mp["buckets"][b][2]
            if leader:
                return mp["nodes"][leader]
            st, _ = conn.call("put", {"key": key, "value": b"x", "bucket": b})
    raise AssertionError("no leader")


def assert_serving(c):
    key = b"alive"
    b = bucket_of(key, 4)
    for addr in c.addrs:
        with RawConn(addr) as conn:
            st, payload = conn.call("get", {"key": key, "bucket": b, "consistency": "follower"})
            # answered (a leader change may make it NOT_LEADER or UNAVAILABLE; that is fine)
            assert st in (Status.OK, Status.UNAVAILABLE, Status.NOT_LEADER), payload
            st, mp = conn.call("map")
            assert st == Status.OK


def send_and_collect(addr: str, data: bytes, wait_s: float = 2.0) -> list:
    """Send raw bytes; return the frames received until the node closes or goes quiet."""
    from client.wire import FrameDecoder

    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=wait_s)
    s.settimeout(wait_s)
    dec = FrameDecoder()
    frames = []
    try:
        s.sendall(data)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            frames.extend(dec.feed(chunk))
    except (socket.timeout, ConnectionResetError, BrokenPipeError):
        pass
    finally:
        s.close()
    return frames


def test_random_bytes_and_malformed_frames(cluster):
    rng = random.Random(1234)
    addr = cluster.addrs[0]
    cases = [
        b"\x00\x00\x00\x01\xc1",  # not msgpack
        b"\x00\x00\x00\x01\x05",  # not a list
        struct.pack(">I", MAX_FRAME_BYTES + 1),  # announced oversize
        b"\xff\xff\xff\xff",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        encode_frame([["peer"]]),  # a peer hello without an id
        encode_frame([["peer", {"id": 99}]]) + encode_frame([[1, 2, 3]]),  # unknown peer
        encode_frame([["peer", {"id": 2}]]) + encode_frame([["garbage"], [1, 2], None]),
        encode_frame([["peer", {"id": 2, "snapshot": "nope"}]]),
    ]
    cases += [bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300))) for _ in range(30)]
    cases += [struct.pack(">I", n) + bytes(rng.getrandbits(8) for _ in range(n))
              for n in (rng.randrange(1, 200) for _ in range(30))]
    for data in cases:
        frames = send_and_collect(addr, data, wait_s=0.5)
        for f in frames:
            for reply in f:
                assert reply[1] == Status.INVALID
    assert_serving(cluster)


def test_bad_requests_get_invalid_replies_with_their_ids(cluster):
    key = b"k"
    b = bucket_of(key, 4)
    with RawConn(leader_addr(cluster, key)) as conn:
        bad = [
            [1, "put", {"key": key, "bucket": b}],  # no value
            [2, "put", {"key": 5, "value": b"v", "bucket": b}],  # wrong type
            [3, "put", {"key": key, "value": b"x" * (MAX_VALUE_BYTES + 1), "bucket": b}],
            [4, "frobnicate", {}],
            [5, "get", {"key": key, "bucket": 99}],
            [6, "get", {"key": key, "bucket": (b + 1) % 4}],  # the key is not in that bucket
            [7, "put", "not a map"],
            "not a request",
            [8, "cas", {"key": key, "expected": 3, "new": b"x", "bucket": b}],
            [9, "scan", {"bucket": b, "limit": -1}],
        ]
        conn.send(bad)
        got = {}
        while len(got) < len(bad):
            for rid, st, payload in conn.recv_frame():
                got[rid if rid is not None else "none"] = (st, payload)
        assert all(st == Status.INVALID and payload["reason"] for st, payload in got.values()), got
        assert set(got) == {1, 2, 3, 4, 5, 6, 7, 8, 9, "none"}
        st, payload = conn.call("put", {"key": key, "value": b"fine", "bucket": b})
        assert st == Status.OK


def test_oversized_frame_closes_the_connection_only(cluster):
    big = msgpack.packb([[1, "put", {"key": b"k", "value": b"x" * 100, "bucket": 0}]])
    data = struct.pack(">I", MAX_FRAME_BYTES + 10) + big
    frames = send_and_collect(cluster.addrs[1], data, wait_s=2.0)
    assert frames and frames[0][0][1] == Status.INVALID
    assert_serving(cluster)


def test_client_disconnecting_mid_request(cluster):
    key = b"gone"
    b = bucket_of(key, 4)
    addr = leader_addr(cluster, key)
    for i in range(20):
        conn = RawConn(addr)
        frame = encode_frame([[j, "put", {"key": key, "value": b"%d" % j, "bucket": b}]
                              for j in range(50)])
        if i % 2:
            conn.send_raw(frame[: len(frame) // 2])  # half a frame, then gone
        else:
            conn.send_raw(frame)  # whole frame, gone before the replies
        conn.close()
    with RawConn(addr) as conn:
        st, payload = conn.call("put", {"key": key, "value": b"last", "bucket": b})
        assert st == Status.OK
        st, payload = conn.call("get", {"key": key, "bucket": b})
        assert payload["value"] == b"last"
    assert_serving(cluster)


def test_deep_pipeline_is_answered_in_full(cluster):
    key = b"pipe"
    b = bucket_of(key, 4)
    with RawConn(leader_addr(cluster, key), timeout_s=30) as conn:
        reqs = [("put", {"key": key, "value": b"%d" % i, "bucket": b}) for i in range(6000)]
        replies = conn.call_many(reqs)
        assert all(st == Status.OK for st, _ in replies)
        versions = [p["version"] for _, p in replies]
        assert len(set(versions)) == len(versions)


def test_client_that_never_reads_does_not_stall_others(cluster):
    key = b"flood"
    b = bucket_of(key, 4)
    addr = leader_addr(cluster, key)
    host, port = addr.rsplit(":", 1)
    flood = socket.create_connection((host, int(port)), timeout=5)
    flood.setblocking(False)
    frame = encode_frame([[i, "get", {"key": key, "bucket": b}] for i in range(2000)])
    sent = 0
    try:
        for _ in range(50):  # until the node stops reading (backpressure) or 100k requests
            try:
                flood.send(frame)
                sent += 1
            except BlockingIOError:
                break
        with RawConn(addr) as conn:
            st, payload = conn.call("put", {"key": key, "value": b"ok", "bucket": b})
            assert st == Status.OK
    finally:
        flood.close()
    assert sent >= 1
    assert_serving(cluster)


def test_pipelined_reads_in_back_to_back_frames_each_get_their_own_answer(cluster):
    """Several frames in one write, reads of different keys and buckets mixed with a malformed
    request: every request is answered once, under its own id, with its own key's value."""
    keys = [b"pipe-read-%d" % i for i in range(40)]
    for k in keys:
        b = bucket_of(k, 4)
        with RawConn(leader_addr(cluster, k), timeout_s=30) as conn:
            st, _ = conn.call("put", {"key": k, "value": k[::-1], "bucket": b})
            assert st == Status.OK
    # one connection, to the leader of the first key's bucket, gets reads of every bucket:
    # those it leads are answered OK, the others NOT_LEADER, each under its own id
    addr = leader_addr(cluster, keys[0])
    frames = [
        [[100 + i, "get", {"key": k, "bucket": bucket_of(k, 4)}] for i, k in enumerate(keys[:20])],
        [[99, "get", {"key": b"x", "bucket": "nope"}]]
        + [[100 + 20 + i, "get", {"key": k, "bucket": bucket_of(k, 4)}] for i, k in enumerate(keys[20:])],
    ]
    with RawConn(addr, timeout_s=30) as conn:
        conn.send_raw(b"".join(encode_frame(f) for f in frames))
        got = {}
        while len(got) < len(keys) + 1:
            for rid, st, payload in conn.recv_frame():
                assert rid not in got, f"request {rid} answered twice"
                got[rid] = (st, payload)
    assert got[99][0] == Status.INVALID
    assert set(got) == {99} | {100 + i for i in range(len(keys))}
    ok = 0
    for i, k in enumerate(keys):
        st, payload = got[100 + i]
        assert st in (Status.OK, Status.NOT_LEADER), (k, st, payload)
        if st == Status.OK:
            ok += 1
            assert payload["value"] == k[::-1]
    assert ok > 0


def test_malformed_raft_batches_from_a_peer_are_counted_and_dropped(cluster):
    """A fake peer's binary raft batches (kvstore/codec.py) that are truncated, of an unknown
    kind, carry an unknown message type, or address no group here: each is dropped and
    counted, and the node keeps serving (and keeps its real peers)."""
    from kvstore import codec
    from raft.types import Message, MessageType

    def batch(*msgs) -> bytearray:
        buf = codec.new_batch()
        for g, m in msgs:
            codec.append_message(buf, g, m)
        return buf

    good = bytes(codec.seal(batch((99_999, Message(MessageType.HEARTBEAT, 1, 2, 0))), 1))
    body = good[4 + 6:]  # the bin item's bytes: kind, count, one message
    bad_type = bytearray(body)
    bad_type[5 + 4] = 200  # no such message type

    def frame_of_blob(blob: bytes) -> bytes:
        return encode_frame([blob])

    addr = cluster.addrs[0]

    def bad_count() -> int:
        with RawConn(addr) as conn:
            st, status = conn.call("status")
            assert st == Status.OK
            return status["stats"]["bad_peer_msgs"]

    before = bad_count()
    data = encode_frame([["peer", {"id": 2}]]) + b"".join([
        good,  # well formed, but for a group this node does not host
        frame_of_blob(body[:-3]),  # truncated
        frame_of_blob(b"\x07" + body[1:]),  # unknown batch kind
        frame_of_blob(bytes(bad_type)),
        frame_of_blob(body[:5] + bytes(40)),  # a header cut short
        encode_frame([["leaders", "x", 5], 17, None]),  # items that are no batch nor gossip
    ])
    send_and_collect(addr, data, wait_s=0.5)
    deadline = time.monotonic() + 10
    while bad_count() < before + 8:  # 5 batches (1 message each) and 3 bad items
        assert time.monotonic() < deadline, (before, bad_count())
        time.sleep(0.05)
    assert_serving(cluster)
