"""WAL mode's deferred LMDB commits (store.py `_write_deferred`, wal_store.py): reads on the
home thread see deferred writes; other threads never get a stale answer; every LMDB commit is
synced; checkpoints delete WAL segments only up to LMDB's committed state; a crash loses only
deferred writes, which the WAL re-applies; a map that fills up mid-transaction loses nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import lmdb
import pytest
import trio

from raft.storage import bootstrap_snapshot
from raft.types import ConfState, Entry, HardState
from storage import GroupApply, GroupWrite, NodeStore, Put, StorageError
from storage import store as store_module, wal_store
from storage.codec import decode_command, encode_command

CS = ConfState(voters=(1, 2, 3))


@pytest.fixture(autouse=True)
def no_age_commits(monkeypatch):
    """Deferred writes stay deferred during a test, whatever the machine's speed."""
    monkeypatch.setattr(store_module, "DEFER_MAX_S", 3600.0)
    monkeypatch.setattr(wal_store, "CHECKPOINT_S", 3600.0)


def ents(lo, hi, term=1):
    return [Entry(term, i, data=encode_command(Put(b"k%d" % i, b"v%d" % i, ts=i)))
            for i in range(lo, hi + 1)]


def open_wal(path, **kw):
    kw.setdefault("sync", False)
    return NodeStore.open(path, log="wal", **kw)


def fill(s, hi, group=1):
    """Bootstrap `group`, persist entries 2..hi (one per persist), apply none."""
    s.persist([GroupWrite(group, snapshot=bootstrap_snapshot(CS), hard_state=HardState(1, 0, 1))])
    for i in range(2, hi + 1):
        s.persist([GroupWrite(group, entries=ents(i, i), hard_state=HardState(1, 0, i))])


def apply_log(s, lo, hi, group=1):
    cmds = [decode_command(e.data) for e in s.group(group).entries(lo, hi + 1)]
    return s.apply([GroupApply(group, group, hi, cmds)])


def committed_applied(s, group=1) -> int:
    """LMDB's last COMMITTED applied index (what a crash would leave)."""
    txn = s._begin_committed_read()
    try:
        return s._load_apply(txn, group).applied_index
    finally:
        s._end_read(txn)


def committed_get(s, bucket, key):
    txn = s._begin_committed_read()
    try:
        from storage import keys
        cur = txn.cursor(db=s._db_data)
        stem = keys.key_stem(bucket, key)
        return cur.set_range(stem) and cur.key().startswith(stem)
    finally:
        s._end_read(txn)


def test_deferred_writes_are_read_on_the_home_thread_before_any_commit(tmp_path):
    with open_wal(tmp_path / "s") as s:
        assert s.defers_commits
        fill(s, 10)
        commits = s.write_stats["commits"]
        apply_log(s, 2, 10)
        s.compact(1, 5)
        assert s.write_stats["commits"] == commits  # nothing committed...
        assert committed_applied(s) == 0 and not committed_get(s, 1, b"k9")  # ...really
        # ...and yet every read of the home thread sees the writes
        assert s.get(1, b"k9") == (b"v9", 9)
        assert [k for k, _, _ in s.scan(1, b"k")[0]] == [b"k%d" % i for i in
                                                          sorted(range(2, 11), key=str)]
        assert s.applied_index(1) == 10 and s.last_version(1) == 10
        assert s.group(1).first_index() == 6 and s.group(1).snapshot().metadata.index == 5
        assert 1 in s.groups()
        # a re-apply is recognised as such (the apply state is read from the deferred txn)
        assert apply_log(s, 9, 10) == [[None, None]]
        s.flush()
        assert s.write_stats["commits"] == commits + 1
        assert committed_applied(s) == 10 and committed_get(s, 1, b"k9")


def test_other_threads_never_read_stale_data_nor_write_under_deferred_writes(tmp_path):
    with open_wal(tmp_path / "s") as s:
        fill(s, 4)
        apply_log(s, 2, 4)  # deferred
        out = {}

        def other():
            for name, call in (("get", lambda: s.get(1, b"k4")),
                               ("scan", lambda: s.scan(1, b"")),
                               ("meta", lambda: s.get_meta("x")),
                               ("write", lambda: s.put_meta("x", 1)),
                               ("persist", lambda: s.persist([GroupWrite(2, entries=ents(1, 1))])),
                               ("flush", s.flush),
                               ("close", s.close)):
                try:
                    out[name] = call()
                except StorageError as exc:
                    out[name] = exc

        t = threading.Thread(target=other)
        t.start()
        t.join(30)
        assert all(isinstance(v, StorageError) for v in out.values()), out
        assert "deferred" in str(out["get"])
        assert s.get_meta("x") is None and s.group(2).last_index() == 0 and not s.closed
        s.flush()  # once committed, other threads read again
        t = threading.Thread(target=lambda: out.__setitem__("after", s.get(1, b"k4")))
        t.start()
        t.join(30)
        assert out["after"] == (b"v4", 4)


