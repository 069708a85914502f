"""The WAL (storage/wal.py) and NodeStore's log="wal" mode: replay, torn tails, truncation,
segment rotation and deletion, snapshot metadata, recovery when LMDB is behind the log."""

from __future__ import annotations

import os

import pytest

from raft.storage import bootstrap_snapshot
from raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from storage import CorruptData, GroupApply, GroupWrite, InvalidInput, NodeStore, Put
from storage.codec import decode_command, encode_command
from storage.wal import Wal, entries_record, hard_state_record

CS = ConfState(voters=(1, 2, 3))


def ents(lo, hi, term=1, tag=b""):
    return [Entry(term, i, data=encode_command(Put(b"k%d" % i, tag + b"v%d" % i, ts=i)))
            for i in range(lo, hi + 1)]


def open_wal_store(path, **kw):
    return NodeStore.open(path, sync=False, log="wal", **kw)


def wal_files(path):
    return sorted(os.listdir(os.path.join(path, "wal")))


def records_end(seg) -> int:
    """Where a segment's records end (its file is zero-filled beyond, see wal.py)."""
    with open(seg, "rb") as f:
        data = f.read()
    pos = 0
    while pos + 8 <= len(data):
        n = int.from_bytes(data[pos:pos + 4], "little")
        if n == 0:
            break
        pos += 8 + n
    return pos


def zero_out(seg, start: int, end: int) -> None:
    """What a torn write leaves in a preallocated segment: the bytes never written are
    still the zeros of the preallocation."""
    with open(seg, "r+b") as f:
        f.seek(start)
        f.write(bytes(end - start))


def test_replay_after_reopen_equals_what_was_persisted(tmp_path):
    p = tmp_path / "s"
    with open_wal_store(p) as s:
        s.persist([GroupWrite(1, entries=ents(1, 5), hard_state=HardState(2, 3, 4)),
                   GroupWrite(2, entries=ents(1, 2, term=3))])
        s.persist([GroupWrite(1, entries=ents(6, 7, term=2))])
        g1 = s.group(1).entries(1, 8)
    with open_wal_store(p) as s:
        assert s.group(1).entries(1, 8) == g1
        assert s.group(1).hard_state() == HardState(2, 3, 4)
        assert (s.group(1).first_index(), s.group(1).last_index()) == (1, 7)
        assert s.group(1).term(7) == 2 and s.group(1).term(5) == 1
        assert s.group(2).entries(1, 3) == ents(1, 2, term=3)
        assert s.groups() == [1, 2]


def test_conflicting_suffix_truncated_across_reopen(tmp_path):
    p = tmp_path / "s"
    with open_wal_store(p) as s:
        s.persist([GroupWrite(1, entries=ents(1, 10))])
        s.persist([GroupWrite(1, entries=ents(4, 5, term=2, tag=b"new"))])
    with open_wal_store(p) as s:
        g = s.group(1)
        assert g.last_index() == 5
        assert g.entries(1, 6) == ents(1, 3) + ents(4, 5, term=2, tag=b"new")
        s.persist([GroupWrite(1, entries=ents(6, 6, term=2))])
    with open_wal_store(p) as s:
        assert s.group(1).last_index() == 6 and s.group(1).term(6) == 2


def test_gap_and_bad_batches_change_nothing(tmp_path):
    with open_wal_store(tmp_path / "s") as s:
        s.persist([GroupWrite(1, entries=ents(1, 3))])
        with pytest.raises(InvalidInput):
            s.persist([GroupWrite(2, entries=ents(1, 1)), GroupWrite(1, entries=ents(9, 9))])
        assert s.group(2).last_index() == 0 and s.group(1).last_index() == 3


@pytest.mark.parametrize("how", ["zeroed", "truncated", "garbage"])
def test_torn_tail_of_last_segment_is_truncated(tmp_path, how):
    p = tmp_path / "s"
    with open_wal_store(p) as s:
        s.persist([GroupWrite(1, entries=ents(1, 3))])
        s.persist([GroupWrite(1, entries=ents(4, 4))])
    seg = os.path.join(p, "wal", wal_files(p)[-1])
    end = records_end(seg)
    assert os.path.getsize(seg) > end  # preallocated
    if how == "zeroed":  # the end of the last record never reached the disk
        zero_out(seg, end - 5, end)
    elif how == "truncated":  # a file that was not preallocated, cut in the last record
        with open(seg, "r+b") as f:
            f.truncate(end - 5)
    else:  # the last record's header lost, a later page of it written
        zero_out(seg, end - 40, end)
        with open(seg, "r+b") as f:
            f.seek(end - 5)
            f.write(b"\x07" * 5)
    with open_wal_store(p) as s:
        assert s.group(1).last_index() == 3
        s.persist([GroupWrite(1, entries=ents(4, 5, term=2))])
    with open_wal_store(p) as s:
        assert s.group(1).last_index() == 5 and s.group(1).term(4) == 2


