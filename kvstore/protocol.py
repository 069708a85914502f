"""Validation of client requests (client/wire.py's protocol) into plain `Request` objects.

Everything a client sends is checked here, before the node loop sees it: shapes, types, sizes.
A bad request becomes `Invalid(reason)`, answered with Status.INVALID; it never reaches raft.
"""

from __future__ import annotations

from dataclasses import dataclass

from client.wire import MAX_KEY_BYTES, MAX_VALUE_BYTES

READ_OPS = frozenset({"get", "scan"})
WRITE_OPS = frozenset({"put", "delete", "cas"})
LOCAL_OPS = frozenset({"map", "status"})
CONSISTENCIES = frozenset({"linearizable", "follower"})
SCAN_LIMIT_MAX = 10_000
SESSION_MAX = (1 << 64) - 1
SEQ_MAX = (1 << 63) - 1


class Invalid(ValueError):
    """The request is malformed; `str(self)` is the reason sent to the client."""


@dataclass(slots=True)
class Request:
    rid: int
    op: str
    bucket: int = -1
    key: bytes = b""
    value: bytes | None = None
    expected: bytes | None = None
    session: int | None = None
    seq: int = 0
    consistency: str = "linearizable"
    prefix: bytes = b""
    start_after: bytes | None = None
    limit: int = 1000


def _bytes(args: dict, name: str, limit: int, optional: bool = False) -> bytes | None:
    v = args.get(name)
    if v is None and optional:
        return None
    if isinstance(v, str):
        v = v.encode("utf-8")
    if not isinstance(v, bytes):
        raise Invalid(f"{name!r} must be bytes")
    if len(v) > limit:
        raise Invalid(f"{name!r} is {len(v)} bytes, more than the limit of {limit}")
    return v


def _int(args: dict, name: str, lo: int, hi: int, default: int | None = None) -> int:
    v = args.get(name, default)
    if type(v) is not int:
        raise Invalid(f"{name!r} must be an int")
    if not lo <= v <= hi:
        raise Invalid(f"{name!r} = {v} is out of range [{lo}, {hi}]")
    return v


def parse_request(msg, num_buckets: int) -> Request:
    """Raises Invalid. `msg` is one decoded message of a client frame."""
    if type(msg) is list and len(msg) == 3:
        # the fast path of the most common request, a get with a bytes key; anything else
        # (or anything wrong with it) takes the general path below, which says what is wrong
        rid, op, args = msg
        if op == "get" and type(rid) is int and type(args) is dict:
            bucket = args.get("bucket")
            key = args.get("key")
            c = args.get("consistency", "linearizable")
            if (type(bucket) is int and 0 <= bucket < num_buckets and type(key) is bytes
                    and len(key) <= MAX_KEY_BYTES and type(c) is str
                    and (c == "linearizable" or c == "follower")):
                return Request(rid, "get", bucket, key, None, None, None, 0, c)
    if not isinstance(msg, list) or len(msg) != 3:
        raise Invalid("a request is [request_id, op, args]")
    rid, op, args = msg
    if type(rid) is not int:
        raise Invalid("request_id must be an int")
    if not isinstance(op, str):
        raise Invalid("op must be a str")
    if not isinstance(args, dict):
        raise Invalid("args must be a map")
    req = Request(rid=rid, op=op)
    if op in LOCAL_OPS:
        return req
    if op not in READ_OPS and op not in WRITE_OPS:
        raise Invalid(f"unknown op {op!r}")
    req.bucket = _int(args, "bucket", 0, num_buckets - 1)
    if op in READ_OPS:
        c = args.get("consistency", "linearizable")
        if not isinstance(c, str) or c not in CONSISTENCIES:
            raise Invalid(f"consistency must be one of {sorted(CONSISTENCIES)}, not {c!r}")
        req.consistency = c
        if op == "get":
            req.key = _bytes(args, "key", MAX_KEY_BYTES)
        else:
            req.prefix = _bytes(args, "prefix", MAX_KEY_BYTES, optional=True) or b""
            req.start_after = _bytes(args, "start_after", MAX_KEY_BYTES, optional=True)
            req.limit = _int(args, "limit", 1, SCAN_LIMIT_MAX, default=1000)
        return req
    req.key = _bytes(args, "key", MAX_KEY_BYTES)
    session = args.get("session")
    if session is not None:
        req.session = _int(args, "session", 0, SESSION_MAX)
        req.seq = _int(args, "seq", 0, SEQ_MAX)
    if op == "put":
        req.value = _bytes(args, "value", MAX_VALUE_BYTES)
    elif op == "cas":
        req.expected = _bytes(args, "expected", MAX_VALUE_BYTES, optional=True)
        req.value = _bytes(args, "new", MAX_VALUE_BYTES, optional=True)
    return req
