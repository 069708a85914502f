"""The client against a real 3-node cluster of `kvstore serve` processes (kvstore/testing.py).

Kept short: one cluster for the module; the leader-kill test runs last and restarts the node.
"""

from __future__ import annotations

import pytest
import trio

from client import AsyncClient, Client
from client.errors import OutcomeUnknown, Unavailable
from client.wire import bucket_of

testing = pytest.importorskip("kvstore.testing")

NUM_BUCKETS = 8


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with testing.LocalCluster(nodes=3, buckets=NUM_BUCKETS, base_dir=tmp_path_factory.mktemp("e2e")) as c:
        c.start(wait_s=60)
        yield c


@pytest.fixture
def client(cluster):
    with Client(cluster.addrs, timeout=10.0) as c:
        yield c


def test_operations_on_a_real_cluster(client):
    v1 = client.put(b"e2e:a", b"1")
    assert client.get(b"e2e:a") == b"1"
    assert client.get_with_version(b"e2e:a") == (b"1", v1)
    v2 = client.put(b"e2e:a", b"2")
    assert v2 > v1
    assert client.cas(b"e2e:a", b"1", b"3") is False
    assert client.cas(b"e2e:a", b"2", b"3") is True
    assert client.cas(b"e2e:new", None, b"n") is True
    assert client.cas(b"e2e:new", None, b"n") is False
    assert client.delete(b"e2e:new") is True
    assert client.delete(b"e2e:new") is False
    assert client.get(b"e2e:new") is None
    for i in range(30):
        client.put(f"e2e:scan:{i:02}", str(i))
    got = client.scan(b"e2e:scan:")
    assert got == [(f"e2e:scan:{i:02}".encode(), str(i).encode()) for i in range(30)]
    assert len({bucket_of(k, NUM_BUCKETS) for k, _ in got}) > 1  # really fanned out
    assert client.scan(b"e2e:scan:", limit=4) == got[:4]


def test_follower_reads_see_acknowledged_writes(client):
    for i in range(10):
        client.put(b"e2e:f", str(i))
        assert client.get(b"e2e:f", consistency="follower") == str(i).encode()


def test_async_client_pipelines_many_writes(cluster):
    async def main():
        with trio.fail_after(60):
            async with AsyncClient(cluster.addrs, timeout=20.0) as c:
                async with trio.open_nursery() as nursery:
                    for i in range(300):
                        nursery.start_soon(c.put, f"e2e:p:{i:03}", b"v")
                assert len(await c.scan(b"e2e:p:")) == 300
                stats = c.statistics()["connections"]
                sent = sum(s["messages_sent"] for s in stats.values())
                frames = sum(s["frames_sent"] for s in stats.values())
                assert frames < sent

    trio.run(main)


def test_outcomes_are_truthful_across_a_kill_9(cluster):
    """Writes race a kill -9 of a node: afterwards every OK write is there with its version,
    and no write reported Unavailable was applied."""
    outcomes = {}

    async def main():
        with trio.fail_after(90):
            async with AsyncClient(cluster.addrs, timeout=8.0) as c:
                await c.bucket_map()

                async def write(i):
                    key = f"e2e:truth:{i:03}".encode()
                    await trio.sleep(i * 0.01)
                    try:
                        outcomes[key] = ("ok", await c.put(key, b"v"))
                    except Unavailable:
                        outcomes[key] = ("unavailable", None)
                    except OutcomeUnknown:
                        outcomes[key] = ("unknown", None)

                async with trio.open_nursery() as nursery:
                    for i in range(150):
                        nursery.start_soon(write, i)
                    await trio.sleep(0.5)
                    await trio.to_thread.run_sync(cluster.kill, 1)
                await trio.to_thread.run_sync(cluster.spawn, 1)
                await trio.to_thread.run_sync(cluster.wait_port, 1)
                for key, (kind, version) in outcomes.items():
                    got = await c.get_with_version(key)
                    if kind == "ok":
                        assert got == (b"v", version), key
                    elif kind == "unavailable":
                        assert got == (None, None), key

    trio.run(main)
    assert len(outcomes) == 150
    assert any(kind == "ok" for kind, _ in outcomes.values())


def test_follows_the_new_leader_after_kill_9(cluster, client):
    key = b"e2e:failover"
    client.put(key, b"before")
    bucket = bucket_of(key, NUM_BUCKETS)
    leader = client.bucket_map()["buckets"][bucket][2]  # the node that just took the write
    assert leader in cluster.ids
    cluster.kill(leader)
    try:
        assert client.get(key) == b"before"  # re-routed to the new leader
        client.put(key, b"after")
        assert client.get(key) == b"after"
        assert client.bucket_map(refresh=True)["buckets"][bucket][2] != leader
    finally:
        cluster.spawn(leader)
        cluster.wait_port(leader)


def test_fails_over_from_a_paused_leader(cluster):
    key = b"e2e:paused"
    with Client(cluster.addrs, timeout=15.0, attempt_timeout=1.0) as c:
        c.put(key, b"before")
        bucket = bucket_of(key, NUM_BUCKETS)
        leader = c.bucket_map()["buckets"][bucket][2]  # the node that just took the write
        assert leader in cluster.ids
        cluster.pause(leader)
        try:
            # the first attempt hangs on the paused node; the retries find the new leader,
            # and the answer to the same (session, seq) is definite
            version = c.put(key, b"during")
            assert c.get_with_version(key) == (b"during", version)
        finally:
            cluster.resume(leader)
