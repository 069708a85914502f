"""The TCP front of a node: one port for clients and peers (client/wire.py framing).

A connection's first frame decides what it is: [["peer", {"id": n, ...}]] is a peer's
outbound connection (raft messages flow in), or, with a "snapshot" key, a snapshot stream;
anything else is a client connection and the frame is its first batch of requests.

Client connections pipeline: the reader parses every request of a frame and hands it to the
node (which answers at once or later); replies are collected and a writer task sends all
replies ready at that moment as one frame, with one non-blocking write straight to the socket
(it falls back to an awaited `send_all` only for what a full send buffer did not take). At
most `INFLIGHT_MAX` requests may be pending per connection (counted until the reply is sent);
beyond that the reader stops reading (TCP backpressure), so a client that never reads its
replies costs bounded memory. A malformed frame gets an INVALID reply with request id None
and the connection is closed; a malformed request inside a good frame gets its own INVALID
reply. Nothing a client sends can stop the node.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import trio

from client.wire import FrameDecoder, FrameError, Status, encode_frame

from .protocol import Invalid

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("kvstore.server")

INFLIGHT_MAX = 4096
RECV_BYTES = 256 * 1024
REPLY_FRAME_ITEMS = 8192
SEND_TIMEOUT_S = 30.0


class ClientConn:
    """One client connection; `reply()` may be called by the node at any time, even closed."""

    def __init__(self, stream: trio.SocketStream, conn_id: int) -> None:
        self.stream = stream
        self.conn_id = conn_id
        self.closed = False
        self.inflight = 0
        self._replies: list = []
        self._wake = trio.Event()
        self._room = trio.Event()
        self._idle = False  # the writer task is parked waiting for replies
        self._tail = b""  # the unsent rest of a frame begun by a non-blocking write
        self._tail_items = 0
        self._fd = stream.socket.fileno()

    def reply(self, rid, status: int, payload) -> None:
        if self.closed:
            return
        self._replies.append([rid, status, payload])
        self._wake.set()

    def _sent(self, n: int) -> None:
        # a request stops counting as in flight only once its reply is on the wire, so a
        # client that sends without reading cannot make the node buffer replies without bound
        self.inflight -= n
        if self.inflight < INFLIGHT_MAX:
            self._room.set()

    def error(self, rid, status: Status, reason: str, **extra) -> None:
        self.reply(rid, int(status), {"reason": reason, "leader": None, "leader_addr": None, "epoch": 0, **extra})

    async def wait_room(self) -> None:
        while self.inflight >= INFLIGHT_MAX and not self.closed:
            self._room = trio.Event()
            await self._room.wait()

    def flush_now(self) -> None:
        """Put the queued replies on the wire now with one non-blocking send, without waiting
        for the writer task: the node calls this just before its thread blocks in a storage
        commit. Only while the writer task is parked (so no send of its own is under way);
        whatever the socket does not take is left to the writer task, which sends it first."""
        if self.closed or not self._idle or not self._replies or self._tail:
            return
        batch = self._replies[:REPLY_FRAME_ITEMS]
        try:
            frame = encode_frame(batch)
        except Exception:
            return  # the writer task handles it (splitting a frame too large)
        del self._replies[:REPLY_FRAME_ITEMS]
        self._write_nowait(frame, len(batch))
        if self._tail:
            self._wake.set()

    def _write_nowait(self, frame: bytes, items: int) -> None:
        """One non-blocking write of `frame` (replies to `items` requests) straight to the
        socket: no task switch, no cancel scope, no trio send machinery, which cost more CPU
        than the syscall for the small reply frames of a busy connection. What the socket does
        not take (a full send buffer) or an error is left as the tail for the writer task,
        whose `send_all` waits for room (bounded by SEND_TIMEOUT_S) or raises."""
        try:
            n = os.write(self._fd, frame)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            n = 0  # the writer task's send will see the error and close the connection
        if n < len(frame):
            self._tail = frame[n:]
            self._tail_items = items
        else:
            self._sent(items)

    async def writer(self) -> None:
        while not self.closed:
            if self._tail:
                tail, n = self._tail, self._tail_items
                with trio.fail_after(SEND_TIMEOUT_S):
                    await self.stream.send_all(tail)
                self._tail, self._tail_items = b"", 0
                self._sent(n)
                continue
            if not self._replies:
                self._wake = trio.Event()
                self._idle = True
                try:
                    await self._wake.wait()
                finally:
                    self._idle = False
                continue
            batch = self._replies[:REPLY_FRAME_ITEMS]
            del self._replies[:REPLY_FRAME_ITEMS]
            try:
                frame = encode_frame(batch)
            except Exception as exc:  # too large together: send one by one
                log.warning("reply frame too large, splitting", extra={"conn": self.conn_id, "error": repr(exc)})
                for r in batch:
                    try:
                        f = encode_frame([r])
                    except Exception:
                        f = encode_frame([[r[0], int(Status.INVALID), {"reason": "reply too large"}]])
                    with trio.fail_after(SEND_TIMEOUT_S):
                        await self.stream.send_all(f)
                self._sent(len(batch))
                continue
            # the common case: the whole frame fits the socket buffer and is sent right here
            self._write_nowait(frame, len(batch))


class Server:
    def __init__(self, node: Node) -> None:
        self.node = node
        self._next_conn = 0
        self.client_conns = 0

    async def handle(self, stream: trio.SocketStream) -> None:
        self._next_conn += 1
        conn_id = self._next_conn
        try:
            await self._handle(stream, conn_id)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError, OSError):
            pass
        except Exception:  # a bug in handling one connection must not stop the node
            log.exception("connection handler failed", extra={"conn": conn_id})
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _handle(self, stream: trio.SocketStream, conn_id: int) -> None:
        decoder = FrameDecoder()
        frames: list = []
        # no deadline here: a client may open a connection and use it later (an idle
        # connection costs one sleeping task); peers and clients are told apart by this frame
        while not frames:
            data = await stream.receive_some(RECV_BYTES)
            if not data:
                return
            try:
                frames = decoder.feed(data)
            except FrameError as exc:
                await _send_fatal(stream, str(exc))
                return
        first = frames[0]
        if first and isinstance(first[0], list) and first[0] and first[0][0] == "peer":
            hello = first[0][1] if len(first[0]) > 1 and isinstance(first[0][1], dict) else {}
            if "snapshot" in hello:
                await self.node.receive_snapshot(stream, decoder, hello, frames[1:])
            else:
                await self._peer(stream, decoder, hello, frames, conn_id)
            return
        await self._client(stream, decoder, frames, conn_id)

    async def _peer(self, stream, decoder: FrameDecoder, hello: dict, frames: list, conn_id: int) -> None:
        peer_id = hello.get("id")
        if type(peer_id) is not int or not self.node.is_peer(peer_id):
            log.warning("unknown peer rejected", extra={"conn": conn_id, "peer": repr(peer_id)})
            return
        for f in frames[1:]:
            self.node.on_peer_items(peer_id, f)
        fd = stream.socket.fileno()
        while True:
            data = await receive(fd)
            if not data:
                return
            try:
                for f in decoder.feed(data):
                    self.node.on_peer_items(peer_id, f)
            except FrameError as exc:
                log.warning("bad frame from peer", extra={"peer": peer_id, "error": str(exc)})
                return

    async def _client(self, stream, decoder: FrameDecoder, frames: list, conn_id: int) -> None:
        conn = ClientConn(stream, conn_id)
        self.client_conns += 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer_then_cancel, conn, nursery.cancel_scope)
                try:
                    for f in frames:
                        await self._requests(conn, f)
                    fd = stream.socket.fileno()
                    while True:
                        data = await receive(fd)
                        if not data:
                            break
                        try:
                            frames = decoder.feed(data)
                        except FrameError as exc:
                            conn.inflight += 1
                            conn.error(None, Status.INVALID, str(exc))
                            await trio.sleep(0.05)  # let the writer flush the error
                            break
                        for f in frames:
                            await self._requests(conn, f)
                finally:
                    conn.closed = True
                    nursery.cancel_scope.cancel()
        finally:
            self.client_conns -= 1

    async def _writer_then_cancel(self, conn: ClientConn, scope: trio.CancelScope) -> None:
        try:
            await conn.writer()
        finally:
            conn.closed = True
            scope.cancel()

    async def _requests(self, conn: ClientConn, frame: list) -> None:
        parse = self.node.parse
        submit = self.node.submit
        for msg in frame:
            if conn.inflight >= INFLIGHT_MAX:
                await conn.wait_room()
            if conn.closed:
                return
            conn.inflight += 1
            try:
                req = parse(msg)
            except Invalid as exc:
                rid = msg[0] if isinstance(msg, list) and msg and type(msg[0]) is int else None
                conn.error(rid, Status.INVALID, str(exc))
                continue
            submit(conn, req)


async def receive(fd: int) -> bytes:
    """What `SocketStream.receive_some` does, for less CPU: park until the socket is readable,
    then ONE read (b"" at end of stream). trio's version first tries a read (on a socket that
    is usually empty at that point: one wasted syscall), and yields once more after a
    successful one; this one parks once per frame and so is still a checkpoint every time,
    which keeps a client that sends without pause from starving the node's loop."""
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            return os.read(fd, RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            continue  # readable was a false alarm


async def _send_fatal(stream, reason: str) -> None:
    with trio.move_on_after(1.0):
        await stream.send_all(encode_frame([[None, int(Status.INVALID), {"reason": reason}]]))