def test_bad_checksum_in_last_segment_tail_is_truncated(tmp_path):
    d = str(tmp_path / "w")
    w = Wal.open(d, sync=False)
    w.append([entries_record(1, ents(1, 2))], {1: 2})
    w.append([hard_state_record(1, HardState(1, 0, 2))], {})
    w.close()
    seg = os.path.join(d, sorted(os.listdir(d))[-1])
    end = records_end(seg)
    with open(seg, "r+b") as f:
        f.seek(end - 1)
        last = f.read(1)
        f.seek(end - 1)
        f.write(bytes([last[0] ^ 0xFF]))
    w = Wal.open(d, sync=False)
    assert w.logs[1].last == 2 and 1 not in w.hard
    w.close()


def test_corruption_in_an_older_segment_is_an_error(tmp_path):
    p = tmp_path / "s"
    with open_wal_store(p, wal_segment_bytes=200) as s:
        for i in range(1, 30):
            s.persist([GroupWrite(1, entries=ents(i, i))])
    files = wal_files(p)
    assert len(files) > 2
    first = os.path.join(p, "wal", files[0])
    with open(first, "r+b") as f:
        f.seek(10)
        f.write(b"\xff\xff")
    with pytest.raises(CorruptData):
        open_wal_store(p, wal_segment_bytes=200)


def test_segments_deleted_only_when_lmdb_holds_their_entries(tmp_path):
    p = tmp_path / "s"
    with open_wal_store(p, wal_segment_bytes=300) as s:
        s.persist([GroupWrite(1, snapshot=bootstrap_snapshot(CS),
                              hard_state=HardState(1, 0, 1))])
        for i in range(2, 60):
            s.persist([GroupWrite(1, entries=ents(i, i), hard_state=HardState(1, 0, i))])
        many = wal_files(p)
        assert len(many) > 5
        from storage import wal_store
        # nothing applied or compacted: no segment may go
        assert wal_store.maybe_checkpoint(s, force=True) == 0
        assert wal_files(p) == many
        # applied but not compacted: the log is still needed (Raft's first index)
        s.apply([GroupApply(1, 1, 40, [decode_command(e.data) for e in
                                       s.group(1).entries(2, 41)])])
        assert wal_store.maybe_checkpoint(s, force=True) == 0
        # compacted up to 30: exactly the segments whose entries are all <= 30 go
        s.compact(1, 30)
        assert wal_store.maybe_checkpoint(s, force=True) > 0
        left = wal_files(p)
        assert left[-1] == many[-1] and len(left) < len(many)
    with open_wal_store(p, wal_segment_bytes=300) as s:
        g = s.group(1)
        assert (g.first_index(), g.last_index()) == (31, 59)
        assert g.entries(31, 60) == ents(31, 59)
        assert g.hard_state() == HardState(1, 0, 59)
        assert s.applied_index(1) == 40
        assert s.get(1, b"k40")[0] == b"v40"


def _fill_with_a_silent_group(s, last: int) -> None:
    """Group 2 writes its hard state once; group 1 then appends entries 2..last, one per
    persist, over many small segments."""
    s.persist([GroupWrite(1, snapshot=bootstrap_snapshot(CS))])
    s.persist([GroupWrite(2, hard_state=HardState(7, 2, 0))])  # never written again
    for i in range(2, last + 1):
        s.persist([GroupWrite(1, entries=ents(i, i))])


def test_hard_state_survives_deletion_of_its_segment(tmp_path):
    p = tmp_path / "s"
    with open_wal_store(p, wal_segment_bytes=200) as s:
        _fill_with_a_silent_group(s, 39)
        s.apply([GroupApply(1, 1, 39, [decode_command(e.data) for e in
                                       s.group(1).entries(2, 40)])])
        s.compact(1, 39)
        from storage import wal_store
        assert wal_store.maybe_checkpoint(s, force=True) > 0
    with open_wal_store(p, wal_segment_bytes=200) as s:
        assert s.group(2).hard_state() == HardState(7, 2, 0)


