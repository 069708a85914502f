"""The LMDB storage engine of a kvstore node.

One `NodeStore` per node (one LMDB environment) holds, for every Raft group on the node, its
log, hard state, conf state and snapshot metadata; for every bucket, the MVCC data; and per
group the apply state (applied index, last version) and the client-session table.

    store = NodeStore.open(path)              # StoreLocked if another opener has it
    g = store.group(7)                        # raft.storage.Storage for group 7
    store.persist([GroupWrite(7, entries=[...], hard_state=hs)])   # one txn, one fsync
    results = store.apply([GroupApply(7, bucket=7, applied_index=12,
                                      commands=[decode_command(e.data) ...])])
    store.get(bucket, key, as_of=None)  -> (value, version) | None
    store.scan(bucket, prefix, start_after=..., limit=..., as_of=...) -> (items, more)
    store.gc(bucket, before_ts, max_keys, cursor) -> GcProgress
    store.snapshot_chunks(group, bucket) / store.install_snapshot(group, bucket, meta, chunks)
    store.compact(group, index); store.remove_group(group, bucket)
    store.put_meta(name, value); store.get_meta(name)
    store.gc_horizon(bucket); store.expire_sessions(group)

Reads `as_of` a time older than the bucket's GC horizon raise `HistoryCompacted`.
`storage.raft_adapter.LmdbRaftStorage` gives one group MemoryStorage's write methods (for the
Raft simulator and the conformance tests). Module map: store.py (NodeStore, transactions),
group.py (raft Storage view), mvcc.py (apply, scan, GC), snapshot.py (streaming), keys.py
(data key layout), codec.py (every encoding), commands.py (commands, batches, results),
wal.py + wal_store.py (`NodeStore.open(path, log="wal")`, the kvstore node's default for new
data directories: Raft logs and hard states in an append-only WAL, applies deferred into one
LMDB transaction that is committed, synced, every 100 ms; see wal_store.py for what is safe).

Threading: writes (persist, apply, gc, compact, install_snapshot, remove_group, put_meta) may be
called from any thread, one at a time (the node calls them from its loop's thread); each is one
complete LMDB write transaction on the calling thread. Reads (GroupStorage methods, get, scan,
applied index...) may run concurrently from other threads: each uses its own short read
transaction. With deferred commits (WAL mode's default) writes are deferred on the thread that
opened the store, and reads or writes from other threads raise StorageError while deferred
writes are pending (see NodeStore.open).
"""

from .commands import (
    Batch,
    Cas,
    Command,
    Delete,
    GroupApply,
    GroupWrite,
    Noop,
    Put,
    Rejected,
    Stale,
)
from .errors import (
    CorruptData,
    DiskFull,
    HistoryCompacted,
    InvalidInput,
    KeyTooLarge,
    SnapshotAborted,
    StorageError,
    StoreClosed,
    StoreLocked,
    ValueTooLarge,
)
from .codec import decode_command, encode_command, result_to_wire
from .store import GcProgress, NodeStore

__all__ = [
    "Batch", "Cas", "Command", "CorruptData", "Delete", "DiskFull", "GcProgress", "GroupApply", "HistoryCompacted",
    "GroupWrite", "InvalidInput", "KeyTooLarge", "NodeStore", "Noop", "Put", "Rejected",
    "SnapshotAborted", "Stale", "StorageError", "StoreClosed", "StoreLocked", "ValueTooLarge", "decode_command", "encode_command", "result_to_wire",
]
