"""The read-only storage protocol the Raft core reads its log from, and `MemoryStorage`.

Index ranges (as in etcd-io/raft): a storage holds a snapshot at `first_index() - 1` (possibly
the empty snapshot at 0) followed by entries `first_index() .. last_index()`.
- `term(i)` is defined for `first_index() - 1 <= i <= last_index()`; it raises `Compacted`
  below that and `Unavailable` above.
- `entries(lo, hi, max_bytes)` returns entries `[lo, hi)`, at least one entry if any is in
  range, stopping before the total encoded size would exceed `max_bytes`; it raises
  `Compacted` if `lo < first_index()` and `Unavailable` if `hi > last_index() + 1`.
The driver writes to the storage (appends, hard state, snapshots) only between `ready()` and
`advance()`; raft itself never writes.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Protocol

from .types import (
    Compacted,
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMetadata,
    StorageError,
    Unavailable,
)


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]: ...

    def term(self, index: int) -> int: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...


# --- entry sizes (the unit of `max_bytes` / `max_size_per_msg`) -------------------------------

ENTRY_OVERHEAD = 16
"""Bytes counted per entry on top of its payload (term, index, type, framing)."""


_data = attrgetter("data")


def entry_size(entry: Entry) -> int:
    """The size raft budgets for `entry`: its payload plus a fixed per-entry overhead."""
    return len(entry.data) + ENTRY_OVERHEAD


def limit_size(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """The longest prefix of `entries` within `max_bytes` (always at least one entry)."""
    if max_bytes is None or len(entries) <= 1:
        return entries
    if sum(map(len, map(_data, entries))) + ENTRY_OVERHEAD * len(entries) <= max_bytes:
        return entries  # the common case, summed at C speed
    total = 0
    for i, e in enumerate(entries):
        total += len(e.data) + ENTRY_OVERHEAD
        if total > max_bytes:
            return entries[: max(i, 1)]
    return entries


class SnapshotOutOfDate(StorageError):
    """A snapshot older than (or as old as) the storage's current one was applied/created."""


def bootstrap_snapshot(conf_state: ConfState) -> Snapshot:
    """The snapshot a new group starts from: index 1, term 1, empty application state.

    Every founding member of a group applies this same snapshot to its empty storage (and
    persists `HardState(term=1, commit=1)`); a node added later starts with an empty storage
    and receives the leader's snapshot, which carries the configuration.
    """
    if not conf_state.voters:
        raise ValueError("a group needs at least one voter")
    return Snapshot(SnapshotMetadata(index=1, term=1, conf_state=conf_state), b"")


class MemoryStorage:
    """An in-memory `Storage` (the reference implementation, for tests and benchmarks).

    `_ents[0]` is a dummy entry at the snapshot's (index, term); real entries follow it.
    The write methods are the driver's, to be called between `ready()` and `advance()`.
    """

    __slots__ = ("hard_state", "conf_state", "_snapshot", "_ents")

    def __init__(self) -> None:
        self.hard_state = HardState()
        self.conf_state = ConfState()
        self._snapshot = Snapshot()
        self._ents: list[Entry] = [Entry(0, 0)]

    # -- the read-only Storage protocol --

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self.hard_state, self.conf_state

    def first_index(self) -> int:
        return self._ents[0].index + 1

    def last_index(self) -> int:
        return self._ents[0].index + len(self._ents) - 1

    def term(self, index: int) -> int:
        offset = self._ents[0].index
        if index < offset:
            raise Compacted(f"index {index} is compacted (first index {offset + 1})")
        if index - offset >= len(self._ents):
            raise Unavailable(f"index {index} is beyond the last index {self.last_index()}")
        return self._ents[index - offset].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        offset = self._ents[0].index
        if lo <= offset:
            raise Compacted(f"entries from {lo} are compacted (first index {offset + 1})")
        if hi > offset + len(self._ents):
            raise Unavailable(f"entries up to {hi - 1} requested, last index is "
                              f"{self.last_index()}")
        return limit_size(self._ents[lo - offset : hi - offset], max_bytes)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    # -- writes (the driver's) --

    def bootstrap(self, conf_state: ConfState) -> None:
        """Make this empty storage a founding member of a group with `conf_state`.

        E.g. `MemoryStorage().bootstrap(ConfState(voters=(1, 2, 3)))` on each of nodes 1-3.
        """
        if self.last_index() != 0 or self.hard_state != HardState():
            raise ValueError("bootstrap needs an empty storage")
        self.apply_snapshot(bootstrap_snapshot(conf_state))
        self.hard_state = HardState(term=1, vote=0, commit=1)

    def set_hard_state(self, hard_state: HardState) -> None:
        self.hard_state = hard_state

    def set_conf_state(self, conf_state: ConfState) -> None:
        """Record the configuration in force at the applied index (returned by
        `RawNode.apply_conf_change`), so that `initial_state()` is right after a restart."""
        self.conf_state = conf_state

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log by `snapshot` (what a follower does with `Ready.snapshot`)."""
        meta = snapshot.metadata
        if meta.index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDate(f"snapshot at {meta.index} is not newer than the current "
                                    f"one at {self._snapshot.metadata.index}")
        self._snapshot = snapshot
        self._ents = [Entry(meta.term, meta.index)]
        self.conf_state = meta.conf_state

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        """Record the application's state `data` at applied `index` as the snapshot that
        lagging followers will receive. Call `compact(index)` afterwards to drop the log."""
        if index <= self._snapshot.metadata.index:
            raise SnapshotOutOfDate(f"snapshot at {index} is not newer than the current one "
                                    f"at {self._snapshot.metadata.index}")
        term = self.term(index)  # raises if compacted or beyond the log
        self._snapshot = Snapshot(SnapshotMetadata(index, term, conf_state), data)
        return self._snapshot

    def compact(self, index: int) -> None:
        """Discard entries up to and including `index` (which must be applied by the driver and
        covered by a snapshot, or lagging followers can no longer catch up)."""
        offset = self._ents[0].index
        if index <= offset:
            raise Compacted(f"index {index} is already compacted (first index {offset + 1})")
        if index > self.last_index():
            raise Unavailable(f"compact {index} is beyond the last index {self.last_index()}")
        i = index - offset
        self._ents = [Entry(self._ents[i].term, index)] + self._ents[i + 1 :]

    def append(self, entries: list[Entry]) -> None:
        """Append `entries` (consecutive), replacing any conflicting suffix of the log."""
        if not entries:
            return
        first = self.first_index()
        if entries[-1].index < first:
            return  # all of them are already covered by the snapshot
        if entries[0].index < first:
            entries = entries[first - entries[0].index :]
        pos = entries[0].index - self._ents[0].index
        if pos > len(self._ents):
            raise Unavailable(f"append at {entries[0].index} leaves a gap after the last "
                              f"index {self.last_index()}")
        if pos < len(self._ents):
            del self._ents[pos:]
        self._ents.extend(entries)

    def persist_ready(self, ready) -> None:
        """Step 2 of the Ready contract for this storage: snapshot, entries, hard state."""
        if ready.snapshot is not None:
            self.apply_snapshot(ready.snapshot)
        if ready.entries:
            self.append(ready.entries)
        if ready.hard_state is not None:
            self.hard_state = ready.hard_state
