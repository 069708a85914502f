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

from typing import Protocol

from .types import ConfState, Entry, HardState, Snapshot


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]: ...

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]: ...

    def term(self, index: int) -> int: ...

    def first_index(self) -> int: ...

    def last_index(self) -> int: ...

    def snapshot(self) -> Snapshot: ...
