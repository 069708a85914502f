"""The client against a scriptable fake cluster (tests/client/fakenode.py): routing, retries,
outcome rules, pipelining, bad input, thread safety."""

from __future__ import annotations

import random
import threading
import time

import pytest
import trio

from client import AsyncClient, Client
from client.errors import ClientClosed, InvalidRequest, OutcomeUnknown, Unavailable
from client.wire import MAX_KEY_BYTES, MAX_VALUE_BYTES, Status, bucket_of
from tests.client.fakenode import HANG_GUARD_SECONDS, Delay, Drop, FakeCluster, Reply, Silent, error, run


def aclient(fake, **kw):
    kw.setdefault("rng", random.Random(7))
    return AsyncClient(fake.addrs, **kw)


def put_sessions(fake):
    return {(a["session"], a["seq"]) for _, a in fake.ops("put")}


# -- the basic operations ------------------------------------------------------------------


def test_operations_round_trip(fake):
    async def main():
        async with aclient(fake) as c:
            v1 = await c.put(b"a", b"1")
            v2 = await c.put("b", "2")  # str is encoded as UTF-8
            assert v2 > v1
            assert await c.get(b"a") == b"1"
            assert await c.get_with_version(b"b") == (b"2", v2)
            assert await c.get(b"missing") is None
            assert await c.delete(b"a") is True
            assert await c.delete(b"a") is False
            assert await c.cas(b"c", None, b"x") is True
            assert await c.cas(b"c", None, b"y") is False
            assert await c.cas(b"c", b"x", b"z") is True
            assert await c.get(b"c") == b"z"
            assert await c.cas(b"c", b"z", None) is True
            assert await c.get(b"c") is None
            m = await c.bucket_map()
            assert m["num_buckets"] == 4 and len(m["buckets"]) == 4

    run(main)


def test_scan_fans_out_merges_in_order_and_pages(fake):
    keys = [f"k{i:03}".encode() for i in range(40)]

    async def main():
        async with aclient(fake, scan_page=3) as c:
            for k in keys:
                await c.put(k, b"v" + k)
            await c.put(b"other", b"x")
            assert len({bucket_of(k, 4) for k in keys}) == 4  # the data really is spread
            got = await c.scan(b"k")
            assert got == [(k, b"v" + k) for k in keys]
            assert await c.scan(b"k", limit=5) == [(k, b"v" + k) for k in keys[:5]]
            assert await c.scan(b"k", limit=0) == []
            assert await c.scan(b"nope") == []
            assert len(await c.scan(b"")) == 41

    run(main)


def test_scan_with_a_hash_tag_prefix_asks_one_bucket(fake):
    async def main():
        async with aclient(fake) as c:
            for i in range(5):
                await c.put(f"{{user1}}:{i}", b"x")
            await c.put(b"user1", b"y")
            fake.requests.clear()
            got = await c.scan(b"{user1}:")
            assert [k for k, _ in got] == [f"{{user1}}:{i}".encode() for i in range(5)]
            scanned = {a["bucket"] for _, a in fake.ops("scan")}
            assert scanned == {bucket_of(b"user1", 4)}

    run(main)


# -- routing -------------------------------------------------------------------------------


def test_follows_not_leader_hint_and_caches_the_new_leader(fake):
    async def main():
        async with aclient(fake) as c:
            await c.put(b"k", b"1")  # map says node 0 leads
            fake.leaders = [2] * 4  # leadership moved; the client's map is now stale
            fake.requests.clear()
            await c.put(b"k", b"2")
            assert [n for n, _ in fake.ops("put")] == [0, 2]
            fake.requests.clear()
            assert await c.get(b"k") == b"2"
            assert [n for n, _ in fake.ops("get")] == [2]  # went straight to the cached leader

    run(main)


def test_not_leader_without_hint_tries_other_replicas(fake):
    fake.leaders = [1] * 4

    def script(node, op, args):
        if op == "map":  # a map that claims node 0 leads
            m = fake.map_payload()
            for b in m["buckets"]:
                b[2] = 0
            return Reply(Status.OK, m)
        if node != 1:
            return Reply(Status.NOT_LEADER, error("no leader known"))
        return None

    fake.script = script

    async def main():
        async with aclient(fake) as c:
            assert await c.put(b"k", b"v") >= 1
            assert await c.get(b"k") == b"v"

    run(main)


