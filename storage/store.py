"""NodeStore: one LMDB environment per node holding every group's Raft log and state, the MVCC
data of its buckets, apply state and client sessions.

Theory of operation
- Named databases: `log` (group 8B + index 8B -> entry), `raft` (group + b"h"/b"c"/b"s" ->
  hard state / conf state / snapshot record), `apply` (group -> bucket, applied index, last
  version), `sessions` (group + session -> last seq, result, last ts), `data` (MVCC, see
  keys.py), `staging` (snapshot chunks being installed), `meta` (node metadata), `gc`
  (bucket -> GC horizon: set when a GC pass starts; reads as of older times raise
  HistoryCompacted instead of answering from a history GC may have thinned).
- Every write method is ONE write transaction (`_write`): persist for all groups of a turn,
  apply for all groups of a turn, or both (`write_turn`: the persist first, then the apply,
  one commit, so the applied index never runs ahead of or apart from the log and data it
  covers). The function building the transaction is pure with respect
  to memory: it returns the cache updates, which are published only after a successful commit,
  so a failed or retried transaction leaves no trace.
- MapFullError: the transaction is aborted, the map doubled (after waiting for in-flight read
  transactions of this process to end, as LMDB requires), and the whole transaction retried.
  (Deferred: only the write's child transaction is aborted; the deferred ones are committed
  before the map grows, which needs no open transaction. A deferred transaction opens only
  with a quarter of the map, up to 256 MiB, free.)
  A full disk (ENOSPC, EFBIG, EDQUOT) raises DiskFull; LMDB's copy-on-write commit means the
  file still holds the previous committed state.
- Threads: writes are serialised by `_write_lock` and each runs entirely on its calling
  thread (py-lmdb's rule). Reads may run on any thread concurrently: each opens its own
  short read transaction; hot group state is cached in immutable objects replaced whole
  after a commit. Exception, WAL mode's deferred commits (wal_store.py): writes of the home
  thread (the opener) that the WAL can redo go into one long-lived transaction committed
  now and then; reads on the home thread read through it, other threads' reads and writes
  raise StorageError while it is open (snapshot streams read the committed state).
- Exclusive opening: `LOCK` in the directory is flock()ed; a second opener (another process or
  another NodeStore in this process) gets StoreLocked.
- Snapshots (`snapshot_chunks`): the header is read in one read transaction (applied index,
  last version V, conf state, sessions); then the bucket's data is streamed in pieces of
  `chunk_bytes`, each from a new short read transaction that starts after the previous
  piece's last key, keeping only versions <= V. This is consistent because versions are
  immutable and every later write has a version > V; the only deleter, GC, is clamped while
  the stream runs so it never removes the version visible at V. No read transaction is held
  across a yield, so a slow receiver cannot bloat the file. `install_snapshot` writes chunks
  into `staging` (invisible to reads), then one transaction replaces the bucket's data,
  sessions, apply state and Raft snapshot metadata and truncates the log. Staging left by a
  crash is dropped on open.
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

import lmdb

from client.wire import MAX_KEY_BYTES
from raft.storage import entry_size
from raft.types import ConfState, Entry, HardState, Snapshot, SnapshotMetadata

from . import codec, keys, mvcc
from .commands import GroupApply, GroupWrite
from .errors import (
    DiskFull,
    HistoryCompacted,
    InvalidInput,
    StorageError,
    StoreClosed,
    StoreLocked,
)
from .group import (CS_KEY, EMPTY_STATE, HS_KEY, OFFSET_KEY, SNAP_KEY, GroupState, GroupStorage,
                    entries_to_append, group_prefix, load_group_meta, log_key)
from . import wal_store

DEFAULT_MAP_SIZE = 1 << 30
_U64 = struct.Struct(">Q")
_LOG_KEY = struct.Struct(">QQ")
_BUCKET = struct.Struct(">I")
_NEWEST = b"\x00" * 8  # the inverted version of the newest possible version
_VERSION_BASE = keys.MAX_VERSION
_HS, _CS, _SNAP, _OFFSET = HS_KEY, CS_KEY, SNAP_KEY, OFFSET_KEY
_DISK_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_MAX_RESIZES = 16
_NEARLY_FULL_BYTES = 64 << 20
# Deferred commits (WAL mode, see wal_store.py): the open LMDB transaction is committed once
# it is this old, or holds this much work (applied commands, GC'd versions...), or the WAL
# took this many bytes since it opened (a proxy for the bytes applied).
DEFER_MAX_S = float(os.environ.get("KVSTORE_STORE_DEFER_S", "0.1"))
DEFER_MAX_OPS = 20_000
DEFER_MAX_WAL_BYTES = 16 << 20
_DEFER_ROOM = 256 << 20  # free map space wanted when a deferred transaction opens


@dataclass(slots=True, frozen=True)
class GcProgress:
    """`cursor` is None when the pass over the bucket is done; otherwise pass it to the next
    `gc` call. `deleted` counts versions removed by this call."""

    cursor: bytes | None
    deleted: int

    @property
    def done(self) -> bool:
        return self.cursor is None


class ApplyState(NamedTuple):  # a tuple: cheap to build once per group per apply
    bucket: int
    applied_index: int
    last_version: int


_NO_APPLY = ApplyState(0, 0, 0)
_new_tuple = tuple.__new__  # ApplyState / GroupState without the NamedTuple's Python __new__


def _disk_error(exc: lmdb.Error, path: str | None = None) -> StorageError | None:
    """DiskFull if `exc` comes from a full disk. LMDB reports a short write as EIO, which is
    what a full disk (or the file size limit) usually produces, so EIO is DiskFull when the
    disk is nearly full or the data file is at the process's file size limit."""
    text = str(exc)
    for code in _DISK_FULL:
        if os.strerror(code) in text:
            return DiskFull(f"disk full: {text}")
    if path is not None and os.strerror(errno.EIO) in text:
        try:
            vfs = os.statvfs(path)
            free = vfs.f_bavail * vfs.f_frsize
            size = os.path.getsize(os.path.join(path, "data.mdb"))
            limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
        except OSError:
            return None
        if free < _NEARLY_FULL_BYTES:
            return DiskFull(f"disk full ({free} bytes free): {text}")
        if limit != resource.RLIM_INFINITY and size + _NEARLY_FULL_BYTES > limit:
            return DiskFull(f"file size limit {limit} reached: {text}")
    return None


