"""NodeStore: one LMDB environment per node holding every group's Raft log and state, the MVCC
data of its buckets, apply state and client sessions. (API stub; implementation follows.)"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from raft.types import Snapshot, SnapshotMetadata

from .commands import GroupApply, GroupWrite

DEFAULT_MAP_SIZE = 1 << 30


@dataclass(slots=True, frozen=True)
class GcProgress:
    """`cursor` is None when the pass is done; otherwise pass it to the next `gc` call."""

    cursor: bytes | None
    deleted: int


class NodeStore:
    @classmethod
    def open(cls, path, *, map_size: int = DEFAULT_MAP_SIZE, sync: bool = True) -> "NodeStore":
        """Open (creating) the store in directory `path`; StoreLocked if already open."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "NodeStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- raft ---------------------------------------------------------------------------------
    def group(self, group_id: int):
        """The `raft.storage.Storage` view of one group (cached; cheap to call)."""
        raise NotImplementedError

    def persist(self, batch: list[GroupWrite]) -> None:
        """One write transaction, one fsync for all groups; durable on return."""
        raise NotImplementedError

    def compact(self, group_id: int, index: int) -> None:
        """Discard the log up to and including `index`, keeping its term."""
        raise NotImplementedError

    def remove_group(self, group_id: int, bucket: int | None) -> None:
        raise NotImplementedError

    # -- state machine ------------------------------------------------------------------------
    def apply(self, batch: list[GroupApply]) -> list[list]:
        """One write transaction; returns, per GroupApply, the result of each command."""
        raise NotImplementedError

    def applied_index(self, group_id: int) -> int:
        raise NotImplementedError

    def last_version(self, group_id: int) -> int:
        raise NotImplementedError

    # -- MVCC reads ---------------------------------------------------------------------------
    def get(self, bucket: int, key: bytes, as_of: int | None = None) -> tuple[bytes, int] | None:
        raise NotImplementedError

    def scan(self, bucket: int, prefix: bytes, *, start_after: bytes | None = None,
             limit: int = 1000, max_bytes: int = 1 << 20, as_of: int | None = None
             ) -> tuple[list[tuple[bytes, bytes, int]], bool]:
        raise NotImplementedError

    def gc(self, bucket: int, before_ts: int, max_keys: int = 1000,
           cursor: bytes | None = None) -> GcProgress:
        raise NotImplementedError

    # -- snapshots ----------------------------------------------------------------------------
    def snapshot_chunks(self, group_id: int, bucket: int, chunk_bytes: int = 1 << 20
                        ) -> Iterator[bytes]:
        raise NotImplementedError

    def install_snapshot(self, group_id: int, bucket: int, metadata: SnapshotMetadata | None,
                         chunks: Iterable[bytes]) -> SnapshotMetadata:
        raise NotImplementedError

    # -- node metadata ------------------------------------------------------------------------
    def put_meta(self, name: str, value) -> None:
        raise NotImplementedError

    def get_meta(self, name: str, default=None):
        raise NotImplementedError
