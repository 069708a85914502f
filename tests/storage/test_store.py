"""NodeStore: limits, exclusive opening, full disk, map growth, sessions, threads, metadata."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest

from client.wire import MAX_KEY_BYTES, MAX_VALUE_BYTES
from raft.types import ConfState, Entry, HardState
from storage import (
    Batch,
    Cas,
    Delete,
    DiskFull,
    GroupApply,
    HistoryCompacted,
    GroupWrite,
    InvalidInput,
    KeyTooLarge,
    NodeStore,
    Noop,
    Put,
    Rejected,
    Stale,
    StoreClosed,
    StoreLocked,
    ValueTooLarge,
    decode_command,
    encode_command,
)
from storage.mvcc import SESSION_TTL_NS


def apply1(store, index, *cmds, group=1, bucket=1):
    (res,) = store.apply([GroupApply(group, bucket, index, list(cmds))])
    return res


# -- limits ---------------------------------------------------------------------------------


def test_oversized_keys_and_values_are_refused_clearly(store):
    with pytest.raises(KeyTooLarge, match="MAX_KEY_BYTES"):
        encode_command(Put(b"k" * (MAX_KEY_BYTES + 1), b"v"))
    with pytest.raises(ValueTooLarge, match="MAX_VALUE_BYTES"):
        encode_command(Put(b"k", b"v" * (MAX_VALUE_BYTES + 1)))
    with pytest.raises(ValueTooLarge):
        encode_command(Cas(b"k", b"v" * (MAX_VALUE_BYTES + 1), None))
    with pytest.raises(KeyTooLarge):
        store.get(1, b"k" * (MAX_KEY_BYTES + 1))
    with pytest.raises(InvalidInput):
        encode_command(Put("str key", b"v"))
    with pytest.raises(InvalidInput):
        encode_command(Batch((Batch(()),)))
    # an invalid command that reached the log anyway is rejected, deterministically
    res = apply1(store, 1, Put(b"k" * (MAX_KEY_BYTES + 1), b"v"), )
    assert isinstance(res[0], Rejected) and "MAX_KEY_BYTES" in res[0].reason
    assert isinstance(decode_command(b"\x01garbage"), Rejected)
    assert isinstance(decode_command(b"\x07"), Rejected)
    assert decode_command(b"") == Noop()
    # a session id of the wrong type is rejected too, and nothing is written
    res = apply1(store, 3, Put(b"s1", b"v", 7, True, 1), Put(b"s2", b"v", 8, "str", 1))
    assert [type(r) for r in res] == [Rejected, Rejected]
    assert "session" in res[0].reason and "session" in res[1].reason
    assert store.get(1, b"s1") is None and store.get(1, b"s2") is None


def test_largest_key_and_value_round_trip(store):
    big_key = b"\x00" * MAX_KEY_BYTES  # escapes to twice its length: the long-key layout
    cmds = [Put(big_key, b"v" * MAX_VALUE_BYTES, 5), Put(b"\x00" * 100, b"small", 6)]
    cmds = [decode_command(encode_command(c)) for c in cmds]
    assert apply1(store, 2, *cmds) == [5, 6]
    assert store.get(1, big_key) == (b"v" * MAX_VALUE_BYTES, 5)
    items, more = store.scan(1, b"\x00", limit=10, max_bytes=4 << 20)
    assert [k for k, _, _ in items] == [b"\x00" * 100, big_key] and not more


def test_second_opener_is_refused(tmp_path):
    path = tmp_path / "s"
    with NodeStore.open(path, sync=False):
        with pytest.raises(StoreLocked, match="already open"):
            NodeStore.open(path)
        code = textwrap.dedent(f"""
            from storage import NodeStore, StoreLocked
            try:
                NodeStore.open({str(path)!r})
            except StoreLocked as e:
                print("refused:", e)
        """)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
        assert out.stdout.startswith(b"refused:"), out
    NodeStore.open(path).close()  # free again once closed


def test_use_after_close_is_a_clear_error(tmp_path):
    s = NodeStore.open(tmp_path / "s", sync=False)
    s.close()
    s.close()
    with pytest.raises(StoreClosed):
        s.get(1, b"k")
    with pytest.raises(StoreClosed):
        s.persist([GroupWrite(1, hard_state=HardState(1))])


DISK_FILLER = textwrap.dedent("""
    import resource, signal, sys
    from raft.types import Entry
    from storage import DiskFull, GroupWrite, NodeStore
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    store = NodeStore.open(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20))
    i = 0
    try:
        while True:
            store.persist([GroupWrite(1, entries=[Entry(1, i + j + 1, data=bytes(1000))
                                                  for j in range(100)])])
            i += 100
            print(i, flush=True)
    except DiskFull as e:
        print("full", i, type(e).__name__, e, flush=True)
    store.close()
