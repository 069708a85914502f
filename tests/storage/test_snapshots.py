"""Bucket snapshots: streamed in bounded chunks, installed atomically elsewhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from raft.types import ConfState, Entry, HardState
from storage import (
    Batch,
    Delete,
    GroupApply,
    GroupWrite,
    InvalidInput,
    NodeStore,
    Put,
    SnapshotAborted,
)
from storage import codec

G, B = 4, 9
CS = ConfState(voters=(1, 2, 3))


def raw_bucket(store: NodeStore, bucket: int) -> list[tuple[bytes, bytes]]:
    """Every stored version of a bucket, raw (as the store reads: with deferred writes)."""
    txn = store._begin_read()
    try:
        cur = txn.cursor(db=store._db_data)
        prefix = bucket.to_bytes(4, "big")
        ok = cur.set_range(prefix)
        out = []
        while ok and cur.key().startswith(prefix):
            out.append((cur.key(), cur.value()))
            ok = cur.next()
        return out
    finally:
        store._end_read(txn)


def fill(store: NodeStore, n_entries: int, keys: int = 300, group: int = G,
         bucket: int = B) -> None:
    """Entries 1..n_entries in the log, each a batch of writes, all applied."""
    store.persist([GroupWrite(group, entries=[Entry(1, i) for i in range(1, n_entries + 1)],
                              hard_state=HardState(1, 1, n_entries), conf_state=CS)])
    for i in range(1, n_entries + 1):
        cmds = [Put(b"key%05d" % ((i * 31 + j) % keys), os.urandom(40), ts=0,
                    session=j % 7, seq=i * 100 + j) for j in range(20)]
        cmds.append(Delete(b"key%05d" % (i % keys), ts=0))
        store.apply([GroupApply(group, bucket, i, [Batch(tuple(cmds))])])


@pytest.fixture
def two(tmp_path):
    a = NodeStore.open(tmp_path / "a", sync=False)
    b = NodeStore.open(tmp_path / "b", sync=False)
    yield a, b
    a.close()
    b.close()


def test_streamed_bucket_is_identical(two):
    src, dst = two
    fill(src, 60)
    src.compact(G, 50)
    chunks = list(src.snapshot_chunks(G, B, chunk_bytes=4096))
    assert len(chunks) > 10 and max(map(len, chunks)) < 4096 + 1024  # bounded chunks
    meta = dst.install_snapshot(G, B, None, iter(chunks))
    assert (meta.index, meta.term, meta.conf_state) == (60, 1, CS)
    assert raw_bucket(dst, B) == raw_bucket(src, B)
    assert len(raw_bucket(dst, B)) > 300
    assert dst.applied_index(G) == 60 and dst.last_version(G) == src.last_version(G)
    assert dst.scan(B, b"", limit=10_000) == src.scan(B, b"", limit=10_000)
    g = dst.group(G)
    assert (g.first_index(), g.last_index(), g.term(60)) == (61, 60, 1)
    assert g.initial_state() == (HardState(0, 0, 60), CS)
    # the session table came along: a retried command is answered, not applied again
    retry = Put(b"key00000", b"again", ts=0, session=3, seq=60 * 100 + 17)
    (r_src,) = src.apply([GroupApply(G, B, 61, [retry])])
    (r_dst,) = dst.apply([GroupApply(G, B, 61, [retry])])
    assert r_src == r_dst and isinstance(r_src[0], int)
    assert dst.get(B, b"key00000") == src.get(B, b"key00000")


def test_stream_ignores_later_writes_and_pins_gc(two):
    src, dst = two
    fill(src, 20)
    before = raw_bucket(src, B)
    version = src.last_version(G)
    visible = src.scan(B, b"", limit=10_000)
    stream = src.snapshot_chunks(G, B, chunk_bytes=2048)
    head = [next(stream), next(stream)]
    # writes and a GC that would drop versions visible at the snapshot, mid-stream
    src.persist([GroupWrite(G, entries=[Entry(1, 21)])])
    src.apply([GroupApply(G, B, 21, [Batch((Put(visible[0][0][0], b"late", ts=0),
                                            Put(b"zzz", b"late", ts=0)))])])
    while not src.gc(B, version + 10, max_keys=1000).done:
        pass
    chunks = head + list(stream)
    dst.install_snapshot(G, B, None, iter(chunks))
    # GC was clamped to the snapshot's version: it may drop history older than that (as it
    # may on any replica), never what is visible at it; later writes are not in the snapshot
    assert dst.scan(B, b"", limit=10_000) == visible
    assert dst.scan(B, b"", limit=10_000, as_of=version) == visible
    assert set(raw_bucket(dst, B)) <= set(before)
    assert src.get(B, b"zzz") is not None and dst.get(B, b"zzz") is None
    # the copy refuses reads older than what the source's GC may have removed
    assert dst.gc_horizon(B) == src.gc_horizon(B) == version
    # once the stream ended, GC is no longer held back
    assert src.gc(B, version + 10, max_keys=10_000).deleted > 0


def test_stream_is_aborted_when_the_bucket_is_replaced(two):
    src, _ = two
    fill(src, 10)
    stream = src.snapshot_chunks(G, B, chunk_bytes=512)
    next(stream)
    src.remove_group(G, B)
    with pytest.raises(SnapshotAborted):
        list(stream)
    assert src.scan(B, b"") == ([], False) and src.applied_index(G) == 0


def test_failed_install_leaves_the_old_state(two):
    src, dst = two
    fill(src, 15)
    fill(dst, 3, keys=10)
    old = raw_bucket(dst, B)
    chunks = list(src.snapshot_chunks(G, B, chunk_bytes=1024))

    def broken():
        yield from chunks[:-2]
        raise ConnectionError("peer went away")

    with pytest.raises(ConnectionError):
        dst.install_snapshot(G, B, None, broken())
    with pytest.raises(InvalidInput):  # ends early: no end marker
        dst.install_snapshot(G, B, None, iter(chunks[:-1]))
    with pytest.raises(InvalidInput):  # a chunk lost in the middle
        dst.install_snapshot(G, B, None, iter(chunks[:2] + chunks[3:]))
    assert raw_bucket(dst, B) == old and dst.applied_index(G) == 3
    assert dst.group(G).last_index() == 3
    txn = dst._env.begin()
    assert txn.stat(dst._db_staging)["entries"] == 0  # staging cleaned up
    txn.abort()


def test_metadata_must_match_and_be_newer(two):
    src, dst = two
    fill(src, 5)
    chunks = list(src.snapshot_chunks(G, B))
    from raft.types import SnapshotMetadata

    with pytest.raises(InvalidInput):
        dst.install_snapshot(G, B, SnapshotMetadata(4, 1, CS), iter(chunks))
    dst.install_snapshot(G, B, SnapshotMetadata(5, 1, CS), iter(chunks))
    with pytest.raises(InvalidInput):  # not newer than what is applied
        dst.install_snapshot(G, B, None, iter(chunks))


INSTALLER = textwrap.dedent("""
    import sys
    from storage import NodeStore
    from storage.codec import unpack
    chunks = [bytes.fromhex(line) for line in open(sys.argv[2]).read().split()]
    store = NodeStore.open(sys.argv[1])
    def slow():
        for i, c in enumerate(chunks):
            if i == len(chunks) // 2:
                print("half", flush=True)
                sys.stdin.readline()  # wait here until killed
            yield c
    store.install_snapshot(4, 9, None, slow())
