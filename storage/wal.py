"""An append-only write-ahead log for Raft logs and hard states (NodeStore's `log="wal"` mode).

Theory of operation
- Why: in LMDB mode every persist is a B-tree commit touching ~10 pages. Here a batch of Raft
  writes (entries and hard states of all groups of a turn) is ONE write() of a few records and
  ONE fdatasync of a sequential file (etcd's design). LMDB then holds only the state machine
  (data, sessions, applied index) plus each group's snapshot metadata, conf state and log
  offset, its applies deferred into a transaction committed (synced) every ~0.1 s rather than
  per batch (wal_store.py): the WAL is the source of truth, and after a crash LMDB is at its
  last synced commit, an older applied index from which the node re-applies the log.
- Files: `<store>/wal/<seq:016x>.wal` segments. A record is [u32 body length][u32 crc32 of
  the body][body] (little-endian). A body is one of two encodings, told apart by its first
  byte:
  * framed (first byte FRAMED = 0x01; the hot path: a persist batch's entries and hard
    states): a sequence of items, little-endian structs, no msgpack:
      ENTRIES  u8 kind, u64 group, u64 first index, u32 count, then per entry
               u64 term, u8 entry type, u32 data length, data;
      HARD     u8 kind, u64 group, u64 term, u64 vote, u64 commit.
    A persist batch is ONE framed record whatever its number of groups: one crc covers the
    batch, so a write cut short by a crash (SIGKILL can stop a write() at a page boundary)
    loses the whole batch, never some of its groups;
  * msgpack [kind, group, payload] (a msgpack array: first byte 0x93; rare records):
      ENTRIES  [first_index, [encoded entry, ...]]   (read, no longer written)
      HARD     encoded hard state                     (read, no longer written)
      SNAP     [index, term]: a snapshot was installed: Raft's rule (keep the log after it if
               it holds that index with that term, else drop it all) is applied at this point;
      REMOVE   the group was removed: forget its log and hard state;
      BATCH    (group 0) the records of one `append`, concatenated (one crc for all).
  In both, entries at index <= the group's last index overwrite that suffix (Raft's
  conflicting-suffix truncation).
- Preallocation: a segment's file is filled with zeros ahead of its records (1 MiB at a
  time), so a record overwrites allocated blocks without changing the file's size and its
  fdatasync flushes no metadata. No record is empty, so a zero length header ends a
  segment's records; only zeros may follow it.
- Replay (`open`): segments in order, records in order, into per-group `MemLog`s and hard
  states. A short or bad-crc record (or non-zero bytes after the end) at the end of the LAST
  segment is a torn write of a batch never reported durable: the file is truncated there.
  Anywhere else it is CorruptData.
- Rotation: when a segment passes `segment_bytes`, a new one is started (directory fsynced)
  and opened with a HARD record for every group, so no older segment is needed for them.
  `open` appends them to the last segment again (a crash may have cut them off a new one).
- Deletion (`drop_segments`): the oldest segments are deleted while every group's highest
  entry index written in them is <= `durable[group]`, which the store passes as the groups' log
  offsets as of its last LMDB sync (offset <= applied index, both durable then). So an entry
  is deleted only when LMDB durably holds its effect and no longer needs it in the log.
- Threads: the store calls `append`/`drop_segments` under its write lock only.
"""

from __future__ import annotations

import errno
import os
import struct
import zlib

import msgpack

from raft.storage import entry_size
from raft.types import Entry, EntryType, HardState

from . import codec
from .errors import CorruptData, DiskFull, InvalidInput, StorageError

ENTRIES, HARD, SNAP, REMOVE, BATCH = 1, 2, 3, 4, 5
_HEAD = struct.Struct("<II")
FRAMED = 0x01  # first byte of a framed body (a msgpack body is an array: 0x90..0x9f, 0xdc..)
_FRAMED_TAG = bytes([FRAMED])
_F_ENTRIES = struct.Struct("<BQQI")  # kind, group, first index, count
_F_ENTRY = struct.Struct("<QBI")  # term, entry type, data length (then the data)
_F_ENTRIES_1 = struct.Struct("<BQQIQBI")  # _F_ENTRIES + _F_ENTRY: one entry, one pack
_F_HARD = struct.Struct("<BQQQQ")  # kind, group, term, vote, commit
DEFAULT_SEGMENT_BYTES = 64 << 20
_MAX_RECORD = 1 << 30
PREALLOC_BYTES = 1 << 20  # a segment's file is zero-filled this far ahead (see Wal._write)
_ZEROS = memoryview(bytes(PREALLOC_BYTES))
_DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


