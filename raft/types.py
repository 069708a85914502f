"""Plain data of the Raft core: entries, messages, states, Ready, and its errors.

These types are the contract between `raft/` and everything that drives it (the node, the
storage engine, the simulator). They are slotted dataclasses with no behaviour beyond tiny
helpers; node ids are positive ints and `NONE` (0) means "no node".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

NONE = 0


class EntryType(IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


class Role(IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class MessageType(IntEnum):
    APP = 1  # AppendEntries
    APP_RESP = 2
    VOTE = 3
    VOTE_RESP = 4
    PRE_VOTE = 5
    PRE_VOTE_RESP = 6
    HEARTBEAT = 7
    HEARTBEAT_RESP = 8
    SNAP = 9  # InstallSnapshot (the whole snapshot in one message; the node may stream it)
    SNAP_STATUS = 10  # local only: the node reports a snapshot send finished or failed
    READ_INDEX = 11  # follower -> leader: give me a read index for `context`
    READ_INDEX_RESP = 12
    TIMEOUT_NOW = 13  # leader transfer: start an election now
    UNREACHABLE = 14  # local only: the node reports a peer unreachable


class ConfChangeType(IntEnum):
    ADD_VOTER = 0  # also promotes an existing learner
    REMOVE_NODE = 1
    ADD_LEARNER = 2  # also demotes an existing voter


@dataclass(slots=True, frozen=True)
class Entry:
    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(slots=True, frozen=True)
class HardState:
    """What must be on disk before any message that depends on it is sent."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(slots=True, frozen=True)
class ConfState:
    voters: tuple[int, ...] = ()
    learners: tuple[int, ...] = ()
    # Joint consensus, if used: the old voter set while a joint change is in progress.
    voters_outgoing: tuple[int, ...] = ()


@dataclass(slots=True, frozen=True)
class ConfChange:
    type: ConfChangeType
    node_id: int
    context: bytes = b""


@dataclass(slots=True, frozen=True)
class SnapshotMetadata:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(slots=True, frozen=True)
class Snapshot:
    """`data` is opaque to raft: the application's state at `metadata.index`."""

    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.metadata.index == 0


@dataclass(slots=True)
class Message:
    type: MessageType
    to: int
    frm: int
    term: int = 0
    log_term: int = 0  # APP: term of the entry at `index`; VOTE: last log term
    index: int = 0  # APP: index before `entries`; VOTE: last log index; APP_RESP: match/rejected
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0  # APP_RESP on reject: follower's hint for fast backtracking
    snapshot: Snapshot | None = None
    context: bytes = b""  # READ_INDEX / HEARTBEAT: the read request's id


@dataclass(slots=True, frozen=True)
class SoftState:
    """Volatile state that a driver may want to observe; not persisted."""

    leader: int = NONE
    role: Role = Role.FOLLOWER


@dataclass(slots=True, frozen=True)
class ReadState:
    """A read with `context` may be served once the state machine has applied `index`."""

    index: int
    context: bytes


@dataclass(slots=True)
class Ready:
    """What the driver must do, in this order, then call `RawNode.advance(ready)`:

    1. send `messages` (they do not depend on this Ready's persistence);
    2. persist `snapshot` (if not None), then `entries` (append, truncating any conflicting
       suffix), then `hard_state` (if not None) — durably when `must_sync`;
    3. send `persisted_messages` (votes, append responses: only after step 2 is durable);
    4. apply `committed_entries` in order (they are already durable);
    5. serve `read_states` once applied up to their index.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    persisted_messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    must_sync: bool = False


class RaftError(Exception):
    """Base of the errors raised by the Raft core."""


class StorageError(RaftError):
    pass


class Compacted(StorageError):
    """The requested index is older than the storage's first index (compacted away)."""


class Unavailable(StorageError):
    """The requested index is newer than the storage's last index."""


class SnapshotTemporarilyUnavailable(StorageError):
    """The storage cannot produce a snapshot right now; raft will retry later."""


class ProposalDropped(RaftError):
    """The proposal was not accepted (not the leader, a transfer in progress, or too large)."""


class ConfChangeError(RaftError):
    """A membership change is invalid or another is still pending."""
