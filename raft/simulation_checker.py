"""The invariant checker of the cluster simulator (raft/simulation.py), and the tiny KV
state machine the simulated nodes apply.

The `Checker` holds global knowledge no single node has — every leader of every term, every
entry ever persisted by (index, term), the committed log as first applied — and checks the
Raft paper's invariants against it as the simulator reports events (role changes, appends,
applies, snapshots, reads) and at quiet points (every node's storage holds its whole log).
Each check raises `InvariantViolation(invariant, detail)` named after the paper.
"""

from __future__ import annotations

import bisect
import collections
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .types import Entry, EntryType, Role, Snapshot, StorageError

if TYPE_CHECKING:
    from .simulation import SimNode


class InvariantViolation(AssertionError):
    """An invariant named after the Raft paper does not hold."""

    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


# The applied state machine: a small KV map; entries are b"put:<key>:<value>"

KEYS = ("a", "b", "c")


def encode_put(key: str, value: str) -> bytes:
    return f"put:{key}:{value}".encode()


def decode_put(data: bytes) -> tuple[str, str] | None:
    if not data.startswith(b"put:"):
        return None
    _, key, value = data.decode().split(":", 2)
    return key, value


@dataclass(slots=True)
class StateMachine:
    kv: dict[str, str] = field(default_factory=dict)
    applied: int = 0

    def snapshot_data(self) -> bytes:
        return json.dumps({"kv": self.kv, "applied": self.applied}, sort_keys=True).encode()

    @classmethod
    def from_snapshot(cls, snap: Snapshot) -> StateMachine:
        if snap.is_empty() or not snap.data:
            return cls(applied=snap.metadata.index)
        obj = json.loads(snap.data)
        if obj["applied"] != snap.metadata.index:
            raise InvariantViolation(
                "state_machine_safety",
                f"snapshot at {snap.metadata.index} holds state applied to {obj['applied']}",
            )
        return cls(kv=dict(obj["kv"]), applied=obj["applied"])


@dataclass(slots=True)
class PendingRead:
    node_id: int
    key: str
    ctx: bytes
    floor_commit: int  # the highest commit index known anywhere when the read began
    began_at: int



@dataclass(slots=True, frozen=True)
class Committed:
    term: int
    type: EntryType
    data: bytes