def test_lmdb_behind_the_log_reapplies(tmp_path):
    """After a crash LMDB may hold an older applied index than the WAL's commit: the log
    above it is there to re-apply and re-applying gives the same data."""
    p = tmp_path / "s"
    with open_wal_store(p) as s:
        s.persist([GroupWrite(1, snapshot=bootstrap_snapshot(CS))])
        s.persist([GroupWrite(1, entries=ents(2, 9), hard_state=HardState(1, 0, 9))])
        s.apply([GroupApply(1, 1, 5, [decode_command(e.data) for e in
                                      s.group(1).entries(2, 6)])])
    with open_wal_store(p) as s:
        assert s.applied_index(1) == 5 and s.group(1).hard_state().commit == 9
        todo = s.group(1).entries(6, 10)
        s.apply([GroupApply(1, 1, 9, [decode_command(e.data) for e in todo])])
        assert s.get(1, b"k9")[0] == b"v9" and s.applied_index(1) == 9


def test_snapshot_resets_the_log_across_reopen(tmp_path):
    p = tmp_path / "s"
    with open_wal_store(p) as s:
        s.persist([GroupWrite(1, entries=ents(1, 10), hard_state=HardState(1, 0, 3))])
        snap = Snapshot(SnapshotMetadata(20, 3, CS))
        s.persist([GroupWrite(1, snapshot=snap)])
        s.persist([GroupWrite(1, entries=ents(21, 22, term=3))])
    with open_wal_store(p) as s:
        g = s.group(1)
        assert (g.first_index(), g.last_index()) == (21, 22)
        assert g.snapshot().metadata.index == 20
        assert g.hard_state().commit == 20
        assert g.entries(21, 23) == ents(21, 22, term=3)


def test_crash_between_snapshot_metadata_and_wal_record_is_repaired(tmp_path):
    """LMDB holds the snapshot's offset but the WAL still has the old, conflicting log:
    reopen drops it and records the reset, so later appends survive the next reopen."""
    p = tmp_path / "s"
    with open_wal_store(p) as s:
        s.persist([GroupWrite(1, entries=ents(1, 10))])
        from storage import wal_store

        def no_wal(store, actions):  # the crash: LMDB committed, WAL record never written
            raise SystemExit

        real = wal_store.run_after
        wal_store.run_after = no_wal
        try:
            with pytest.raises(SystemExit):
                s.persist([GroupWrite(1, snapshot=Snapshot(SnapshotMetadata(5, 9, CS)))])
        finally:
            wal_store.run_after = real
    with open_wal_store(p) as s:
        g = s.group(1)
        assert (g.first_index(), g.last_index()) == (6, 5)
        s.persist([GroupWrite(1, entries=ents(6, 7, term=9))])
    with open_wal_store(p) as s:
        assert s.group(1).entries(6, 8) == ents(6, 7, term=9)


def test_remove_group_forgets_its_log(tmp_path):
    p = tmp_path / "s"
    with open_wal_store(p) as s:
        s.persist([GroupWrite(3, entries=ents(1, 4), hard_state=HardState(2, 1, 4))])
        s.remove_group(3, None)
    with open_wal_store(p) as s:
        assert s.group(3).last_index() == 0 and s.group(3).hard_state() == HardState()
        assert 3 not in s.groups()


def test_log_mode_is_remembered(tmp_path):
    p = tmp_path / "s"
    with open_wal_store(p) as s:
        s.persist([GroupWrite(1, entries=ents(1, 1))])
    with pytest.raises(InvalidInput):
        NodeStore.open(p, sync=False, log="lmdb")
    with NodeStore.open(p, sync=False) as s:  # no mode given: the store's own
        assert s.log_mode == "wal" and s.group(1).last_index() == 1
    with NodeStore.open(tmp_path / "l", sync=False) as s:
        assert s.log_mode == os.environ.get("KVSTORE_STORE_LOG", "lmdb")
    with pytest.raises(InvalidInput):
        NodeStore.open(p, sync=False, log="nope")


def test_hard_states_survive_a_crash_while_a_segment_was_started(tmp_path):
    """A crash right after a new segment was created, before its hard state records were
    written: after reopening, deleting the older segments must not lose a hard state."""
    p = tmp_path / "s"
    with open_wal_store(p, wal_segment_bytes=200) as s:
        _fill_with_a_silent_group(s, 20)
        last = wal_files(p)[-1]
    seq = int(last[:-4], 16) + 1
    open(os.path.join(p, "wal", f"{seq:016x}.wal"), "wb").close()  # the crash
    with open_wal_store(p, wal_segment_bytes=1 << 20) as s:  # no rotation from now on
        s.apply([GroupApply(1, 1, 20, [decode_command(e.data) for e in
                                       s.group(1).entries(2, 21)])])
        s.compact(1, 20)
        from storage import wal_store
        assert wal_store.maybe_checkpoint(s, force=True) > 0
        assert wal_files(p)[0] > last  # every segment from before the crash is gone
    with open_wal_store(p) as s:
        assert s.group(2).hard_state() == HardState(7, 2, 0)