class MemLog:
    """A group's log entries start..start+len-1 in memory (Entry objects)."""

    __slots__ = ("start", "entries")

    def __init__(self, start: int = 1) -> None:
        self.start = start
        self.entries: list[Entry] = []

    @property
    def last(self) -> int:
        return self.start + len(self.entries) - 1

    def term(self, index: int) -> int | None:
        i = index - self.start
        return self.entries[i].term if 0 <= i < len(self.entries) else None

    def append(self, entries: list[Entry]) -> None:
        """Entries contiguous from entries[0].index; a suffix at or after it is replaced."""
        lo = entries[0].index
        if lo == self.start + len(self.entries) and self.entries:  # right after the last
            self.entries.extend(entries)
            return
        if not self.entries or lo < self.start:
            self.start, self.entries = lo, list(entries)
            return
        if lo > self.last + 1:
            raise CorruptData(f"WAL: append at {lo} after last index {self.last}")
        del self.entries[lo - self.start:]
        self.entries.extend(entries)

    def drop_through(self, index: int) -> None:
        """Forget entries <= index (compaction)."""
        if index >= self.last:
            self.start, self.entries = index + 1, []
        elif index >= self.start:
            del self.entries[: index + 1 - self.start]
            self.start = index + 1

    def apply_snapshot(self, index: int, term: int) -> bool:
        """Raft's rule; returns True if entries after `index` were discarded."""
        keep = self.term(index) == term
        dropped = not keep and self.last > index
        if keep:
            self.drop_through(index)
        else:
            self.start, self.entries = index + 1, []
        return dropped

    def slice(self, lo: int, hi: int, max_bytes: int | None) -> list[Entry]:
        i, j = max(lo - self.start, 0), min(hi - self.start, len(self.entries))
        if lo < self.start or i >= j:
            return []
        out = self.entries[i:j]
        if max_bytes is not None:
            size = 0
            for k, e in enumerate(out):
                size += entry_size(e)
                if k and size > max_bytes:
                    return out[:k]
        return out


def encode_record(kind: int, group: int, payload) -> bytes:
    """A msgpack record (the rare kinds: SNAP, REMOVE, BATCH)."""
    body = msgpack.packb([kind, group, payload], use_bin_type=True)
    return _HEAD.pack(len(body), zlib.crc32(body)) + body


