"""Node-to-node transport: one outbound connection per peer, batched frames, bounded queues.

Theory of operation. The node loop calls `Transport.send_message(peer, group, message)`
synchronously for every raft message of a turn (and `send(peer, item)` for the odd msgpack
item, e.g. leader gossip). A raft message is encoded at once into the peer's frame being
filled (codec.py's binary raft batch, a bytearray that becomes the frame itself: no list of
items, no msgpack, and the queue's size in bytes is exact). At the end of the turn the loop
calls `flush()`, which seals that frame and writes it with one non-blocking `os.write` on the
loop itself (so all groups' messages to a peer in one turn share one syscall, and no task is
woken); a frame that reaches FRAME_BYTES_TARGET is sealed early and the next one begun. Only
what the socket does not take at once (or a peer whose sender is mid-send) is left to the
peer's sender task, which is woken for it. Messages queued without a flush go out with the
next one (the loop turns at least every tick). The queue is bounded in messages and bytes;
when it is full, or while the peer is disconnected, messages are dropped and counted — raft
retransmits, and a dead or slow peer therefore never blocks the loop or grows memory. On connect the sender sends the handshake
[["peer", {"id": self_id}]]; on failure it reconnects with capped exponential backoff and
tells the node (`on_unreachable`) so raft can slow down replication to that peer.

A send that has not finished after SEND_TIMEOUT_S (a peer that stopped reading) is cut by one
watchdog task for all peers, not by a timeout scope per frame: `trio.fail_after` around every
send cost ~40 % of this module's CPU. The connection is then closed and re-opened like any
other failure.

Inbound messages arrive on connections the peer opened to us (see server.py); this module
only sends.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable

import trio

from client.wire import encode_frame
from raft.types import Message

from .codec import PREFIX_BYTES, CodecError, append_message, new_batch, pack_item, seal
from .placement import split_addr

log = logging.getLogger("kvstore.transport")

QUEUE_ITEMS_MAX = 20_000
QUEUE_BYTES_MAX = 64 * 1024 * 1024
FRAME_BYTES_TARGET = 4 * 1024 * 1024
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 1.0
CONNECT_TIMEOUT_S = 2.0
SEND_TIMEOUT_S = 5.0
WATCHDOG_S = 0.5  # how often stalled sends are looked for


class PeerSender:
    def __init__(self, self_id: int, peer_id: int, addr: str, on_unreachable: Callable[[int], None]):
        self.self_id = self_id
        self.peer_id = peer_id
        self.addr = addr
        self._on_unreachable = on_unreachable
        # the frame being filled: raft messages encoded straight into a batch (codec.py),
        # other items packed apart; older frames, sealed when this one reached
        # FRAME_BYTES_TARGET, wait in _frames as (frame, items)
        self._batch = new_batch()
        self._batch_count = 0
        self._items: list[bytes] = []
        self._items_bytes = 0
        self._frames: deque = deque()
        self._queued = 0  # messages and items not yet handed to the socket
        self._queued_bytes = 0
        self._wake = trio.Event()
        self.connected = False
        self.dropped = 0
        self.sent_frames = 0
        self.sent_items = 0
        self.stalls = 0
        self.partial_writes = 0  # direct writes whose rest the sender task had to send
        self._send_since: float | None = None  # monotonic start of the send in progress
        self._conn_scope: trio.CancelScope | None = None
        self._fd: int | None = None  # the connected socket, while the pump is parked on it
        self._tail = b""  # what a direct write left unsent: the pump sends it first

    def send_message(self, group: int, m: Message) -> None:
        """Queue raft message `m` of `group`: encoded right here, into the frame being filled,
        so the queue's size in bytes is exact and costs nothing to keep."""
        if not self.connected or self._queued >= QUEUE_ITEMS_MAX:
            self.dropped += 1
            return
        buf = self._batch
        before = len(buf)
        try:
            append_message(buf, group, m)
        except CodecError as exc:  # a message we cannot encode is a bug: drop, keep going
            log.error("cannot encode raft message", extra={"peer": self.peer_id, "error": str(exc)})
            self.dropped += 1
            return
        size = len(buf) - before
        if self._queued_bytes + size > QUEUE_BYTES_MAX:
            del buf[before:]
            self.dropped += 1
            return
        self._batch_count += 1
        self._queued += 1
        self._queued_bytes += size
        if len(buf) >= FRAME_BYTES_TARGET:
            self._seal()

    def send(self, item: list) -> None:
        """Queue a non-raft item (a msgpack-able list, e.g. leader gossip)."""
        if not self.connected or self._queued >= QUEUE_ITEMS_MAX:
            self.dropped += 1
            return
        try:
            packed = pack_item(item)
        except CodecError as exc:
            log.error("cannot encode peer item", extra={"peer": self.peer_id, "error": str(exc)})
            self.dropped += 1
            return
        size = len(packed)
        if self._queued_bytes + size > QUEUE_BYTES_MAX:
            self.dropped += 1
            return
        self._items.append(packed)
        self._items_bytes += size
        self._queued += 1
        self._queued_bytes += size
        if len(self._batch) + self._items_bytes >= FRAME_BYTES_TARGET:
            self._seal()

    def _seal(self) -> None:
        """Close the frame being filled (if it holds anything) and queue it for the wire."""
        count = self._batch_count
        items = self._items
        if not count and not items:
            return
        buf = self._batch
        n = count + len(items)
        size = len(buf) - PREFIX_BYTES + self._items_bytes  # what _queued_bytes counted
        self._batch = new_batch()
        self._batch_count = 0
        self._items = []
        self._items_bytes = 0
        try:
            frame = seal(buf, count, items)
        except CodecError as exc:  # larger than a frame may be: a bug, drop it, keep going
            log.error("cannot seal peer frame", extra={"peer": self.peer_id, "error": str(exc)})
            self.dropped += n
            self._queued -= n
            self._queued_bytes -= size
            return
        self._queued_bytes += len(frame) - size
        self._frames.append((frame, n))

    def flush(self) -> None:
        """Write what is queued now, from the caller's task, if the socket takes it; else (or
        for a partial write's rest) wake the sender task."""
        if not self._queued:
            return
        fd = self._fd
        if fd is None or self._tail:  # mid-send or not connected: the pump's job
            self._wake.set()
            return
        self._seal()
        frames = self._frames
        while frames and not self._tail:
            frame, n = frames.popleft()
            self._queued -= n
            self._queued_bytes -= len(frame)
            self.sent_frames += 1
            self.sent_items += n
            try:
                written = os.write(fd, frame)
            except (BlockingIOError, InterruptedError):
                written = 0
            except OSError:  # the pump sees the broken connection on its next send
                written = 0
            if written < len(frame):
                self._tail = memoryview(frame)[written:]
                self.partial_writes += 1
                self._wake.set()

    def _clear(self) -> None:
        self.dropped += self._queued + (1 if self._tail else 0)
        self._batch = new_batch()
        self._batch_count = 0
        self._items = []
        self._items_bytes = 0
        self._frames.clear()
        self._queued = 0
        self._queued_bytes = 0
        self._tail = b""

    async def run(self) -> None:
        host, port = split_addr(self.addr)
        backoff = BACKOFF_MIN_S
        while True:
            stream = None
            try:
                with trio.fail_after(CONNECT_TIMEOUT_S):
                    stream = await trio.open_tcp_stream(host, port)
                with trio.fail_after(SEND_TIMEOUT_S):
                    await stream.send_all(encode_frame([["peer", {"id": self.self_id}]]))
                self.connected = True
                backoff = BACKOFF_MIN_S
                log.info("peer connected", extra={"peer": self.peer_id, "addr": self.addr})
                with trio.CancelScope() as self._conn_scope:
                    await self._pump(stream)
                if self._conn_scope.cancelled_caught:
                    raise trio.TooSlowError(f"a send did not finish within {SEND_TIMEOUT_S} s")
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, trio.TooSlowError) as exc:
                if self.connected:
                    log.warning("peer connection lost", extra={"peer": self.peer_id, "error": repr(exc)})
            finally:
                self._conn_scope = None
                self._send_since = None
                was_connected = self.connected
                self.connected = False
                self._clear()
                if stream is not None:
                    with trio.CancelScope(shield=True):
                        await stream.aclose()
            if was_connected or backoff == BACKOFF_MIN_S:
                self._on_unreachable(self.peer_id)
            await trio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    def check_stall(self, now: float) -> None:
        """Called by the watchdog: cut the connection if one send has been stuck too long."""
        since = self._send_since
        if since is not None and now - since > SEND_TIMEOUT_S and self._conn_scope is not None:
            self.stalls += 1
            self._conn_scope.cancel()

    async def _pump(self, stream: trio.SocketStream) -> None:
        fd = stream.socket.fileno()
        try:
            while True:
                if self._tail:  # a frame's rest: in order, before anything queued after it
                    self._fd = None
                    self._send_since = time.monotonic()  # a send that must wait can stall
                    await stream.send_all(self._tail)
                    self._send_since = None
                    self._tail = b""
                    continue
                if not self._queued:
                    self._fd = fd  # parked: flush() may write directly
                    self._wake = trio.Event()
                    await self._wake.wait()
                    continue
                self._fd = fd
                self.flush()  # leaves any rest in _tail
        finally:
            self._fd = None


