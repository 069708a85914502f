"""How requests leave the client: the Flusher (one frame per scheduler pass), the writer task
for what a full socket did not take, pipelined replies in any order, many expiries at once."""

from __future__ import annotations

import functools
import random

import pytest
import trio
import trio.testing

from client import AsyncClient
from client.connection import Connection
from client.errors import OutcomeUnknown
from client.wire import MAX_VALUE_BYTES, FrameDecoder, bucket_of, encode_frame
from tests.client.fakenode import Delay, Silent, run


def test_requests_queued_in_one_pass_leave_in_one_frame_written_by_the_flusher(fake):
    async def main():
        async with AsyncClient(fake.addrs, rng=random.Random(1)) as c:
            await c.put(b"warm", b"v")  # map and connection to the leader (node 0 leads all)
            fake.frames.clear()
            flushed = c._flusher.frames
            async with trio.open_nursery() as nursery:
                for i in range(50):  # all 50 first run in the same scheduler pass
                    nursery.start_soon(c.put, b"k%d" % i, b"v%d" % i)
            assert fake.frames == [50]
            assert c._flusher.frames == flushed + 1
            assert all(fake.store[b"k%d" % i][0] == b"v%d" % i for i in range(50))

    run(main)


def test_the_flusher_is_removed_when_the_client_exits(fake):
    async def main():
        async with AsyncClient(fake.addrs) as c:
            await c.put(b"a", b"1")
        with pytest.raises(KeyError):
            trio.lowlevel.remove_instrument(c._flusher)

    run(main)


def test_a_frame_the_socket_does_not_take_is_finished_by_the_writer_task():
    """12 MiB of requests to a node that does not read yet: the flusher's non-blocking
    write takes only part; the writer task sends the rest once the node reads."""
    n = 12
    value = bytes(range(256)) * (MAX_VALUE_BYTES // 256)
    go = trio.Event()
    received: list[list] = []

    async def node(stream: trio.SocketStream) -> None:
        decoder = FrameDecoder()
        port = stream.socket.getsockname()[1]
        while True:
            data = await stream.receive_some(1 << 20)
            if not data:
                return
            for messages in decoder.feed(data):
                replies = []
                for rid, op, args in messages:
                    if op == "map":
                        replies.append([rid, 0, {"epoch": 1, "num_buckets": 1, "nodes": {0: f"127.0.0.1:{port}"},
                                                 "buckets": [[1, [0], 0]]}])
                        continue
                    await go.wait()  # the first put: stop reading until the client is stuck
                    received.append(args)
                    replies.append([rid, 0, {"version": len(received)}])
                await stream.send_all(encode_frame(replies))

    async def main():
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(functools.partial(trio.serve_tcp, node, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
            async with AsyncClient([f"127.0.0.1:{port}"], timeout=15.0) as c:
                await c.bucket_map()
                (conn,) = c._conns.values()
                sent, flushed = conn.frames_sent, c._flusher.frames
                versions = []

                async def put(i):
                    versions.append(await c.put(b"k%d" % i, value))

                async with trio.open_nursery() as puts:
                    for i in range(n):
                        puts.start_soon(put, i)
                    await trio.testing.wait_all_tasks_blocked()
                    # 12 MiB do not fit the socket buffers: the writer task holds the rest
                    assert conn._writer_task is None and conn.frames_sent - sent < 4
                    go.set()
                assert sorted(versions) == list(range(1, n + 1))
                assert sorted(a["key"] for a in received) == sorted(b"k%d" % i for i in range(n))
                assert all(a["value"] == value for a in received)
                # frames of at most 4 MiB: 3 puts each; the writer task sent some of them
                assert conn.frames_sent - sent == 4 and c._flusher.frames - flushed < 4
            nursery.cancel_scope.cancel()

    run(main)


def test_pipelined_replies_in_reverse_order_reach_their_own_callers(fake):
    def script(node, op, args):
        if op == "get":
            i = int(args["key"][1:])
            return Delay(0.002 * (40 - i))  # the last request is answered first
        return None

    async def main():
        async with AsyncClient(fake.addrs) as c:
            for i in range(40):
                await c.put(b"k%d" % i, b"v%d" % i)
            fake.script = script
            got = {}

            async def get(i):
                got[i] = await c.get(b"k%d" % i)

            async with trio.open_nursery() as nursery:
                for i in range(40):
                    nursery.start_soon(get, i)
            assert got == {i: b"v%d" % i for i in range(40)}

    run(main)


def test_the_timer_expires_many_attempts_at_once(fake):
    """100 writes to a leader that never answers: every one ends OutcomeUnknown (sent, no
    answer) within its deadline; none hangs, none is reported as not applied."""

    def script(node, op, args):
        return Silent() if op == "put" else None

    async def main():
        async with AsyncClient(fake.addrs, timeout=1.0, attempt_timeout=0.2) as c:
            await c.bucket_map()
            fake.script = script
            outcomes = []

            async def put(i):
                try:
                    await c.put(b"k%d" % i, b"v")
                    outcomes.append("ok")
                except OutcomeUnknown:
                    outcomes.append("unknown")

            async with trio.open_nursery() as nursery:
                for i in range(100):
                    nursery.start_soon(put, i)
            assert outcomes == ["unknown"] * 100
            assert not fake.applied

    run(main)


def test_a_connection_without_a_flusher_is_written_by_its_writer_task(fake):
    async def main():
        conn = Connection(fake.addrs[0], max_inflight=8)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.run, 5.0, lambda _: None)
            await conn.ready.wait()
            calls = []
            for i in range(20):  # more than max_inflight: submit() waits for slots
                key = b"k%d" % i
                args = {"key": key, "value": b"v", "bucket": bucket_of(key, fake.num_buckets),
                        "session": 1000 + i, "seq": 1}
                call = conn.submit_nowait("put", args) or await conn.submit("put", args)
                calls.append(call)
                if len(calls) % 8 == 0:
                    for c in calls[-8:]:
                        await c.wait()
            for call in calls:
                await call.wait()
            assert all(call.status == 0 and call.payload["version"] >= 1 for call in calls)
            assert len(fake.store) == 20
            assert conn.frames_sent < 20  # requests queued together shared frames
            conn.close()

    run(main)
