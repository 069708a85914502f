"""RaftLog (stable storage + unstable tail) and Progress (per-follower flow control)."""

from __future__ import annotations

import pytest

from raft import Compacted, ConfState, Entry, MemoryStorage, Snapshot, SnapshotMetadata
from raft.log import RaftLog
from raft.progress import Progress, ProgressState


def make_log(terms: list[int], stable: int | None = None) -> RaftLog:
    """A log with entries 1..len(terms) of the given terms; the first `stable` persisted."""
    stable = len(terms) if stable is None else stable
    storage = MemoryStorage()
    storage.append([Entry(t, i + 1) for i, t in enumerate(terms[:stable])])
    log = RaftLog(storage)
    log.append([Entry(t, i + 1) for i, t in enumerate(terms) if i >= stable])
    return log


def test_term_reads_storage_and_unstable_tail():
    log = make_log([1, 1, 2, 3], stable=2)
    assert [log.term(i) for i in range(0, 5)] == [0, 1, 1, 2, 3]
    assert log.last_index() == 4 and log.stable_last() == 2
    assert [e.index for e in log.entries(1, 5)] == [1, 2, 3, 4]
    assert [e.index for e in log.entries(2, 4)] == [2, 3]
    assert log.term_or_zero(9) == 0


def test_find_conflict_by_term():
    log = make_log([1, 1, 3, 3, 3, 5, 5])
    assert log.find_conflict_by_term(7, 4) == (5, 3)  # skips the term-5 entries at once
    assert log.find_conflict_by_term(7, 5) == (7, 5)
    assert log.find_conflict_by_term(5, 2) == (2, 1)
    assert log.find_conflict_by_term(3, 0) == (0, 0)
    assert log.find_conflict_by_term(99, 3) == (5, 3)  # beyond the log: from the last index


def test_maybe_append_checks_consistency_and_truncates_conflicts():
    log = make_log([1, 1, 2, 2])
    assert log.maybe_append(4, 1, 0, [Entry(3, 5)]) is None  # (4, 1) not in the log
    assert log.maybe_append(2, 1, 0, [Entry(2, 3), Entry(2, 4)]) == 4  # all present: no-op
    assert log.last_index() == 4 and log.stable_last() == 4
    assert log.maybe_append(2, 1, 3, [Entry(4, 3)]) == 3  # conflict at 3: truncate there
    assert log.last_index() == 3 and log.term(3) == 4
    assert log.committed == 3
    assert [e.index for e in log.next_unstable_entries()] == [3]


def test_append_below_committed_is_refused():
    log = make_log([1, 1, 2])
    log.commit_to(3)
    with pytest.raises(AssertionError):
        log.append([Entry(5, 2)])
    with pytest.raises(AssertionError):
        log.commit_to(4)  # beyond the last index


def test_stable_to_ignores_entries_replaced_in_the_meantime():
    log = make_log([1], stable=1)
    log.append([Entry(2, 2), Entry(2, 3)])
    handed_out = log.next_unstable_entries()
    log.accept_unstable()
    assert not log.has_next_unstable_entries()
    log.append([Entry(3, 3)])  # a new leader replaces index 3 before the write completes
    assert [(e.index, e.term) for e in log.next_unstable_entries()] == [(3, 3)]
    log.stable_to(handed_out[-1].index, handed_out[-1].term)  # (3, 2): no longer ours
    assert log.stable_last() == 1
    log.stable_to(2, 2)
    assert log.stable_last() == 2


def test_restore_snapshot_keeps_entries_unstable_until_persisted():
    log = make_log([1, 1], stable=1)
    log.accept_unstable()
    snap = Snapshot(SnapshotMetadata(10, 4, ConfState(voters=(1,))))
    log.restore(snap)
    assert log.committed == 10 and log.last_index() == 10 and log.term(10) == 4
    with pytest.raises(Compacted):
        log.term(9)
    assert log.next_unstable_snapshot() is snap
    assert not log.has_next_committed_entries()
    log.stable_to(2, 1)  # an older write finishing must not count as persisted
    assert log.stable_last() == 10
    log.accept_unstable()
    log.stable_snapshot_to(10)
    assert log.snapshot is None and log.first_index() == 1  # storage not written in this test


def test_progress_probe_replicate_snapshot_transitions():
    pr = Progress(next_index=11, max_inflight=2)
    assert pr.state == ProgressState.PROBE and not pr.is_paused()
    pr.sent_entries(3, 13)
    assert pr.is_paused() and pr.next == 11  # a probe waits for its answer
    assert not pr.maybe_decr_to(5, 4)  # stale rejection (not for next - 1 = 10)
    assert pr.maybe_decr_to(10, 6) and pr.next == 7 and not pr.is_paused()
    assert pr.maybe_update(8) and pr.match == 8 and pr.next == 9
    pr.become_replicate()
    pr.sent_entries(2, 10)
    pr.sent_entries(2, 12)
    assert pr.next == 13 and pr.is_paused()  # the window of 2 is full
    pr.maybe_update(10)
    pr.free_inflights_to(10)
    assert not pr.is_paused()
    assert not pr.maybe_decr_to(9, 0)  # rejection at or below match: stale
    assert pr.maybe_decr_to(12, 0) and pr.next == 11
    pr.become_snapshot(50)
    assert pr.is_paused()
    pr.become_probe()
    assert pr.state == ProgressState.PROBE and pr.next == 51