def test_wrong_bucket_refreshes_the_map(fake):
    async def main():
        async with aclient(fake) as c:
            await c.put(b"warm", b"up")
            # the cluster now has 8 buckets at epoch 2; find a key whose bucket changed
            key = next(k for k in (f"key{i}".encode() for i in range(100)) if bucket_of(k, 4) != bucket_of(k, 8))
            fake.leaders = [0] * 8
            fake.num_buckets, fake.epoch = 8, 2
            maps_before = len(fake.ops("map"))
            await c.put(key, b"v")
            assert len(fake.ops("map")) > maps_before
            assert fake.ops("put")[-1][1]["bucket"] == bucket_of(key, 8)
            assert (await c.bucket_map())["epoch"] == 2

    run(main)


def test_follower_reads_spread_over_replicas(fake):
    async def main():
        async with aclient(fake) as c:
            await c.put(b"hot", b"v")
            for _ in range(30):
                assert await c.get(b"hot", consistency="follower") == b"v"
            served = {n for n, a in fake.ops("get") if a["consistency"] == "follower"}
            assert served == {0, 1, 2}

    run(main)


def test_follower_read_falls_back_to_leader_when_a_replica_refuses(fake):
    def script(node, op, args):
        if op == "get" and node != 0:
            return Reply(Status.NOT_LEADER, error("no follower reads here", 0, fake.addrs[0]))
        return None

    async def main():
        async with aclient(fake) as c:
            await c.put(b"k", b"v")
            fake.script = script
            for _ in range(5):
                assert await c.get(b"k", consistency="follower") == b"v"

    run(main)


# -- retries and the outcome rules ---------------------------------------------------------


def test_retries_reuse_session_and_seq_and_apply_once(fake):
    seen = []

    def script(node, op, args):
        if op == "put":
            seen.append(1)
            if len(seen) <= 2:
                return Reply(Status.TIMEOUT, error("commit timed out"))
        return None

    fake.script = script

    async def main():
        async with aclient(fake) as c:
            version = await c.put(b"k", b"v")
            assert len(fake.ops("put")) == 3
            assert len(put_sessions(fake)) == 1  # every attempt carried the same (session, seq)
            assert len(fake.applied) == 1
            assert fake.store[b"k"] == (b"v", version)

    run(main)


def test_applied_then_connection_dropped_is_answered_by_the_retry(fake):
    state = {"dropped": False}

    def script(node, op, args):
        if op == "put" and not state["dropped"]:
            state["dropped"] = True
            return Drop(apply=True)  # applied, but the reply is lost with the connection
        return None

    fake.script = script

    async def main():
        async with aclient(fake) as c:
            version = await c.put(b"k", b"v")
            assert len(fake.ops("put")) >= 2
            assert len(put_sessions(fake)) == 1
            assert fake.applied == [next(iter(put_sessions(fake)))]  # applied exactly once
            assert fake.store[b"k"] == (b"v", version)

    run(main)


@pytest.mark.parametrize("action", [Silent(), Drop(), Reply(Status.TIMEOUT, error("timeout"))],
                         ids=["silent", "dropped", "timeout-status"])
def test_write_with_no_definite_answer_is_outcome_unknown(fake, action):
    fake.script = lambda node, op, args: action if op == "put" else None

    async def main():
        async with aclient(fake, timeout=1.0) as c:
            with pytest.raises(OutcomeUnknown):
                await c.put(b"k", b"v")

    run(main)


@pytest.mark.parametrize("status", [Status.UNAVAILABLE, Status.NOT_LEADER])
def test_write_refused_everywhere_is_unavailable(fake, status):
    fake.script = lambda node, op, args: Reply(status, error("no")) if op == "put" else None

    async def main():
        async with aclient(fake, timeout=1.0) as c:
            with pytest.raises(Unavailable):
                await c.put(b"k", b"v")
            assert len(fake.ops("put")) > 1  # it did retry
            assert fake.applied == []

    run(main)


def test_unknown_then_refused_stays_unknown(fake):
    state = {"n": 0}

    def script(node, op, args):
        if op == "put":
            state["n"] += 1
            if state["n"] == 1:
                return Drop()
            return Reply(Status.NOT_LEADER, error("no leader"))
        return None

    fake.script = script

    async def main():
        async with aclient(fake, timeout=1.0) as c:
            with pytest.raises(OutcomeUnknown):
                await c.put(b"k", b"v")

    run(main)