""")


def test_full_disk_is_an_error_not_corruption(tmp_path):
    path = tmp_path / "s"
    NodeStore.open(path).close()
    out = subprocess.run([sys.executable, "-c", DISK_FILLER, str(path)], capture_output=True,
                         timeout=120)
    lines = out.stdout.decode().split("\n")
    full = [line for line in lines if line.startswith("full")]
    assert full, (out.stdout[-500:], out.stderr[-2000:])
    written = int(full[0].split()[1])
    assert full[0].split()[2] == DiskFull.__name__
    assert written > 0
    with NodeStore.open(path, sync=False) as s:  # everything reported is there, readable
        g = s.group(1)
        assert g.last_index() == written
        assert len(g.entries(1, written + 1)) == written


def test_map_grows_automatically_while_readers_run(tmp_path):
    # readers on another thread than the writer: no deferral (see test_deferred.py for it)
    with NodeStore.open(tmp_path / "s", map_size=1 << 20, sync=False,
                        defer_commits=False) as s:
        stop = threading.Event()
        errors = []

        def reader():
            while not stop.is_set():
                try:
                    s.get(1, b"k")
                    s.group(1).last_index()
                except Exception as exc:  # pragma: no cover - reported below
                    errors.append(exc)
                    return

        t = threading.Thread(target=reader)
        t.start()
        try:
            for i in range(40):
                apply1(s, i + 1, Put(b"k%d" % i, bytes(100_000), 0))
        finally:
            stop.set()
            t.join(timeout=30)
        assert not errors
        assert s.statistics()["map_size"] >= 40 * 100_000  # grew from 1 MiB to hold it all
        assert all(s.get(1, b"k%d" % i)[0] == bytes(100_000) for i in range(40))


# -- raft log edge cases ----------------------------------------------------------------------


def test_persist_batch_is_one_unit_and_validates(store):
    with pytest.raises(InvalidInput, match="gap"):
        store.persist([GroupWrite(1, entries=[Entry(1, 1)]),
                       GroupWrite(2, entries=[Entry(1, 5)])])
    # the failed batch left nothing behind, not even group 1's valid part
    assert store.group(1).last_index() == 0
    with pytest.raises(InvalidInput, match="contiguous"):
        store.persist([GroupWrite(1, entries=[Entry(1, 1), Entry(1, 3)])])
    store.persist([GroupWrite(g, entries=[Entry(1, 1)], hard_state=HardState(1, g, 1))
                   for g in range(1, 65)])
    assert all(store.group(g).initial_state()[0].vote == g for g in range(1, 65))
    assert sorted(store.groups()) == list(range(1, 65))


def test_remove_group(store):
    store.persist([GroupWrite(3, entries=[Entry(1, 1)], hard_state=HardState(1, 1, 1))])
    apply1(store, 1, Put(b"a", b"1", 0, session=9, seq=1), group=3, bucket=7)
    apply1(store, 1, Put(b"a", b"other", 0), group=4, bucket=8)
    store.remove_group(3, 7)
    assert store.group(3).last_index() == 0 and store.applied_index(3) == 0
    assert store.group(3).initial_state() == (HardState(), ConfState())
    assert store.get(7, b"a") is None and store.get(8, b"a") == (b"other", 1)
    assert 3 not in store.groups()
    # a removed group's sessions are gone too: the same seq applies afresh
    assert apply1(store, 1, Put(b"a", b"2", 0, session=9, seq=1), group=3, bucket=7) == [1]


def test_apply_advances_index_and_conf_state(store):
    cs = ConfState(voters=(1, 2))
    (res,) = store.apply([GroupApply(1, 1, 3, [Noop(2), Noop(3)], conf_state=cs)])
    assert res == [None, None]
    assert store.applied_index(1) == 3 and store.group(1).initial_state()[1] == cs
    # re-delivered entries are skipped (applied exactly once)
    assert apply1(store, 3, Put(b"k", b"v", 0)) == [None]
    assert store.get(1, b"k") is None


def test_write_turn_persists_then_applies_in_one_transaction(store, tmp_path):
    data = [encode_command(Put(b"k%d" % i, b"v%d" % i, 10 * i)) for i in (1, 2, 3)]
    # apply covers entries written by the same call (writes come first in the transaction)
    res = store.write_turn(
        [GroupWrite(1, entries=[Entry(1, 1, data=data[0]), Entry(1, 2, data=data[1])],
                    hard_state=HardState(1, 1, 2)),
         GroupWrite(2, entries=[Entry(1, 1)], hard_state=HardState(1, 1, 0))],
        [GroupApply(1, 1, 2, [decode_command(d) for d in data[:2]])])
    assert res == [[10, 20]]
    assert store.group(1).last_index() == 2 and store.applied_index(1) == 2
    assert store.group(2).last_index() == 1 and store.applied_index(2) == 0
    assert store.get(1, b"k2") == (b"v2", 20)
    # the group state cache and the conf state of an apply both survive a persist in the turn
    cs = ConfState(voters=(1, 2, 3))
    res = store.write_turn([GroupWrite(1, entries=[Entry(2, 3, data=data[2])],
                                       hard_state=HardState(2, 1, 3))],
                           [GroupApply(1, 1, 3, [decode_command(data[2])], conf_state=cs)])
    assert res == [[30]]
    st = store.group(1)
    assert st.last_index() == 3 and st.term(3) == 2
    assert st.initial_state() == (HardState(2, 1, 3), cs)
    # re-applied entries are skipped, and an empty part is allowed
    assert store.write_turn([], [GroupApply(1, 1, 3, [decode_command(data[2])])]) == [[None]]
    assert store.write_turn([GroupWrite(3, hard_state=HardState(5, 0, 0))], []) == []
    assert store.group(3).initial_state()[0] == HardState(5, 0, 0)


def test_write_turn_is_all_or_nothing(store, monkeypatch):
    store.persist([GroupWrite(1, entries=[Entry(1, 1)], hard_state=HardState(1, 1, 1))])
    # a bad write after a good one: nothing of the turn is there, not the apply either
    with pytest.raises(InvalidInput, match="gap"):
        store.write_turn([GroupWrite(1, entries=[Entry(1, 2)]),
                          GroupWrite(2, entries=[Entry(1, 4)])],
                         [GroupApply(1, 1, 1, [Put(b"a", b"1", 5)])])
    assert store.group(1).last_index() == 1 and store.applied_index(1) == 0
    assert store.get(1, b"a") is None
    # a failing apply undoes the turn's persist as well
    import storage.mvcc

    def boom(self, cmd):
        raise RuntimeError("boom")

    with monkeypatch.context() as m:
        m.setattr(storage.mvcc.Applier, "run", boom)
        with pytest.raises(RuntimeError, match="boom"):
            store.write_turn([GroupWrite(1, entries=[Entry(1, 2)],
                                         hard_state=HardState(1, 1, 2))],
                             [GroupApply(1, 1, 1, [Put(b"a", b"1", 5)])])
    # (WAL mode: the persist is a WAL append that stays; the apply alone is all or nothing)
    last = 2 if store.log_mode == "wal" else 1
    assert store.group(1).last_index() == last
    assert store.group(1).initial_state()[0].commit == last
    assert store.applied_index(1) == 0
    # and a reopened store agrees with the cache
    path = store.path
    store.close()
    with NodeStore.open(path, sync=False) as again:
        assert again.group(1).last_index() == last and again.applied_index(1) == 0


# -- versions and sessions ---------------------------------------------------------------------


def test_versions_grow_even_if_the_clock_goes_back(store):
    assert apply1(store, 1, Put(b"a", b"1", 1000)) == [1000]
    assert apply1(store, 2, Put(b"a", b"2", 10)) == [1001]
    assert apply1(store, 3, Delete(b"a", 5)) == [(True, 1002)]
    assert apply1(store, 4, Delete(b"a", 5)) == [(False, 1003)]
    assert apply1(store, 5, Cas(b"a", b"x", b"y", 0)) == [(False, None)]
    assert apply1(store, 6, Cas(b"a", None, b"y", 0)) == [(True, 1004)]
    assert apply1(store, 7, Cas(b"a", b"z", b"q", 0)) == [(False, 1004)]
    assert apply1(store, 8, Cas(b"a", b"y", None, 2000)) == [(True, 2000)]
    assert store.get(1, b"a") is None and store.get(1, b"a", as_of=1999) == (b"y", 1004)
    assert store.last_version(1) == 2000


def test_session_dedup_and_stale(store):
    put = Put(b"k", b"v1", 100, session=b"client-1", seq=1)
    assert apply1(store, 1, put) == [100]
    assert apply1(store, 2, put) == [100]  # a retry: the stored result, not applied again
    assert store.get(1, b"k") == (b"v1", 100)
    assert apply1(store, 3, Delete(b"k", 0, session=b"client-1", seq=2)) == [(True, 101)]
    assert apply1(store, 4, put) == [Stale(1, 2)]
    assert apply1(store, 5, Delete(b"k", 0, session=b"client-1", seq=2)) == [(True, 101)]
    # another session, in a batch entry
    res = apply1(store, 6, Batch((Put(b"x", b"1", 0, session=7, seq=5),
                                  Put(b"x", b"2", 0, session=7, seq=5))))
    assert res == [[102, 102]]
    assert store.get(1, b"x") == (b"1", 102)


def test_sessions_expire_after_an_hour_of_log_time(store):
    t0 = 10**18
    assert apply1(store, 1, Put(b"k", b"a", t0, session=1, seq=3)) == [t0]
    late = t0 + SESSION_TTL_NS + 5
    # the same seq after more than an hour of log time is new: applied again
    assert apply1(store, 2, Put(b"k", b"b", late, session=1, seq=3)) == [late]
    assert store.get(1, b"k") == (b"b", late)
    apply1(store, 3, Put(b"other", b"x", late + SESSION_TTL_NS + 10, session=2, seq=1))
    assert store.expire_sessions(1) == 1  # session 1 is long expired; session 2 is not
    assert store.expire_sessions(1) == 0


# -- threads ------------------------------------------------------------------------------------


def test_reads_from_other_threads_during_writes(store):
    """A writer thread persists and applies while reader threads read; readers never see a
    torn state (the log's last index and the data move forward consistently)."""
    errors: list[BaseException] = []
    done = threading.Event()

    def writer():
        try:
            for i in range(1, 301):
                store.persist([GroupWrite(1, entries=[Entry(1, i, data=b"%d" % i)],
                                          hard_state=HardState(1, 1, i))])
                apply1(store, i, Put(b"counter", b"%d" % i, 0))
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()

    def reader():
        try:
            g = store.group(1)
            seen = 0
            while not done.is_set():
                last = g.last_index()
                assert last >= seen
                seen = last
                if last:
                    assert g.entries(last, last + 1)[0].data == b"%d" % last
                got = store.get(1, b"counter")
                applied = store.applied_index(1)
                if got is not None:
                    assert int(got[0]) >= 1 and applied >= 0
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader)
                                                   for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert store.get(1, b"counter") == (b"300", 300)


