"""A tiny synchronous client of the wire protocol, with no retries and no cleverness.

For the CLI's readiness probe, the test fixtures and bad-input tests: it speaks exactly the
frames of client/wire.py so tests can send what they like (including duplicates and garbage).
The real client library is `client` (Client / AsyncClient).
"""

from __future__ import annotations

import itertools
import socket
import time

from client.wire import FrameDecoder, Status, bucket_of, encode_frame

from .placement import split_addr


class RawConn:
    def __init__(self, addr: str, timeout_s: float = 5.0) -> None:
        host, port = split_addr(addr)
        self.addr = addr
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock.settimeout(timeout_s)
        self.dec = FrameDecoder()
        self._ids = itertools.count(1)
        self._frames: list = []

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "RawConn":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send(self, messages: list) -> None:
        self.sock.sendall(encode_frame(messages))

    def recv_frame(self) -> list:
        """The next frame's messages (raises socket.timeout / ConnectionError)."""
        while not self._frames:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("connection closed by the node")
            self._frames.extend(self.dec.feed(data))
        return self._frames.pop(0)

    def call_many(self, requests: list[tuple[str, dict]]) -> list[tuple[int, object]]:
        """Send all requests in one frame; -> [(status, payload)] in request order."""
        ids = [next(self._ids) for _ in requests]
        self.send([[i, op, args] for i, (op, args) in zip(ids, requests)])
        got: dict = {}
        while len(got) < len(ids):
            for rid, status, payload in self.recv_frame():
                got[rid] = (status, payload)
        return [got[i] for i in ids]

    def call(self, op: str, args: dict | None = None) -> tuple[int, object]:
        return self.call_many([(op, args or {})])[0]


def key_in_bucket(bucket: int, num_buckets: int, prefix: bytes = b"__probe__") -> bytes:
    for i in itertools.count():
        k = prefix + str(i).encode()
        if bucket_of(k, num_buckets) == bucket:
            return k
    raise AssertionError("unreachable")


def wait_writable(addrs: list[str], deadline_s: float, progress=None, buckets: list[int] | None = None) -> None:
    """Return once a write to every bucket (or `buckets`) succeeded; TimeoutError after the
    deadline. `progress(done, total)` is called as buckets become writable."""
    end = time.monotonic() + deadline_s
    mp = None
    while mp is None:
        for a in addrs:
            try:
                with RawConn(a, timeout_s=1.0) as c:
                    st, mp = c.call("map")
                    if st == Status.OK:
                        break
                    mp = None
            except OSError:
                pass
        if mp is None:
            if time.monotonic() > end:
                raise TimeoutError("no node answered the map request")
            time.sleep(0.1)
    n = mp["num_buckets"]
    nodes = {int(k): v for k, v in mp["nodes"].items()}
    todo = list(range(n)) if buckets is None else list(buckets)
    total = len(todo)
    conns: dict[str, RawConn] = {}
    try:
        while todo:
            if time.monotonic() > end:
                raise TimeoutError(f"{len(todo)} of {total} buckets not writable in time")
            still = []
            for b in todo:
                key = key_in_bucket(b, n)
                ok = False
                for nid in mp["buckets"][b][1]:
                    addr = nodes[nid]
                    try:
                        c = conns.get(addr) or conns.setdefault(addr, RawConn(addr, timeout_s=2.0))
                        st, _ = c.call("put", {"key": key, "value": b"1", "bucket": b})
                    except OSError:
                        conns.pop(addr, None)
                        continue
                    if st == Status.OK:
                        ok = True
                        break
                if not ok:
                    still.append(b)
            if progress is not None and len(still) != len(todo):
                progress(total - len(still), total)
            todo = still
            if todo:
                time.sleep(0.1)
    finally:
        for c in conns.values():
            c.close()