def test_connection_refused_is_unavailable_and_bounded():
    with FakeCluster(n=1) as cluster:
        addr = cluster.addrs[0]
        cluster.kill(0)

    async def main():
        async with AsyncClient([addr], timeout=0.5) as c:
            with pytest.raises(Unavailable):
                await c.put(b"k", b"v")
            with pytest.raises(Unavailable):
                await c.get(b"k")
            with pytest.raises(Unavailable):
                await c.scan(b"")

    run(main)


@pytest.mark.parametrize("action", [Silent(), Drop(), Reply(Status.TIMEOUT, error("t"))],
                         ids=["silent", "dropped", "timeout-status"])
def test_failed_reads_are_unavailable(fake, action):
    async def main():
        async with aclient(fake, timeout=1.0) as c:
            await c.put(b"k", b"v")
            fake.script = lambda node, op, args: action if op in ("get", "scan") else None
            with pytest.raises(Unavailable):
                await c.get(b"k")
            with pytest.raises(Unavailable):
                await c.scan(b"k")

    run(main)


def test_paused_leader_fails_over_within_the_deadline(fake):
    def script(node, op, args):
        if node == 0 and op != "map":
            fake.leaders = [1] * 4  # the others elect node 1 while node 0 hangs
            return Silent()
        return None

    async def main():
        async with aclient(fake, timeout=5.0, attempt_timeout=0.3) as c:
            await c.bucket_map()
            fake.script = script
            version = await c.put(b"k", b"v")  # first attempt maybe applied, then OK: definite
            assert fake.store[b"k"] == (b"v", version)
            nodes = [n for n, _ in fake.ops("put")]
            assert nodes[0] == 0 and nodes[-1] == 1

    run(main)


def test_per_call_timeout_overrides_the_default(fake):
    fake.script = lambda node, op, args: Silent() if op == "get" else None

    async def main():
        async with aclient(fake, timeout=60.0) as c:
            with pytest.raises(Unavailable):
                await c.get(b"k", timeout=0.3)  # the 20 s hang guard would catch the 60 s

    run(main)


def test_sessions_advance_seq_and_retire_after_unknown(fake):
    async def main():
        async with aclient(fake, timeout=1.0) as c:
            await c.put(b"a", b"1")
            await c.put(b"b", b"2")
            (s1, q1), (s2, q2) = [(a["session"], a["seq"]) for _, a in fake.ops("put")]
            assert s1 == s2 and q2 == q1 + 1  # one session, seq +1 per write
            fake.script = lambda node, op, args: Drop() if op == "put" else None
            with pytest.raises(OutcomeUnknown):
                await c.put(b"c", b"3")
            fake.script = None
            await c.put(b"d", b"4")
            assert fake.ops("put")[-1][1]["session"] != s1  # the unknown session was retired

    run(main)


def test_invalid_reply_is_invalid_request(fake):
    fake.script = lambda node, op, args: Reply(Status.INVALID, error("value rejected")) if op == "put" else None

    async def main():
        async with aclient(fake) as c:
            with pytest.raises(InvalidRequest, match="value rejected"):
                await c.put(b"k", b"v")

    run(main)


# -- bad input -----------------------------------------------------------------------------


def test_bad_input_is_rejected_before_sending(fake):
    async def main():
        async with aclient(fake) as c:
            with pytest.raises(TypeError):
                await c.put(1, b"v")
            with pytest.raises(TypeError):
                await c.put(b"k", None)
            with pytest.raises(TypeError):
                await c.get(3.5)
            with pytest.raises(TypeError):
                await c.cas(b"k", 1, b"v")
            with pytest.raises(InvalidRequest):
                await c.put(b"k", b"x" * (MAX_VALUE_BYTES + 1))
            with pytest.raises(InvalidRequest):
                await c.put(b"k" * (MAX_KEY_BYTES + 1), b"v")
            with pytest.raises(InvalidRequest):
                await c.get(b"k", consistency="eventual")
            with pytest.raises(InvalidRequest):
                await c.scan(b"", limit=-1)
            with pytest.raises(InvalidRequest):
                await c.get(b"k", timeout=0)
            assert fake.requests == []  # nothing was sent, not even a map request

    run(main)


def test_bad_addresses_are_rejected():
    with pytest.raises(ValueError):
        AsyncClient(["localhost"])
    with pytest.raises(ValueError):
        AsyncClient([])
    with pytest.raises(TypeError):
        AsyncClient([("127.0.0.1", 1)])


# -- pipelining and bounds -----------------------------------------------------------------


