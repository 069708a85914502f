"""A real cluster of `kvstore serve` processes: replication, failover, restarts, catch-up."""

import threading
import time

import pytest

from client import Client
from client.errors import KVError, OutcomeUnknown
from client.wire import Status, bucket_of
from kvstore.rawclient import RawConn


def leader_of_most(cluster) -> int:
    counts = cluster.leader_counts()
    return max(counts, key=counts.get)


def follower_read_everywhere(cluster, key: bytes, num_buckets: int):
    """The value of `key` as served by every running replica (follower reads)."""
    b = bucket_of(key, num_buckets)
    out = {}
    for i in cluster.running():
        with RawConn(cluster.addr(i)) as c:
            st, mp = c.call("map")
            if i not in mp["buckets"][b][1]:
                continue
            st, payload = c.call("get", {"key": key, "bucket": b, "consistency": "follower"})
            assert st == Status.OK, payload
            out[i] = payload["value"]
    return out


@pytest.mark.parametrize("mode", [[], ["--storage-thread"], ["--log", "wal"]],
                         ids=["inline", "thread", "wal"])
def test_three_nodes_writes_then_reads_on_every_node(make_cluster, mode):
    c = make_cluster(3, buckets=8, extra_args=mode)
    with Client(c.addrs) as cl:
        for i in range(40):
            cl.put(f"k{i}", f"v{i}")
        for i in range(40):
            assert cl.get(f"k{i}") == f"v{i}".encode()
        assert cl.delete("k0") is True
        assert cl.get("k0") is None
        assert cl.cas("k1", b"v1", b"w1") is True
        assert cl.cas("k1", b"v1", b"x") is False
        assert cl.get("k1") == b"w1"
        keys = [k for k, _v in cl.scan("k")]
        assert keys == sorted(f"k{i}".encode() for i in range(1, 40))
    for i in range(1, 40, 7):
        vals = follower_read_everywhere(c, f"k{i}".encode(), 8)
        assert len(vals) == 3 and set(vals.values()) == {b"w1" if i == 1 else f"v{i}".encode()}


def test_retried_write_is_applied_once(make_cluster):
    c = make_cluster(3, buckets=4)
    key = b"once"
    b = bucket_of(key, 4)
    with Client(c.addrs) as cl:
        cl.put(key, b"0")
        leader = cl.bucket_map(refresh=True)["buckets"][b][2]
    with RawConn(c.addr(leader)) as conn:
        args = {"key": key, "value": b"first", "bucket": b, "session": 77, "seq": 1}
        r1, r2 = conn.call_many([("put", args), ("put", args)])  # a retry while in flight
        r3 = conn.call("put", dict(args, value=b"changed"))  # a late retry, other payload
        assert r1[0] == r2[0] == r3[0] == Status.OK
        assert r1[1]["version"] == r2[1]["version"] == r3[1]["version"]
        st, got = conn.call("get", {"key": key, "bucket": b})
        assert got == {"value": b"first", "version": r1[1]["version"]}
        args2 = dict(args, value=b"second", seq=2)
        st, r4 = conn.call("put", args2)
        assert st == Status.OK and r4["version"] > r1[1]["version"]


class Writer:
    """Writes distinct keys from a thread; records what was acknowledged."""

    def __init__(self, addrs, prefix: str, threads: int = 4):
        self.client = Client(addrs, timeout=10.0)
        self.prefix = prefix
        self.acked: dict[bytes, bytes] = {}
        self.unknown = 0
        self.failed = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t,), daemon=True)
                         for t in range(threads)]

    def _run(self, t: int):
        i = 0
        while not self._stop.is_set():
            key = f"{self.prefix}{t}-{i}".encode()
            i += 1
            try:
                self.client.put(key, key[::-1])
                self.acked[key] = key[::-1]
            except OutcomeUnknown:
                self.unknown += 1
            except KVError:
                self.failed += 1

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        self.client.close()

    def count(self) -> int:
        return len(self.acked)


def wait_until(pred, timeout_s: float, what: str):
    end = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


WAL = pytest.mark.parametrize("log", ["lmdb", "wal"])


@WAL
def test_kill_leader_under_load_then_restart_catches_up(make_cluster, log):
    c = make_cluster(3, buckets=8, extra_args=["--log", log])
    victim = leader_of_most(c)
    with Writer(c.addrs, "load") as w:
        wait_until(lambda: w.count() >= 100, 20, "100 writes before the kill")
        c.kill(victim)
        before = w.count()
        wait_until(lambda: w.count() >= before + 200, 30, "writes to continue after the kill")
        c.spawn(victim)
        c.wait_port(victim)
        after = w.count()
        wait_until(lambda: w.count() >= after + 100, 30, "writes to continue after the restart")
    acked = dict(w.acked)
    with Client(c.addrs, timeout=10) as cl:
        for k, v in acked.items():
            assert cl.get(k) == v, k
    # the restarted node caught up: it serves (follower reads) every acknowledged key it holds
    wait_until(lambda: all(_holds(c, victim, k, v) for k, v in list(acked.items())[-20:]), 30,
               "the restarted node to catch up")


def _holds(c, node_id, key, value) -> bool:
    b = bucket_of(key, c.buckets)
    with RawConn(c.addr(node_id)) as conn:
        st, payload = conn.call("get", {"key": key, "bucket": b, "consistency": "follower"})
    return st == Status.WRONG_BUCKET or (st == Status.OK and payload["value"] == value)


