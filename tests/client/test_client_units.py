"""Pure pieces of the client: the bucket map cache, addresses, sessions."""

from __future__ import annotations

import random

import pytest

from client.connection import split_addr
from client.routing import BucketMap, MapError
from client.sessions import SessionPool


def wire_map(**over):
    m = {"epoch": 3, "num_buckets": 2, "nodes": {1: "127.0.0.1:1", 2: "127.0.0.1:2"},
         "buckets": [[3, [1, 2], 1], [2, [2, 1], None]]}
    m.update(over)
    return m


def test_bucket_map_from_wire_and_leader_hints():
    m = BucketMap.from_wire(wire_map())
    assert m.leader_addr(0) == "127.0.0.1:1" and m.leader_addr(1) is None
    assert m.replica_addrs(1) == ["127.0.0.1:2", "127.0.0.1:1"]
    m.note_leader(1, 3, "127.0.0.1:3")  # a node the map did not know yet
    assert m.leader_addr(1) == "127.0.0.1:3" and "127.0.0.1:3" in m.all_addrs()
    m.note_leader(1, 9, None)  # unknown node and no address: treated as no leader
    assert m.leader_addr(1) is None
    m.forget_leader(0, "127.0.0.1:2")  # not the leader: nothing changes
    assert m.leader_addr(0) == "127.0.0.1:1"
    m.forget_leader(0, "127.0.0.1:1")
    assert m.leader_addr(0) is None
    assert m.to_dict()["buckets"][0] == [3, [1, 2], None]


@pytest.mark.parametrize("bad", [
    None, [], {}, wire_map(num_buckets=3), wire_map(num_buckets=0), wire_map(buckets=[[1, [1]]] * 2),
    wire_map(epoch="x"), wire_map(nodes=[1, 2]), wire_map(buckets=None),
])
def test_malformed_maps_are_map_errors(bad):
    with pytest.raises(MapError):
        BucketMap.from_wire(bad)


def test_addresses():
    assert split_addr("127.0.0.1:7001") == ("127.0.0.1", 7001)
    assert split_addr("[::1]:7001") == ("::1", 7001)
    assert split_addr("localhost:1") == ("localhost", 1)
    for bad in ["localhost", ":7001", "h:", "h:port", "h:0", "h:70000"]:
        with pytest.raises(ValueError):
            split_addr(bad)


def test_sessions_are_reused_only_when_safe():
    pool = SessionPool(random.Random(1))
    s = pool.acquire()
    assert (s.next_seq(), s.next_seq()) == (1, 2)
    pool.release(s, reusable=True)
    assert pool.acquire() is s
    pool.release(s, reusable=False)  # e.g. its last write's outcome is unknown
    t = pool.acquire()
    assert t is not s and t.id != s.id and t.seq == 0


def test_call_done_wakes_its_one_waiter_and_survives_cancellation():
    import trio
    import trio.testing

    from client.connection import Done

    async def main():
        d = Done()
        woke = []

        async def waiter():
            await d.wait()
            woke.append(True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            assert not woke and not d.is_set()
            d.set()
            d.set()  # a second set is harmless
        assert woke == [True] and d.is_set()
        await d.wait()  # already set: returns at once

        d2 = Done()
        with trio.move_on_after(0.01) as scope:
            await d2.wait()
        assert scope.cancelled_caught and not d2.is_set()
        d2.set()  # nobody waits any more: nothing to wake
        await d2.wait()

    trio.run(main)


def test_attempt_timer_expires_in_deadline_order_also_when_armed_out_of_order():
    import trio
    import trio.testing

    from client.aio import _AttemptTimer
    from client.connection import Call

    async def main():
        timer = _AttemptTimer()
        expired: list[int] = []
        calls = {rid: Call(rid, [], 0) for rid in range(5)}
        async with trio.open_nursery() as nursery:
            nursery.start_soon(timer.run)
            now = trio.current_time()
            # in order (FIFO), then earlier ones (heap), then one answered before its deadline
            for rid, after in ((0, 0.10), (1, 0.30), (2, 0.05), (3, 0.20), (4, 0.15)):
                timer.arm(now + after, calls[rid])

            async def watch(rid):
                await calls[rid].done.wait()
                expired.append(rid)

            for rid in calls:
                nursery.start_soon(watch, rid)
            calls[4].done.set()  # answered in time
            await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
        assert expired == [4, 2, 0, 3, 1]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_attempt_timer_drops_done_calls_and_still_expires_the_waiting_one():
    import trio
    import trio.testing

    from client.aio import TIMER_SLACK_SECONDS, _AttemptTimer
    from client.connection import Call

    async def main():
        timer = _AttemptTimer()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(timer.run)
            now = trio.current_time()
            for rid in range(1, 1001):  # answered at once, as most requests are
                call = Call(rid, [], 0)
                timer.arm(now + 0.5 + rid * 1e-4, call)
                call.set()
            # the FIFO keeps about the calls in flight, not every call of the window
            assert len(timer._fifo) <= 3
            waiting = Call(0, [], 0)
            timer.arm(now + 1.0, waiting)  # never answered
            for rid in range(1002, 1100):  # answered, but behind the waiting one
                call = Call(rid, [], 0)
                timer.arm(now + 1.0 + rid * 1e-5, call)
                call.set()
            late = Call(1001, [], 0)
            timer.arm(now + 2.0, late)  # behind answered entries; never answered
            await trio.sleep(1.0 + 2 * TIMER_SLACK_SECONDS)
            assert waiting.is_set() and waiting.status is None  # expired, within the slack
            assert not late.is_set()
            await trio.sleep(1.0)
            assert late.is_set() and late.status is None
            assert not timer._fifo and not timer._heap
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