def test_a_batch_cut_short_is_lost_whole(tmp_path):
    """A write cut short by a crash (SIGKILL can end a write() at a page boundary) loses the
    whole persist batch, not some of its groups."""
    p = tmp_path / "s"
    with open_wal_store(p) as s:
        s.persist([GroupWrite(g, entries=ents(1, 2), hard_state=HardState(1, 0, 2))
                   for g in (1, 2, 3)])
        s.persist([GroupWrite(g, entries=ents(3, 40), hard_state=HardState(1, 0, 40))
                   for g in (1, 2, 3)])
    seg = os.path.join(p, "wal", wal_files(p)[-1])
    end = records_end(seg)
    zero_out(seg, end - 100, end)  # groups 1 and 2 of the second batch are whole in the file
    with open_wal_store(p) as s:
        assert [s.group(g).last_index() for g in (1, 2, 3)] == [2, 2, 2]
        assert [s.group(g).hard_state().commit for g in (1, 2, 3)] == [2, 2, 2]


# -- the framed record format ---------------------------------------------------------------


def _raw_record(body: bytes) -> bytes:
    import struct
    import zlib
    return struct.pack("<II", len(body), zlib.crc32(body)) + body


def test_one_persist_batch_is_one_framed_record_and_replays(tmp_path):
    """Several groups, several entries (also of other types and empty data), hard-state-only
    writes and two writes of one group in one batch: one record, and replay gives it back."""
    from raft.types import EntryType
    p = tmp_path / "s"
    mixed = [Entry(4, 3, EntryType.CONF_CHANGE, b"\x00cc"), Entry(4, 4, data=b""),
             Entry(5, 5, data=b"x" * 70_000)]
    with open_wal_store(p) as s:
        s.persist([GroupWrite(1, entries=ents(1, 2), hard_state=HardState(4, 2, 1))])
        before = records_end(os.path.join(p, "wal", wal_files(p)[-1]))
        appends = s._wal.stats["appends"]
        s.persist([GroupWrite(1, entries=mixed, hard_state=HardState(5, 2, 4)),
                   GroupWrite(2, hard_state=HardState(9, 1, 0)),
                   GroupWrite(3, entries=ents(1, 1, term=2)),
                   GroupWrite(1, entries=ents(6, 6, term=5), hard_state=HardState(5, 2, 5)),
                   GroupWrite(2 ** 63, entries=ents(1, 1, term=1))])
        assert s._wal.stats["appends"] == appends + 1
        seg = os.path.join(p, "wal", wal_files(p)[-1])
        with open(seg, "rb") as f:
            f.seek(before)
            n = int.from_bytes(f.read(4), "little")
            f.read(4)
            assert f.read(1) == b"\x01"  # framed
        assert records_end(seg) == before + 8 + n  # ONE record
        want = {g: s.group(g).entries(s.group(g).first_index(), s.group(g).last_index() + 1)
                for g in (1, 3, 2 ** 63)}
    with open_wal_store(p) as s:
        for g, es in want.items():
            assert s.group(g).entries(s.group(g).first_index(), s.group(g).last_index() + 1) == es
        assert s.group(1).entries(3, 7) == mixed + ents(6, 6, term=5)
        assert s.group(1).hard_state() == HardState(5, 2, 5)
        assert s.group(2).hard_state() == HardState(9, 1, 0)
        assert s.group(2 ** 63).last_index() == 1
        assert s.group(3).entries(1, 2) == ents(1, 1, term=2)


def test_a_value_the_format_cannot_hold_is_refused_and_writes_nothing(tmp_path):
    with open_wal_store(tmp_path / "s") as s:
        s.persist([GroupWrite(1, entries=ents(1, 1))])
        size = s._wal._size
        with pytest.raises(InvalidInput):
            s.persist([GroupWrite(2, entries=ents(1, 1)),
                       GroupWrite(1, hard_state=HardState(2 ** 64, 0, 1))])
        with pytest.raises(InvalidInput):
            s.persist([GroupWrite(2, entries=[Entry(1, 1, data="not bytes")])])
        assert s._wal._size == size
        assert s.group(2).last_index() == 0 and s.group(1).hard_state() == HardState()
        s.persist([GroupWrite(1, entries=ents(2, 2))])
        assert s.group(1).last_index() == 2