@WAL
def test_lagging_node_catches_up_by_snapshot_after_compaction(make_cluster, log):
    c = make_cluster(3, buckets=2, extra_args=["--compact-threshold", "40", "--log", log])
    c.kill(3)
    with Client(c.addrs[:2], timeout=10) as cl:
        for i in range(400):
            cl.put(f"s{i}", f"{i}")
    c.spawn(3)
    c.wait_port(3)
    wait_until(lambda: c.status(3)["stats"]["snapshots_installed"] >= 1, 30, "a snapshot install")
    wait_until(lambda: all(_holds(c, 3, f"s{i}".encode(), f"{i}".encode()) for i in range(0, 400, 13)),
               30, "node 3 to serve the data")
    # and it keeps replicating by log afterwards
    with Client(c.addrs, timeout=10) as cl:
        cl.put("after", "snap")
    wait_until(lambda: _holds(c, 3, b"after", b"snap"), 20, "replication after the snapshot")
    # a node whose logs were compacted restarts from them (kill -9 right after the writes)
    with Client(c.addrs, timeout=10) as cl:
        for i in range(100):
            cl.put(f"t{i}", "x")
    c.kill(1)
    c.spawn(1)
    c.wait_port(1)
    wait_until(lambda: _holds(c, 1, b"t99", b"x") and _holds(c, 1, b"s399", b"399"), 30,
               "node 1 to serve after a restart on compacted logs")


def test_paused_node_then_resumed(make_cluster):
    c = make_cluster(3, buckets=4)
    victim = leader_of_most(c)
    with Client(c.addrs, timeout=10) as cl:
        cl.put("p0", "x")
        c.pause(victim)
        try:
            for i in range(30):  # leaders elsewhere take over
                cl.put(f"p{i}", f"{i}")
        finally:
            c.resume(victim)
        for i in range(30, 60):
            cl.put(f"p{i}", f"{i}")
        for i in range(60):
            assert cl.get(f"p{i}") == f"{i}".encode()
    wait_until(lambda: all(_holds(c, victim, f"p{i}".encode(), f"{i}".encode()) for i in range(0, 60, 7)),
               20, "the resumed node to catch up")


def test_every_node_knows_every_leader(make_cluster):
    c = make_cluster(5, buckets=8, replication=3)  # each node holds ~60 % of the buckets

    def leaders_known(node_id):
        with RawConn(c.addr(node_id)) as conn:
            st, mp = conn.call("map")
        return all(b[2] is not None for b in mp["buckets"])

    wait_until(lambda: all(leaders_known(i) for i in c.ids), 15, "leaders of every bucket in every map")


def test_five_nodes_survive_two_failures(make_cluster):
    c = make_cluster(5, buckets=8, replication=5)
    with Client(c.addrs, timeout=10) as cl:
        for i in range(20):
            cl.put(f"f{i}", "a")
        c.kill(1)
        c.kill(2)
        for i in range(20):
            cl.put(f"f{i}", "b")
        for i in range(20):
            assert cl.get(f"f{i}") == b"b"
            assert cl.get(f"f{i}", consistency="follower") == b"b"


@WAL
def test_sigterm_is_graceful_and_data_survives_a_full_restart(make_cluster, log):
    c = make_cluster(3, buckets=4, extra_args=["--log", log])
    with Client(c.addrs, timeout=10) as cl:
        for i in range(20):
            cl.put(f"r{i}", f"{i}")
    for i in c.ids:
        assert c.terminate(i) == 0
    c.buckets = 16  # a bootstrap flag that disagrees with the data directories: ignored
    for i in c.ids:
        c.spawn(i)
    c.wait_writable(30)
    with Client(c.addrs, timeout=10) as cl:
        for i in range(20):
            assert cl.get(f"r{i}") == f"{i}".encode()
        assert cl.bucket_map(refresh=True)["num_buckets"] == 4
    assert "disagrees" in open(c.log_path(1)).read()


@WAL
def test_cas_counter_under_leader_kill_counts_exactly(make_cluster, log):
    """Increments by CAS from 4 threads while the counter's leader is killed: the final value
    is at least the acknowledged increments and at most those plus the unknown ones."""
    c = make_cluster(3, buckets=4, extra_args=["--log", log])
    key = b"ctr"
    acked = [0]
    unknown = [0]
    stop = threading.Event()
    lock = threading.Lock()
    with Client(c.addrs, timeout=10) as cl:
        cl.put(key, b"0")
        leader = cl.bucket_map(refresh=True)["buckets"][bucket_of(key, 4)][2]

        def incr():
            while not stop.is_set():
                try:
                    cur = cl.get(key)
                    ok = cl.cas(key, cur, str(int(cur) + 1).encode())
                except OutcomeUnknown:
                    with lock:
                        unknown[0] += 1
                    continue
                except KVError:
                    continue
                if ok:
                    with lock:
                        acked[0] += 1

        threads = [threading.Thread(target=incr, daemon=True) for _ in range(4)]
        for t in threads:
            t.start()
        wait_until(lambda: acked[0] >= 30, 30, "increments before the kill")
        c.kill(leader)
        before = acked[0]
        wait_until(lambda: acked[0] >= before + 30, 30, "increments after the kill")
        c.spawn(leader)
        stop.set()
        for t in threads:
            t.join(timeout=30)
        final = int(cl.get(key))
    assert acked[0] <= final <= acked[0] + unknown[0], (acked[0], unknown[0], final)


def test_sigterm_hands_leaderships_over_first(make_cluster):
    c = make_cluster(3, buckets=8)
    victim = leader_of_most(c)
    assert c.leader_counts()[victim] > 0
    with Writer(c.addrs, "drain", threads=2) as w:
        wait_until(lambda: w.count() >= 50, 20, "writes before the stop")
        assert c.terminate(victim) == 0
        before = w.count()
        wait_until(lambda: w.count() >= before + 50, 20, "writes after the stop")
    assert "leaderships handed over" in open(c.log_path(victim)).read()
    others = [i for i in c.ids if i != victim]
    assert sum(c.leader_counts()[i] for i in others) >= 8
