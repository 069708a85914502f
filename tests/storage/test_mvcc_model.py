"""The MVCC store against a dict-of-versions model: puts, deletes, CAS, reads at random
timestamps, paginated scans, incremental GC — the same answers."""

from __future__ import annotations

import tempfile

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from storage import Cas, Delete, GroupApply, NodeStore, Put
from storage import keys as K

BUCKET = 5
HEAD = b"L" * 479
KEYS = [b"", b"a", b"a\x00", b"a\x00b", b"a\x01", b"ab", b"b", b"\x00", b"\xff\xff",
        HEAD + b"\x00x", HEAD + b"\x00y", HEAD + b"a", HEAD + b"b", HEAD + b"b" * 30, HEAD[:-1] + b"\x00"]
PREFIXES = [b"", b"a", b"a\x00", b"\x00", b"b", HEAD, HEAD + b"\x00", b"zz"]
keys_ = st.sampled_from(KEYS)
values = st.one_of(st.sampled_from([b"", b"v", b"w\x00"]), st.binary(max_size=20))


class Model:
    def __init__(self) -> None:
        self.versions: dict[bytes, list[tuple[int, bytes | None]]] = {}  # newest last
        self.last = 0

    def next_version(self, ts: int) -> int:
        self.last = max(ts, self.last + 1)
        return self.last

    def read(self, key: bytes, as_of: int | None):
        for v, val in reversed(self.versions.get(key, [])):
            if as_of is None or v <= as_of:
                return None if val is None else (val, v)
        return None

    def apply(self, cmd):
        cur = self.read(cmd.key, None)
        if isinstance(cmd, Put):
            v = self.next_version(cmd.ts)
            self.versions.setdefault(cmd.key, []).append((v, cmd.value))
            return v
        if isinstance(cmd, Delete):
            v = self.next_version(cmd.ts)
            if cur is not None:
                self.versions[cmd.key].append((v, None))
            return (cur is not None, v)
        if (cur[0] if cur else None) != cmd.expected:
            return (False, cur[1] if cur else None)
        v = self.next_version(cmd.ts)
        if cmd.new is not None or cur is not None:
            self.versions.setdefault(cmd.key, []).append((v, cmd.new))
        return (True, v)

    def scan(self, prefix: bytes, as_of: int | None):
        out = []
        for k in sorted(self.versions, key=lambda k: K.key_stem(BUCKET, k)):
            if k.startswith(prefix):
                got = self.read(k, as_of)
                if got is not None:
                    out.append((k, got[0], got[1]))
        return out


class MvccMachine(RuleBasedStateMachine):
    @initialize()
    def open(self):
        self.dir = tempfile.TemporaryDirectory()
        self.store = NodeStore.open(self.dir.name, sync=False)
        self.model = Model()
        self.index = 0
        self.horizon = 0  # GC'd below this: reads older than it are not compared

    def teardown(self):
        if hasattr(self, "store"):
            self.store.close()
            self.dir.cleanup()

    def _apply(self, cmds):
        self.index += len(cmds)
        (results,) = self.store.apply([GroupApply(1, BUCKET, self.index, cmds)])
        assert results == [self.model.apply(c) for c in cmds]
        assert self.store.last_version(1) == self.model.last

    def _as_of(self, data):
        return data.draw(st.one_of(st.none(), st.integers(self.horizon, self.model.last + 2)))

    @rule(key=keys_, value=values, ts=st.integers(0, 60))
    def put(self, key, value, ts):
        self._apply([Put(key, value, ts)])

    @rule(key=keys_, ts=st.integers(0, 60))
    def delete(self, key, ts):
        self._apply([Delete(key, ts)])

    @rule(key=keys_, data=st.data(), new=st.one_of(st.none(), values), ts=st.integers(0, 60))
    def cas(self, key, data, new, ts):
        cur = self.model.read(key, None)
        expected = data.draw(st.sampled_from([None, b"v", cur[0] if cur else b"x"]))
        self._apply([Cas(key, expected, new, ts)])

    @rule(cmds=st.lists(st.tuples(keys_, st.one_of(st.none(), values)), min_size=2, max_size=6))
    def batch(self, cmds):
        self._apply([Put(k, v, 0) if v is not None else Delete(k, 0) for k, v in cmds])

    @rule(key=keys_, data=st.data())
    def get(self, key, data):
        as_of = self._as_of(data)
        assert self.store.get(BUCKET, key, as_of) == self.model.read(key, as_of)

    @rule(prefix=st.sampled_from(PREFIXES), limit=st.integers(1, 4), data=st.data())
    def scan(self, prefix, limit, data):
        as_of = self._as_of(data)
        max_bytes = data.draw(st.sampled_from([1, 40, 1 << 20]))
        got, after = [], None
        for _ in range(len(KEYS) + 2):
            items, more = self.store.scan(BUCKET, prefix, start_after=after, limit=limit,
                                          max_bytes=max_bytes, as_of=as_of)
            assert len(items) <= limit
            got += items
            if not more:
                break
            assert items, "more=True needs progress"
            after = items[-1][0]
        else:
            raise AssertionError("scan did not finish")
        assert got == self.model.scan(prefix, as_of)

    @precondition(lambda self: self.model.last > 0)
    @rule(data=st.data(), max_keys=st.integers(1, 5), finish=st.booleans())
    def gc(self, data, max_keys, finish):
        before = data.draw(st.integers(0, self.model.last + 1))
        cursor = None
        for _ in range(1000):
            p = self.store.gc(BUCKET, before, max_keys, cursor)
            cursor = p.cursor
            if p.done or not finish:
                break
        else:
            raise AssertionError("gc did not finish")
        self.horizon = max(self.horizon, before)
        if p.done:
            self.check_gc_complete(before)

    def check_gc_complete(self, before):
        """After a complete pass, no version older than the one visible at `before` remains,
        and a visible tombstone at `before` is gone too."""
        txn = self.store._env.begin()
        try:
            for key in KEYS:
                stem = K.key_stem(BUCKET, key)
                cur = txn.cursor(db=self.store._db_data)
                ok = cur.set_range(stem)
                vs = []
                while ok and cur.key()[:-8] == stem:
                    vs.append((K.version_of(cur.key()), K.is_tombstone(cur.value())))
                    ok = cur.next()
                old = [v for v in vs if v[0] <= before]
                assert len(old) <= 1 and not (old and old[0][1]), (key, vs, before)
        finally:
            txn.abort()

    @invariant()
    def latest_matches(self):
        if hasattr(self, "store"):
            for key in KEYS[:4]:
                assert self.store.get(BUCKET, key) == self.model.read(key, None)


MvccMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40,
                                         deadline=None)
TestMvcc = MvccMachine.TestCase
