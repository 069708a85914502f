"""NodeStore's WAL mode (`NodeStore.open(path, log="wal")`): the glue between store.py and wal.py.

What lives where
- WAL (fdatasync'd per batch): every group's log entries and hard state; in memory as
  `Wal.logs` (MemLog per group) and `Wal.hard`, rebuilt by replay on open.
- LMDB: data, sessions, apply state, GC horizons; per group the snapshot record, conf state
  and log offset (what `compact` and snapshot installs write). EVERY LMDB commit is synced
  (the environment is opened with sync and metasync on, as in LMDB mode): LMDB only ever
  holds synced commits, so a power loss leaves it at its last commit, intact.
- Deferred commits (`defer_commits`, on by default): what the WAL can redo (applies) or does
  not need (compactions, GC, session expiry) is written on the home thread (the one that
  opened the store) into ONE long-lived LMDB write transaction, each write in a nested child
  transaction (so a write that fails, or hits a full map, leaves no trace in it). That
  transaction is committed, synced, when it is DEFER_MAX_S old or holds DEFER_MAX_OPS
  commands / DEFER_MAX_WAL_BYTES of WAL since it opened (checked after each write), when a
  durable write comes (metadata, snapshot installs, conf states, group removal: they commit
  the deferred writes, then themselves, synced), at a checkpoint, a snapshot stream's start
  and on close. So a job costs one WAL fdatasync plus a few-microsecond child commit; the
  LMDB commit (~5 ms: hundreds of dirty pages and 2 fdatasyncs) comes ~10 times a second.
- Reads see the deferred writes on the home thread: they read through the open write
  transaction (LMDB allows that on its thread), so a linearizable read never misses an
  applied write. Other threads cannot: while deferred writes are pending their reads raise
  StorageError (a sequence number around each read transaction catches one that began
  before a commit), and their writes too (only the home thread can commit its transaction).
  The snapshot stream reads committed states by design: `snapshot_chunks` commits pending
  deferred writes, then reads the header and pins GC at its version; the chunks, pulled
  later on any thread, come from later committed states filtered to versions <= it (deferred
  GC after the pin is clamped to it, so they agree). `snapshot_chunks` and
  `install_snapshot` called from a trio worker thread first ask the trio loop (the home
  thread) to commit the deferred writes (trio.from_thread).
  A store written on a worker thread and read on the loop (kvstore --storage-thread) gets
  no deferral there: writes off the home thread commit at once.
- Order of a persist batch: (1) if it carries snapshots or conf states, one LMDB transaction
  for their metadata, synced, then a SNAP record in the WAL; (2) the entries and hard states
  as WAL records: one write, one fdatasync; (3) the in-memory logs and the group-state cache
  are updated (durable before visible).
- Recovery (`open_wal`): replay the WAL, then reconcile each group with LMDB's offset: entries
  at or below it are dropped; if the WAL's entry at the offset has another term (a crash
  between a snapshot install's LMDB commit and its WAL SNAP record), the log after it is
  dropped too and a SNAP record is appended so a later replay agrees. LMDB's applied index
  may be behind the WAL's commit index after a crash (deferred writes are lost with the
  process): the node re-applies the committed entries above it (RawNode starts at
  `applied_index`, the log and commit come from here).
- Checkpoints (`maybe_checkpoint`, after a persist at most every CHECKPOINT_S, and on close):
  commit the deferred writes (synced), then note every group's min(log offset, applied
  index) — now LMDB's committed state — and delete the WAL segments whose entries are all
  at or below those indexes (wal.Wal.drop_segments). Never from a deferred state, so the WAL
  keeps every entry above LMDB's last synced applied index; nothing at all after a failed
  commit (the store then refuses work until reopened).
- What is safe: a process crash (SIGKILL) and a power loss or kernel crash lose nothing the
  WAL acknowledged: LMDB restarts at its last synced commit, the WAL holds everything after
  it, and re-applying gives the same state (tests: test_crash.py, test_deferred.py). What
  is not: disks or file systems that lie about fdatasync (as for any database); and a
  failed LMDB commit of deferred writes (EIO, full disk) cannot be retried in place: the
  store refuses further work with StorageError and must be reopened (the node restarts and
  re-applies from the WAL).
"""

from __future__ import annotations

import os
import sys
import time

from raft.types import HardState, Snapshot

from . import codec
from .errors import CorruptData, DiskFull, StorageError, StoreClosed
from .group import (CS_KEY, HS_KEY, OFFSET_KEY, SNAP_KEY, GroupState, entries_to_append,
                    group_prefix, load_group_meta)
from .wal import (DEFAULT_SEGMENT_BYTES, REMOVE, SNAP, Framer, MemLog, Wal, encode_record,
                  hard_state_record)

