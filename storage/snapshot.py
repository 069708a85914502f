"""Streaming a bucket's snapshot out of a NodeStore and installing it into another.

Chunk format (each chunk `codec.pack`ed, so it starts with the format version byte):
    ["h", bucket, metadata, applied_index, last_version]     first
    ["s", [[session key, session row], ...]]                 the group's session table
    ["d", [[data key without bucket, stored value], ...]]    versions <= last_version
    ["e", number of data records, number of sessions, GC horizon]   last
The receiver takes the sender's GC horizon (as of the end of the stream): history older than
it may be incomplete in the copy, so reads as of older times are refused there too.
See store.py's module docstring for why streaming in short read transactions is consistent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from raft.types import Snapshot, SnapshotMetadata

from . import codec, keys
from .errors import InvalidInput, SnapshotAborted
from .group import group_prefix, log_key

_SCAN_PER_PIECE = 20_000  # records examined per read transaction at most


def _header(store, group_id: int, bucket: int):
    gp = group_prefix(group_id)
    txn = store._begin_committed_read()  # the committed state, like the data pieces
    try:
        ast = store._load_apply(txn, group_id)
        st = store._load_group(txn, group_id)
        applied = max(ast.applied_index, st.snapshot.metadata.index)
        if applied == st.snapshot.metadata.index:
            term = st.snapshot.metadata.term
        elif applied == st.offset_index:
            term = st.offset_term
        elif applied == 0:
            term = 0
        else:
            if store._wal is not None:  # WAL mode: the log is in memory
                term = store._log_term(group_id, applied)
            else:
                raw = txn.get(log_key(group_id, applied), db=store._db_log)
                term = None if raw is None else codec.entry_term(raw)
            if term is None:
                raise SnapshotAborted(f"group {group_id}: no term for applied index {applied}")
        meta = SnapshotMetadata(applied, term, st.conf_state)
        sessions = []
        cur = txn.cursor(db=store._db_sessions)
        ok = cur.set_range(gp)
        while ok and cur.key().startswith(gp):
            sessions.append([cur.key()[8:], cur.value()])
            ok = cur.next()
        return meta, ast.last_version, sessions
    finally:
        store._end_read(txn)


def stream(store, group_id: int, bucket: int, chunk_bytes: int) -> Iterator[bytes]:
    """The chunks of a snapshot (see the module docstring); the header is read now."""
    chunk_bytes = max(1, chunk_bytes)
    store._flush_via_trio()
    with store._write_lock:  # no GC between pinning and reading the header
        if store._dtxn is not None:
            # Pending deferred writes must be committed first: a deferred GC among them may
            # remove versions visible at the committed state's version, which the pieces
            # (read from later committed states) would then miss. Only the home thread can.
            store._check_thread("snapshot_chunks")
            store._commit_deferred("snapshot")  # the snapshot is as of now
        # the header, its version pin and the data all come from committed states: the pin
        # is the committed last version (GC keeps what is visible at it), every later
        # committed state holds the same versions <= it
        meta, version, sessions = _header(store, group_id, bucket)
        store._pins.setdefault(bucket, []).append(version)
        epoch = store._epochs.get(bucket, 0)
    gen = _chunks(store, bucket, chunk_bytes, meta, version, sessions, epoch)
    first = next(gen)  # enters the try whose finally drops the pin (also when gen is dropped)
    return _chain(first, gen)


def _chain(first: bytes, gen: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from gen


def _chunks(store, bucket: int, chunk_bytes: int, meta, version: int, sessions: list,
            epoch: int) -> Iterator[bytes]:
    try:
        yield codec.pack(["h", bucket, codec.metadata_list(meta), meta.index, version])
        piece: list = []
        size = 0
        for s in sessions:
            piece.append(s)
            size += len(s[0]) + len(s[1])
            if size >= chunk_bytes:
                yield codec.pack(["s", piece])
                piece, size = [], 0
        if piece:
            yield codec.pack(["s", piece])
        bp = keys.bucket_prefix(bucket)
        pos: bytes | None = bp
        count = 0
        while pos is not None:
            if store._epochs.get(bucket, 0) != epoch:
                raise SnapshotAborted(f"bucket {bucket} was replaced during the snapshot")
            records, size, seek, pos = [], 0, pos, None
            txn = store._begin_committed_read()  # one short read transaction per piece
            try:
                cur = txn.cursor(db=store._db_data)
                ok = cur.set_range(seek)
                examined = 0
                while ok:
                    k = cur.key()
                    if not k.startswith(bp):
                        break
                    if size >= chunk_bytes or examined >= _SCAN_PER_PIECE:
                        pos = k
                        break
                    examined += 1
                    if keys.version_of(k) <= version:
                        v = cur.value()
                        records.append([k[4:], v])
                        size += len(k) + len(v)
                    ok = cur.next()
            finally:
                store._end_read(txn)
            if records:
                count += len(records)
                yield codec.pack(["d", records])
        yield codec.pack(["e", count, len(sessions), store.gc_horizon(bucket)])
    finally:
        with store._write_lock:
            store._pins[bucket].remove(version)


def install(store, group_id: int, bucket: int, metadata: SnapshotMetadata | None,
            chunks: Iterable[bytes]) -> SnapshotMetadata:
    # one hold of the write lock: no deferred write of the home thread starts in between
    # (which would make this thread's next write fail)
    with store._write_lock:
        return _install(store, group_id, bucket, metadata, chunks)


def _install(store, group_id: int, bucket: int, metadata: SnapshotMetadata | None,
             chunks: Iterable[bytes]) -> SnapshotMetadata:
    gp = group_prefix(group_id)
    store._write(lambda txn: (store._delete_prefix(txn, store._db_staging, gp), None))
    try:
        meta, version, sessions, horizon = _stage(store, gp, bucket, chunks)
        if metadata is not None and (metadata.index, metadata.term) != (meta.index, meta.term):
            raise InvalidInput(f"snapshot metadata {metadata} does not match the stream's {meta}")
        return _swap(store, group_id, bucket, meta, version, sessions, horizon)
    except BaseException:
        if not store.closed:
            store._write(lambda txn: (store._delete_prefix(txn, store._db_staging, gp), None))
        raise


def _stage(store, gp: bytes, bucket: int, chunks: Iterable[bytes]):
    header = None
    sessions: list = []
    count = 0
    ended = False
    for chunk in chunks:
        obj = codec.unpack(chunk)
        if not isinstance(obj, list) or not obj or ended:
            raise InvalidInput("malformed snapshot stream")
        kind = obj[0]
        if header is None and kind != "h":
            raise InvalidInput("snapshot stream does not start with a header")
        if kind == "h":
            if header is not None:
                raise InvalidInput("snapshot stream has two headers")
            header = obj
        elif kind == "s":
            sessions.extend(obj[1])
        elif kind == "d":
            records = obj[1]

            def put(txn, records=records):
                for k, v in records:
                    txn.put(gp + k, v, db=store._db_staging)
                return None, None

            store._write(put)
            count += len(records)
        elif kind == "e":
            horizon = obj[3] if len(obj) > 3 else 0
            if obj[1] != count or obj[2] != len(sessions):
                raise InvalidInput(f"snapshot stream incomplete: {count} records, "
                                   f"{len(sessions)} sessions; expected {obj[1]}, {obj[2]}")
            ended = True
        else:
            raise InvalidInput(f"unknown snapshot chunk {kind!r}")
    if not ended:
        raise InvalidInput("snapshot stream ended before its end marker")
    _, src_bucket, meta, applied, version = header[:5]
    meta = codec.metadata_from(meta)
    if meta.index != applied:
        raise InvalidInput("snapshot header is inconsistent")
    return meta, version, sessions, horizon


def _swap(store, group_id: int, bucket: int, meta: SnapshotMetadata, version: int,
          sessions: list, horizon: int) -> SnapshotMetadata:
    gp = group_prefix(group_id)
    bp = keys.bucket_prefix(bucket)

    def fn(txn):
        current = store._load_apply(txn, group_id)
        if current.applied_index >= meta.index and current.applied_index > 0:
            raise InvalidInput(f"snapshot at {meta.index} is not newer than the applied index "
                               f"{current.applied_index}")
        store._delete_prefix(txn, store._db_data, bp)
        cur = txn.cursor(db=store._db_staging)
        ok = cur.set_range(gp)
        while ok and cur.key().startswith(gp):
            txn.put(bp + cur.key()[8:], cur.value(), db=store._db_data)
            ok = cur.delete() and bool(cur.key())
        store._delete_prefix(txn, store._db_sessions, gp)
        for skey, row in sessions:
            txn.put(gp + skey, row, db=store._db_sessions)
        txn.put(gp, codec.encode_apply_state(bucket, meta.index, version), db=store._db_apply)
        store._set_horizon(txn, bucket, horizon)
        st = store._load_group(txn, group_id)
        if st.snapshot.metadata.index < meta.index:  # (raft may have persisted it already)
            st = store._install_snapshot_meta(txn, group_id, st, Snapshot(meta))
        # before the commit: a stream of this bucket stops at its next piece
        store._epochs[bucket] = store._epochs.get(bucket, 0) + 1

        def publish():
            from .store import ApplyState

            store._groups[group_id] = st
            store._applies[group_id] = ApplyState(bucket, meta.index, version)
            store._horizons[bucket] = horizon

        return meta, publish

    return store._write(fn)
