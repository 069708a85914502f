"""The Raft log as raft sees it: durable `Storage` plus an in-memory unstable tail.

Layout (indexes grow to the right):

    storage:  [snapshot][first_index ............ offset-1]   (durable; stale beyond offset-1)
    unstable:                                   [offset ..... last_index]   (+ maybe a snapshot)

- `offset` is the index of the first unstable entry; everything below it is read from storage
  (or is the unstable snapshot's index). Storage may still hold entries at or beyond `offset`
  that a truncation replaced; raft never reads them, and the driver overwrites them when it
  persists the unstable entries.
- `in_progress` (>= offset) marks unstable entries already handed to the driver in a Ready
  (being persisted); `stable_to` drops them from `unstable` once the driver says they are
  durable, but only if the entry there still has the same term (a truncation in the meantime
  means the driver will persist the replacement with the next Ready).
- `committed` >= `applied`; `applying` (>= applied) marks committed entries handed out in a
  Ready but not yet confirmed applied by `advance`.
- `cache` keeps the entries `stable_to` moved out of `unstable` (they are in storage now) while
  they are not yet applied: committed entries are handed out (and sent to followers) from
  memory instead of read back from storage. It is always the exact durable run
  [cache_start, offset) — a truncation or a snapshot drops what it replaces — so serving
  from it equals reading storage.
- `stable_term` is the term of the entry at `offset - 1` (the last durable one) once known
  (-1 before): a leader's next append names it as its predecessor, and once that entry is
  applied and gone from `cache` it would otherwise be read from storage every time.
"""

from __future__ import annotations

from .storage import ENTRY_OVERHEAD, Storage, limit_size
from .types import Compacted, Entry, EntryType, Snapshot, Unavailable

_CONF_CHANGE = EntryType.CONF_CHANGE
CACHE_MAX = 4096  # stable entries kept in memory until applied (see `cache`)


