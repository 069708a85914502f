"""Workers + history + checkers end to end, against in-memory clients (no cluster): a correct
one must check valid, one with stale follower reads or lost writes must not."""

import random
import threading

from client.errors import OutcomeUnknown, Unavailable

from jepsen import generator, linearizable, setcheck
from jepsen.history import HistoryWriter, pair
from jepsen.workload import Recorder, Worker, run_op


class MemClient:
    """A linearizable register store (one lock); optional faults."""

    def __init__(self, stale_follower=False, lose_acked=False, seed=0):
        self.data, self.follower = {}, {}
        self.lock = threading.Lock()
        self.stale_follower = stale_follower
        self.lose_acked = lose_acked
        self.rng = random.Random(seed)
        self.writes = 0

    def _after_write(self):
        self.writes += 1
        if not self.stale_follower or self.writes % 7 == 0:
            self.follower = dict(self.data)

    def get(self, key, consistency="linearizable"):
        with self.lock:
            if self.rng.random() < 0.05:
                raise Unavailable("no leader")
            src = self.follower if consistency == "follower" else self.data
            return src.get(key)

    def put(self, key, value):
        with self.lock:
            r = self.rng.random()
            if r < 0.05:
                raise Unavailable("refused")
            if r < 0.1:
                if self.rng.random() < 0.5:
                    self.data[key] = value
                    self._after_write()
                raise OutcomeUnknown("timed out")
            if self.lose_acked and r < 0.2:
                return 1  # acknowledged, never applied
            self.data[key] = value
            self._after_write()
            return 1

    def cas(self, key, expected, new):
        with self.lock:
            if self.data.get(key) != expected:
                return False
            if self.lose_acked and self.rng.random() < 0.2:
                return True
            self.data[key] = new
            self._after_write()
            return True

    def close(self):
        pass


def run_workers(client, opgen_cls, keys, n=4, ops_each=150):
    hist = HistoryWriter()
    rec = Recorder(hist)
    stop = threading.Event()
    left = [n * ops_each]

    class Bounded:
        def __init__(self, g):
            self.g = g

        def next(self):
            left[0] -= 1  # racy by a few ops at most: the GIL makes -= near-atomic here
            if left[0] <= 0:
                stop.set()
            return self.g.next()

        def observe(self, k, v):
            self.g.observe(k, v)

    workers = [Worker(w, n, lambda: client, Bounded(opgen_cls(keys, 1, w)), rec, stop, 0.0) for w in range(n)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
        assert not w.is_alive()
    for k in keys:
        f = "read-set" if opgen_cls is generator.SetOps else "read"
        for attempt in range(20):
            if run_op(client, rec, f"final-{k}-{attempt}", {"f": f, "key": k})[0] == "ok":
                break
    return hist.events()


def test_correct_register_store_is_linearizable():
    events = run_workers(MemClient(seed=1), generator.RegisterOps, generator.register_keys(4))
    ops = pair(events)
    assert {op.type for op in ops} == {"ok", "fail", "info"}
    assert linearizable.check(events)["valid"] is True


def test_stale_follower_reads_are_caught():
    events = run_workers(MemClient(stale_follower=True, seed=2), generator.RegisterOps, generator.register_keys(2))
    r = linearizable.check(events)
    assert r["valid"] is False
    assert any(k["blocked_op"]["f"] == "read" for k in r["invalid_keys"])


def test_correct_set_store_loses_nothing():
    events = run_workers(MemClient(seed=3), generator.SetOps, generator.set_keys(3))
    r = setcheck.check(events)
    assert r["valid"] is True and r["acknowledged"] > 100


def test_lost_acknowledged_adds_are_caught():
    events = run_workers(MemClient(lose_acked=True, seed=4), generator.SetOps, generator.set_keys(3))
    r = setcheck.check(events)
    assert r["valid"] is False and r["lost_count"] > 0
