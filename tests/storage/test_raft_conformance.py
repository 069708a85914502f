"""The Raft storage contract, run against MemoryStorage (the reference) and the LMDB store."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raft.storage import MemoryStorage, SnapshotOutOfDate
from raft.types import Compacted, ConfState, Entry, HardState, Unavailable
from storage import NodeStore
from storage.raft_adapter import LmdbRaftStorage

CS = ConfState(voters=(1, 2, 3))


@pytest.fixture(params=["memory", "lmdb", "wal"])
def make(request, tmp_path):
    stores = []

    def factory():
        if request.param == "memory":
            return MemoryStorage()
        s = NodeStore.open(tmp_path / f"s{len(stores)}", sync=False, log=request.param)
        stores.append(s)
        return LmdbRaftStorage(s, 7)

    yield factory
    for s in stores:
        s.close()


def ents(terms, start=2):
    return [Entry(t, start + i, data=b"x" * i) for i, t in enumerate(terms)]


def test_empty(make):
    s = make()
    assert (s.first_index(), s.last_index(), s.term(0)) == (1, 0, 0)
    assert s.initial_state() == (HardState(), ConfState())
    assert s.snapshot().is_empty()
    assert s.entries(1, 1) == []
    with pytest.raises(Unavailable):
        s.term(1)
    with pytest.raises(Unavailable):
        s.entries(1, 2)


def test_bootstrap(make):
    s = make()
    s.bootstrap(CS)
    assert (s.first_index(), s.last_index(), s.term(1)) == (2, 1, 1)
    assert s.initial_state() == (HardState(1, 0, 1), CS)
    assert s.snapshot().metadata.index == 1
    with pytest.raises(Compacted):
        s.term(0)
    with pytest.raises(Compacted):
        s.entries(1, 2)
    with pytest.raises(ValueError):
        s.bootstrap(CS)


def test_append_read_and_limits(make):
    s = make()
    s.bootstrap(CS)
    e = ents([1, 1, 2, 2, 3])
    s.append(e)
    assert s.last_index() == 6
    assert [s.term(i) for i in range(1, 7)] == [1, 1, 1, 2, 2, 3]
    assert s.entries(2, 7) == e
    assert s.entries(3, 5) == e[1:3]
    assert s.entries(2, 7, max_bytes=0) == e[:1]  # at least one
    assert s.entries(2, 7, max_bytes=16 + 17 + 18) == e[:3]
    with pytest.raises(Unavailable):
        s.entries(2, 8)
    with pytest.raises(Unavailable):
        s.term(7)


def test_conflicting_suffix_is_truncated(make):
    s = make()
    s.bootstrap(CS)
    s.append(ents([1, 1, 1, 1]))
    s.append([Entry(2, 4, data=b"new")])
    assert s.last_index() == 4
    assert s.entries(2, 5) == ents([1, 1]) + [Entry(2, 4, data=b"new")]
    with pytest.raises(Unavailable):
        s.append([Entry(2, 6)])  # gap


def test_append_below_first_index_is_ignored(make):
    s = make()
    s.bootstrap(CS)
    s.append(ents([1, 1, 1]))
    s.compact(3)
    s.append([Entry(1, 2), Entry(1, 3), Entry(1, 4, data=b"x" * 2)])
    assert (s.first_index(), s.last_index()) == (4, 4)


def test_compact(make):
    s = make()
    s.bootstrap(CS)
    s.append(ents([1, 2, 2, 3]))
    s.compact(3)
    assert (s.first_index(), s.last_index(), s.term(3)) == (4, 5, 2)
    with pytest.raises(Compacted):
        s.term(2)
    with pytest.raises(Compacted):
        s.entries(3, 5)
    assert s.entries(4, 6) == ents([1, 2, 2, 3])[2:]
    with pytest.raises(Compacted):
        s.compact(3)
    with pytest.raises(Unavailable):
        s.compact(9)


def test_create_snapshot_then_compact_lower(make):
    s = make()
    s.bootstrap(CS)
    s.append(ents([1, 1, 2, 2]))
    snap = s.create_snapshot(4, CS, b"state")
    assert s.snapshot() == snap and snap.metadata.term == 2 and snap.data == b"state"
    s.compact(3)  # the log may keep entries before the snapshot
    assert (s.first_index(), s.term(4), s.snapshot()) == (4, 2, snap)
    with pytest.raises(SnapshotOutOfDate):
        s.create_snapshot(4, CS, b"")


def test_apply_snapshot_replaces_the_log(make):
    s = make()
    s.bootstrap(CS)
    s.append(ents([1, 1]))
    other = make()
    other.bootstrap(CS)
    other.append(ents([1, 2, 2, 2, 2]))
    snap = other.create_snapshot(5, ConfState(voters=(1, 2)), b"d")
    s.apply_snapshot(snap)
    assert (s.first_index(), s.last_index(), s.term(5)) == (6, 5, 2)
    assert s.snapshot() == snap
    assert s.initial_state()[1] == ConfState(voters=(1, 2))
    with pytest.raises(SnapshotOutOfDate):
        s.apply_snapshot(snap)


# -- differential: random operation sequences give the same answers -----------------------------

op = st.one_of(
    st.tuples(st.just("append"), st.integers(-3, 2), st.lists(st.integers(0, 2), min_size=1,
                                                                max_size=5)),
    st.tuples(st.just("hs"), st.integers(0, 5), st.integers(0, 3)),
    st.tuples(st.just("compact"), st.integers(0, 8)),
    st.tuples(st.just("snapshot"), st.integers(0, 8)),
)


def observe(s) -> tuple:
    first, last = s.first_index(), s.last_index()
    terms = tuple(s.term(i) for i in range(first - 1, last + 1))
    return (first, last, terms, s.entries(first, last + 1), s.initial_state(), s.snapshot())


def run(s, ops) -> list:
    out = []
    s.bootstrap(CS)
    for o in ops:
        try:
            if o[0] == "append":
                lo = s.last_index() + 1 + o[1]
                base = s.term(s.last_index()) if s.last_index() >= s.first_index() - 1 else 1
                s.append([Entry(base + dt, lo + i, data=bytes([i]) * i)
                          for i, dt in enumerate(o[2])])
            elif o[0] == "hs":
                s.set_hard_state(HardState(o[1], o[2], 0))
            elif o[0] == "compact":
                s.compact(s.first_index() - 1 + o[1])
            else:
                idx = s.first_index() - 1 + o[1]
                s.create_snapshot(idx, CS, b"s%d" % idx)
            out.append(("ok", observe(s)))
        except (Compacted, Unavailable, SnapshotOutOfDate) as exc:
            out.append((type(exc).__name__, observe(s)))
    return out


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@pytest.mark.parametrize("log", ["lmdb", "wal"])
@given(ops=st.lists(op, max_size=25))
def test_same_answers_as_memory_storage(tmp_path_factory, ops, log):
    with NodeStore.open(tmp_path_factory.mktemp("diff"), sync=False, log=log) as store:
        assert run(LmdbRaftStorage(store, 3), ops) == run(MemoryStorage(), ops)
        # and the same again after a reopen
        before = observe(LmdbRaftStorage(store, 3))
    with NodeStore.open(store.path, sync=False, log=log) as store2:
        assert observe(LmdbRaftStorage(store2, 3)) == before