def _stored_log_mode(path: str) -> str | None:
    """The log mode an existing store was created with (None: a new store)."""
    if not os.path.exists(os.path.join(path, "data.mdb")):
        return None
    if os.path.isdir(os.path.join(path, "wal")):
        return "wal"
    return "lmdb"


class NodeStore:
    def __init__(self, path: str, env: lmdb.Environment, lock_fd: int, sync: bool,
                 session_ttl: int) -> None:
        self.path = path
        self._wal = None  # log="wal": the Wal (Raft logs and hard states), see wal_store.py
        self._wal_after: list = []  # WAL work of the running transaction, done after commit
        self._wal_broken = False
        # Deferred commits (WAL mode, the default there): writes made on the home thread go
        # into one long-lived write transaction (`_dtxn`), each in a nested child transaction
        # of it, committed (synced) when due; see wal_store.py.
        self._defer = False
        self._home = threading.get_ident()  # the thread that opened the store
        self._dtxn = None  # the open deferred transaction (only on the home thread)
        self._dseq = 0  # odd while a deferred transaction is open (read checks, seqlock-like)
        self._dchild = None  # the child transaction of the write being built in it
        self._dtxn_t0 = 0.0
        self._dtxn_ops = 0
        self._dtxn_wal0 = 0
        self._broken: str | None = None  # why the store refuses work (caches ahead of disk)
        self._mem_lock = threading.Lock()  # guards the WAL's in-memory logs
        self._last_checkpoint = 0.0
        self.checkpoint_durable: dict[int, int] = {}  # WAL mode: the last checkpoint's bounds
        self._env = env
        self._lock_fd = lock_fd
        self._sync = sync
        self.session_ttl = session_ttl
        self._db_log = env.open_db(b"log")
        self._db_raft = env.open_db(b"raft")
        self._db_apply = env.open_db(b"apply")
        self._db_sessions = env.open_db(b"sessions")
        self._db_data = env.open_db(b"data")
        self._db_staging = env.open_db(b"staging")
        self._db_meta = env.open_db(b"meta")
        self._db_gc = env.open_db(b"gc")  # bucket -> GC horizon (reads as_of below: refused)
        self._write_lock = threading.RLock()
        # where write time goes: building transactions vs committing them (the fsyncs)
        # (WAL mode with deferral: `commits` are LMDB commits, `writes` the write calls, most
        # of them deferred; `flushes` counts deferred commits by reason)
        self.write_stats = {"commits": 0, "build_s": 0.0, "commit_s": 0.0, "writes": 0,
                            "deferred": 0, "flushes": {}, "unsynced_commits": 0}
        self._cache_lock = threading.Lock()
        self._groups: dict[int, GroupState] = {}
        self._applies: dict[int, ApplyState] = {}
        self._views: dict[int, GroupStorage] = {}
        self._pins: dict[int, list[int]] = {}  # bucket -> versions of running snapshot streams
        self._epochs: dict[int, int] = {}  # bucket -> bumped when its data is replaced/removed
        self._horizons: dict[int, int] = {}  # bucket -> GC horizon, all loaded at open
        # Read gate: set_mapsize needs no live transaction in this process.
        self._gate = threading.Lock()  # guards _readers and _resizing (held only briefly)
        self._readers = 0
        self._fresh: set[int] = set()  # ids of the live read transactions _begin_read made
        self._resizing = False
        self._resized = threading.Event()  # set whenever no resize is in progress
        self._resized.set()

    # -- lifecycle ----------------------------------------------------------------------------

    @classmethod
    def open(cls, path, *, map_size: int = DEFAULT_MAP_SIZE, sync: bool = True,
             session_ttl: int = mvcc.SESSION_TTL_NS, log: str | None = None,
             wal_segment_bytes: int | None = None, defer_commits: bool | None = None
             ) -> "NodeStore":
        """Open (creating) the store in directory `path`.

        `log="wal"` keeps Raft logs and hard states in an append-only WAL (storage/wal.py);
        `log="lmdb"` keeps everything in LMDB. A store remembers its mode: `log=None` opens it
        in that mode (a new store: $KVSTORE_STORE_LOG, default "lmdb"); another explicit mode
        raises InvalidInput. Every LMDB commit is synced in both modes (unless sync=False).

        `defer_commits` (WAL mode only; None: $KVSTORE_STORE_DEFER, default on): writes
        made on the thread that opens the store (its home thread) are deferred into one
        long-lived LMDB transaction committed every DEFER_MAX_S or when a durable write, a
        checkpoint or `close` needs it (see wal_store.py). Reads on the home thread see the
        deferred writes; reads from other threads while deferred writes are pending raise
        StorageError (they would be stale); `snapshot_chunks` and `install_snapshot` commit
        them first (see there). Writes from other threads commit at once, and raise
        StorageError while the home thread has deferred writes (call `flush()` on the home
        thread first). So a store written on one thread and read on another (kvstore's
        --storage-thread) works as long as the home thread does not write deferrable things
        (applies, compactions, GC); `defer_commits=False` turns deferral off.

        `map_size` is the initial LMDB map size; it doubles automatically when full.
        `sync=False` gives up durability (tests and benchmarks only). Raises StoreLocked if
        another opener holds the directory."""
        path = os.fspath(path)
        os.makedirs(path, exist_ok=True)
        fd = os.open(os.path.join(path, "LOCK"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreLocked(f"store {path!r} is already open (by pid {holder})") from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            if log not in (None, "lmdb", "wal"):
                raise InvalidInput(f"log must be 'lmdb' or 'wal', not {log!r}")
            if log is None:
                log = _stored_log_mode(path) or os.environ.get("KVSTORE_STORE_LOG", "lmdb")
                if log not in ("lmdb", "wal"):
                    raise InvalidInput(f"KVSTORE_STORE_LOG must be lmdb or wal, not {log!r}")
            if defer_commits is None:
                defer_commits = log == "wal" and os.environ.get("KVSTORE_STORE_DEFER",
                                                                "1") != "0"
            elif defer_commits and log != "wal":
                raise InvalidInput("defer_commits needs log='wal'")
            # synced commits in both modes: an unsynced LMDB commit can be corrupted by a
            # power loss (the meta page may reach the disk before the pages it points to)
            env = lmdb.open(path, map_size=map_size, max_dbs=16, sync=sync, metasync=sync,
                            readahead=False, max_readers=256, lock=True)
        except lmdb.Error as exc:
            os.close(fd)
            raise _disk_error(exc) or StorageError(f"cannot open {path!r}: {exc}") from None
        except BaseException:
            os.close(fd)
            raise
        store = cls(path, env, fd, sync, session_ttl)
        store._defer = bool(defer_commits)
        try:
            store._check_log_mode(log)
            store._drop_staging()
            store._load_horizons()
            if log == "wal":
                wal_store.open_wal(store, wal_segment_bytes)
        except BaseException:
            store.close()
            raise
        return store

    def _check_log_mode(self, log: str) -> None:
        """A store remembers its log mode: opening it in the other one would lose the log."""
        raw = self.get_meta("__log_mode__")
        if raw is None and self.groups():
            raw = "lmdb"  # a store from before the WAL existed
        if raw is None:
            self.put_meta("__log_mode__", log)
        elif raw != log:
            raise InvalidInput(f"store {self.path!r} was created with log={raw!r}, not {log!r}")

    @property
    def log_mode(self) -> str:
        return "lmdb" if self._wal is None else "wal"

    def close(self) -> None:
        """Close the store, committing deferred writes (on the home thread: another thread
        cannot commit them, and gets StorageError)."""
        with self._write_lock:
            if self._env is None:
                return
            self._check_thread("close")
            try:
                if self._wal is not None:
                    wal_store.close_wal(self)  # a checkpoint: commits deferred writes
                if self._dtxn is not None and self._broken is None:
                    self._commit_deferred("close")
            finally:
                self._exclude_readers()
                try:
                    if self._dtxn is not None:  # only after a failure: the WAL has its work
                        self._dtxn.abort()
                        self._dtxn = None
                        self._dseq += 1
                    self._env.close()
                    self._env = None
                finally:
                    self._admit_readers()
                os.close(self._lock_fd)

    def flush(self) -> None:
        """Commit (synced) the deferred writes, if any. On the home thread only."""
        with self._write_lock:
            if self._dtxn is not None:
                self._check_thread("flush")
                self._commit_deferred("flush")

    @property
    def defers_commits(self) -> bool:
        return self._defer

    @property
    def closed(self) -> bool:
        return self._env is None

    def __enter__(self) -> "NodeStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- transactions -------------------------------------------------------------------------

    def _begin_read(self):
        """A transaction to read the store's current state: on the home thread while
        deferred writes are pending, the deferred transaction itself (or the child being
        built); otherwise a new read transaction. Raises StorageError on another thread
        while deferred writes are pending: its read would miss them (a stale read)."""
        d = self._dtxn
        if d is not None and threading.get_ident() == self._home:
            return self._dchild or d
        if self._broken is not None:
            raise StorageError(self._broken)
        seq = self._dseq
        txn = self._begin_committed_read()
        # Valid only if no deferred transaction was open at any moment from before the read
        # began until now: then everything acknowledged before it began was committed. (A
        # deferred write that starts later is after this read.)
        if seq & 1 or self._dseq != seq:
            self._end_read(txn)
            raise StorageError(
                f"a read on thread {threading.get_ident()} while the home thread "
                f"{self._home} has deferred writes pending would miss them: read on the home "
                f"thread, or open the store with defer_commits=False")
        return txn

    def _begin_committed_read(self):
        """A new read transaction: the last COMMITTED state (without deferred writes)."""
        with self._gate:
            admitted = not self._resizing
            if admitted:
                self._readers += 1
        if not admitted:
            self._wait_admitted()
        env = self._env
        try:
            if env is None:
                raise StoreClosed("the store is closed")
            txn = env.begin(buffers=False)
        except BaseException:
            self._end_read(None)
            raise
        self._fresh.add(id(txn))
        return txn

    def _wait_admitted(self) -> None:
        for _ in range(600):
            self._resized.wait(0.1)
            with self._gate:
                if not self._resizing:
                    self._readers += 1
                    return
        raise StorageError("the map resize did not finish")

    def _end_read(self, txn) -> None:
        if txn is not None:
            try:
                self._fresh.remove(id(txn))
            except KeyError:
                return  # borrowed: the deferred transaction (or its child), even if since done
            txn.abort()
        with self._gate:
            self._readers -= 1

    def _exclude_readers(self) -> None:
        """Stop new read transactions and wait for running ones (they are short)."""
        with self._gate:
            self._resizing = True
            self._resized.clear()
        for _ in range(60_000):  # a minute: a reader stuck that long is a bug
            with self._gate:
                if self._readers == 0:
                    return
            time.sleep(0.001)
        self._admit_readers()
        raise StorageError("read transactions did not finish; cannot resize the map")

    def _admit_readers(self) -> None:
        with self._gate:
            self._resizing = False
            self._resized.set()

    def _grow(self) -> None:
        self._exclude_readers()
        try:
            self._env.set_mapsize(self._env.info()["map_size"] * 2)
        finally:
            self._admit_readers()

    def _check_thread(self, what: str) -> None:
        """Refuse `what` on a thread other than the home thread while deferred writes are
        pending there: only the home thread can commit its transaction (LMDB's rule)."""
        if self._dtxn is not None and threading.get_ident() != self._home:
            raise StorageError(
                f"{what} on thread {threading.get_ident()} while the home thread {self._home} "
                f"has deferred writes pending: call flush() on the home thread first, or open "
                f"the store with defer_commits=False")

    def _check_writable(self) -> None:
        if self._env is None:
            raise StoreClosed("the store is closed")
        if self._broken is not None:
            raise StorageError(self._broken)
        if self._wal_broken:
            raise StorageError("a WAL write failed earlier; reopen the store")

    def _write(self, fn, durable: bool = True):
        """Run fn(txn) -> (result, publish | None) in one write transaction; commit; publish.

        Deferred (WAL mode, home thread): a write that is not `durable` (applies,
        compactions, GC: the WAL can redo or does not need those) runs in a child of the
        deferred transaction, committed when due (`_commit_due`). A `durable` one first
        commits the deferred writes, then runs in its own transaction, committed at once
        (so if it fails, it leaves no trace and the store stays usable). WAL work the
        transaction queued (`_wal_after`, e.g. a snapshot's log reset) runs after its
        commit."""
        with self._write_lock:
            self._check_writable()
            if self._dtxn is not None or self._defer:
                if threading.get_ident() == self._home:
                    if not durable and self._defer:
                        return self._write_deferred(fn)
                    self._commit_deferred("durable")
                else:
                    self._check_thread("a write")
            for _ in range(_MAX_RESIZES):
                t0 = time.perf_counter()
                self._wal_after = []
                txn = self._env.begin(write=True)
                try:
                    result, publish = fn(txn)
                    t1 = time.perf_counter()
                    txn.commit()
                    t2 = time.perf_counter()
                except lmdb.MapFullError:
                    txn.abort()
                    self._grow()
                    continue
                except lmdb.Error as exc:
                    txn.abort()
                    raise _disk_error(exc, self.path) or StorageError(f"LMDB: {exc}") from None
                except BaseException:
                    txn.abort()
                    raise
                if self._wal_after:
                    wal_store.run_after(self, self._wal_after)
                    self._wal_after = []
                if publish is not None:
                    with self._cache_lock:
                        publish()
                ws = self.write_stats
                ws["commits"] += 1
                ws["writes"] += 1
                ws["build_s"] += t1 - t0
                ws["commit_s"] += t2 - t1
                if not self._env_synced():
                    ws["unsynced_commits"] += 1
                return result
            raise DiskFull("the LMDB map could not be grown enough")

    def _env_synced(self) -> bool:
        """True if LMDB commits sync (its flags say so), or syncing is off for the store."""
        if not self._sync:
            return True
        f = self._env.flags()
        return f["sync"] and f["metasync"]

    def _write_deferred(self, fn):
        for _ in range(_MAX_RESIZES):
            parent = self._dtxn
            if parent is None:
                parent = self._open_deferred()
            t0 = time.perf_counter()
            self._wal_after = []
            child = self._dchild = self._env.begin(write=True, parent=parent)
            try:
                result, publish = fn(child)
                child.commit()
            except lmdb.MapFullError:
                # only this write is lost (the child); the deferred ones commit, then grow
                child.abort()
                self._dchild = None
                self._commit_deferred("map full")
                self._grow()
                continue
            except lmdb.Error as exc:
                child.abort()
                self._dchild = None
                raise _disk_error(exc, self.path) or StorageError(f"LMDB: {exc}") from None
            except BaseException:
                child.abort()
                self._dchild = None
                raise
            self._dchild = None
            self._dtxn_ops += 1
            if publish is not None:
                with self._cache_lock:
                    publish()
            ws = self.write_stats
            ws["writes"] += 1
            ws["build_s"] += time.perf_counter() - t0
            if self._wal_after:  # (only durable writes queue WAL work: not expected here)
                self._commit_deferred("durable")
                wal_store.run_after(self, self._wal_after)
                self._wal_after = []
            else:
                ws["deferred"] += 1
                reason = self._commit_due()
                if reason is not None:
                    self._commit_deferred(reason)
            return result
        raise DiskFull("the LMDB map could not be grown enough")

    def _commit_due(self) -> str | None:
        if time.monotonic() - self._dtxn_t0 >= DEFER_MAX_S:
            return "age"
        if self._dtxn_ops >= DEFER_MAX_OPS:
            return "size"
        if self._wal is not None and \
                self._wal.stats["bytes"] - self._dtxn_wal0 >= DEFER_MAX_WAL_BYTES:
            return "size"
        return None

    def _open_deferred(self):
        """Open the deferred transaction, growing the map first if it is getting full: a
        growth needs no transaction open, and a failed commit would lose deferred writes."""
        info = self._env.info()
        used = (info["last_pgno"] + 1) * self._env.stat()["psize"]
        size = info["map_size"]
        if size - used < min(size // 4, _DEFER_ROOM):
            self._grow()
        txn = self._env.begin(write=True)
        self._dseq += 1  # odd: before any deferred write
        self._dtxn = txn
        self._dtxn_t0 = time.monotonic()
        self._dtxn_ops = 0
        self._dtxn_wal0 = self._wal.stats["bytes"] if self._wal is not None else 0
        return self._dtxn

    def _commit_deferred(self, reason: str) -> None:
        """Commit the deferred transaction (synced). If that fails, the caches (published
        when each write was built) are ahead of LMDB: the store refuses all further work
        until reopened (the WAL re-applies what was lost)."""
        txn = self._dtxn
        if txn is None:
            return
        t0 = time.perf_counter()
        try:
            txn.commit()
        except lmdb.Error as exc:
            try:
                txn.abort()
            except lmdb.Error:
                pass
            self._dtxn = None
            self._dseq += 1
            self._broken = (f"an LMDB commit of deferred writes failed ({exc}); reopen the "
                            f"store (the node re-applies them from the WAL)")
            err = _disk_error(exc, self.path)
            if err is not None:
                raise type(err)(f"{err}; {self._broken}") from None
            raise StorageError(self._broken) from None
        self._dtxn = None  # only now: other threads' reads wait for the commit (see _dseq)
        self._dseq += 1
        ws = self.write_stats
        ws["commits"] += 1
        ws["commit_s"] += time.perf_counter() - t0
        ws["flushes"][reason] = ws["flushes"].get(reason, 0) + 1
        if not self._env_synced():
            ws["unsynced_commits"] += 1

    def _drop_staging(self) -> None:
        def fn(txn):
            txn.drop(self._db_staging, delete=False)
            return None, None

        self._write(fn)

    def _load_horizons(self) -> None:
        txn = self._begin_read()
        try:
            for k, v in txn.cursor(db=self._db_gc):
                self._horizons[_BUCKET.unpack(k)[0]] = codec.unpack(v)
        finally:
            self._end_read(txn)

    def gc_horizon(self, bucket: int) -> int:
        """Reads `as_of` an older time are refused (HistoryCompacted): GC may have removed
        versions they need."""
        return self._horizons.get(bucket, 0)

    def _check_horizon(self, bucket: int, as_of: int) -> None:
        h = self._horizons.get(bucket, 0)
        if as_of < h:
            raise HistoryCompacted(f"as_of {as_of} is older than bucket {bucket}'s retained "
                                   f"history (GC horizon {h})")

    def _set_horizon(self, txn, bucket: int, horizon: int) -> None:
        txn.put(_BUCKET.pack(bucket), codec.pack(horizon), db=self._db_gc)

    # -- group state cache --------------------------------------------------------------------

    def _load_group(self, txn, group_id: int) -> GroupState:
        if self._wal is not None:
            return wal_store.load_group(self, txn, group_id)
        gp = group_prefix(group_id)
        offset, offset_term, snap, cs = load_group_meta(txn, self._db_raft, group_id)
        raw = txn.get(gp + _HS, db=self._db_raft)
        hs = codec.decode_hard_state(raw) if raw is not None else HardState()
        last, last_term = offset, offset_term
        cur = txn.cursor(db=self._db_log)
        if cur.set_range(group_prefix(group_id + 1)) if group_id + 1 < 1 << 64 else False:
            found = cur.prev()
        else:
            found = cur.last()
        if found and cur.key()[:8] == gp:
            last = _U64.unpack_from(cur.key(), 8)[0]
            last_term = codec.entry_term(cur.value())
        return GroupState(offset, offset_term, last, last_term, hs, cs, snap, last)

    def _group_state(self, group_id: int) -> GroupState:
        st = self._groups.get(group_id)
        if st is not None:
            return st
        with self._cache_lock:  # a concurrent commit publishes after us, never before
            st = self._groups.get(group_id)
            if st is None:
                txn = self._begin_read()
                try:
                    st = self._load_group(txn, group_id)
                finally:
                    self._end_read(txn)
                self._groups[group_id] = st
            return st

    def _group_in(self, txn, group_id: int, pending: dict) -> GroupState:
        st = pending.get(group_id) or self._groups.get(group_id)
        return st if st is not None else self._load_group(txn, group_id)

    def _load_apply(self, txn, group_id: int) -> ApplyState:
        raw = txn.get(group_prefix(group_id), db=self._db_apply)
        return ApplyState(*codec.decode_apply_state(raw)) if raw is not None else _NO_APPLY

    def _apply_state(self, group_id: int) -> ApplyState:
        st = self._applies.get(group_id)
        if st is not None:
            return st
        with self._cache_lock:
            st = self._applies.get(group_id)
            if st is None:
                txn = self._begin_read()
                try:
                    st = self._load_apply(txn, group_id)
                finally:
                    self._end_read(txn)
                self._applies[group_id] = st
            return st

    def _log_term(self, group_id: int, index: int) -> int | None:
        """The term of the entry at `index` in the stored log, None if it is not there."""
        if self._wal is not None:
            return wal_store.log_term(self, group_id, index)
        raw = self._read_log(group_id, index)
        return None if raw is None else codec.entry_term(raw)

    def _read_log(self, group_id: int, index: int):
        txn = self._begin_read()
        try:
            return txn.get(log_key(group_id, index), db=self._db_log)
        finally:
            self._end_read(txn)

    def _read_entries(self, group_id: int, lo: int, hi: int, max_bytes: int | None):
        if self._wal is not None:
            return wal_store.read_entries(self, group_id, lo, hi, max_bytes)
        out: list[Entry] = []
        size = 0
        gp = group_prefix(group_id)
        txn = self._begin_read()
        try:
            cur = txn.cursor(db=self._db_log)
            ok = cur.set_key(log_key(group_id, lo))
            expect = lo
            while ok and expect < hi:
                k = cur.key()
                if k[:8] != gp or _U64.unpack_from(k, 8)[0] != expect:
                    break
                e = codec.decode_entry(expect, cur.value())
                size += entry_size(e)
                if out and max_bytes is not None and size > max_bytes:
                    break
                out.append(e)
                expect += 1
                ok = cur.next()
        finally:
            self._end_read(txn)
        return out

    # -- raft ---------------------------------------------------------------------------------

    def group(self, group_id: int) -> GroupStorage:
        """The `raft.storage.Storage` view of one group (cheap; the same object each time)."""
        view = self._views.get(group_id)
        if view is None:
            view = self._views.setdefault(group_id, GroupStorage(self, group_id))
        return view

    def groups(self) -> list[int]:
        """Ids of the groups with any Raft state or apply state in the store."""
        found = set()
        txn = self._begin_read()
        try:
            for db in (self._db_raft, self._db_apply, self._db_log):
                cur = txn.cursor(db=db)
                ok = cur.first()
                while ok:
                    gid = _U64.unpack_from(cur.key())[0]
                    found.add(gid)
                    ok = gid + 1 < 1 << 64 and cur.set_range(group_prefix(gid + 1))
        finally:
            self._end_read(txn)
        if self._wal is not None:
            found.update(self._wal.logs)
            found.update(self._wal.hard)
        return sorted(found)

    def _delete_log_range(self, txn, group_id: int, lo: int, hi: int) -> None:
        """Delete log entries lo..hi inclusive."""
        if lo > hi:
            return
        cur = txn.cursor(db=self._db_log)
        end = log_key(group_id, hi)
        ok = cur.set_range(log_key(group_id, lo))
        while ok and cur.key() <= end:
            ok = cur.delete() and bool(cur.key())

    def _install_snapshot_meta(self, txn, group_id: int, st: GroupState, snap: Snapshot
                               ) -> GroupState:
        """Raft's rule: keep the log after the snapshot if it holds the snapshot's last entry
        with the same term; otherwise discard the whole log."""
        m = snap.metadata
        gp = group_prefix(group_id)
        if self._wal is not None:
            return wal_store.install_snapshot_meta(self, txn, group_id, st, snap)
        keep = False
        if st.first_index <= m.index <= st.last_index:
            raw = txn.get(log_key(group_id, m.index), db=self._db_log)
            keep = raw is not None and codec.entry_term(raw) == m.term
        if keep:
            self._delete_log_range(txn, group_id, st.first_index, m.index)
            last, last_term = st.last_index, st.last_term
        else:
            self._delete_log_range(txn, group_id, st.first_index, st.last_index)
            last, last_term = m.index, m.term
        hs = st.hard_state
        if hs.commit < m.index:
            hs = HardState(hs.term, hs.vote, m.index)
            txn.put(gp + _HS, codec.encode_hard_state(hs), db=self._db_raft)
        txn.put(gp + _SNAP, codec.encode_snapshot(snap), db=self._db_raft)
        txn.put(gp + _CS, codec.encode_conf_state(m.conf_state), db=self._db_raft)
        txn.put(gp + _OFFSET, codec.pack([m.index, m.term]), db=self._db_raft)
        return GroupState(m.index, m.term, last, last_term, hs, m.conf_state, snap, last)

    def _persist_one(self, txn, w: GroupWrite, st: GroupState) -> GroupState:
        gid = w.group_id
        gp = group_prefix(gid)
        if w.snapshot is not None and w.snapshot.metadata.index > st.snapshot.metadata.index:
            st = self._install_snapshot_meta(txn, gid, st, w.snapshot)
        last, last_term, hs, cs = st.last_index, st.last_term, st.hard_state, st.conf_state
        tail = st.tail_start
        entries = entries_to_append(gid, w.entries, st)
        if entries:
            lo = entries[0].index
            if lo <= last:
                self._delete_log_range(txn, gid, lo, last)
            put = txn.put
            db = self._db_log
            pack_key = _LOG_KEY.pack
            encode = codec.encode_entry
            for e in entries:
                put(pack_key(gid, e.index), encode(e), db=db)
            t = entries[-1].term
            j = len(entries) - 1
            while j > 0 and entries[j - 1].term == t:
                j -= 1
            if j == 0 and last_term == t and tail <= lo - 1 <= last:
                pass  # the run of term t continues from before `lo`: tail start unchanged
            else:
                tail = entries[j].index
            last, last_term = entries[-1].index, t
        if w.hard_state is not None and w.hard_state != hs:
            hs = w.hard_state
            txn.put(gp + _HS, codec.encode_hard_state(hs), db=self._db_raft)
        if w.conf_state is not None and w.conf_state != cs:
            cs = w.conf_state
            txn.put(gp + _CS, codec.encode_conf_state(cs), db=self._db_raft)
        return GroupState(st.offset_index, st.offset_term, last, last_term, hs, cs, st.snapshot,
                          tail)

    def persist(self, batch: Iterable[GroupWrite]) -> None:
        """Persist what the groups' Readys ask for, all in ONE transaction with ONE fsync.

        Per group, in order: the snapshot (log before it discarded), the entries (a conflicting
        suffix truncated), the hard state, the conf state. Durable on return (if sync)."""
        batch = list(batch)
        if self._wal is not None:
            with self._write_lock:
                self._check_thread("a persist")
                self._check_writable()
                wal_store.persist(self, batch)
            return

        def fn(txn):
            pending: dict[int, GroupState] = {}
            for w in batch:
                pending[w.group_id] = self._persist_one(
                    txn, w, self._group_in(txn, w.group_id, pending))
            return None, lambda: self._groups.update(pending)

        self._write(fn)

    def compact(self, group_id: int, index: int, *, record_snapshot: bool = True) -> None:
        """Discard the log up to and including `index`, remembering its term. If `index` is
        past the recorded snapshot, the snapshot record becomes (index, its term, the current
        conf state, no data) unless `record_snapshot` is False. Compact only up to the applied
        index. A no-op if `index` is already compacted."""

        def fn(txn):
            st = self._group_in(txn, group_id, {})
            if index <= st.offset_index:
                return None, None
            if index > st.last_index:
                raise InvalidInput(f"compact({index}): last index is {st.last_index}")
            if self._wal is not None:
                term = st.last_term if index == st.last_index else self._log_term(group_id, index)
            else:
                term = (st.last_term if index == st.last_index else
                        codec.entry_term(txn.get(log_key(group_id, index), db=self._db_log)))
            gp = group_prefix(group_id)
            self._delete_log_range(txn, group_id, st.first_index, index)
            txn.put(gp + _OFFSET, codec.pack([index, term]), db=self._db_raft)
            new = st.replace(offset_index=index, offset_term=term)
            if record_snapshot and index > st.snapshot.metadata.index:
                snap = Snapshot(SnapshotMetadata(index, term, st.conf_state))
                txn.put(gp + _SNAP, codec.encode_snapshot(snap), db=self._db_raft)
                new = new.replace(snapshot=snap)

            def publish():
                self._groups[group_id] = new
                if self._wal is not None:
                    wal_store.drop_through(self, group_id, index)

            return None, publish

        self._write(fn, durable=False)

    def set_snapshot(self, group_id: int, snapshot: Snapshot) -> None:
        """Record `snapshot` (metadata and small opaque data) as what `Storage.snapshot()`
        returns, without touching the log (MemoryStorage.create_snapshot's counterpart).
        The snapshot's index must be within the log and newer than the recorded one."""

        def fn(txn):
            st = self._group_in(txn, group_id, {})
            m = snapshot.metadata
            if m.index <= st.snapshot.metadata.index:
                raise InvalidInput(f"snapshot at {m.index} is not newer than the recorded one "
                                   f"at {st.snapshot.metadata.index}")
            if not st.offset_index <= m.index <= st.last_index:
                raise InvalidInput(f"snapshot at {m.index} is outside the log "
                                   f"{st.offset_index}..{st.last_index}")
            txn.put(group_prefix(group_id) + _SNAP, codec.encode_snapshot(snapshot),
                    db=self._db_raft)
            new = st.replace(snapshot=snapshot)
            return None, lambda: self._groups.__setitem__(group_id, new)

        self._write(fn)

    def _delete_prefix(self, txn, db, prefix: bytes, limit: int | None = None) -> int:
        cur = txn.cursor(db=db)
        ok = cur.set_range(prefix)
        n = 0
        while ok and cur.key().startswith(prefix):
            if limit is not None and n >= limit:
                break
            ok = cur.delete() and bool(cur.key())
            n += 1
        return n

    def remove_group(self, group_id: int, bucket: int | None) -> None:
        """Remove everything of a replica: its log, Raft state, apply state, sessions, staged
        snapshot and (if `bucket` is not None) the bucket's data. One transaction.
        (In WAL mode the WAL forgets the group first, durably.)"""
        gp = group_prefix(group_id)
        if self._wal is not None:
            with self._write_lock:
                self._check_thread("remove_group")
                self._check_writable()
                wal_store.forget_group(self, group_id)

        def fn(txn):
            for db in (self._db_log, self._db_raft, self._db_sessions, self._db_staging):
                self._delete_prefix(txn, db, gp)
            txn.delete(gp, db=self._db_apply)
            if bucket is not None:
                self._delete_prefix(txn, self._db_data, keys.bucket_prefix(bucket))
                txn.delete(_BUCKET.pack(bucket), db=self._db_gc)
                # before the commit: a snapshot stream reading committed pieces stops at its
                # next piece (a spurious bump if this fails only aborts a stream)
                self._epochs[bucket] = self._epochs.get(bucket, 0) + 1

            def publish():
                self._groups[group_id] = EMPTY_STATE
                self._applies[group_id] = _NO_APPLY
                if bucket is not None:
                    self._horizons.pop(bucket, None)

            return None, publish

        self._write(fn)

    # -- state machine ------------------------------------------------------------------------

    def apply(self, batch: Iterable[GroupApply]) -> list[list]:
        """Apply committed commands of many groups in ONE write transaction.

        Returns, per GroupApply, the result of each command (None for an entry at or below
        the stored applied index: it was applied before). See commands.py for results."""
        batch = list(batch)

        return self._write(lambda txn: self._apply_in(txn, batch, {}), durable=False)

    def write_turn(self, writes: Iterable[GroupWrite], applies: Iterable[GroupApply],
                   before_commit=None) -> list[list]:
        """`persist(writes)` then `apply(applies)` in ONE write transaction (one commit, one
        fsync): all or nothing, the applied indexes commit together with the data and the
        log. Returns what `apply` returns. An apply may cover entries persisted by the same
        call (the writes come first inside the transaction).

        `before_commit(results)`, if given, is called with the apply results once the
        transaction is built, just before its commit (again if the transaction is retried
        after a map resize). It must not call the store. Results of committed Raft entries
        are a function of the log alone, so a caller may act on them then (e.g. answer a
        client): if the commit fails, re-applying the same entries gives the same results.

        WAL mode: the persist is a WAL append (one fdatasync) that stays even if the apply
        then fails; the apply is all or nothing, deferred (see `open`'s defer_commits) or
        one synced LMDB commit."""
        writes = list(writes)
        applies = list(applies)
        if self._wal is not None:  # the WAL append (one fdatasync), then a deferred apply
            with self._write_lock:
                self._check_thread("a write_turn")
                self._check_writable()
                wal_store.persist(self, writes)
                if not applies:  # nothing for LMDB (a deferred commit may be due, though)
                    if self._dtxn is not None and threading.get_ident() == self._home:
                        reason = self._commit_due()
                        if reason is not None:
                            self._commit_deferred(reason)
                    return []

                def fn_wal(txn):
                    out, publish = self._apply_in(txn, applies, {})
                    if before_commit is not None and out:
                        before_commit(out)
                    return out, publish

                if self._defer and threading.get_ident() == self._home:
                    return self._write_deferred(fn_wal)  # what _write would do, directly
                return self._write(fn_wal, durable=False)

        def fn(txn):
            pending: dict[int, GroupState] = {}
            for w in writes:
                pending[w.group_id] = self._persist_one(
                    txn, w, self._group_in(txn, w.group_id, pending))
            out, publish_apply = self._apply_in(txn, applies, pending)
            if before_commit is not None and out:
                before_commit(out)

            def publish():
                self._groups.update(pending)
                publish_apply()

            return out, publish

        return self._write(fn)

    def _apply_in(self, txn, batch: list[GroupApply], groups: dict[int, GroupState]):
        """The apply part of a write transaction. `groups` holds the group states this
        transaction changed already (a persist before it); returns (results, publish)."""
        pending: dict[int, ApplyState] = {}
        confs: dict[int, ConfState] = {}
        out = []
        applies = self._applies
        cached = self._groups
        db_apply = self._db_apply
        applier = mvcc.Applier(txn, self._db_data, self._db_sessions, ttl=self.session_ttl)
        run = applier.run
        ops = 0
        for ga in batch:
            gid = ga.group_id
            st = pending.get(gid) or applies.get(gid) or self._load_apply(txn, gid)
            gs = groups.get(gid) or cached.get(gid) or self._group_in(txn, gid, groups)
            floor = gs.snapshot.metadata.index
            applied = st.applied_index
            if applied < floor:  # a Raft snapshot (e.g. bootstrap) covers these
                applied = floor
            gp = _U64.pack(gid)  # group_prefix
            applier.start(gp, ga.bucket, st.last_version)
            cmds = ga.commands
            if ga.applied_index - len(cmds) >= applied:  # all new (the usual case)
                results = [run(cmd) for cmd in cmds]
            else:
                base = ga.applied_index - len(cmds) + 1
                results = [run(cmd) if base + i > applied else None
                           for i, cmd in enumerate(cmds)]
            out.append(results)
            ops += len(results)
            if ga.applied_index > applied:
                st = _new_tuple(ApplyState, (ga.bucket, ga.applied_index, applier.last_version))
                txn.put(gp, codec.encode_apply_state(*st), db=db_apply)
                pending[gid] = st
                if ga.conf_state is not None:
                    txn.put(gp + _CS, codec.encode_conf_state(ga.conf_state),
                            db=self._db_raft)
                    confs[gid] = ga.conf_state
        self._dtxn_ops += ops
        cgroups = {gid: self._group_in(txn, gid, groups) for gid in confs}

        def publish():
            self._applies.update(pending)
            for gid, cs in confs.items():
                self._groups[gid] = cgroups[gid].replace(conf_state=cs)

        return out, publish

    def applied_index(self, group_id: int) -> int:
        """The index of the last applied entry (at least the Raft snapshot's index: the state
        machine's state at a snapshot came with it, e.g. the empty state of a bootstrap)."""
        return max(self._apply_state(group_id).applied_index,
                   self._group_state(group_id).snapshot.metadata.index)

    def last_version(self, group_id: int) -> int:
        return self._apply_state(group_id).last_version

    def expire_sessions(self, group_id: int, max_rows: int = 1000) -> int:
        """Physically remove up to `max_rows` expired session rows of a group (they already
        count as absent); returns how many were removed."""
        gp = group_prefix(group_id)
        horizon = self.last_version(group_id) - self.session_ttl

        def fn(txn):
            cur = txn.cursor(db=self._db_sessions)
            ok = cur.set_range(gp)
            seen = removed = 0
            while ok and seen < max_rows and cur.key().startswith(gp):
                seen += 1
                if codec.decode_session(cur.value())[2] < horizon:
                    ok = cur.delete() and bool(cur.key())
                    removed += 1
                else:
                    ok = cur.next()
            self._dtxn_ops += seen
            return removed, None

        return self._write(fn, durable=False)  # the WAL does not need it: redone later

    # -- MVCC reads ---------------------------------------------------------------------------

    def get(self, bucket: int, key: bytes, as_of: int | None = None) -> tuple[bytes, int] | None:
        """(value, version) of the newest version of `key` at or before `as_of` (None: the
        latest), or None if there is none or it is a tombstone."""
        if type(key) is not bytes or len(key) > MAX_KEY_BYTES:
            codec.check_key(key)  # raises the precise error
        stem = keys.key_stem(bucket, key)
        if as_of is None:
            target = stem + _NEWEST
        else:
            as_of = _check_ts(as_of, "as_of")
            if as_of < 0:
                return None  # nothing existed before time 0, GC or not
            self._check_horizon(bucket, as_of)
            target = stem + keys.inv(as_of)
        txn = self._begin_read()
        try:
            cur = txn.cursor(self._db_data)
            if not cur.set_range(target):
                return None
            k = cur.key()
            if len(k) != len(target) or not k.startswith(stem):
                return None
            raw = cur.value()
        finally:
            self._end_read(txn)
        tag = raw[0]
        if tag == keys.VALUE:  # the common case, inline
            return raw[1:], _VERSION_BASE - _U64.unpack_from(k, len(stem))[0]
        if keys.is_tombstone(raw):
            return None
        return keys.decode_value(raw), keys.version_of(k)

    def scan(self, bucket: int, prefix: bytes = b"", *, start_after: bytes | None = None,
             limit: int = 1000, max_bytes: int = 1 << 20, as_of: int | None = None
             ) -> tuple[list[tuple[bytes, bytes, int]], bool]:
        """Visible (key, value, version) of keys starting with `prefix` (and after
        `start_after`), in key order, at most `limit` items and about `max_bytes` (at least one
        item). `more` is True when a limit stopped the scan: continue with
        start_after=last key."""
        codec.check_key(prefix)
        if start_after is not None:
            codec.check_key(start_after)
        if not isinstance(limit, int) or limit < 1:
            raise InvalidInput(f"limit must be an int >= 1, not {limit!r}")
        if as_of is not None:
            as_of = _check_ts(as_of, "as_of")
            if as_of < 0:
                return [], False
            self._check_horizon(bucket, as_of)
        txn = self._begin_read()
        try:
            return mvcc.scan(txn, self._db_data, bucket, prefix, start_after, limit,
                             max_bytes, as_of)
        finally:
            self._end_read(txn)

    def gc(self, bucket: int, before_ts: int, max_keys: int = 1000,
           cursor: bytes | None = None) -> GcProgress:
        """Remove versions no read at or after `before_ts` can see (incremental: at most about
        `max_keys` keys visited plus versions deleted per call, one short write transaction).
        Clamped below any snapshot stream of the bucket that is running."""
        if max_keys < 1:
            raise InvalidInput("max_keys must be >= 1")
        before_ts = _check_ts(before_ts, "before_ts")
        if before_ts <= 0:
            return GcProgress(None, 0)  # no version is older than the beginning

        def fn(txn):
            pins = self._pins.get(bucket)  # read under the write lock: see snapshot.stream
            horizon = min(before_ts, min(pins)) if pins else before_ts
            publish = None
            if horizon > self._horizons.get(bucket, 0):  # from now on, older reads are refused
                self._set_horizon(txn, bucket, horizon)
                publish = lambda: self._horizons.__setitem__(bucket, horizon)  # noqa: E731
            nxt, deleted = mvcc.gc(txn, self._db_data, bucket, horizon, max_keys, cursor)
            self._dtxn_ops += max_keys + deleted
            return GcProgress(nxt, deleted), publish

        # deferrable: lost with a crash, the horizon and the deletions go together
        return self._write(fn, durable=False)

    # -- snapshots ----------------------------------------------------------------------------

    def snapshot_chunks(self, group_id: int, bucket: int, chunk_bytes: int = 1 << 20
                        ) -> Iterator[bytes]:
        """Stream a consistent snapshot of the group's state machine (apply state, sessions,
        the bucket's data) as bounded chunks, for `install_snapshot`. The first chunk's
        metadata (`snapshot_header`) is the Raft snapshot metadata to send with it.

        The header is read by this call, the rest as the chunks are pulled (on any thread),
        all from COMMITTED states: pending deferred writes are committed first, so the
        snapshot is as of the call. On another thread than the home thread that is only
        possible from a trio worker thread whose loop is the home thread (it asks the loop to
        commit); otherwise pending deferred writes make it raise StorageError."""
        from . import snapshot

        return snapshot.stream(self, group_id, bucket, chunk_bytes)

    def install_snapshot(self, group_id: int, bucket: int, metadata: SnapshotMetadata | None,
                         chunks: Iterable[bytes]) -> SnapshotMetadata:
        """Install a streamed snapshot atomically (see module docstring); returns the
        installed metadata. `metadata`, if given, must match the stream's.

        May run on another thread than the home thread (it is long): deferred writes of the
        home thread must be committed first (`flush()` there). Called from a trio worker
        thread (trio.to_thread) whose trio loop runs on the home thread, it asks that loop
        to flush itself; otherwise pending deferred writes make it raise StorageError."""
        from . import snapshot

        self._flush_via_trio()
        return snapshot.install(self, group_id, bucket, metadata, chunks)

    def _flush_via_trio(self) -> None:
        """On a trio worker thread while the home thread has deferred writes: run flush()
        on the trio loop's thread (the home thread, if the loop opened the store). Never
        under the write lock: the home thread takes it to flush."""
        if self._dtxn is None or threading.get_ident() == self._home:
            return
        try:
            import trio
        except ImportError:  # pragma: no cover - trio is a dependency
            return
        try:
            trio.from_thread.run_sync(self.flush)
        except RuntimeError:
            pass  # not a trio worker thread: the write refuses with a clear error

    # -- node metadata ------------------------------------------------------------------------

    def put_meta(self, name: str, value) -> None:
        """Durably store a small msgpack-able value under `name`."""
        try:
            raw = codec.pack(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInput(f"meta {name!r} is not msgpack-able: {exc}") from None

        def fn(txn):
            txn.put(name.encode(), raw, db=self._db_meta)
            return None, None

        self._write(fn)

    def get_meta(self, name: str, default=None):
        txn = self._begin_read()
        try:
            raw = txn.get(name.encode(), db=self._db_meta)
        finally:
            self._end_read(txn)
        return default if raw is None else codec.unpack(raw)

    # -- statistics ---------------------------------------------------------------------------

    def statistics(self) -> dict:
        info = self._env.info()
        stat = self._env.stat()
        return {"map_size": info["map_size"], "last_pgno": info["last_pgno"],
                "page_size": stat["psize"], "readers": info["num_readers"]}


def _check_ts(ts, what: str) -> int:
    """A timestamp argument as an int no larger than the largest version."""
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise InvalidInput(f"{what} must be an int timestamp, not {ts!r}")
    return min(ts, keys.MAX_VERSION)