class Checker:
    """The invariants; see the module docstring. All state here is global knowledge that no
    single node has, which is what makes the checks possible."""

    def __init__(self) -> None:
        self.leader_of_term: dict[int, int] = {}
        # log matching: (index, term) -> (type, data, term of index-1 or None when unknown)
        self.entry_at: dict[tuple[int, int], tuple[EntryType, bytes, int | None]] = {}
        # what was applied first at each index: the committed log as the cluster knows it
        self.committed: dict[int, Committed] = {}
        self.max_committed = 0
        # commit frontier: (commit index, term in which it was first seen), ascending
        self.commit_seen: list[tuple[int, int]] = []
        self.commit_floor = 0  # highest commit index ever known by any node
        # per key: ascending (index, value) of committed writes
        self.writes: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
        self.write_index: dict[str, int] = {}  # value -> index it was committed at
        self.leader_verified: dict[tuple[int, int], int] = {}  # (node, term) -> checked upto
        self.leader_tail: dict[tuple[int, int], tuple[int, int]] = {}  # -> (last idx, term)
        self.reads_served = 0

    def bootstrap(self, index: int, term: int) -> None:
        """The group starts from a snapshot at `index` (committed by definition)."""
        if index:
            self.committed[index] = Committed(term, EntryType.NORMAL, b"")
            self.max_committed = index
            self.observe_commit(index, term)

    # -- observations -----------------------------------------------------------------------

    def observe_role(self, node_id: int, role: Role, term: int) -> None:
        if role != Role.LEADER:
            return
        other = self.leader_of_term.setdefault(term, node_id)
        if other != node_id:
            raise InvariantViolation(
                "election_safety", f"nodes {other} and {node_id} both leader in term {term}"
            )

    def observe_commit(self, commit: int, term: int) -> None:
        if commit > self.commit_floor:
            self.commit_floor = commit
            self.commit_seen.append((commit, term))

    def commit_term(self, index: int) -> int | None:
        """The earliest term in which `index` was seen committed (an upper bound of the term
        in which it really was)."""
        i = bisect.bisect_left(self.commit_seen, (index, -1))
        return self.commit_seen[i][1] if i < len(self.commit_seen) else None

    def observe_append(self, node_id: int, storage: Any, entries: list[Entry]) -> None:
        """Log matching, checked on every entry as it is persisted (before the append)."""
        if not entries:
            return
        first = entries[0].index
        prev_term = term_or_none(storage, first - 1)
        for e in entries:
            if e.index != first:
                raise InvariantViolation(
                    "log_matching", f"node {node_id}: Ready entries not contiguous at {e.index}"
                )
            if prev_term is not None and e.term < prev_term:
                raise InvariantViolation(
                    "log_matching",
                    f"node {node_id}: entry {e.index} has term {e.term} below the previous "
                    f"entry's term {prev_term}",
                )
            key = (e.index, e.term)
            seen = self.entry_at.get(key)
            if seen is None:
                self.entry_at[key] = (e.type, e.data, prev_term)
            else:
                s_type, s_data, s_prev = seen
                if s_type != e.type or s_data != e.data:
                    raise InvariantViolation(
                        "log_matching",
                        f"node {node_id}: entry {e.index}/{e.term} carries {e.data!r}, another "
                        f"log has {s_data!r}",
                    )
                if prev_term is not None and s_prev is not None and s_prev != prev_term:
                    raise InvariantViolation(
                        "log_matching",
                        f"node {node_id}: entry {e.index}/{e.term} follows term {prev_term}, "
                        f"another log has it after term {s_prev}",
                    )
                if s_prev is None and prev_term is not None:
                    self.entry_at[key] = (s_type, s_data, prev_term)
            prev_term = e.term
            first += 1

    def observe_apply(self, node: SimNode, e: Entry, term_now: int) -> bool:
        """State machine safety: one entry per index, applied in order, once per node.
        Returns True if this is the first time any node applies this index."""
        if e.index != node.sm.applied + 1:
            raise InvariantViolation(
                "state_machine_safety",
                f"node {node.id} applies index {e.index} after {node.sm.applied}",
            )
        c = self.committed.get(e.index)
        if c is None:
            if e.index <= self.max_committed:
                raise InvariantViolation(
                    "state_machine_safety", f"index {e.index} applied out of order cluster-wide"
                )
            self.committed[e.index] = Committed(e.term, e.type, e.data)
            self.max_committed = e.index
            self.observe_commit(e.index, term_now)
            put = decode_put(e.data) if e.type == EntryType.NORMAL else None
            if put is not None:
                self.writes[put[0]].append((e.index, put[1]))
                self.write_index.setdefault(put[1], e.index)
            return True
        if (c.term, c.type, c.data) != (e.term, e.type, e.data):
            raise InvariantViolation(
                "state_machine_safety",
                f"node {node.id} applies {e.data!r} (term {e.term}) at index {e.index}, "
                f"another node applied {c.data!r} (term {c.term})",
            )
        return False

    def observe_snapshot(self, node_id: int, snap: Snapshot) -> None:
        md = snap.metadata
        c = self.committed.get(md.index)
        if c is not None and c.term != md.term:
            raise InvariantViolation(
                "state_machine_safety",
                f"node {node_id} gets a snapshot at {md.index}/{md.term}, committed term "
                f"there is {c.term}",
            )
        if md.index > self.max_committed and md.index > self.commit_floor:
            raise InvariantViolation(
                "state_machine_safety",
                f"node {node_id} gets a snapshot at {md.index} beyond anything committed "
                f"({self.max_committed})",
            )

    def check_snapshot_state(self, node_id: int, sm: StateMachine) -> None:
        """A snapshot's state equals replaying the committed log up to its index."""
        if sm.applied > self.max_committed:
            return  # cannot judge (checked by observe_snapshot)
        want: dict[str, str] = {}
        for key, ws in self.writes.items():
            i = bisect.bisect_right(ws, (sm.applied, "\U0010ffff"))
            if i:
                want[key] = ws[i - 1][1]
        if want != sm.kv:
            raise InvariantViolation(
                "state_machine_safety",
                f"node {node_id}: state at {sm.applied} is {sm.kv}, the committed log gives "
                f"{want}",
            )

    def read_began(self) -> int:
        return self.commit_floor

    def read_served(self, node_id: int, read: PendingRead, index: int, sm: StateMachine) -> None:
        """Linearizable reads (ReadIndex): see the module docstring."""
        self.reads_served += 1
        if index < read.floor_commit:
            raise InvariantViolation(
                "linearizable_reads",
                f"node {node_id}: read {read.ctx!r} got read index {index}, but index "
                f"{read.floor_commit} was already committed when it began (t={read.began_at})",
            )
        ws = self.writes.get(read.key, [])
        i = bisect.bisect_right(ws, (read.floor_commit, "\U0010ffff"))
        must_see = ws[i - 1] if i else None
        value = sm.kv.get(read.key)
        got = self.write_index.get(value, 0) if value is not None else 0
        if must_see is not None and got < must_see[0]:
            raise InvariantViolation(
                "linearizable_reads",
                f"node {node_id}: read of {read.key!r} returned {value!r} (index {got}), but "
                f"{must_see[1]!r} (index {must_see[0]}) was committed before the read began",
            )

    # -- checks at quiet points (every node's storage holds its whole log) -----------------

    def check_leader(self, node_id: int, term: int, storage: Any) -> None:
        key = (node_id, term)
        first = storage.first_index()
        last = storage.last_index()
        # Leader append-only: what the leader had at the last check is still there.
        tail = self.leader_tail.get(key)
        if tail is not None:
            t_idx, t_term = tail
            if last < t_idx:
                raise InvariantViolation(
                    "leader_append_only",
                    f"leader {node_id} (term {term}) log shrank from {t_idx} to {last}",
                )
            now_term = term_or_none(storage, t_idx)
            if now_term is not None and now_term != t_term:
                raise InvariantViolation(
                    "leader_append_only",
                    f"leader {node_id} (term {term}) overwrote entry {t_idx}: term {t_term} "
                    f"-> {now_term}",
                )
        last_term = term_or_none(storage, last)
        if last_term is not None:
            self.leader_tail[key] = (last, last_term)
        # Leader completeness: every entry committed in an earlier term is in its log.
        start = max(self.leader_verified.get(key, 0), first - 1)
        for i in range(start + 1, self.max_committed + 1):
            c = self.committed.get(i)
            if c is None:
                continue
            ct = self.commit_term(i)
            if ct is None or ct >= term:
                continue
            have = term_or_none(storage, i) if i <= last else None
            if have != c.term:
                raise InvariantViolation(
                    "leader_completeness",
                    f"leader {node_id} of term {term} lacks entry {i} (term {c.term}) "
                    f"committed in term {ct}; it has term {have}",
                )
        self.leader_verified[key] = self.max_committed

    def check_durable(self, node: SimNode) -> None:
        """Committed entries never lost: after a crash, the node's durable log agrees with
        the committed log up to the commit index it durably recorded."""
        hs, _ = node.storage.initial_state()
        last = node.storage.last_index()
        first = node.storage.first_index()
        if hs.commit > last:
            raise InvariantViolation(
                "committed_never_lost",
                f"node {node.id} durably records commit {hs.commit} beyond its last index {last}",
            )
        for i in range(max(first, 1), hs.commit + 1):
            c = self.committed.get(i)
            if c is None:
                continue
            t = term_or_none(node.storage, i)
            if t != c.term:
                raise InvariantViolation(
                    "committed_never_lost",
                    f"node {node.id} durably holds term {t} at committed index {i} "
                    f"(committed term {c.term})",
                )


def term_or_none(storage: Any, index: int) -> int | None:
    if index <= 0:
        return 0 if index == 0 else None
    try:
        return storage.term(index)
    except StorageError:
        return None