@pytest.mark.parametrize("body", [
    b"\x01\x09" + bytes(30),  # unknown item kind
    b"\x01\x02" + bytes(10),  # a hard state cut short
    b"\x01\x01" + (1).to_bytes(8, "little") * 2 + (1).to_bytes(4, "little")
    + (1).to_bytes(8, "little") + b"\x00" + (50).to_bytes(4, "little") + b"short",  # data
    b"\x01\x01" + (1).to_bytes(8, "little") * 2 + (1).to_bytes(4, "little")
    + (1).to_bytes(8, "little") + b"\x63" + (0).to_bytes(4, "little"),  # entry type 99
])
def test_a_malformed_framed_record_with_a_good_crc_is_corruption(tmp_path, body):
    d = str(tmp_path / "w")
    w = Wal.open(d, sync=False)
    w.append([entries_record(1, ents(1, 2))], {1: 2})
    w.append([_raw_record(body)], {})
    w.close()
    with pytest.raises(CorruptData):
        Wal.open(d, sync=False)


def test_msgpack_entries_and_hard_state_records_still_replay(tmp_path):
    """The earlier record encoding of entries and hard states (msgpack) is still read."""
    from storage import codec
    from storage.wal import ENTRIES, HARD, encode_record
    d = str(tmp_path / "w")
    w = Wal.open(d, sync=False)
    w.append([encode_record(ENTRIES, 1, [1, [codec.encode_entry(e) for e in ents(1, 3)]]),
              encode_record(HARD, 1, codec.encode_hard_state(HardState(3, 1, 2)))], {1: 3})
    w.append([entries_record(1, ents(3, 4, term=2))], {1: 4})
    w.close()
    w = Wal.open(d, sync=False)
    assert w.logs[1].slice(1, 5, None) == ents(1, 2) + ents(3, 4, term=2)
    assert w.hard[1] == HardState(3, 1, 2)
    w.close()


# -- preallocated segments ------------------------------------------------------------------


def test_segments_are_preallocated_and_writes_continue_at_the_records_end(tmp_path):
    from storage.wal import PREALLOC_BYTES
    p = tmp_path / "s"
    with open_wal_store(p) as s:
        s.persist([GroupWrite(1, entries=ents(1, 1))])
        seg = os.path.join(p, "wal", wal_files(p)[-1])
        assert os.path.getsize(seg) == PREALLOC_BYTES
    for i in range(2, 5):  # each reopen appends after the records, not after the zeros
        with open_wal_store(p) as s:
            s.persist([GroupWrite(1, entries=ents(i, i), hard_state=HardState(1, 0, i))])
            assert os.path.getsize(seg) == PREALLOC_BYTES
    big = b"x" * (PREALLOC_BYTES + 100)  # a record larger than the preallocation
    with open_wal_store(p) as s:
        s.persist([GroupWrite(1, entries=[Entry(1, 5, data=big)])])
        s.persist([GroupWrite(1, entries=ents(6, 6))])
        assert records_end(seg) <= os.path.getsize(seg)
    with open_wal_store(p) as s:
        g = s.group(1)
        assert g.entries(1, 7) == ents(1, 4) + [Entry(1, 5, data=big)] + ents(6, 6)
        assert g.hard_state() == HardState(1, 0, 4)


def test_bytes_after_the_zero_tail_of_an_older_segment_are_corruption(tmp_path):
    p = tmp_path / "s"
    with open_wal_store(p) as s:
        for i in range(1, 10):
            s.persist([GroupWrite(1, entries=ents(i, i))])
    with open_wal_store(p, wal_segment_bytes=100) as s:  # the next append starts a segment
        s.persist([GroupWrite(1, entries=ents(10, 10))])
    with open_wal_store(p, wal_segment_bytes=100) as s:  # (intact, it reopens)
        assert s.group(1).entries(1, 11) == ents(1, 10)
    files = wal_files(p)
    assert len(files) >= 2
    first = os.path.join(p, "wal", files[0])
    end = records_end(first)
    assert os.path.getsize(first) > end + 10
    with open(first, "r+b") as f:
        f.seek(end + 10)
        f.write(b"\x01")
    with pytest.raises(CorruptData):
        open_wal_store(p, wal_segment_bytes=100)
