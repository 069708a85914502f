"""The Raft consensus algorithm as a pure, sans-IO state machine (no I/O, clock, threads)."""

from .storage import Storage
from .types import (
    NONE,
    Compacted,
    ConfChange,
    ConfChangeError,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ProposalDropped,
    RaftError,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMetadata,
    SnapshotTemporarilyUnavailable,
    SoftState,
    StorageError,
    Unavailable,
)

__all__ = [
    "NONE", "Compacted", "ConfChange", "ConfChangeError", "ConfChangeType", "ConfState",
    "Entry", "EntryType", "HardState", "Message", "MessageType", "ProposalDropped",
    "RaftError", "ReadState", "Ready", "Role", "Snapshot", "SnapshotMetadata",
    "SnapshotTemporarilyUnavailable", "SoftState", "Storage", "StorageError", "Unavailable",
]