def test_concurrent_requests_share_frames(fake):
    async def main():
        async with aclient(fake) as c:
            await c.bucket_map()
            fake.frames.clear()
            async with trio.open_nursery() as nursery:
                for i in range(200):
                    nursery.start_soon(c.put, f"k{i}", b"v")
            assert len(fake.store) == 200
            assert sum(fake.frames) == 200
            assert len(fake.frames) < 20  # 200 requests went out in a few frames
            stats = c.statistics()["connections"]
            assert sum(s["frames_sent"] for s in stats.values()) < sum(s["messages_sent"] for s in stats.values())

    run(main)


def test_in_flight_requests_per_connection_are_bounded(fake):
    in_flight = {"now": 0, "max": 0}

    def script(node, op, args):
        if op == "get":
            in_flight["now"] += 1
            in_flight["max"] = max(in_flight["max"], in_flight["now"])
            return Delay(0.02)
        return None

    async def main():
        async with aclient(fake, max_inflight=3) as c:
            await c.put(b"k", b"v")
            fake.script = script

            async def get():
                assert await c.get(b"k") == b"v"
                in_flight["now"] -= 1  # racy across threads only by one; bound checked below

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(get)
            assert in_flight["max"] <= 3 + 1

    run(main)


# -- the sync client -----------------------------------------------------------------------


def test_sync_client_round_trip_and_close(fake):
    with Client(fake.addrs, timeout=2.0) as c:
        v = c.put(b"a", b"1")
        assert c.get(b"a") == b"1"
        assert c.get_with_version(b"a") == (b"1", v)
        assert c.cas(b"a", b"1", b"2") is True
        assert c.scan(b"a") == [(b"a", b"2")]
        assert c.delete(b"a") is True
        assert c.bucket_map()["num_buckets"] == 4
        with pytest.raises(TypeError):
            c.put(object(), b"v")
        with pytest.raises(InvalidRequest):
            c.put(b"k", b"x" * (MAX_VALUE_BYTES + 1))
    with pytest.raises(ClientClosed):
        c.get(b"a")
    c.close()  # idempotent


def test_sync_client_is_safe_to_share_between_threads(fake):
    errors = []
    with Client(fake.addrs, timeout=5.0) as c:
        def worker(t):
            try:
                for i in range(40):
                    key = f"t{t}:{i}".encode()
                    c.put(key, key)
                    assert c.get(key) == key
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(HANG_GUARD_SECONDS)
        assert not any(t.is_alive() for t in threads)
        assert errors == []
        assert len(fake.store) == 16 * 40
        stats = c.statistics()
        assert stats["sessions_created"] <= 16
    assert max(fake.frames) > 1  # requests of different threads shared frames


def test_sync_client_outcome_errors(fake):
    fake.script = lambda node, op, args: Silent() if op in ("put", "get") else None
    with Client(fake.addrs, timeout=0.6) as c:
        with pytest.raises(OutcomeUnknown):
            c.put(b"k", b"v")
        with pytest.raises(Unavailable):
            c.get(b"k")


def test_errors_leave_the_async_with_block_unwrapped(fake):
    fake.script = lambda node, op, args: Reply(Status.UNAVAILABLE, error("no")) if op == "put" else None

    async def main():
        async with aclient(fake, timeout=1.0) as c:
            await c.put(b"k", b"v")

    with pytest.raises(Unavailable):  # not an ExceptionGroup
        run(main)