""")


def test_sigkill_during_install_leaves_the_old_state(tmp_path):
    with NodeStore.open(tmp_path / "src", sync=False) as src:
        fill(src, 15)
        chunks = list(src.snapshot_chunks(G, B, chunk_bytes=1024))
        want = raw_bucket(src, B)
    with NodeStore.open(tmp_path / "dst", sync=False) as dst:
        fill(dst, 3, keys=10)
        old = raw_bucket(dst, B)
    (tmp_path / "chunks").write_text("\n".join(c.hex() for c in chunks))
    proc = subprocess.Popen([sys.executable, "-c", INSTALLER, str(tmp_path / "dst"),
                             str(tmp_path / "chunks")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"half\n", proc.stderr.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            f.close()
    with NodeStore.open(tmp_path / "dst", sync=False) as dst:
        assert raw_bucket(dst, B) == old and dst.applied_index(G) == 3
        txn = dst._env.begin()
        assert txn.stat(dst._db_staging)["entries"] == 0  # dropped on reopen
        txn.abort()
        dst.install_snapshot(G, B, None, iter(chunks))  # and a retry works
        assert raw_bucket(dst, B) == want


def test_chunk_format_is_versioned(two):
    src, dst = two
    fill(src, 2)
    chunks = list(src.snapshot_chunks(G, B))
    assert all(c[0] == codec.FORMAT for c in chunks)
    bad = [b"\x09" + chunks[0][1:]] + chunks[1:]
    with pytest.raises(Exception) as info:
        dst.install_snapshot(G, B, None, iter(bad))
    assert "format" in str(info.value)


def test_no_read_transaction_is_held_between_chunks(two):
    src, _ = two
    fill(src, 10)
    stream = src.snapshot_chunks(G, B, chunk_bytes=256)
    n = 0
    for _ in stream:
        n += 1
        assert src._readers == 0  # the stream holds no read transaction while paused
        # LMDB's own reader table: slots may be kept for reuse ("-"), none pins a snapshot
        slots = src._env.readers().splitlines()[1:]
        assert all(line.split()[-1] == "-" for line in slots if "no active" not in line)
        src.persist([GroupWrite(G, entries=[Entry(1, 10 + n)])])  # writers are not blocked
    assert n > 5


def test_stream_in_a_thread_while_a_writer_applies_and_collects(two):
    """The snapshot equals the source as of its version, although a writer thread applied,
    deleted and garbage-collected all along the stream."""
    import threading

    src, dst = two
    fill(src, 30)
    version = src.last_version(G)
    expected = src.scan(B, b"", limit=100_000, as_of=version)
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer():
        try:
            i = 31
            while not stop.is_set() and i < 2000:
                src.persist([GroupWrite(G, entries=[Entry(1, i)])])
                src.apply([GroupApply(G, B, i, [Batch((
                    Put(b"key%05d" % (i * 7 % 300), b"new", ts=0),
                    Delete(b"key%05d" % (i * 11 % 300), ts=0)))])])
                src.gc(B, src.last_version(G), max_keys=50)
                i += 1
        except BaseException as exc:
            errors.append(exc)

    stream = src.snapshot_chunks(G, B, chunk_bytes=512)
    chunks = [next(stream)]  # the header: the snapshot is as of now
    t = threading.Thread(target=writer)
    t.start()
    try:
        chunks += list(stream)
    finally:
        stop.set()
        t.join(timeout=60)
    assert not errors
    assert src.last_version(G) > version  # the writer did run meanwhile
    meta = dst.install_snapshot(G, B, None, iter(chunks))
    assert meta.index == 30
    assert dst.scan(B, b"", limit=100_000) == expected
