"""`LmdbRaftStorage`: one group of a NodeStore with MemoryStorage's write methods.

The node drives NodeStore in batches (`persist`); the Raft simulator and the conformance tests
drive a storage per node through MemoryStorage's methods (bootstrap, append, set_hard_state,
apply_snapshot, create_snapshot, compact, set_conf_state, persist_ready). This adapter maps
each of those to one NodeStore write, so the simulator can run over LMDB unchanged.
"""

from __future__ import annotations

from raft.storage import SnapshotOutOfDate, bootstrap_snapshot
from raft.types import Compacted, ConfState, Entry, HardState, Snapshot, SnapshotMetadata
from raft.types import Unavailable

from .commands import GroupWrite
from .group import GroupStorage
from .store import NodeStore


class LmdbRaftStorage(GroupStorage):
    __slots__ = ()

    def __init__(self, store: NodeStore, group_id: int = 1) -> None:
        super().__init__(store, group_id)

    @property
    def store(self) -> NodeStore:
        return self._store

    @property
    def hard_state(self) -> HardState:  # MemoryStorage exposes it as an attribute
        return self._state().hard_state

    @property
    def conf_state(self) -> ConfState:
        return self._state().conf_state

    def bootstrap(self, conf_state: ConfState) -> None:
        if self.last_index() != 0 or self.hard_state != HardState():
            raise ValueError("bootstrap needs an empty storage")
        self._store.persist([GroupWrite(self.group_id, snapshot=bootstrap_snapshot(conf_state),
                                        hard_state=HardState(term=1, vote=0, commit=1))])

    def set_hard_state(self, hard_state: HardState) -> None:
        self._store.persist([GroupWrite(self.group_id, hard_state=hard_state)])

    def set_conf_state(self, conf_state: ConfState) -> None:
        self._store.persist([GroupWrite(self.group_id, conf_state=conf_state)])

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        current = self._state().snapshot.metadata.index
        if snapshot.metadata.index <= current:
            raise SnapshotOutOfDate(f"snapshot at {snapshot.metadata.index} is not newer than "
                                    f"the current one at {current}")
        self._store.persist([GroupWrite(self.group_id, snapshot=snapshot)])

    def create_snapshot(self, index: int, conf_state: ConfState, data: bytes) -> Snapshot:
        st = self._state()
        if index <= st.snapshot.metadata.index:
            raise SnapshotOutOfDate(f"snapshot at {index} is not newer than the current one "
                                    f"at {st.snapshot.metadata.index}")
        snap = Snapshot(SnapshotMetadata(index, self.term(index), conf_state), data)
        self._store.set_snapshot(self.group_id, snap)
        return snap

    def compact(self, index: int) -> None:
        st = self._state()
        if index <= st.offset_index:
            raise Compacted(f"index {index} is already compacted (first index "
                            f"{st.first_index})")
        if index > st.last_index:
            raise Unavailable(f"compact {index} is beyond the last index {st.last_index}")
        self._store.compact(self.group_id, index, record_snapshot=False)

    def append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        if entries[0].index > self.last_index() + 1:
            raise Unavailable(f"append at {entries[0].index} leaves a gap after the last "
                              f"index {self.last_index()}")
        self._store.persist([GroupWrite(self.group_id, entries=list(entries))])

    def persist_ready(self, ready) -> None:
        snap = ready.snapshot if ready.snapshot is not None and not ready.snapshot.is_empty() \
            else None
        if snap is not None and snap.metadata.index <= self._state().snapshot.metadata.index:
            raise SnapshotOutOfDate(f"snapshot at {snap.metadata.index} is out of date")
        self._store.persist([GroupWrite(self.group_id, entries=list(ready.entries),
                                        hard_state=ready.hard_state, snapshot=snap)])
