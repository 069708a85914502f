"""The state-machine commands carried in Raft entries, the batches the node hands the store,
and the results of applying commands.

Commands are frozen, slotted dataclasses; `storage.codec.encode_command` /
`decode_command` turn them into bytes for a Raft entry (msgpack, with a format version byte).

Timestamps (`ts`, versions) are integers of a hybrid logical clock: nanoseconds since the Unix
epoch, where a logical tick is +1. A write's version is `max(ts, last version of the group + 1)`
so versions grow strictly per group (and so per bucket) whatever the leader's clock says.

`session` is the client session id (int or bytes; None = no deduplication) and `seq` the
client's sequence number in that session (Raft dissertation §6.3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raft.types import ConfState, Entry, HardState, Snapshot

Session = int | bytes | None


@dataclass(slots=True, frozen=True)
class Put:
    key: bytes
    value: bytes
    ts: int = 0
    session: Session = None
    seq: int = 0


@dataclass(slots=True, frozen=True)
class Delete:
    key: bytes
    ts: int = 0
    session: Session = None
    seq: int = 0


@dataclass(slots=True, frozen=True)
class Cas:
    """Compare-and-set: if the key's current value equals `expected` (None = absent), write
    `new` (None = delete)."""

    key: bytes
    expected: bytes | None
    new: bytes | None
    ts: int = 0
    session: Session = None
    seq: int = 0


@dataclass(slots=True, frozen=True)
class Noop:
    """An entry with no command (empty entry, conf change). `index` is informational."""

    index: int = 0


@dataclass(slots=True, frozen=True)
class Batch:
    """Several commands in ONE Raft entry; its result is the list of their results."""

    commands: tuple = ()


Command = Put | Delete | Cas | Noop | Batch


# -- results ---------------------------------------------------------------------------------
# Put -> int (the version written)
# Delete -> (existed: bool, version: int)   (a tombstone is written only if the key existed)
# Cas -> (True, version) on success; (False, version of the current value or None) otherwise
# Noop -> None; Batch -> list of results
# A command in an entry at or below the stored applied index (already applied) -> None.


@dataclass(slots=True, frozen=True)
class Stale:
    """The command's `seq` is older than its session's last one: it was not applied now and
    its original result is no longer known."""

    seq: int
    last_seq: int


@dataclass(slots=True, frozen=True)
class Rejected:
    """The command in the log is invalid (e.g. a key too large): deterministically not
    applied, on every replica."""

    reason: str


# -- batches handed to the store -------------------------------------------------------------


@dataclass(slots=True)
class GroupWrite:
    """What one group's `Ready` asks to persist: `snapshot` (metadata; log before it is
    discarded), then `entries` (appended, any conflicting suffix truncated), then
    `hard_state`. `conf_state`, if given, replaces the stored conf state."""

    group_id: int
    entries: list[Entry] = field(default_factory=list)
    hard_state: HardState | None = None
    snapshot: Snapshot | None = None
    conf_state: ConfState | None = None


@dataclass(slots=True)
class GroupApply:
    """Committed entries of one group to apply to `bucket`'s data.

    `commands` are the commands of consecutive entries ending at `applied_index`
    (one command per entry; `Noop` for an entry without one; `Batch` for an entry holding
    several). Entries at or below the stored applied index are skipped. `conf_state`, if given,
    is stored with the applied index (the conf state as of `applied_index`)."""

    group_id: int
    bucket: int
    applied_index: int
    commands: list = field(default_factory=list)
    conf_state: ConfState | None = None