def test_slow_but_alive_leader_is_retried_in_place(fake):
    state = {"first": True}

    def script(node, op, args):
        if op == "put" and state["first"]:
            state["first"] = False
            return Delay(1.0)  # applied late; the retry is answered first
        return None

    async def main():
        async with aclient(fake, timeout=5.0, attempt_timeout=0.3) as c:
            await c.put(b"k", b"0")
            fake.requests.clear()
            fake.script = script
            async with trio.open_nursery() as nursery:
                async def reads():  # keep the connection visibly alive
                    while True:
                        await c.get(b"other")
                        await trio.sleep(0.02)

                nursery.start_soon(reads)
                version = await c.put(b"k", b"1")
                nursery.cancel_scope.cancel()
            await trio.sleep(1.0)  # let the delayed first attempt reach the store
            puts = fake.ops("put")
            assert len(puts) >= 2 and {n for n, _ in puts} == {0}  # no failover away from it
            assert len(put_sessions(fake)) == 1
            assert len(fake.applied) == 2  # the warm-up write and this one, once
            assert fake.store[b"k"] == (b"1", version)

    run(main)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_faults_never_misreport_an_outcome(fake, seed):
    """Every write meets random faults. OK must mean applied once with that version;
    Unavailable must mean never applied (checked after every delayed request has landed);
    OutcomeUnknown may be either; each write is applied at most once."""
    rng = random.Random(seed)

    def script(node, op, args):
        if op not in ("put", "get"):
            return None
        r = rng.random()
        hint = rng.randrange(3)
        refusals = [
            Reply(Status.NOT_LEADER, error("moved", hint, fake.addrs[hint])),
            Reply(Status.NOT_LEADER, error("no leader")),
            Reply(Status.UNAVAILABLE, error("no quorum")),
            Reply(Status.WRONG_BUCKET, error("stale map")),
        ]
        maybes = [
            Reply(Status.TIMEOUT, error("timeout"), apply=r < 0.5),
            Drop(apply=r < 0.5),
            Silent(apply=r < 0.5),
            Delay(rng.uniform(0.0, 0.6)),
        ]
        if args["key"].startswith(b"s"):  # phase 2: never succeeds, mostly refused
            return rng.choice(maybes[:1] + maybes[3:]) if r < 0.05 else rng.choice(refusals)
        return rng.choice([None, None, None, *refusals, *maybes])

    outcomes = {}

    async def main():
        async with aclient(fake, timeout=1.0, attempt_timeout=0.25, rng=random.Random(seed)) as c:
            await c.bucket_map()
            fake.script = script

            async def write(key):
                key = key.encode()
                try:
                    outcomes[key] = ("ok", await c.put(key, b"v"))
                except Unavailable:
                    outcomes[key] = ("unavailable", None)
                except OutcomeUnknown:
                    outcomes[key] = ("unknown", None)

            async def read(key):
                try:
                    assert await c.get(key) in (None, b"v")
                except Unavailable:
                    pass

            async with trio.open_nursery() as nursery:  # phase 1: concurrent, every fault
                for i in range(40):
                    nursery.start_soon(write, f"k{i}")
                    nursery.start_soon(read, f"k{i}")
            async with trio.open_nursery() as nursery:  # phase 2: refusals, rare per-request faults
                for i in range(12):
                    nursery.start_soon(write, f"s{i}")
        await trio.sleep(0.8)  # every Delay has run its course
        fake.script = None

    run(main)
    kinds = [k for k, _ in outcomes.values()]
    assert len(outcomes) == 52
    assert set(kinds) == {"ok", "unavailable", "unknown"}  # every rule was exercised
    for key, (kind, version) in outcomes.items():
        applies = fake.applied_keys.count(key)
        assert applies <= 1, key
        if kind == "ok":
            assert applies == 1 and fake.store[key] == (b"v", version), key
        elif kind == "unavailable":
            assert applies == 0, key


def test_a_late_reply_is_never_taken_for_another_request(fake):
    state = {"first": True}

    def script(node, op, args):
        if op == "get" and args["key"] == b"k" and state["first"]:
            state["first"] = False  # answer the first read late, with what it saw then
            return Delay(0.6, Reply(Status.OK, {"value": b"old", "version": 1}))
        return None

    async def main():
        async with aclient(fake, timeout=5.0, attempt_timeout=0.2) as c:
            await c.put(b"k", b"old")
            fake.script = script
            async with trio.open_nursery() as nursery:
                async def traffic():  # keep the connection visibly alive
                    while True:
                        await c.get(b"other")
                        await trio.sleep(0.02)

                nursery.start_soon(traffic)
                get = trio.Event()

                async def reader():
                    assert await c.get(b"k") == b"new"  # the retry's answer, not the late one
                    get.set()

                nursery.start_soon(reader)
                await trio.sleep(0.1)  # the first attempt is now waiting at the node
                await c.put(b"k", b"new")
                await get.wait()
                await trio.sleep(0.7)  # the late reply arrives now and must be dropped
                for _ in range(5):
                    assert await c.get(b"k") == b"new"
                nursery.cancel_scope.cancel()

    run(main)


def test_a_garbage_reply_closes_the_connection_and_the_retry_succeeds(fake):
    from tests.client.fakenode import Garbage

    state = {"first": True}

    def script(node, op, args):
        if op == "get" and state["first"]:
            state["first"] = False
            return Garbage()
        return None

    async def main():
        async with aclient(fake) as c:
            await c.put(b"k", b"v")
            fake.script = script
            assert await c.get(b"k") == b"v"

    run(main)