class Transport:
    def __init__(self, self_id: int, peers: dict[int, str], on_unreachable: Callable[[int], None]):
        self.self_id = self_id
        self.senders = {
            pid: PeerSender(self_id, pid, addr, on_unreachable)
            for pid, addr in peers.items()
            if pid != self_id
        }

    def send_message(self, peer: int, group: int, m: Message) -> None:
        s = self.senders.get(peer)
        if s is not None:
            s.send_message(group, m)

    def send(self, peer: int, item: list) -> None:
        """A non-raft item (a msgpack-able list)."""
        s = self.senders.get(peer)
        if s is not None:
            s.send(item)

    def flush(self) -> None:
        """Put what was queued on the wire (see the module docstring)."""
        for s in self.senders.values():
            if s._queued:
                s.flush()

    def is_connected(self, peer: int) -> bool:
        s = self.senders.get(peer)
        return s is not None and s.connected

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for s in self.senders.values():
                nursery.start_soon(s.run)
            nursery.start_soon(self._watchdog)

    async def _watchdog(self) -> None:
        while True:
            await trio.sleep(WATCHDOG_S)
            now = time.monotonic()
            for s in self.senders.values():
                s.check_stall(now)

    def statistics(self) -> dict:
        return {
            pid: {
                "connected": s.connected,
                "dropped": s.dropped,
                "stalls": s.stalls,
                "partial_writes": s.partial_writes,
                "sent_frames": s.sent_frames,
                "sent_items": s.sent_items,
                "queued": s._queued,
            }
            for pid, s in self.senders.items()
        }