class RaftLog:
    __slots__ = ("storage", "ents", "offset", "in_progress", "snapshot", "snapshot_in_progress",
                 "committed", "applied", "applying", "cache", "stable_term")

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        first = storage.first_index()
        last = storage.last_index()
        self.ents: list[Entry] = []
        self.cache: list[Entry] = []  # stable, not yet applied: indexes [offset - len, offset)
        self.offset = last + 1
        self.stable_term = -1  # learnt on the first read of it
        self.in_progress = last + 1
        self.snapshot: Snapshot | None = None
        self.snapshot_in_progress = False
        self.committed = first - 1
        self.applied = first - 1
        self.applying = first - 1

    def __repr__(self) -> str:
        return (f"RaftLog(first={self.first_index()}, committed={self.committed}, "
                f"applied={self.applied}, offset={self.offset}, unstable={len(self.ents)}, "
                f"last={self.last_index()})")

    # -- reading --

    def first_index(self) -> int:
        if self.snapshot is not None:
            return self.snapshot.metadata.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        return self.offset + len(self.ents) - 1

    def stable_last(self) -> int:
        """The last index known to be durable (valid when no unstable snapshot is pending)."""
        return self.offset - 1

    def term(self, index: int) -> int:
        """Term of the entry at `index`; raises Compacted / Unavailable outside the log."""
        offset = self.offset
        if index >= offset:
            j = index - offset
            if j < len(self.ents):
                return self.ents[j].term
            raise Unavailable(f"index {index} is beyond the last index {self.last_index()}")
        snap = self.snapshot
        if snap is not None:
            if index == snap.metadata.index:
                return snap.metadata.term
            raise Compacted(f"index {index} is before the pending snapshot")
        j = index - offset + len(self.cache)
        if j >= 0:
            return self.cache[j].term
        if index == offset - 1:
            term = self.stable_term
            if term < 0:
                self.stable_term = term = self.storage.term(index)
            return term
        return self.storage.term(index)

    def term_or_zero(self, index: int) -> int:
        try:
            return self.term(index)
        except (Compacted, Unavailable):
            return 0

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        try:
            return self.term(index) == term
        except (Compacted, Unavailable):
            return False

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Whether a log ending at (last_index, last_term) is at least as up to date (§5.4.1)."""
        my_term = self.last_term()
        return last_term > my_term or (last_term == my_term and last_index >= self.last_index())

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi), at most `max_bytes` (at least one); raises Compacted if lo was
        compacted away."""
        if lo >= hi:
            return []
        offset = self.offset
        cache = self.cache
        j = lo - offset + len(cache)
        if j >= 0 and hi <= offset + len(self.ents):
            # all in memory (the hot path: committed entries, appends to followers); cached
            # entries are above the applied index, so never compacted
            if hi <= offset:
                if hi - lo == 1:
                    return [cache[j]]
                return limit_size(cache[j : j + hi - lo], max_bytes)
            if lo >= offset:
                return limit_size(self.ents[lo - offset : hi - offset], max_bytes)
            return limit_size(cache[j:] + self.ents[: hi - offset], max_bytes)
        if lo < self.first_index():
            raise Compacted(f"entries from {lo} are compacted (first {self.first_index()})")
        last = self.last_index()
        if hi > last + 1:
            raise Unavailable(f"entries up to {hi - 1} requested, last index is {last}")
        # here lo is below the cache: the durable part comes from storage
        stored = self.storage.entries(lo, min(hi, offset), max_bytes)
        if hi <= offset or len(stored) < min(hi, offset) - lo:
            return stored
        unstable = self.ents[: hi - offset]
        if max_bytes is None:
            return stored + unstable
        budget = max_bytes - sum(len(e.data) + ENTRY_OVERHEAD for e in stored)
        out = list(stored)
        for e in unstable:
            budget -= len(e.data) + ENTRY_OVERHEAD
            if budget < 0:
                break
            out.append(e)
        return out

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest index <= `index` whose term is <= `term`, with that term (the fast
        backtracking hint of §5.3): every entry after it up to `index` has a larger term, so it
        cannot match a log whose entry at `index` has `term`."""
        while index > 0:
            try:
                t = self.term(index)
            except Unavailable:
                index = self.last_index()
                continue
            except Compacted:
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    def has_conf_change_between(self, lo: int, hi: int) -> bool:
        """Whether a CONF_CHANGE entry lies in [lo, hi)."""
        step = 1024
        while lo < hi:
            try:
                chunk = self.entries(lo, min(hi, lo + step))
            except (Compacted, Unavailable):
                return False
            for e in chunk:
                if e.type == _CONF_CHANGE:
                    return True
            lo += len(chunk) or step
        return False

    # -- writing (in memory) --

    def append(self, entries: list[Entry]) -> None:
        """Append consecutive `entries`, truncating any conflicting suffix first."""
        if not entries:
            return
        after = entries[0].index - 1
        if after < self.committed:
            raise AssertionError(f"truncating at {after} below commit {self.committed}")
        offset = self.offset
        n = len(self.ents)
        if after == offset + n - 1:
            self.ents.extend(entries)
        elif after < offset:
            # Replace the whole unstable tail; the entries in storage after `after` are stale.
            keep = len(self.cache) - (offset - 1 - after)
            if keep > 0:
                del self.cache[keep:]
            else:
                self.cache = []
            self.offset = after + 1
            self.stable_term = -1
            self.in_progress = after + 1
            self.ents = list(entries)
        else:
            del self.ents[after + 1 - offset :]
            self.ents.extend(entries)
            if self.in_progress > after + 1:
                self.in_progress = after + 1

    def maybe_append(self, index: int, log_term: int, committed: int,
                     entries: tuple[Entry, ...] | list[Entry]) -> int | None:
        """A follower's AppendEntries: None if the log does not contain (index, log_term);
        else append the new entries (after the conflict point) and return the last index
        known to match the leader's."""
        try:
            if self.term(index) != log_term:
                return None
        except (Compacted, Unavailable):
            return None
        last_new = index + len(entries)
        if entries:
            last = self.offset + len(self.ents) - 1
            if index == last and index >= self.committed:
                self.ents.extend(entries)  # right after our last entry (the usual case)
            elif entries[0].index > last:
                self.append(list(entries))
            else:
                conflict = 0
                for e in entries:
                    if e.index > last or not self.match_term(e.index, e.term):
                        conflict = e.index
                        break
                if conflict:
                    if conflict <= self.committed:
                        raise AssertionError(
                            f"entry {conflict} conflicts with committed {self.committed}")
                    self.append(list(entries[conflict - entries[0].index :]))
        if committed > self.committed and last_new > self.committed:
            self.commit_to(committed if committed < last_new else last_new)
        return last_new

    def commit_to(self, index: int) -> None:
        if index > self.committed:
            last = self.offset + len(self.ents) - 1
            if index > last:
                raise AssertionError(f"commit {index} is beyond the last index {last}")
            self.committed = index

    def stable_to(self, index: int, term: int) -> None:
        """The driver persisted entries up to (index, term)."""
        offset = self.offset
        # With a snapshot still to persist, storage will be replaced by it: entries persisted
        # before it are gone, so keep them unstable (the next Ready persists them again).
        if index < offset or self.snapshot is not None:
            return
        j = index - offset
        if j >= len(self.ents) or self.ents[j].term != term:
            return
        ents = self.ents
        cache = self.cache
        if j == len(ents) - 1:
            cache.extend(ents)  # all of them (the usual case)
            ents.clear()
        else:
            cache.extend(ents[: j + 1])
            del ents[: j + 1]
        self.offset = index + 1
        self.stable_term = term
        if self.applied >= index + 1 - len(cache) or len(cache) > CACHE_MAX:
            self._trim_cache()
        if self.in_progress <= index:
            self.in_progress = index + 1

    def stable_snapshot_to(self, index: int) -> None:
        if self.snapshot is not None and self.snapshot.metadata.index == index:
            self.snapshot = None
            self.snapshot_in_progress = False

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by `snapshot` (a follower installing the leader's snapshot)."""
        index = snapshot.metadata.index
        self.committed = index
        self.snapshot = snapshot
        self.snapshot_in_progress = False
        self.ents = []
        self.cache = []
        self.offset = index + 1
        self.stable_term = snapshot.metadata.term
        self.in_progress = index + 1

    # -- handing out to the driver --

    def next_unstable_entries(self) -> list[Entry]:
        start = self.in_progress - self.offset
        if start >= len(self.ents):
            return []
        return self.ents[start:]

    def has_next_unstable_entries(self) -> bool:
        return self.in_progress - self.offset < len(self.ents)

    def next_unstable_snapshot(self) -> Snapshot | None:
        if self.snapshot is not None and not self.snapshot_in_progress:
            return self.snapshot
        return None

    def accept_unstable(self) -> None:
        """The driver took the unstable entries and snapshot (a Ready)."""
        self.in_progress = self.offset + len(self.ents)
        if self.snapshot is not None:
            self.snapshot_in_progress = True

    def has_next_committed_entries(self) -> bool:
        if self.snapshot is not None:
            return False  # the snapshot must be applied first
        return self.committed > self.applying

    def next_committed_entries(self, max_bytes: int) -> list[Entry]:
        if self.snapshot is not None:
            return []
        lo = self.applying + 1
        hi = self.committed + 1
        if lo >= hi:
            return []
        return self.entries(lo, hi, max_bytes)

    def applied_to(self, index: int) -> None:
        if index > self.applied:
            self.applied = index
        if self.applying < index:
            self.applying = index
        cache = self.cache
        if cache and (self.applied >= self.offset - len(cache) or len(cache) > CACHE_MAX):
            self._trim_cache()

    def _trim_cache(self) -> None:
        """Forget cached entries that are applied (a slow follower reads them from storage),
        and keep at most CACHE_MAX."""
        cache = self.cache
        if cache:
            drop = self.applied - (self.offset - len(cache)) + 1
            over = len(cache) - CACHE_MAX
            if over > drop:  # (not max(): a builtin call costs more than the comparison)
                drop = over
            if drop > 0:
                del cache[:drop]