CHECKPOINT_S = 1.0
_new_tuple = tuple.__new__
_HS, _CS, _SNAP, _OFFSET = HS_KEY, CS_KEY, SNAP_KEY, OFFSET_KEY


def open_wal(store, segment_bytes: int | None) -> None:
    wal = Wal.open(os.path.join(store.path, "wal"),
                   segment_bytes=segment_bytes or DEFAULT_SEGMENT_BYTES, sync=store._sync)
    store._wal = wal
    repairs = []
    txn = store._begin_read()
    try:
        for gid, ml in wal.logs.items():
            offset, offset_term, _snap, _cs = load_group_meta(txn, store._db_raft, gid)
            if not ml.entries:
                ml.start = offset + 1
            elif ml.start > offset + 1:
                raise CorruptData(f"WAL: group {gid}'s log starts at {ml.start}, after its "
                                  f"offset {offset}: entries are missing")
            elif ml.start <= offset <= ml.last:
                if ml.apply_snapshot(offset, offset_term):
                    repairs.append(encode_record(SNAP, gid, [offset, offset_term]))
            elif ml.last < offset:
                ml.start, ml.entries = offset + 1, []
        groups = set(wal.logs) | set(wal.hard)
        states = {gid: load_group(store, txn, gid) for gid in groups}
    finally:
        store._end_read(txn)
    if repairs:
        wal.append(repairs, {})
    store._groups.update(states)


def close_wal(store) -> None:
    wal = store._wal
    try:
        if not store._wal_broken:
            maybe_checkpoint(store, force=True)
    finally:
        wal.close()


def load_group(store, txn, gid: int) -> GroupState:
    offset, offset_term, snap, cs = load_group_meta(txn, store._db_raft, gid)
    wal = store._wal
    hs = wal.hard.get(gid) or HardState()
    with store._mem_lock:
        ml = wal.logs.get(gid)
        if ml is not None and ml.entries:
            last, last_term = ml.last, ml.entries[-1].term
        else:
            last, last_term = offset, offset_term
    return GroupState(offset, offset_term, last, last_term, hs, cs, snap, last)


def log_term(store, gid: int, index: int) -> int | None:
    with store._mem_lock:
        ml = store._wal.logs.get(gid)
        return None if ml is None else ml.term(index)


def read_entries(store, gid: int, lo: int, hi: int, max_bytes: int | None):
    with store._mem_lock:
        ml = store._wal.logs.get(gid)
        return [] if ml is None else ml.slice(lo, hi, max_bytes)


def drop_through(store, gid: int, index: int) -> None:
    with store._mem_lock:
        ml = store._wal.logs.get(gid)
        if ml is not None:
            ml.drop_through(index)


def install_snapshot_meta(store, txn, gid: int, st: GroupState, snap: Snapshot) -> GroupState:
    """LMDB half of installing a snapshot's metadata (inside `txn`); the WAL half (SNAP and
    hard state records, the in-memory log reset) is queued for after the commit."""
    m = snap.metadata
    gp = group_prefix(gid)
    with store._mem_lock:
        ml = store._wal.logs.get(gid)
        keep = ml is not None and ml.term(m.index) == m.term
        if keep:
            last, last_term = ml.last, ml.entries[-1].term
        else:
            last, last_term = m.index, m.term
    hs = st.hard_state
    new_hs = None
    if hs.commit < m.index:
        hs = new_hs = HardState(hs.term, hs.vote, m.index)
    txn.put(gp + _SNAP, codec.encode_snapshot(snap), db=store._db_raft)
    txn.put(gp + _CS, codec.encode_conf_state(m.conf_state), db=store._db_raft)
    txn.put(gp + _OFFSET, codec.pack([m.index, m.term]), db=store._db_raft)
    store._wal_after.append((gid, m.index, m.term, new_hs))
    return GroupState(m.index, m.term, last, last_term, hs, m.conf_state, snap, last)


def _append(store, records: list[bytes], maxes: dict[int, int]) -> None:
    try:
        store._wal.append(records, maxes)
    except (OSError, StorageError):
        if store._wal.broken or not isinstance(sys.exc_info()[1], DiskFull):
            store._wal_broken = True  # file and memory may disagree: refuse further writes
        raise


def run_after(store, actions) -> None:
    """After an LMDB commit that installed snapshot metadata: SNAP records, then memory."""
    records = []
    for gid, index, term, hs in actions:
        records.append(encode_record(SNAP, gid, [index, term]))
        if hs is not None:
            records.append(hard_state_record(gid, hs))
    _append(store, records, {})
    wal = store._wal
    with store._mem_lock:
        for gid, index, term, hs in actions:
            wal.logs.setdefault(gid, MemLog(index + 1)).apply_snapshot(index, term)
            if hs is not None:
                wal.hard[gid] = hs