def test_a_failed_write_leaves_no_trace_in_the_deferred_transaction(tmp_path):
    with open_wal(tmp_path / "s") as s:
        fill(s, 3)
        apply_log(s, 2, 3)

        def bad(txn):
            txn.put(b"half", b"done", db=s._db_meta)
            raise ValueError("boom")

        with pytest.raises(ValueError):
            s._write(bad, durable=False)
        assert s.get_meta("half") is None  # gone with its child transaction...
        assert s.get(1, b"k3") == (b"v3", 3)  # ...the deferred writes before it are not
        s.flush()
        assert committed_applied(s) == 3


def test_every_lmdb_commit_is_synced_in_wal_mode(tmp_path):
    """The environment syncs every commit (no MDB_NOSYNC/NOMETASYNC) and no code path
    commits otherwise; the store counts commits made while sync was off."""
    src = open_wal(tmp_path / "s", sync=True, wal_segment_bytes=512)
    dst = open_wal(tmp_path / "d", sync=True)
    try:
        for s in (src, dst):
            f = s._env.flags()
            assert f["sync"] and f["metasync"] and not f["map_async"] and not f["writemap"]
        fill(src, 40)
        apply_log(src, 2, 40)
        src.compact(1, 30)
        src.gc(1, 20)
        src.expire_sessions(1)
        src.put_meta("m", 1)
        src.persist([GroupWrite(1, conf_state=ConfState(voters=(1, 2)))])
        wal_store.maybe_checkpoint(src, force=True)
        assert src._wal.stats["deleted_segments"] > 0
        meta = dst.install_snapshot(1, 1, None, list(src.snapshot_chunks(1, 1)))
        assert meta.index == 40
        dst.remove_group(1, 1)
        for s in (src, dst):
            ws = s.write_stats
            assert ws["commits"] > 0 and ws["unsynced_commits"] == 0, ws
        assert src.write_stats["deferred"] > 0  # deferral did happen, and still no unsynced
    finally:
        src.close()
        dst.close()
    for s in (src, dst):
        assert s.write_stats["unsynced_commits"] == 0


def test_commit_bounds(tmp_path, monkeypatch):
    with open_wal(tmp_path / "s") as s:
        fill(s, 20)
        for i in range(2, 7):
            apply_log(s, i, i)
        assert "size" not in s.write_stats["flushes"] and s._dtxn is not None
        monkeypatch.setattr(store_module, "DEFER_MAX_OPS", 1)
        apply_log(s, 7, 7)
        assert s.write_stats["flushes"].get("size") == 1 and s._dtxn is None
        monkeypatch.setattr(store_module, "DEFER_MAX_OPS", 10**9)
        monkeypatch.setattr(store_module, "DEFER_MAX_S", 0.0)
        apply_log(s, 8, 8)
        assert s.write_stats["flushes"].get("age") == 1 and s._dtxn is None
        monkeypatch.setattr(store_module, "DEFER_MAX_S", 3600.0)
        apply_log(s, 9, 9)
        assert s._dtxn is not None
        s.put_meta("durable", 1)  # a durable write commits the deferred ones, then itself
        assert s._dtxn is None and s.write_stats["flushes"].get("durable") == 1
        assert committed_applied(s) == 9


def test_checkpoint_deletes_segments_only_up_to_the_committed_state(tmp_path):
    with open_wal(tmp_path / "s", wal_segment_bytes=300) as s:
        fill(s, 60)
        many = len(s._wal.segments())
        assert many > 5
        apply_log(s, 2, 40)
        s.compact(1, 30)  # both deferred
        assert committed_applied(s) == 0
        assert wal_store.maybe_checkpoint(s, force=True) > 0
        # the checkpoint committed first, and its bound is that committed state
        assert s._dtxn is None and committed_applied(s) == 40
        assert s.checkpoint_durable[1] == 30
        left = s._wal.segments()
        assert 0 < len(left) < many
        # deferred again: a checkpoint commits them before it computes its bound
        apply_log(s, 41, 59)
        s.compact(1, 55)
        assert committed_applied(s) == 40 and s.checkpoint_durable[1] == 30
        wal_store.maybe_checkpoint(s, force=True)
        assert committed_applied(s) == 59 and s.checkpoint_durable[1] == 55


