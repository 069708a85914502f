"""RaftLog's cache of stable, unapplied entries must be invisible: every read equals a read of
the durable storage plus the unstable tail, through appends, truncations, persists, applies,
compactions and snapshot restores driven in random orders."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raft.log import RaftLog
from raft.storage import MemoryStorage
from raft.types import Compacted, ConfState, Entry, Snapshot, SnapshotMetadata, Unavailable


def _reference(log: RaftLog, storage: MemoryStorage, lo: int, hi: int) -> list[Entry]:
    """What the log holds in [lo, hi) without any cache: storage below offset, then unstable."""
    if log.snapshot is not None:
        return list(log.ents[lo - log.offset: hi - log.offset])
    out = []
    for i in range(lo, hi):
        out.append(log.ents[i - log.offset] if i >= log.offset else storage.entries(i, i + 1)[0])
    return out


def _check(log: RaftLog, storage: MemoryStorage) -> None:
    first, last = log.first_index(), log.last_index()
    assert len(log.cache) == 0 or log.cache[-1].index == log.offset - 1
    for lo in range(first, last + 1):
        for hi in range(lo + 1, min(last + 1, lo + 6) + 1):
            assert log.entries(lo, hi) == _reference(log, storage, lo, hi)
        if log.snapshot is None and lo < log.offset:
            assert log.term(lo) == storage.term(lo)
    if first > 1 and log.snapshot is None:
        try:
            log.entries(first - 1, first)
        except Compacted:
            pass
        else:
            raise AssertionError("a compacted index was served")


ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 8), st.integers(1, 4)),
        st.tuples(st.just("persist"), st.just(0), st.just(0)),
        st.tuples(st.just("commit"), st.integers(0, 20), st.just(0)),
        st.tuples(st.just("apply"), st.integers(0, 20), st.just(0)),
        st.tuples(st.just("compact"), st.integers(0, 20), st.just(0)),
        st.tuples(st.just("restore"), st.integers(1, 5), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_cache_reads_equal_storage_reads(program):
    storage = MemoryStorage()
    storage.bootstrap(ConfState(voters=(1,)))
    log = RaftLog(storage)
    term = 1
    for op, a, b in program:
        if op == "append":
            # a new leader's entries (a higher term) after some index at or above commit
            term += 1
            after = max(log.committed, log.last_index() - a)
            log.append([Entry(term=term, index=after + 1 + k, data=b"%d" % k) for k in range(b)])
        elif op == "persist":  # what a driver does with a Ready's entries, then advance
            ents = log.next_unstable_entries()
            snap = log.next_unstable_snapshot()
            log.accept_unstable()
            if snap is not None:
                storage.apply_snapshot(snap)
                log.stable_snapshot_to(snap.metadata.index)
            if ents:
                storage.append(ents)
                log.stable_to(ents[-1].index, ents[-1].term)
        elif op == "commit":
            log.commit_to(min(log.stable_last(), log.committed + a)) if log.snapshot is None else None
        elif op == "apply":
            log.applied_to(min(log.committed, log.applied + a))
        elif op == "compact" and log.snapshot is None:
            index = min(log.applied, storage.first_index() - 1 + a)
            if index >= storage.first_index():
                storage.compact(index)
        elif op == "restore":
            index = log.last_index() + a
            term += 1
            log.restore(Snapshot(data=b"", metadata=SnapshotMetadata(
                index=index, term=term, conf_state=ConfState(voters=(1,)))))
        _check(log, storage)
    try:
        log.entries(log.last_index() + 1, log.last_index() + 2)
    except Unavailable:
        pass
    else:
        raise AssertionError("an index beyond the last was served")
