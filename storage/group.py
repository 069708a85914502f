"""GroupStorage: the read-only `raft.storage.Storage` view of one group inside a NodeStore.

The small, hot part of a group's state (first/last index, last term, hard state, conf state,
snapshot) lives in an immutable `GroupState` that the store replaces whole after each commit,
so a reader on another thread sees either the old or the new state, never a mix. Entries and
older terms are read from LMDB in a short read transaction each time.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from raft.types import (
    Compacted,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    Unavailable,
)

from . import codec
from .errors import InvalidInput


_U64 = struct.Struct(">Q")


def log_key(group_id: int, index: int) -> bytes:
    return _U64.pack(group_id) + _U64.pack(index)


def group_prefix(group_id: int) -> bytes:
    return _U64.pack(group_id)


# Suffixes of a group's records in the raft database (after group_prefix): hard state, conf
# state, snapshot record, log offset (index and term of the last discarded entry).
HS_KEY, CS_KEY, SNAP_KEY, OFFSET_KEY = b"h", b"c", b"s", b"o"


def load_group_meta(txn, raft_db, group_id: int) -> tuple[int, int, Snapshot, ConfState]:
    """(offset index, offset term, snapshot record, conf state) of a group, from its records."""
    gp = group_prefix(group_id)
    raw = txn.get(gp + SNAP_KEY, db=raft_db)
    snap = codec.decode_snapshot(raw) if raw is not None else Snapshot()
    raw = txn.get(gp + CS_KEY, db=raft_db)
    cs = codec.decode_conf_state(raw) if raw is not None else snap.metadata.conf_state
    raw = txn.get(gp + OFFSET_KEY, db=raft_db)
    offset, offset_term = (codec.unpack(raw) if raw is not None else
                           (snap.metadata.index, snap.metadata.term))
    return offset, offset_term, snap, cs


class GroupState(NamedTuple):  # a tuple: cheap to build once per group per commit
    """The log holds entries first_index..last_index after the discarded prefix that ends at
    `offset_index` (whose term is remembered). `snapshot` is the last snapshot recorded; its
    index is >= offset_index (equal after a snapshot install or a plain `compact`)."""

    offset_index: int
    offset_term: int
    last_index: int
    last_term: int
    hard_state: HardState
    conf_state: ConfState
    snapshot: Snapshot
    # Entries tail_start..last_index all have last_term (a cache: term() of the log's tail,
    # where Raft asks most, needs no read transaction). When unknown it is last_index.
    tail_start: int = 0

    @property
    def first_index(self) -> int:
        return self.offset_index + 1

    def replace(self, **changes) -> "GroupState":
        return self._replace(**changes)


EMPTY_STATE = GroupState(0, 0, 0, 0, HardState(), ConfState(), Snapshot())


def entries_to_append(group_id: int, entries: list[Entry], st: GroupState) -> list[Entry]:
    """The part of `entries` that a persist must write onto a log in state `st`: entries at or
    below the compaction point are committed already and dropped; the rest must be contiguous
    and start no later than `st.last_index + 1` (InvalidInput otherwise)."""
    if len(entries) == 1:  # the common case
        i = entries[0].index
        if st.offset_index < i <= st.last_index + 1:
            return entries
    if entries and entries[0].index <= st.offset_index:
        entries = [e for e in entries if e.index > st.offset_index]
    if entries:
        lo = entries[0].index
        if lo > st.last_index + 1:
            raise InvalidInput(f"group {group_id}: append at {lo} leaves a gap after {st.last_index}")
        if entries[-1].index - lo != len(entries) - 1 or any(
                b.index != a.index + 1 for a, b in zip(entries, entries[1:])):
            raise InvalidInput(f"group {group_id}: entries not contiguous from {lo}")
    return entries


class GroupStorage:
    """Implements `raft.storage.Storage` for `group_id` (see its docstring for the ranges)."""

    __slots__ = ("_store", "group_id")

    def __init__(self, store, group_id: int) -> None:
        self._store = store
        self.group_id = group_id

    def _state(self) -> GroupState:
        return self._store._group_state(self.group_id)

    def initial_state(self) -> tuple[HardState, ConfState]:
        st = self._state()
        return st.hard_state, st.conf_state

    def first_index(self) -> int:
        return self._state().first_index

    def last_index(self) -> int:
        return self._state().last_index

    def snapshot(self) -> Snapshot:
        return self._state().snapshot

    def hard_state(self) -> HardState:
        return self._state().hard_state

    def term(self, index: int) -> int:
        st = self._state()
        if index < st.offset_index:
            raise Compacted(f"term({index}): compacted up to {st.offset_index}")
        if index > st.last_index:
            raise Unavailable(f"term({index}): last index is {st.last_index}")
        if index == st.offset_index:
            return st.offset_term
        if st.tail_start <= index <= st.last_index:
            return st.last_term
        t = self._store._log_term(self.group_id, index)
        if t is None:  # the log changed under us (truncated or compacted meanwhile)
            return self._retry_missing(index)
        return t

    def _retry_missing(self, index: int) -> int:
        st = self._state()
        if index < st.first_index - 1:
            raise Compacted(f"term({index}): compacted up to {st.first_index - 1}")
        raise Unavailable(f"term({index}): last index is {st.last_index}")

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        st = self._state()
        if lo < st.first_index:
            raise Compacted(f"entries({lo}, {hi}): first index is {st.first_index}")
        if hi > st.last_index + 1:
            raise Unavailable(f"entries({lo}, {hi}): last index is {st.last_index}")
        if lo >= hi:
            return []
        out = self._store._read_entries(self.group_id, lo, hi, max_bytes)
        if not out or out[0].index != lo:
            self._retry_missing(lo)
            raise Unavailable(f"entries({lo}, {hi}): the log changed meanwhile")
        return out