CRASHER = textwrap.dedent("""
    import os, signal, sys
    from storage import store as sm, wal_store
    sm.DEFER_MAX_S = 3600.0
    wal_store.CHECKPOINT_S = 3600.0
    sys.path.insert(0, sys.argv[2])
    from test_deferred import apply_log, fill, open_wal
    s = open_wal(sys.argv[1], wal_segment_bytes=300, sync=True)
    fill(s, 60)
    apply_log(s, 2, 40)
    s.compact(1, 30)
    print("deleted", wal_store.maybe_checkpoint(s, force=True), flush=True)
    apply_log(s, 41, 59)  # deferred: lost with the process
    s.compact(1, 55)
    print("applied", s.applied_index(1), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_sigkill_loses_only_deferred_writes_and_the_wal_reapplies_them(tmp_path):
    path = tmp_path / "s"
    out = subprocess.run([sys.executable, "-c", CRASHER, str(path),
                          os.path.dirname(__file__)], capture_output=True, timeout=120)
    lines = out.stdout.decode().split()
    assert out.returncode == -9 and "applied" in lines, (out.stdout, out.stderr[-2000:])
    assert int(lines[lines.index("deleted") + 1]) > 0
    with open_wal(path, wal_segment_bytes=300) as s:
        # LMDB is at its last commit (the checkpoint's): applied 40, log offset 30
        assert s.applied_index(1) == 40
        g = s.group(1)
        assert g.first_index() == 31 and g.last_index() == 60
        assert g.hard_state().commit == 60
        assert s.get(1, b"k45") is None  # the deferred apply is gone...
        apply_log(s, 41, 59)  # ...and the WAL has what re-applies it
        assert s.get(1, b"k45") == (b"v45", 45) and s.applied_index(1) == 59


def test_a_full_map_mid_transaction_loses_no_deferred_write(tmp_path):
    with open_wal(tmp_path / "s", map_size=1 << 20) as s:
        fill(s, 2)
        apply_log(s, 2, 2)
        for i in range(3, 43):  # 40 x 100 kB into a 1 MiB map, all deferred until due
            s.persist([GroupWrite(1, entries=[Entry(1, i, data=encode_command(
                Put(b"big%d" % i, bytes(100_000), ts=i)))])])
            apply_log(s, i, i)
            assert s.get(1, b"big%d" % i)[0] == bytes(100_000)
        assert s.statistics()["map_size"] >= 40 * 100_000
        assert s.write_stats["flushes"].get("map full", 0) >= 1  # the path was taken
        assert all(s.get(1, b"big%d" % i)[0] == bytes(100_000) for i in range(3, 43))
        assert s.get(1, b"k2") == (b"v2", 2) and s.applied_index(1) == 42
    with open_wal(tmp_path / "s") as s:
        assert s.applied_index(1) == 42
        assert all(s.get(1, b"big%d" % i)[0] == bytes(100_000) for i in range(3, 43))


def test_a_failed_deferred_commit_makes_the_store_refuse_work(tmp_path):
    s = open_wal(tmp_path / "s", wal_segment_bytes=300)
    fill(s, 30)
    apply_log(s, 2, 30)
    s.compact(1, 20)  # deferred, like the applies: lost below
    real = s._dtxn

    class Failing:
        def commit(self):
            raise lmdb.DiskError("injected")

        def abort(self):
            real.abort()

    s._dtxn = Failing()
    with pytest.raises(StorageError, match="reopen"):
        s.flush()
    for call in (lambda: s.get(1, b"k3"),
                 lambda: s.apply([GroupApply(1, 1, 31, [Put(b"x", b"y", ts=99)])]),
                 lambda: s.persist([GroupWrite(1, entries=ents(4, 4))])):
        with pytest.raises(StorageError, match="reopen"):
            call()
    s.close()  # no checkpoint: the caches bound nothing now (no segment may go)
    with open_wal(tmp_path / "s") as s:  # the WAL has the whole log: re-apply
        assert s.applied_index(1) == 1
        assert (s.group(1).first_index(), s.group(1).last_index()) == (2, 30)
        apply_log(s, 2, 30)
        assert s.get(1, b"k3") == (b"v3", 3)


def test_snapshot_is_as_of_the_call_on_the_home_thread(tmp_path):
    with open_wal(tmp_path / "a") as src, open_wal(tmp_path / "b") as dst:
        fill(src, 10)
        apply_log(src, 2, 10)  # deferred
        stream = src.snapshot_chunks(1, 1)  # commits them first
        assert src._dtxn is None
        apply_log(src, 10, 10)
        src.persist([GroupWrite(1, entries=ents(11, 11))])
        apply_log(src, 11, 11)  # deferred again: not in the snapshot
        chunks = []

        def pull():  # chunks pulled on another thread, like the node does
            chunks.extend(stream)

        t = threading.Thread(target=pull)
        t.start()
        t.join(30)
        meta = dst.install_snapshot(1, 1, None, chunks)
        assert meta.index == 10
        assert dst.get(1, b"k10") == (b"v10", 10) and dst.get(1, b"k11") is None


def test_install_from_a_trio_worker_thread_commits_the_home_threads_writes(tmp_path):
    with open_wal(tmp_path / "a") as src, open_wal(tmp_path / "b") as dst:
        fill(src, 5)
        apply_log(src, 2, 5)
        chunks = list(src.snapshot_chunks(1, 1))
        fill(dst, 3, group=2)
        apply_log(dst, 2, 3, group=2)  # deferred writes pending on the home thread
        # a plain thread cannot commit them: a clear error, nothing changed
        err = []
        t = threading.Thread(target=lambda: err.append(
            pytest.raises(StorageError, dst.install_snapshot, 1, 1, None, chunks)))
        t.start()
        t.join(30)
        assert err and dst.applied_index(1) == 0

        async def main():  # the store's home thread runs the trio loop, like a node
            return await trio.to_thread.run_sync(dst.install_snapshot, 1, 1, None, chunks)

        assert trio.run(main).index == 5
        assert dst.get(1, b"k5") == (b"v5", 5) and dst.get(2, b"k3") == (b"v3", 3)
        assert committed_applied(dst, 2) == 3  # the home thread's writes were committed


def test_deferral_is_a_wal_mode_option(tmp_path):
    with pytest.raises(Exception, match="defer_commits"):
        NodeStore.open(tmp_path / "l", log="lmdb", sync=False, defer_commits=True)
    with open_wal(tmp_path / "w", defer_commits=False) as s:
        fill(s, 3)
        apply_log(s, 2, 3)
        assert s._dtxn is None and s.write_stats["deferred"] == 0
        assert committed_applied(s) == 3


def test_a_read_racing_a_deferred_commit_is_refused_not_stale(tmp_path):
    """Another thread's read transaction that began while deferred writes were pending must
    not be returned even if they are committed by the time it checks: it lacks them."""
    with open_wal(tmp_path / "s") as s:
        fill(s, 3)
        apply_log(s, 2, 3)  # acknowledged, deferred
        began, resume = threading.Event(), threading.Event()
        real = s._begin_committed_read

        def slow_begin():
            txn = real()  # the committed state: without the deferred writes
            began.set()
            resume.wait(30)
            return txn

        out = []

        def reader():
            try:
                out.append(s.get(1, b"k3"))
            except StorageError as exc:
                out.append(exc)

        s._begin_committed_read = slow_begin
        t = threading.Thread(target=reader)
        t.start()
        assert began.wait(30)
        s.flush()  # the deferred writes commit while the reader holds its old transaction
        resume.set()
        t.join(30)
        del s._begin_committed_read
        assert len(out) == 1 and isinstance(out[0], StorageError), out
        assert s.get(1, b"k3") == (b"v3", 3)


def test_snapshot_from_another_thread_needs_the_deferred_writes_committed(tmp_path):
    """A deferred GC may have removed versions visible at the committed state: a snapshot
    taken from another thread while such writes are pending is refused, not inconsistent."""
    with open_wal(tmp_path / "s") as s:
        fill(s, 5)
        apply_log(s, 2, 5)
        out = []

        def other():
            try:
                out.append(s.snapshot_chunks(1, 1))
            except StorageError as exc:
                out.append(exc)

        t = threading.Thread(target=other)
        t.start()
        t.join(30)
        assert isinstance(out[0], StorageError) and s._pins.get(1, []) == []

        async def main():  # from a trio worker thread: the loop commits them first
            stream = await trio.to_thread.run_sync(s.snapshot_chunks, 1, 1)
            return await trio.to_thread.run_sync(list, stream)

        chunks = trio.run(main)
        assert committed_applied(s) == 5
        with open_wal(tmp_path / "d") as d:
            assert d.install_snapshot(1, 1, None, chunks).index == 5
            assert d.get(1, b"k5") == (b"v5", 5)