def persist(store, batch) -> None:
    """NodeStore.persist in WAL mode (the caller holds the write lock)."""
    if store._env is None:
        raise StoreClosed("the store is closed")
    if store._wal_broken:
        raise StorageError("a WAL write failed earlier; reopen the store")
    wal = store._wal
    for w in batch:
        if w.snapshot is not None or w.conf_state is not None:
            break
    else:
        w = None
    if w is not None:  # snapshots or conf states: their LMDB half first
        def fn(txn):
            pending: dict[int, GroupState] = {}
            for w in batch:
                gid = w.group_id
                st = store._group_in(txn, gid, pending)
                if w.snapshot is not None and \
                        w.snapshot.metadata.index > st.snapshot.metadata.index:
                    st = install_snapshot_meta(store, txn, gid, st, w.snapshot)
                if w.conf_state is not None and w.conf_state != st.conf_state:
                    txn.put(group_prefix(gid) + _CS, codec.encode_conf_state(w.conf_state),
                            db=store._db_raft)
                    st = st.replace(conf_state=w.conf_state)
                pending[gid] = st
            return None, lambda: store._groups.update(pending)

        store._write(fn)  # durable: synced, then the SNAP records go to the WAL
    # validate everything first, so a bad write changes nothing
    groups = store._groups
    pending: dict[int, GroupState] = {}
    framer = Framer()  # the whole batch is ONE framed record (one crc)
    maxes: dict[int, int] = {}
    appends: list = []
    hards: dict[int, HardState] = {}
    for w in batch:
        gid = w.group_id
        st = pending.get(gid) or groups.get(gid) or store._group_state(gid)
        entries, hs = w.entries, w.hard_state
        if entries:
            entries = entries_to_append(gid, entries, st)
        if hs is not None and hs != st.hard_state:
            framer.hard_state(gid, hs)  # (replay is order-free within a group's batch)
            hards[gid] = hs
        else:
            hs = None
        if not entries:
            if hs is not None:
                pending[gid] = st._replace(hard_state=hs)
            continue
        framer.entries(gid, entries)
        appends.append((gid, st.offset_index, entries))
        last = entries[-1].index
        if last > maxes.get(gid, 0):
            maxes[gid] = last
        pending[gid] = _new_tuple(GroupState, (  # GroupState(...) without its Python __new__
            st.offset_index, st.offset_term, last, entries[-1].term, hs or st.hard_state,
            st.conf_state, st.snapshot, last))
    if framer:
        _append(store, [framer.record()], maxes)
    if appends or hards:
        with store._mem_lock:
            logs = wal.logs
            for gid, offset, entries in appends:
                ml = logs.get(gid)
                if ml is None:
                    ml = logs[gid] = MemLog(offset + 1)
                ml.append(entries)
            wal.hard.update(hards)
        with store._cache_lock:
            groups.update(pending)
    maybe_checkpoint(store)


def forget_group(store, gid: int) -> None:
    wal = store._wal
    with store._mem_lock:
        if gid not in wal.logs and gid not in wal.hard:
            return
    _append(store, [encode_record(REMOVE, gid, None)], {})
    with store._mem_lock:
        wal._forget(gid)


def maybe_checkpoint(store, force: bool = False) -> int:
    """Commit the deferred writes (synced) and delete the WAL segments that LMDB's committed
    state no longer needs; returns how many. Caller: the home thread, or any thread when no
    deferred writes are pending (the store checks that first)."""
    wal = store._wal
    now = time.monotonic()
    if not force and now - store._last_checkpoint < CHECKPOINT_S:
        return 0
    if store._broken is not None or store._wal_broken:
        return 0  # the caches may be ahead of LMDB: they bound nothing
    store._last_checkpoint = now
    if store._dtxn is not None:
        store._commit_deferred("checkpoint")
    # No deferred transaction is open now, so the caches equal LMDB's committed (and, with
    # sync on, synced) state: every entry at or below these indexes is durably applied or
    # behind the log offset. Never computed from a deferred state: its applied indexes are
    # lost with a crash, and the WAL must still hold the entries above the synced ones.
    durable = {}
    for gid, st in list(store._groups.items()):
        ap = store._applies.get(gid)
        applied = max(ap.applied_index if ap is not None else 0, st.snapshot.metadata.index)
        durable[gid] = min(st.offset_index, applied)
    store.checkpoint_durable = durable  # what the last checkpoint allowed (for tests)
    return wal.drop_segments(durable)