def test_closing_the_sync_client_releases_blocked_threads(fake):
    fake.script = lambda node, op, args: Silent() if op == "get" else None
    results = []
    c = Client(fake.addrs, timeout=30.0)
    c.put(b"k", b"v")

    def worker():
        try:
            c.get(b"k")
            results.append("returned")
        except ClientClosed:
            results.append("closed")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + HANG_GUARD_SECONDS
    while len(fake.ops("get")) < 8:  # until every thread's get waits at the fake node
        assert time.monotonic() < deadline
        time.sleep(0.01)
    c.close()
    for t in threads:
        t.join(HANG_GUARD_SECONDS)
    assert results == ["closed"] * 8


def test_aclose_inside_the_block_does_not_cancel_the_caller(fake):
    async def main():
        async with aclient(fake) as c:
            await c.put(b"k", b"v")
            await c.aclose()
            await trio.sleep(0.01)  # would raise Cancelled if aclose cancelled the caller
            with pytest.raises(ClientClosed):
                await c.get(b"k")
        return "done"

    assert run(main) == "done"


def test_scan_pages_shrink_when_a_page_is_refused(fake):
    def script(node, op, args):
        if op == "scan" and args["limit"] > 4:
            return Reply(Status.INVALID, error("reply too large"))
        return None

    async def main():
        async with aclient(fake, scan_page=100) as c:
            for i in range(12):
                await c.put(f"p{i:02}", b"v")
            fake.script = script
            assert [k for k, _ in await c.scan(b"p")] == [f"p{i:02}".encode() for i in range(12)]

    run(main)


def test_a_silent_leader_is_not_retried_while_others_still_point_at_it(fake):
    state = {"refusals": 0}

    def script(node, op, args):
        if op != "put":
            return None
        if node == 0:
            return Silent()  # paused
        state["refusals"] += 1
        if state["refusals"] <= 5:  # the others still think node 0 leads
            return Reply(Status.NOT_LEADER, error("not leader", 0, fake.addrs[0]))
        fake.leaders = [1] * 4  # then they elect node 1
        return None

    async def main():
        async with aclient(fake, timeout=10.0, attempt_timeout=0.3) as c:
            await c.bucket_map()
            fake.script = script
            version = await c.put(b"k", b"v")
            assert fake.store[b"k"] == (b"v", version)
            assert [n for n, _ in fake.ops("put")].count(0) == 1  # the paused node: once

    run(main)


def test_a_slow_replica_does_not_hold_up_follower_reads(fake):
    def script(node, op, args):
        if op == "get" and node == 1 and args["consistency"] == "follower":
            return Delay(3.0)  # e.g. cut off from its leader, waiting for a read index
        return None

    async def main():
        async with aclient(fake, timeout=2.0, attempt_timeout=0.2) as c:
            await c.put(b"k", b"v")
            fake.script = script
            async with trio.open_nursery() as nursery:
                async def keep_alive():  # node 1 keeps answering other requests
                    while True:
                        await c.status(fake.addrs[1])
                        await trio.sleep(0.02)

                nursery.start_soon(keep_alive)
                for _ in range(8):
                    assert await c.get(b"k", consistency="follower") == b"v"
                nursery.cancel_scope.cancel()
            assert any(n == 1 for n, a in fake.ops("get") if a["consistency"] == "follower")

    run(main)


def test_the_node_that_answers_a_write_is_cached_as_leader(fake):
    def script(node, op, args):
        if op == "map":  # a map that knows no leaders
            m = fake.map_payload()
            for b in m["buckets"]:
                b[2] = None
            return Reply(Status.OK, m)
        if node != 0:
            return Reply(Status.NOT_LEADER, error("no leader known"))
        return None

    fake.script = script

    async def main():
        async with aclient(fake) as c:
            await c.put(b"k", b"1")
            assert (await c.bucket_map())["buckets"][bucket_of(b"k", 4)][2] == 0
            fake.requests.clear()
            await c.put(b"k", b"2")
            assert [n for n, _ in fake.ops("put")] == [0]

    run(main)


def test_a_dropped_sync_client_stops_its_thread(fake):
    import gc

    c = Client(fake.addrs, timeout=2.0)
    c.put(b"k", b"v")
    thread = c._loop._thread
    del c
    gc.collect()
    thread.join(HANG_GUARD_SECONDS)
    assert not thread.is_alive()
