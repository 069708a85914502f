"""The peer transport against real loopback sockets: batching, the handshake, raft messages as
binary batches next to msgpack items, direct writes whose rest the sender task finishes in
order, the queue's bounds, a dead peer, and a peer that stops reading (the watchdog must cut
the stalled send and the sender reconnect)."""

from __future__ import annotations

import trio
import trio.testing

from client.wire import FrameDecoder
from kvstore import codec
from kvstore import transport as tp
from kvstore.transport import Transport
from raft.types import Entry, EntryType, Message, MessageType


async def _serve(received: list, nursery, read: bool = True):
    """A listener on a free loopback port; returns (port, connections accepted counter)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    accepted = []

    async def handler(stream):
        accepted.append(stream)
        dec = FrameDecoder()
        if not read:
            await trio.sleep_forever()
        while True:
            data = await stream.receive_some(65536)
            if not data:
                return
            for frame in dec.feed(data):
                received.append(frame)

    nursery.start_soon(trio.serve_listeners, handler, listeners)
    return port, accepted


async def _connected(received: list, nursery, read: bool = True):
    """A Transport of node 1 connected to a `_serve` listener as peer 2: (transport, accepted)."""
    port, accepted = await _serve(received, nursery, read)
    t = Transport(1, {2: f"127.0.0.1:{port}"}, lambda p: None)
    nursery.start_soon(t.run)
    await _until(lambda: t.is_connected(2))
    return t, accepted


async def _until(pred, timeout=5.0):
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.01)


def test_items_arrive_batched_after_the_handshake():
    async def main():
        received: list = []
        async with trio.open_nursery() as n:
            t, _acc = await _connected(received, n)
            for i in range(100):
                t.send(2, [7, i, b"x"])
            t.flush()
            await _until(lambda: sum(len(f) for f in received) >= 101)
            assert received[0] == [["peer", {"id": 1}]]
            items = [it for f in received[1:] for it in f]
            assert items == [[7, i, b"x"] for i in range(100)]
            assert len(received) == 2  # one flush: one frame
            assert t.statistics()[2]["sent_frames"] == 1
            n.cancel_scope.cancel()

    trio.run(main)


def test_frames_larger_than_the_socket_takes_arrive_whole_and_in_order():
    """A direct write the socket takes only part of leaves the rest to the sender task; items
    flushed meanwhile follow it, never overtake it."""
    async def main():
        received: list = []
        async with trio.open_nursery() as n:
            t, _acc = await _connected(received, n)
            big = b"z" * 50_000
            for burst in range(4):  # 5 MB a burst: more than a socket buffer takes at once,
                for i in range(100):  # and more than one frame holds (FRAME_BYTES_TARGET)
                    t.send(2, [0] * 7 + [[1, i, 0, big]] + [burst, i, 0, 0, 0])
                t.flush()
            await _until(lambda: sum(len(f) for f in received) >= 401, timeout=20)
            items = [(it[8], it[9]) for f in received[1:] for it in f]
            assert items == [(b, i) for b in range(4) for i in range(100)]
            assert len(received) - 1 >= 5  # 20 MB in frames of at most ~4 MB (FRAME_BYTES_TARGET)
            assert all(it[7][3] == big for f in received[1:] for it in f)
            assert t.statistics()[2]["dropped"] == 0
            assert t.statistics()[2]["partial_writes"] >= 1  # the sender task's path was taken
            n.cancel_scope.cancel()

    trio.run(main)


def test_a_dead_peer_drops_items_and_is_reported():
    async def main():
        unreachable = []
        async with trio.open_nursery() as n:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            for lst in listeners:
                await lst.aclose()  # nobody listens there any more
            t = Transport(1, {2: f"127.0.0.1:{port}"}, unreachable.append)
            n.start_soon(t.run)
            await _until(lambda: unreachable)
            t.send(2, [1, 2, 3])
            t.flush()
            assert t.statistics()[2]["dropped"] >= 1
            assert not t.is_connected(2)
            n.cancel_scope.cancel()

    trio.run(main)


def test_a_peer_that_stops_reading_is_cut_by_the_watchdog(monkeypatch):
    monkeypatch.setattr(tp, "SEND_TIMEOUT_S", 0.3)
    monkeypatch.setattr(tp, "WATCHDOG_S", 0.05)

    async def main():
        received: list = []
        async with trio.open_nursery() as n:
            t, accepted = await _connected(received, n, read=False)
            big = b"y" * 60_000
            item = [0] * 7 + [[1, 1, 0, big]] + [0] * 5  # shaped like an encoded raft message
            for _ in range(400):  # 24 MB: more than the socket buffers hold, so a send blocks
                t.send(2, item)
            t.flush()
            await _until(lambda: t.statistics()[2]["stalls"] >= 1)
            # the stalled connection was closed and a new one opened
            await _until(lambda: len(accepted) >= 2 and t.is_connected(2))
            n.cancel_scope.cancel()

    trio.run(main)


def _raft_items(frames: list) -> list:
    """The (group, message) pairs of received peer frames, in order (handshake skipped)."""
    out = []
    for f in frames[1:]:
        for item in f:
            if type(item) is bytes:
                out += codec.decode_batch(item)
    return out


def test_raft_messages_and_gossip_share_one_frame_and_decode_in_order():
    async def main():
        received: list = []
        async with trio.open_nursery() as n:
            t, _acc = await _connected(received, n)
            sent = []
            for i in range(50):
                m = Message(MessageType.APP, 2, 1, 3, 3, i, (Entry(3, i + 1, EntryType.NORMAL, b"v" * i),), i)
                sent.append((i % 7, m))
                t.send_message(2, i % 7, m)
            t.send(2, ["leaders", 1, [[0, 3]]])
            t.send_message(3, 0, Message(MessageType.HEARTBEAT, 3, 1, 3))  # no such peer: ignored
            t.flush()
            await _until(lambda: len(received) >= 2)
            assert received[0] == [["peer", {"id": 1}]]
            assert len(received) == 2  # one flush: one frame
            assert received[1][1:] == [["leaders", 1, [[0, 3]]]]
            assert _raft_items(received) == sent
            st = t.statistics()[2]
            assert (st["sent_frames"], st["sent_items"], st["queued"], st["dropped"]) == (1, 51, 0, 0)
            n.cancel_scope.cancel()

    trio.run(main)


def test_large_raft_batches_split_into_frames_in_order():
    async def main():
        received: list = []
        async with trio.open_nursery() as n:
            t, _acc = await _connected(received, n)
            big = b"z" * 50_000
            sent = []
            for burst in range(4):  # 5 MB a burst: more than one frame holds
                for i in range(100):
                    m = Message(MessageType.APP, 2, 1, burst, 0, i, (Entry(burst, i, EntryType.NORMAL, big),))
                    sent.append((1, m))
                    t.send_message(2, 1, m)
                t.flush()
            await _until(lambda: len(_raft_items(received)) >= 400, timeout=20)
            assert _raft_items(received) == sent
            assert len(received) - 1 >= 5  # frames of at most ~FRAME_BYTES_TARGET
            assert all(len(b) <= tp.FRAME_BYTES_TARGET + 60_000 for f in received[1:] for b in f)
            assert t.statistics()[2]["dropped"] == 0
            n.cancel_scope.cancel()

    trio.run(main)


def test_queue_bounds_and_unencodable_messages_drop_and_count(monkeypatch):
    monkeypatch.setattr(tp, "QUEUE_BYTES_MAX", 10_000)
    monkeypatch.setattr(tp, "QUEUE_ITEMS_MAX", 5)

    async def main():
        received: list = []
        async with trio.open_nursery() as n:
            t, _acc = await _connected(received, n)
            s = t.senders[2]
            t.send_message(2, 2**40, Message(MessageType.HEARTBEAT, 2, 1, 3))  # group too large
            t.send_message(2, 1, Message(MessageType.APP, 2, 1, 3, entries=(Entry(3, 1, EntryType.NORMAL, b"x" * 20_000),)))
            assert s.dropped == 2 and s._queued == 0 and s._queued_bytes == 0
            ok = [(1, Message(MessageType.HEARTBEAT, 2, 1, 3, commit=i)) for i in range(7)]
            for g, m in ok:
                t.send_message(2, g, m)
            assert s.dropped == 4 and s._queued == 5  # the item bound
            t.flush()
            await _until(lambda: len(_raft_items(received)) >= 5)
            assert _raft_items(received) == ok[:5]
            assert s._queued == 0 and s._queued_bytes == 0
            n.cancel_scope.cancel()

    trio.run(main)
