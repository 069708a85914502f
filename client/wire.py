"""The wire codec shared by the node and the client: framing, status codes, key -> bucket.

This module is the only code the client shares with the node (DESIGN.md: dependencies point
one way), so it stays small and has no I/O of its own.

Framing: every frame is a 4-byte big-endian length followed by that many bytes of msgpack.
A frame carries a *list* of messages, so that many requests (or replies) share one syscall.

Client protocol, one message each:
    request:  [request_id: int, op: str, args: dict]
    reply:    [request_id: int, status: int, payload]
`status` is `Status.OK` with the op's result as payload, or an error status with a dict payload
{"reason": str, "leader": node_id | None, "leader_addr": "host:port" | None, "epoch": int}.

A client connection starts directly with request frames. A peer (node-to-node) connection's
first frame is [["peer", {...}]] (first element a str), so one port serves both.
A frame the node cannot decode (oversized, not msgpack, not a list) is answered with
[None, INVALID, {"reason": ...}] and the connection is closed; a malformed message inside a good
frame gets its own INVALID reply (request id None if it had no int id).
Node-to-node (not for clients): [["peer", {"id": n}]] opens a stream of raft messages (each
frame's raft messages are one bin item, a binary batch: see kvstore/codec.py) (and
["leaders", n, [[bucket, term], ...]] items: the buckets n leads); [["peer",
{"id": n, "snapshot": <raft SNAP message>}]] opens a snapshot stream: frames [["chunk", bytes]]
..., [["end", total_bytes]], answered [["ok"]] once installed.

Operations (keys and values are bytes; `session`/`seq` make writes exactly-once, see below):
    "map"    {}  -> {"epoch": int, "num_buckets": int, "nodes": {node_id: "host:port"},
                     "buckets": [[epoch, [replica node ids], leader_id | None], ...]}
    "get"    {"key", "bucket", "consistency": "linearizable" | "follower"}
                 -> {"value": bytes | None, "version": int | None}
    "put"    {"key", "value", "bucket", "session", "seq"}            -> {"version": int}
    "delete" {"key", "bucket", "session", "seq"}        -> {"existed": bool, "version": int}
    "cas"    {"key", "expected": bytes|None, "new": bytes|None, "bucket", "session", "seq"}
                 -> {"ok": bool, "version": int | None}   (expected None: must be absent;
                                                           new None: delete)
    "scan"   {"bucket", "prefix", "start_after": bytes|None, "limit": int,
              "consistency"}  -> {"items": [[key, value], ...], "more": bool}   (one bucket;
              the client fans a prefix scan out over all buckets and merges in key order)
    "status" {}  -> the node's status dict (for `kvstore status`)
`bucket` is the client's idea of bucket_of(key); a node whose map disagrees (or that holds no
replica of it) answers WRONG_BUCKET with its epoch, and a replica that is not the leader
answers NOT_LEADER with its leader hint. Follower reads may go to any replica of the bucket.

Sessions (Raft dissertation 6.3): a client keeps a pool of session ids (random 63-bit ints),
each with at most ONE write in flight and a seq that grows by one per write; a retry reuses the
same (session, seq). The node's state machine remembers per bucket each session's last seq and
result and answers a duplicate from that table instead of applying it again.
"""

from __future__ import annotations

import struct
from enum import IntEnum

import msgpack
import xxhash

MAX_FRAME_BYTES = 16 * 1024 * 1024
MAX_KEY_BYTES = 4 * 1024
MAX_VALUE_BYTES = 1024 * 1024

_LEN = struct.Struct(">I")


class Status(IntEnum):
    OK = 0
    NOT_LEADER = 1  # payload: leader hint (node id and address, may be None), bucket epoch
    WRONG_BUCKET = 2  # the node's bucket map epoch differs; refresh the map
    TIMEOUT = 3  # outcome unknown
    UNAVAILABLE = 4  # definitely not applied
    COMPACTED = 5  # a cursor or as-of time older than the retained history
    INVALID = 6  # a bad request; payload["reason"] says why


class FrameError(Exception):
    """The peer sent bytes that are not a valid frame (too large or not msgpack)."""


def encode_frame(messages: list) -> bytes:
    body = msgpack.packb(messages, use_bin_type=True)
    if len(body) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Incremental decoder: `feed(data)` returns the list of complete frames' message lists.

    Frames are decoded straight out of `data` (no copy) when nothing is buffered; only the
    incomplete rest is kept, and a large frame arriving in pieces is appended to until it is
    complete (no copying of the buffer per piece)."""

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._need = 4  # bytes the buffer must hold before the next frame can be complete
        self._max = max_frame_bytes

    def feed(self, data: bytes) -> list[list]:
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return []
            data = bytes(self._buf)
            self._buf = bytearray()
        frames = []
        end = len(data)
        pos = 0
        unpack_len = _LEN.unpack_from
        while end - pos >= 4:
            (n,) = unpack_len(data, pos)
            if n > self._max:
                raise FrameError(f"frame of {n} bytes exceeds {self._max}")
            start = pos + 4
            if end - start < n:
                self._need = 4 + n
                self._buf += data[pos:]
                return frames
            pos = start + n
            try:
                messages = msgpack.unpackb(data[start:pos], raw=False, strict_map_key=False)
            except Exception as exc:  # msgpack raises several unrelated types
                raise FrameError(f"frame is not msgpack: {exc}") from None
            if type(messages) is not list:
                raise FrameError("frame must hold a list of messages")
            frames.append(messages)
        self._need = 4
        if pos < end:
            self._buf += data[pos:]
        return frames


def hash_tag(key: bytes) -> bytes:
    """The part of `key` inside the first `{...}` if non-empty (as in Redis Cluster), else key."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            return key[start + 1 : end]
    return key


def bucket_of(key: bytes, num_buckets: int) -> int:
    return xxhash.xxh64_intdigest(hash_tag(key)) % num_buckets


def as_bytes(value: bytes | str, what: str = "key") -> bytes:
    """Keys and values are bytes; str is encoded as UTF-8; anything else is a TypeError."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")
