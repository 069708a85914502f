"""A small pipelined RESP2 client over trio streams (for Redis and the PySyncObj front end).

redis-py's asyncio client does not run under trio, so this speaks the protocol directly. One
`RespConnection` carries requests from many tasks: a caller appends its encoded command to the
send buffer and waits on its own slot; one writer task sends everything buffered in one
syscall, one reader task parses replies and hands them to the slots in FIFO order (RESP
replies come back in request order). So 64 clients on 4 connections cost a few syscalls per
batch instead of two per request.
"""

from __future__ import annotations

from collections import deque

import trio

from kvstore.bench.drivers.base import DriverError


class RespError(DriverError):
    def __init__(self, message: str) -> None:
        # "ERR LEADER_CHANGED" -> kind "ERR LEADER_CHANGED"; long messages are cut to 2 words
        super().__init__(" ".join(message.split()[:2]) or "server-error", message)


def encode_command(*args: bytes) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(parts)


class RespParser:
    """Incremental RESP2 reply parser: feed bytes, then pop complete replies."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos > 65536:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_reply(self):
        """Returns (True, reply) or (False, None) when more bytes are needed."""
        try:
            reply, pos = self._parse(self._pos)
        except _Incomplete:
            return False, None
        self._pos = pos
        return True, reply

    def _parse(self, pos: int):
        buf = self._buf
        end = buf.find(b"\r\n", pos)
        if end < 0:
            raise _Incomplete
        kind = buf[pos : pos + 1]
        line = bytes(buf[pos + 1 : end])
        pos = end + 2
        if kind == b"+":
            return line, pos
        if kind == b"-":
            return RespError(line.decode(errors="replace")), pos
        if kind == b":":
            return int(line), pos
        if kind == b"$":
            n = int(line)
            if n < 0:
                return None, pos
            if len(buf) < pos + n + 2:
                raise _Incomplete
            return bytes(buf[pos : pos + n]), pos + n + 2
        if kind == b"*":
            n = int(line)
            if n < 0:
                return None, pos
            items = []
            for _ in range(n):
                item, pos = self._parse(pos)
                items.append(item)
            return items, pos
        raise DriverError("protocol", f"bad RESP reply type {kind!r}")


class _Incomplete(Exception):
    pass


class _Slot:
    __slots__ = ("event", "reply")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply = None


class RespConnection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._stream: trio.SocketStream | None = None
        self._outbox: list[bytes] = []
        self._has_output = trio.Event()
        self._waiting: deque[_Slot] = deque()
        self._broken: BaseException | None = None

    async def open(self, nursery: trio.Nursery) -> None:
        self._stream = await trio.open_tcp_stream(self.host, self.port)
        nursery.start_soon(self._writer)
        nursery.start_soon(self._reader)

    async def aclose(self) -> None:
        self._fail(trio.ClosedResourceError("connection closed"))
        if self._stream is not None:
            await self._stream.aclose()

    def _fail(self, exc: BaseException) -> None:
        if self._broken is None:
            self._broken = exc
        while self._waiting:
            slot = self._waiting.popleft()
            slot.reply = exc
            slot.event.set()
        self._has_output.set()

    async def call(self, *args: bytes):
        if self._broken is not None:
            raise DriverError("connection", repr(self._broken))
        slot = _Slot()
        self._outbox.append(encode_command(*args))
        self._waiting.append(slot)
        self._has_output.set()
        await slot.event.wait()
        if isinstance(slot.reply, RespError):
            raise slot.reply
        if isinstance(slot.reply, BaseException):
            raise DriverError("connection", repr(slot.reply))
        return slot.reply

    async def _writer(self) -> None:
        try:
            while self._broken is None:
                await self._has_output.wait()
                self._has_output = trio.Event()
                if self._outbox:
                    data, self._outbox = b"".join(self._outbox), []
                    await self._stream.send_all(data)
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._fail(exc)

    async def _reader(self) -> None:
        parser = RespParser()
        try:
            while True:
                data = await self._stream.receive_some(1 << 16)
                if not data:
                    raise trio.BrokenResourceError("server closed the connection")
                parser.feed(data)
                while True:
                    ok, reply = parser.next_reply()
                    if not ok:
                        break
                    if not self._waiting:
                        raise DriverError("protocol", "reply without a request")
                    slot = self._waiting.popleft()
                    slot.reply = reply
                    slot.event.set()
        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, DriverError) as exc:
            self._fail(exc)


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"endpoint {endpoint!r} is not host:port")
    return host, int(port)


class RespPool:
    """`connections` pipelined connections spread over the endpoints, used round-robin."""

    def __init__(self, endpoints: list[str], connections: int) -> None:
        self.endpoints = [split_endpoint(e) for e in endpoints]
        self.count = max(connections, len(self.endpoints))
        self.conns: list[RespConnection] = []
        self._next = 0

    async def open(self, nursery: trio.Nursery) -> None:
        for i in range(self.count):
            host, port = self.endpoints[i % len(self.endpoints)]
            conn = RespConnection(host, port)
            await conn.open(nursery)
            self.conns.append(conn)

    async def aclose(self) -> None:
        for conn in self.conns:
            await conn.aclose()

    def pick(self) -> RespConnection:
        self._next = (self._next + 1) % len(self.conns)
        return self.conns[self._next]
