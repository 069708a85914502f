"""MemoryStorage: the index ranges and errors of the Storage protocol, and its writes."""

from __future__ import annotations

import pytest

from raft import (
    Compacted,
    ConfState,
    Entry,
    HardState,
    MemoryStorage,
    Snapshot,
    SnapshotMetadata,
    SnapshotOutOfDate,
    Unavailable,
    bootstrap_snapshot,
)
from raft.storage import ENTRY_OVERHEAD, limit_size


def storage_with(first: int, last: int, term: int = 1) -> MemoryStorage:
    """Snapshot at first-1, entries first..last."""
    s = MemoryStorage()
    if first > 1:
        s.apply_snapshot(Snapshot(SnapshotMetadata(first - 1, term, ConfState(voters=(1,)))))
    s.append([Entry(term, i, data=b"%d" % i) for i in range(first, last + 1)])
    return s


def test_empty_storage_ranges():
    s = MemoryStorage()
    assert (s.first_index(), s.last_index()) == (1, 0)
    assert s.term(0) == 0
    assert s.entries(1, 1) == []
    with pytest.raises(Unavailable):
        s.term(1)
    with pytest.raises(Unavailable):
        s.entries(1, 2)
    assert s.initial_state() == (HardState(), ConfState())
    assert s.snapshot().is_empty()


def test_term_and_entries_ranges_and_errors():
    s = storage_with(5, 9, term=3)
    assert (s.first_index(), s.last_index()) == (5, 9)
    assert s.term(4) == 3  # the snapshot's index has a term
    with pytest.raises(Compacted):
        s.term(3)
    with pytest.raises(Unavailable):
        s.term(10)
    assert [e.index for e in s.entries(5, 10)] == [5, 6, 7, 8, 9]
    assert [e.index for e in s.entries(6, 8)] == [6, 7]
    with pytest.raises(Compacted):
        s.entries(4, 6)
    with pytest.raises(Unavailable):
        s.entries(8, 11)


def test_entries_respect_max_bytes_but_return_at_least_one():
    s = storage_with(1, 5)
    one = len(b"1") + ENTRY_OVERHEAD
    assert len(s.entries(1, 6, max_bytes=0)) == 1
    assert len(s.entries(1, 6, max_bytes=one * 2)) == 2
    assert len(s.entries(1, 6, max_bytes=one * 2 + 1)) == 2
    assert len(s.entries(1, 6, max_bytes=None)) == 5
    assert limit_size([], 0) == []


def test_append_truncates_conflicting_suffix_and_rejects_gaps():
    s = storage_with(1, 5, term=1)
    s.append([Entry(2, 4), Entry(2, 5), Entry(2, 6)])
    assert [(e.index, e.term) for e in s.entries(1, 7)] == [
        (1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]
    s.append([Entry(3, 2)])
    assert s.last_index() == 2 and s.term(2) == 3
    with pytest.raises(Unavailable):
        s.append([Entry(3, 9)])


def test_append_ignores_the_part_covered_by_the_snapshot():
    s = storage_with(5, 6, term=2)
    s.append([Entry(2, 3), Entry(2, 4), Entry(2, 5), Entry(2, 6), Entry(2, 7)])
    assert (s.first_index(), s.last_index()) == (5, 7)
    s.append([Entry(2, 1), Entry(2, 2)])  # entirely compacted: no effect
    assert s.last_index() == 7


def test_compact_keeps_term_of_compacted_index():
    s = storage_with(1, 10)
    s.compact(6)
    assert (s.first_index(), s.last_index()) == (7, 10)
    assert s.term(6) == 1
    with pytest.raises(Compacted):
        s.compact(6)
    with pytest.raises(Unavailable):
        s.compact(11)


def test_create_and_apply_snapshot():
    s = storage_with(1, 10, term=4)
    conf = ConfState(voters=(1, 2, 3))
    snap = s.create_snapshot(8, conf, b"state")
    assert snap.metadata == SnapshotMetadata(8, 4, conf) and s.snapshot() == snap
    with pytest.raises(SnapshotOutOfDate):
        s.create_snapshot(8, conf, b"again")
    other = MemoryStorage()
    other.apply_snapshot(snap)
    assert (other.first_index(), other.last_index()) == (9, 8)
    assert other.term(8) == 4 and other.initial_state()[1] == conf
    with pytest.raises(SnapshotOutOfDate):
        other.apply_snapshot(snap)


def test_bootstrap_makes_a_founding_member():
    s = MemoryStorage()
    conf = ConfState(voters=(1, 2, 3))
    s.bootstrap(conf)
    assert s.initial_state() == (HardState(term=1, commit=1), conf)
    assert (s.first_index(), s.last_index(), s.term(1)) == (2, 1, 1)
    assert s.snapshot() == bootstrap_snapshot(conf)
    with pytest.raises(ValueError):
        s.bootstrap(conf)
    with pytest.raises(ValueError):
        bootstrap_snapshot(ConfState())
