"""The apply's inline Put path (storage/mvcc.py `Applier.run`) against the general
one (`Applier._run`), and the struct-encoded apply records (storage/codec.py): the same
commands must give the same results and the same bytes in every database."""

from __future__ import annotations

import random

import msgpack
import pytest

from client.wire import MAX_VALUE_BYTES
from storage import Batch, Cas, Delete, GroupApply, NodeStore, Put, Rejected, codec, mvcc
from storage.errors import CorruptData, InvalidInput
from storage.mvcc import SESSION_TTL_NS


def _random_commands(rng: random.Random, n: int) -> list:
    """Puts that take the inline path and every kind that does not, mixed: retries (same
    session and seq), stale seqs, expired sessions, keys with NULs, long keys, odd fields."""
    keys = [b"k%d" % i for i in range(6)] + [b"\x00a\x00", b"", b"L" * 600, b"\x00" * 300]
    sessions = [1, 2, 2 ** 64 - 1, 2 ** 63, b"bytes-session", -3, None]
    seqs = {}
    ts = 1_000
    out = []
    for _ in range(n):
        ts += rng.choice([0, 1, 5, SESSION_TTL_NS // 2])  # a version may repeat: clamped up
        s = rng.choice(sessions)
        seq = seqs.get(s, 0)
        r = rng.random()
        if r < 0.6:
            seq += 1
        elif r < 0.8 and seq > 1:
            seq -= 1  # stale
        seqs[s] = max(seqs.get(s, 0), seq)
        key = rng.choice(keys)
        kind = rng.random()
        if kind < 0.7:
            value = rng.choice([b"v%d" % ts, b"", b"\x00" * 10])
            cmd = Put(key, value, rng.choice([ts, 0, ts - 100]), s, seq)
        elif kind < 0.8:
            cmd = Delete(key, ts, s, seq)
        elif kind < 0.9:
            cmd = Cas(key, rng.choice([None, b"v%d" % (ts - 1)]), b"c%d" % ts, ts, s, seq)
        else:
            cmd = Batch((Put(key, b"b1", ts, s, seq), Put(key, b"b2", ts, 1, seq + 1)))
        out.append(cmd)
    # ill-formed Puts from a damaged log: never the inline path, Rejected the same way
    out += [Put("str", b"v", ts, 1, 1), Put(b"k", "str", ts, 1, 1),
            Put(b"k", b"v" * (MAX_VALUE_BYTES + 1), ts, 1, 1), Put(b"k", b"v", -1, 1, 1),
            Put(b"k", b"v", True, 1, 1), Put(b"k", b"v", ts, True, 1),
            Put(b"k", b"v", ts, 2 ** 64, 1), Put(b"k", b"v", ts, 1.5, 1)]
    return out


def _dump(store: NodeStore) -> dict:
    store.flush()
    out = {}
    with store._env.begin() as txn:
        for name, db in (("data", store._db_data), ("sessions", store._db_sessions),
                         ("apply", store._db_apply)):
            out[name] = list(txn.cursor(db=db))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_inline_put_path_equals_the_general_path(tmp_path, monkeypatch, seed):
    cmds = _random_commands(random.Random(seed), 300)
    runs = []
    for general in (False, True):
        with monkeypatch.context() as m:
            if general:
                m.setattr(mvcc.Applier, "run", mvcc.Applier._run)
            with NodeStore.open(tmp_path / f"s{general}", sync=False) as s:
                results = []
                for i in range(0, len(cmds), 7):  # several groups and entries per apply
                    chunk = cmds[i:i + 7]
                    results += s.apply([GroupApply(1, 1, i + 3, chunk[:3]),
                                        GroupApply(2, 9, i + 4, chunk[3:])])
                runs.append((results, _dump(s)))
    assert runs[0] == runs[1]
    flat = [r for rs in runs[0][0] for r in rs]
    assert any(isinstance(r, int) for r in flat) and any(isinstance(r, Rejected) for r in flat)


def test_session_keys_and_rows():
    # an int id in u64 range: msgpack's uint64 form, whatever its size; others as before
    for sid in (0, 1, 2 ** 63, 2 ** 64 - 1):
        k = codec.encode_session_key(sid)
        assert len(k) == 9 and msgpack.unpackb(k) == sid
    for sid in (-1, -(2 ** 63), b"\xcf" + bytes(8)):
        assert msgpack.unpackb(codec.encode_session_key(sid)) == sid
    keys = {codec.encode_session_key(s) for s in (0, 1, -1, b"", b"\x01", 2 ** 64 - 1)}
    assert len(keys) == 6
    for bad in (2 ** 64, -(2 ** 63) - 1, True, "s", 1.0):
        with pytest.raises(InvalidInput):
            codec.encode_session_key(bad)
    # rows: an int result is a struct; other results (and values out of range) msgpack
    for row in ((5, 77, 99), (5, (True, 3), 99), (5, (False, None), 99), (5, None, 99),
                (2 ** 64 - 1, 2 ** 64 - 1, 2 ** 64 - 1), (-1, 1, 2)):
        raw = codec.encode_session(*row)
        assert codec.decode_session(raw) == row
    assert codec.encode_session(5, 77, 99)[0] == codec.STRUCT_FORMAT
    assert codec.encode_session(5, (True, 3), 99)[0] == codec.FORMAT
    # the msgpack rows of before are still read
    assert codec.decode_session(codec.pack([5, 77, 99])) == (5, 77, 99)
    assert codec.decode_apply_state(codec.pack([3, 4, 5])) == (3, 4, 5)
    raw = codec.encode_apply_state(0xFFFFFFFF, 7, 2 ** 64 - 1)
    assert raw[0] == codec.STRUCT_FORMAT
    assert codec.decode_apply_state(raw) == (0xFFFFFFFF, 7, 2 ** 64 - 1)
    with pytest.raises(CorruptData):
        codec.decode_apply_state(raw[:-1])
    with pytest.raises(CorruptData):
        codec.decode_session(b"\x09" + raw[1:])


def test_apply_state_survives_reopen(tmp_path):
    with NodeStore.open(tmp_path / "s", sync=False) as s:
        s.apply([GroupApply(3, 0xFFFFFFFF, 5, [Put(b"a", b"1", 10, 1, 1)])])
    with NodeStore.open(tmp_path / "s", sync=False) as s:
        assert s.applied_index(3) == 5 and s.last_version(3) == 10
        # the session row came back from disk: a retry answers the first result
        assert s.apply([GroupApply(3, 0xFFFFFFFF, 6, [Put(b"a", b"2", 20, 1, 1)])]) == [[10]]
        assert s.get(0xFFFFFFFF, b"a") == (b"1", 10)


@pytest.mark.parametrize("general", [False, True])
def test_session_expiry_boundary(tmp_path, monkeypatch, general):
    """A session row counts until exactly `ttl` of log time after its last write."""
    if general:
        monkeypatch.setattr(mvcc.Applier, "run", mvcc.Applier._run)
    t0 = 10 ** 12
    with NodeStore.open(tmp_path / "s", sync=False) as s:
        assert s.apply([GroupApply(1, 1, 1, [Put(b"k", b"a", t0, 5, 2)])]) == [[t0]]
        # at exactly t0 + ttl the row still counts: a retry gets the first result, older
        # seqs are stale
        at = t0 + SESSION_TTL_NS
        res = s.apply([GroupApply(1, 1, 3, [Put(b"k", b"b", at, 5, 2),
                                            Put(b"k", b"c", at, 5, 1)])])
        assert res[0][0] == t0 and res[0][1] == mvcc.Stale(1, 2)
        # one nanosecond later it is gone: the same seq applies afresh
        (res,) = s.apply([GroupApply(1, 1, 4, [Put(b"k", b"d", at + 1, 5, 2)])])
        assert res == [at + 1] and s.get(1, b"k") == (b"d", at + 1)
