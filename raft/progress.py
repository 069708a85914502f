"""What a leader knows about each peer's log, and the flow control of appends to it.

A peer is in one of three states (etcd-io/raft's `tracker`):
- PROBE: the leader does not know where the peer's log matches; it sends at most one append
  per heartbeat interval and waits for the answer (`paused`), backtracking on rejections.
- REPLICATE: the leader knows the match; it streams appends optimistically (advancing `next`
  on send), at most `max_inflight_msgs` unacknowledged at a time.
- SNAPSHOT: the entries the peer needs were compacted; a snapshot is on its way and nothing
  else is sent until the node reports the outcome (or the peer acknowledges the snapshot).
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum


class ProgressState(IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


PROBE = ProgressState.PROBE  # module constants: enum attribute access is slow in CPython
REPLICATE = ProgressState.REPLICATE
SNAPSHOT = ProgressState.SNAPSHOT


class Progress:
    __slots__ = ("match", "next", "state", "pending_snapshot", "recent_active", "paused",
                 "inflights", "max_inflight", "is_learner", "appended")

    def __init__(self, next_index: int, max_inflight: int, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = PROBE
        self.pending_snapshot = 0
        # Heard from since the last check-quorum round (a new peer counts as active).
        self.recent_active = True
        self.paused = False  # PROBE: an append is outstanding
        self.inflights: deque[int] = deque()  # REPLICATE: last index of each unacked append
        self.max_inflight = max_inflight
        self.is_learner = is_learner
        self.appended = False  # an append went out since the last heartbeat round

    def __repr__(self) -> str:
        return (f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
                f"inflight={len(self.inflights)}, learner={self.is_learner})")

    def _reset(self, state: ProgressState) -> None:
        self.paused = False
        self.pending_snapshot = 0
        self.state = state
        self.inflights.clear()

    def become_probe(self) -> None:
        # After a snapshot, resume from after it: the peer has it (or will report failure).
        if self.state == SNAPSHOT:
            pending = self.pending_snapshot
            self._reset(PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset(PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset(REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset(SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """The peer acknowledged its log matches through `index`; False if that is stale."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.paused = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decr_to(self, rejected: int, match_hint: int) -> bool:
        """The peer rejected an append at `rejected`; its log may match up to `match_hint`.

        Returns False for a stale rejection (one that does not concern the current `next`).
        """
        if self.state == REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.paused = False
        return True

    def is_paused(self) -> bool:
        state = self.state
        if state == REPLICATE:
            return len(self.inflights) >= self.max_inflight
        if state == PROBE:
            return self.paused
        return True

    def sent_entries(self, count: int, last_index: int) -> None:
        """Bookkeeping after an append carrying `count` entries up to `last_index` went out."""
        self.appended = True
        if self.state == REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflights.append(last_index)
        elif self.state == PROBE:
            self.paused = True

    def free_inflights_to(self, index: int) -> None:
        inflights = self.inflights
        while inflights and inflights[0] <= index:
            inflights.popleft()