def test_bad_read_arguments_are_clear_errors(store):
    apply1(store, 1, Put(b"k", b"v", 5))
    assert store.get(1, b"k", as_of=2**70) == (b"v", 5)
    assert store.scan(1, b"", as_of=2**70) == ([(b"k", b"v", 5)], False)
    assert store.get(1, b"k", as_of=-1) is None
    with pytest.raises(InvalidInput):
        store.get(1, b"k", as_of="yesterday")
    with pytest.raises(InvalidInput):
        store.scan(1, b"", limit=0)
    with pytest.raises(InvalidInput):
        store.gc(1, 1.5)
    with pytest.raises(InvalidInput):
        store.put_meta("x", object())
    assert store.gc(1, 2**70).done


def test_meta(store, tmp_path):
    assert store.get_meta("map") is None and store.get_meta("map", 5) == 5
    store.put_meta("map", {"epoch": 3, "nodes": {1: "a:1"}})
    assert store.get_meta("map") == {"epoch": 3, "nodes": {1: "a:1"}}


def test_reads_older_than_the_gc_horizon_are_refused(tmp_path):
    path = tmp_path / "s"
    with NodeStore.open(path, sync=False) as store:
        for i in range(1, 6):
            apply1(store, i, Put(b"k", b"%d" % i, i * 10))
        assert store.get(1, b"k", as_of=15) == (b"1", 10)
        progress = store.gc(1, 35, max_keys=1)  # even a partial pass moves the horizon
        assert store.gc_horizon(1) == 35
        with pytest.raises(HistoryCompacted, match="horizon 35"):
            store.get(1, b"k", as_of=34)
        with pytest.raises(HistoryCompacted):
            store.scan(1, b"", as_of=20)
        assert store.get(1, b"k", as_of=-1) is None
        while not progress.done:
            progress = store.gc(1, 35, max_keys=1, cursor=progress.cursor)
        assert store.get(1, b"k", as_of=35) == (b"3", 30)
        assert store.get(1, b"k", as_of=36) == (b"3", 30)
        assert store.gc(1, 20).done and store.gc_horizon(1) == 35  # never moves back
        assert store.gc_horizon(2) == 0
    with NodeStore.open(path, sync=False) as store:  # durable
        assert store.gc_horizon(1) == 35
        store.remove_group(1, 1)
        assert store.gc_horizon(1) == 0
