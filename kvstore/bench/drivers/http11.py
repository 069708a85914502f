"""A minimal keep-alive HTTP/1.1 client over trio, for etcd's JSON gateway.

One request at a time per connection (no pipelining: Go's server handles requests of one
connection in order anyway); a pool keeps one connection per concurrent caller, spread
round-robin over the endpoints, as etcd's own client balances over its endpoints.
"""

from __future__ import annotations

import trio

from kvstore.bench.drivers.base import DriverError
from kvstore.bench.drivers.resp import split_endpoint

MAX_HEADER_BYTES = 64 * 1024


class HttpConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._stream: trio.SocketStream | None = None
        self._buf = bytearray()

    async def connect(self) -> None:
        self._stream = await trio.open_tcp_stream(self.host, self.port)

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None

    async def _fill(self) -> None:
        data = await self._stream.receive_some(1 << 16)
        if not data:
            raise trio.BrokenResourceError("server closed the connection")
        self._buf += data

    async def _read_line(self) -> bytes:
        while True:
            i = self._buf.find(b"\r\n")
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[: i + 2]
                return line
            if len(self._buf) > MAX_HEADER_BYTES:
                raise DriverError("protocol", "HTTP header line too long")
            await self._fill()

    async def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            await self._fill()
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        await self._stream.send_all(head + body)
        status_line = await self._read_line()
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise DriverError("protocol", f"bad status line {status_line[:80]!r}")
        status = int(parts[1])
        length = None
        chunked = False
        while True:
            line = await self._read_line()
            if not line:
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            chunks = []
            while True:
                size = int((await self._read_line()).split(b";")[0], 16)
                if size == 0:
                    while await self._read_line():
                        pass
                    break
                chunks.append(await self._read_exact(size))
                await self._read_line()
            return status, b"".join(chunks)
        if length is None:
            raise DriverError("protocol", "HTTP response without length (not keep-alive)")
        return status, await self._read_exact(length)


class HttpPool:
    def __init__(self, endpoints: list[str]) -> None:
        self.endpoints = [split_endpoint(e) for e in endpoints]
        self._idle: list[HttpConnection] = []
        self._all: set[HttpConnection] = set()
        self._next = 0

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self._idle:
            conn = self._idle.pop()
        else:
            host, port = self.endpoints[self._next % len(self.endpoints)]
            self._next += 1
            conn = HttpConnection(host, port)
            self._all.add(conn)
            try:
                await conn.connect()
            except BaseException:
                self._all.discard(conn)
                raise
        try:
            result = await conn.post(path, body)
        except BaseException:
            # a connection interrupted mid-request is in an unknown state: never reuse it
            self._all.discard(conn)
            with trio.CancelScope(shield=True):
                await conn.aclose()
            raise
        self._idle.append(conn)
        return result

    async def aclose(self) -> None:
        for conn in list(self._all):
            await conn.aclose()
        self._all.clear()
        self._idle.clear()
