"""ClientConn.flush_now: replies sent synchronously (before the node's thread blocks in a storage
commit) arrive complete and in order, also when the socket takes only part of a frame."""

import socket

import trio
import trio.testing

from client.wire import FrameDecoder
from kvstore.server import ClientConn, receive


def _conn_over_small_socket(inflight: int):
    """A ClientConn on one end of a socket pair whose send buffer is small (so a big frame is
    taken only in part); returns (conn, stream, the peer socket, non-blocking)."""
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    a.setblocking(False)
    b.setblocking(False)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(a))
    conn = ClientConn(stream, 1)
    conn.inflight = inflight
    return conn, stream, b


async def _collect(b, dec: FrameDecoder, got: list, n: int) -> None:
    """Read replies from `b` into `got` until it holds `n`."""
    while len(got) < n:
        await trio.sleep(0.001)
        try:
            got.extend(r for frame in dec.feed(b.recv(1 << 20)) for r in frame)
        except BlockingIOError:
            pass


def test_flush_now_sends_at_once_and_the_writer_finishes_a_partial_frame():
    async def main():
        conn, stream, b = _conn_over_small_socket(6)
        got: list = []
        dec = FrameDecoder()
        try:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(conn.writer)
                    await trio.testing.wait_all_tasks_blocked()
                    # small replies: on the wire at once, without the writer task running
                    conn.reply(1, 0, {"version": 1})
                    conn.reply(2, 0, {"version": 2})
                    conn.flush_now()
                    assert conn.inflight == 4 and not conn._tail
                    await _collect(b, dec, got, 2)
                    assert [r[0] for r in got] == [1, 2]
                    # a frame larger than the socket buffer: the rest goes via the writer task
                    big = b"x" * 300_000
                    conn.reply(3, 0, {"value": big})
                    conn.reply(4, 0, {"version": 4})
                    conn.flush_now()
                    assert conn._tail  # only part of it was taken
                    conn.reply(5, 0, {"version": 5})
                    conn.flush_now()  # refused while a tail is pending: order is kept
                    conn.reply(6, 0, {"version": 6})
                    await _collect(b, dec, got, 6)
                    nursery.cancel_scope.cancel()
        finally:
            b.close()
            await stream.aclose()
        assert [r[0] for r in got] == [1, 2, 3, 4, 5, 6]
        assert got[2][2]["value"] == big
        assert conn.inflight == 0

    trio.run(main)


def test_writer_sends_at_once_and_finishes_a_frame_the_socket_took_only_part_of():
    """The writer task writes each batch with one non-blocking write; what a full send buffer
    does not take is sent by awaiting, before anything queued later: order kept, and a
    request counts as in flight until its reply is on the wire."""

    async def main():
        conn, stream, b = _conn_over_small_socket(5)
        got: list = []
        dec = FrameDecoder()

        try:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(conn.writer)
                    await trio.testing.wait_all_tasks_blocked()
                    conn.reply(1, 0, {"version": 1})
                    conn.reply(2, 0, {"version": 2})
                    await trio.testing.wait_all_tasks_blocked()
                    assert conn.inflight == 3 and not conn._tail  # written, nothing pending
                    await _collect(b, dec, got, 2)
                    big = b"x" * 300_000
                    conn.reply(3, 0, {"value": big})
                    await trio.testing.wait_all_tasks_blocked()
                    assert conn._tail and conn.inflight == 3  # only part of it was taken
                    conn.reply(4, 0, {"version": 4})
                    conn.reply(5, 0, {"version": 5})
                    await _collect(b, dec, got, 5)
                    nursery.cancel_scope.cancel()
        finally:
            b.close()
            await stream.aclose()
        assert [r[0] for r in got] == [1, 2, 3, 4, 5]
        assert got[2][2]["value"] == big
        assert conn.inflight == 0

    trio.run(main)


def test_receive_returns_what_arrived_then_empty_at_end_of_stream():
    async def main():
        a, b = socket.socketpair()
        a.setblocking(False)
        try:
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    got: list = []

                    async def reader():
                        while True:
                            data = await receive(a.fileno())
                            got.append(data)
                            if not data:
                                return

                    nursery.start_soon(reader)
                    await trio.testing.wait_all_tasks_blocked()
                    assert got == []  # parked: nothing to read yet
                    b.sendall(b"hello")
                    await trio.testing.wait_all_tasks_blocked()
                    assert got == [b"hello"]
                    b.close()
            assert got == [b"hello", b""]
        finally:
            a.close()
            b.close()

    trio.run(main)