class Framer:
    """Builds ONE framed record of entries and hard states (see the module docstring).
    Raises InvalidInput for what the format cannot hold (an index, term or vote outside
    u64, data that is not bytes); the caller then writes nothing."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list = [_FRAMED_TAG]

    def __bool__(self) -> bool:
        return len(self.parts) > 1

    def entries(self, group: int, entries: list[Entry]) -> None:
        parts = self.parts
        try:
            if len(entries) == 1:
                e = entries[0]
                parts.append(_F_ENTRIES_1.pack(ENTRIES, group, e.index, 1, e.term, e.type,
                                               len(e.data)))
                parts.append(e.data)
                return
            parts.append(_F_ENTRIES.pack(ENTRIES, group, entries[0].index, len(entries)))
            pack = _F_ENTRY.pack
            for e in entries:
                parts.append(pack(e.term, e.type, len(e.data)))
                parts.append(e.data)
        except (struct.error, TypeError) as exc:
            raise InvalidInput(f"group {group}: entries the WAL cannot hold: {exc}") from None

    def hard_state(self, group: int, hs: HardState) -> None:
        try:
            self.parts.append(_F_HARD.pack(HARD, group, hs.term, hs.vote, hs.commit))
        except (struct.error, TypeError) as exc:
            raise InvalidInput(f"group {group}: a hard state the WAL cannot hold: {exc}"
                               ) from None

    def record(self) -> bytes:
        try:
            body = b"".join(self.parts)
        except TypeError as exc:  # entry data that is not bytes-like
            raise InvalidInput(f"entry data the WAL cannot hold: {exc}") from None
        return _HEAD.pack(len(body), zlib.crc32(body)) + body


def entries_record(group: int, entries: list[Entry]) -> bytes:
    f = Framer()
    f.entries(group, entries)
    return f.record()


def hard_state_record(group: int, hs: HardState) -> bytes:
    f = Framer()
    f.hard_state(group, hs)
    return f.record()


def _framed_items(body) -> list:
    """The records of a framed body (its crc was good: any damage is corruption), as
    (kind, group, payload) with payload = (first index, [Entry, ...]) or a HardState."""
    out = []
    pos, end = 1, len(body)
    try:
        while pos < end:
            kind = body[pos]
            if kind == ENTRIES:
                _k, gid, first, count = _F_ENTRIES.unpack_from(body, pos)
                pos += _F_ENTRIES.size
                ents = []
                for i in range(count):
                    term, typ, n = _F_ENTRY.unpack_from(body, pos)
                    pos += _F_ENTRY.size
                    if pos + n > end:
                        raise CorruptData("WAL: framed entry runs past its record")
                    ents.append(Entry(term, first + i, EntryType(typ), body[pos:pos + n]))
                    pos += n
                out.append((ENTRIES, gid, ents))
            elif kind == HARD:
                _k, gid, term, vote, commit = _F_HARD.unpack_from(body, pos)
                pos += _F_HARD.size
                out.append((HARD, gid, HardState(term, vote, commit)))
            else:
                raise CorruptData(f"WAL: unknown framed item kind {kind}")
    except (struct.error, ValueError) as exc:
        raise CorruptData(f"WAL: bad framed record: {exc}") from None
    return out


def _read_records(path: str, last: bool):
    """(records, end of the records, whether only zeros follow them, file size) of one
    segment; a damaged tail is an error unless `last`."""
    with open(path, "rb") as f:
        data = f.read()
    out, pos = [], 0
    while pos < len(data):
        bad = None
        if pos + _HEAD.size > len(data):
            bad = "short header"
        else:
            n, crc = _HEAD.unpack_from(data, pos)
            body = data[pos + _HEAD.size: pos + _HEAD.size + n]
            if n == 0:  # no record is empty: the preallocated (zeroed) rest of the segment
                if data.count(0, pos) == len(data) - pos:
                    return out, pos, True, len(data)
                bad = "data after the end of the records"
            elif n > _MAX_RECORD or len(body) != n:
                bad = "short record"
            elif zlib.crc32(body) != crc:
                bad = "bad checksum"
        if bad is not None:
            if not last:
                raise CorruptData(f"WAL segment {path}: {bad} at offset {pos}")
            break
        out.append(_decode_body(body, f"WAL segment {path}: bad record at {pos}"))
        pos += _HEAD.size + n
    return out, pos, False, len(data)


def _decode_body(body: bytes, where: str):
    """A framed body as is (bytes), a msgpack one decoded to [kind, group, payload]."""
    if body[:1] == _FRAMED_TAG:
        return body
    try:
        rec = msgpack.unpackb(body, raw=False)
    except Exception as exc:  # a good crc over an undecodable body: not a torn write
        raise CorruptData(f"{where}: {exc}") from None
    if not isinstance(rec, list) or len(rec) != 3:
        raise CorruptData(f"{where}: not a [kind, group, payload] record")
    return rec


def _parse_batch(data: bytes) -> list:
    """The records inside a BATCH record (whose own crc was good: any damage is corruption)."""
    out, pos = [], 0
    while pos < len(data):
        if pos + _HEAD.size > len(data):
            raise CorruptData("WAL: short record inside a batch")
        n, crc = _HEAD.unpack_from(data, pos)
        body = data[pos + _HEAD.size: pos + _HEAD.size + n]
        if len(body) != n or zlib.crc32(body) != crc:
            raise CorruptData("WAL: bad record inside a batch")
        rec = _decode_body(body, "WAL: bad record inside a batch")
        if type(rec) is list and rec[0] == BATCH:
            raise CorruptData("WAL: nested batch")
        out.append(rec)
        pos += _HEAD.size + n
    return out


class Wal:
    def __init__(self, directory: str, segment_bytes: int, sync: bool) -> None:
        self.dir = directory
        self.segment_bytes = segment_bytes
        self.sync = sync
        self.logs: dict[int, MemLog] = {}
        self.hard: dict[int, HardState] = {}
        self._segs: list[int] = []  # sequence numbers, oldest first
        self._seg_max: dict[int, dict[int, int]] = {}  # seq -> group -> highest entry index
        self._fd: int | None = None
        self._size = 0  # where the records of the current segment end (the next write)
        self._zeroed = 0  # the segment's file is written (records, then zeros) up to here
        self.broken = False  # a failed write could not be undone: the file is suspect
        self.stats = {"appends": 0, "bytes": 0, "syncs": 0, "deleted_segments": 0}

    def _path(self, seq: int) -> str:
        return os.path.join(self.dir, f"{seq:016x}.wal")

    @classmethod
    def open(cls, directory: str, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
             sync: bool = True) -> "Wal":
        os.makedirs(directory, exist_ok=True)
        w = cls(directory, segment_bytes, sync)
        seqs = sorted(int(n[:-4], 16) for n in os.listdir(directory)
                      if n.endswith(".wal") and len(n) == 20)
        for k, seq in enumerate(seqs):
            last = k == len(seqs) - 1
            records, good, zero_tail, size = _read_records(w._path(seq), last)
            if good < size and not zero_tail:
                # torn tail of the last segment: never reported durable. Cut off (with the
                # zeros after it): no stale bytes may follow what is written next
                with open(w._path(seq), "r+b") as f:
                    f.truncate(good)
                    os.fsync(f.fileno())
                size = good
            w._segs.append(seq)
            w._seg_max[seq] = {}
            for rec in records:
                w._replay(seq, rec)
        if w._segs:
            seq = w._segs[-1]
            w._fd = os.open(w._path(seq), os.O_WRONLY)
            w._size, w._zeroed = good, size
            # A crash inside _new_segment can leave the last segment without the hard
            # states it should start with (empty, or cut off by the torn-tail truncation):
            # write them again, or deleting older segments could lose a vote.
            recs = [hard_state_record(g, hs) for g, hs in w.hard.items()]
            if recs:
                w._write(b"".join(recs))
        else:
            w._new_segment(0)
        return w

    def _replay(self, seq: int, rec) -> None:
        if type(rec) is bytes:  # framed
            for item in _framed_items(rec):
                self._replay_item(seq, *item)
            return
        kind, gid, payload = rec
        if kind == ENTRIES:
            first, raws = payload
            payload = [codec.decode_entry(first + i, r) for i, r in enumerate(raws)]
        elif kind == HARD:
            payload = codec.decode_hard_state(payload)
        self._replay_item(seq, kind, gid, payload)

    def _replay_item(self, seq: int, kind: int, gid: int, payload) -> None:
        if kind == ENTRIES:
            ents = payload
            if ents:
                self.logs.setdefault(gid, MemLog()).append(ents)
                m = self._seg_max[seq]
                m[gid] = max(m.get(gid, 0), ents[-1].index)
        elif kind == HARD:
            self.hard[gid] = payload
        elif kind == SNAP:
            self.logs.setdefault(gid, MemLog()).apply_snapshot(*payload)
        elif kind == REMOVE:
            self._forget(gid)
        elif kind == BATCH:
            for inner in _parse_batch(payload):
                self._replay(seq, inner)
        else:
            raise CorruptData(f"WAL: unknown record kind {kind}")

    def _forget(self, gid: int) -> None:
        self.logs.pop(gid, None)
        self.hard.pop(gid, None)
        for m in self._seg_max.values():  # its entries no longer hold any segment back
            m.pop(gid, None)

    def _new_segment(self, seq: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self._path(seq), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        self._size = self._zeroed = 0
        self._segs.append(seq)
        self._seg_max[seq] = {}
        dfd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        # every group's hard state again, so older segments are never needed for it
        recs = [hard_state_record(g, hs) for g, hs in self.hard.items()]
        if recs:
            self._write(b"".join(recs))

    def _write(self, data: bytes) -> None:
        """Write at the end of the records and sync; on a failed write the partial record
        is cut off again (so a full disk is an error, not a torn record in the middle of
        the log).

        The segment's file is extended ahead of the records with zeros, PREALLOC_BYTES at a
        time (written, not fallocate()d: ext4 would still log the conversion of unwritten
        extents): the records then overwrite allocated blocks of a file whose size does not
        change, so their fdatasync flushes the data alone, no metadata (~40 % less CPU per
        sync, measured). A zero length header ends the records of a segment (see
        `_read_records`)."""
        end = self._size + len(data)
        if end > self._zeroed:
            self._extend(end)
        view = memoryview(data)
        pos = self._size
        try:
            while view:
                n = os.pwrite(self._fd, view, pos)
                view = view[n:]
                pos += n
        except OSError as exc:
            try:
                os.ftruncate(self._fd, self._size)
                self._zeroed = self._size
            except OSError:
                self.broken = True
            if exc.errno in _DISK_FULL:
                raise DiskFull(f"WAL: disk full: {exc}") from None
            self.broken = True
            raise StorageError(f"WAL write failed: {exc}") from None
        self._size += len(data)
        if self.sync:
            try:
                os.fdatasync(self._fd)
            except OSError as exc:  # the page cache's state is unknown after this
                self.broken = True
                raise StorageError(f"WAL fdatasync failed: {exc}") from None
            self.stats["syncs"] += 1

    def _extend(self, end: int) -> None:
        """Zeros from `_zeroed` to at least `end` (PREALLOC_BYTES ahead, within the segment
        size); synced by the write's fdatasync that follows."""
        target = max(end, min(self._zeroed + PREALLOC_BYTES, self.segment_bytes))
        pos = self._zeroed
        try:
            while pos < target:
                chunk = _ZEROS[: min(len(_ZEROS), target - pos)]
                pos += os.pwrite(self._fd, chunk, pos)
        except OSError as exc:
            # zeros past the records are harmless: nothing changes but the file's length
            if exc.errno in _DISK_FULL:
                raise DiskFull(f"WAL: disk full: {exc}") from None
            raise StorageError(f"WAL write failed: {exc}") from None
        self._zeroed = pos

    def append(self, records: list[bytes], maxes: dict[int, int]) -> None:
        """Write `records` (one write, one fdatasync). `maxes`: group -> highest entry index
        the records hold. The caller updates `logs`/`hard` after this returns."""
        if not records:
            return
        if self._size >= self.segment_bytes:
            self._new_segment(self._segs[-1] + 1)
        data = b"".join(records)
        if len(records) > 1:
            data = encode_record(BATCH, 0, data)
        self._write(data)
        m = self._seg_max[self._segs[-1]]
        for g, i in maxes.items():
            if i > m.get(g, 0):
                m[g] = i
        self.stats["appends"] += 1
        self.stats["bytes"] += sum(map(len, records))

    def forget_group(self, gid: int) -> None:
        self.append([encode_record(REMOVE, gid, None)], {})
        self._forget(gid)

    def segments(self) -> list[int]:
        return list(self._segs)

    def drop_segments(self, durable: dict[int, int]) -> int:
        """Delete the oldest closed segments all of whose entries are at or below their
        group's durable offset (see the module docstring); returns how many."""
        n = 0
        while len(self._segs) > 1:
            seq = self._segs[0]
            if any(i > durable.get(g, 0) for g, i in self._seg_max[seq].items()):
                break
            os.unlink(self._path(seq))
            self._segs.pop(0)
            del self._seg_max[seq]
            n += 1
        if n:
            dfd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            self.stats["deleted_segments"] += n
        return n

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

