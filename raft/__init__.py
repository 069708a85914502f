"""The Raft consensus algorithm as a pure, sans-IO state machine (no I/O, clock, threads).

Entry points: `RawNode(Config(id=...), storage)` (see raft/rawnode.py for the driver loop and
how to bootstrap a group), `MemoryStorage`, the data types of raft/types.py, and the
CONF_CHANGE entry codec `encode_conf_change` / `decode_conf_change`.
"""

from .config import Config
from .confchange import decode_conf_change, encode_conf_change
from .progress import ProgressState
from .rawnode import MalformedMessage, PeerStatus, RawNode, Status
from .storage import (
    MemoryStorage,
    SnapshotOutOfDate,
    Storage,
    bootstrap_snapshot,
    entry_size,
)
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
    "Config", "MalformedMessage", "RawNode", "Status", "PeerStatus", "ProgressState",
    "MemoryStorage", "SnapshotOutOfDate", "bootstrap_snapshot", "entry_size", "encode_conf_change",
    "decode_conf_change",
]
