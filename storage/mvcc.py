"""MVCC data operations inside one LMDB transaction: applying commands, reads, scans, GC.

Theory of operation
- Every write creates a new version; nothing is updated in place. A delete writes a tombstone.
  A version is `max(ts, group's last version + 1)`, so it only depends on the log.
- A read as of T finds the first record at or after `stem + inv(T)`: the newest version <= T.
- Sessions (Raft dissertation §6.3): per group, session -> (last_seq, result, last_ts). A
  session whose last_ts is more than `session_ttl` older than the command's clock
  (max(ts, group's last version)) counts as absent: expiry depends only on the log, so every
  replica decides the same; physically removing expired rows (`expire_sessions`) can happen at
  any time without changing answers.
- GC keeps, per key, every version newer than `before_ts` and the newest one at or before it
  (dropped too when it is a tombstone); it deletes only older versions, so no read at or after
  `before_ts` changes.
"""

from __future__ import annotations

import struct

from client.wire import MAX_VALUE_BYTES

from . import codec, keys
from .commands import Batch, Cas, Delete, Noop, Put, Rejected, Stale
from .errors import InvalidInput

SESSION_TTL_NS = 3600 * 10**9  # one hour of log time (timestamps are nanoseconds)
_U64_MAX = (1 << 64) - 1
_SESSION_U64 = struct.Struct(">BQ")  # codec.encode_session_key of an int in u64 range
_BUCKET = struct.Struct(">I")  # keys.bucket_prefix
_TERM_INV = struct.Struct(">HQ")
_SROW = struct.Struct(">BQQQ")  # codec.encode_session of an int result  # keys.TERMINATOR + keys.inv(version)


def newest(cursor, stem: bytes, as_of: int | None):
    """(raw value, version) of the newest version of `stem` at or before `as_of`, or None."""
    target = stem + (keys.inv(as_of) if as_of is not None else b"\x00" * 8)
    if not cursor.set_range(target):
        return None
    k = cursor.key()
    if k[:-8] != stem:
        return None
    return cursor.value(), keys.version_of(k)


class Applier:
    """Applies commands inside a write transaction: one object per transaction, `start`ed
    for each group in turn (the hot path of a node's job: a Put with a session, see `run`)."""

    __slots__ = ("txn", "data", "sessions", "gprefix", "bucket", "last_version", "ttl",
                 "_cursor", "_bprefix")

    def __init__(self, txn, data_db, sessions_db, gprefix: bytes = b"", bucket: int = 0,
                 last_version: int = 0, ttl: int = SESSION_TTL_NS) -> None:
        self.txn = txn
        self.data = data_db
        self.sessions = sessions_db
        self.ttl = ttl
        self._cursor = None  # made when a Delete or Cas needs one
        self.start(gprefix, bucket, last_version)

    def start(self, gprefix: bytes, bucket: int, last_version: int) -> None:
        """Apply the next commands to group `gprefix`'s sessions and `bucket`'s data."""
        self.gprefix = gprefix
        self.bucket = bucket
        # (None for a bucket outside u32: only the general path then, which raises)
        self._bprefix = (_BUCKET.pack(bucket) if type(bucket) is int and 0 <= bucket <= 0xFFFFFFFF
                         else None)
        self.last_version = last_version

    def run(self, cmd):
        if type(cmd) is Put:
            # The common case, inline: a Put of a short, well-formed key and value with an
            # int session (anything else takes the general path, `_run`, which gives the
            # precise Rejected). The session row is read and written as `_run` does.
            key, value, ts, session, seq = cmd.key, cmd.value, cmd.ts, cmd.session, cmd.seq
            if type(key) is bytes and type(value) is bytes and type(ts) is int \
                    and len(value) <= MAX_VALUE_BYTES and 0 <= ts < keys.MAX_VERSION \
                    and type(session) is int and 0 <= session <= _U64_MAX \
                    and self._bprefix is not None:
                esc = key.replace(b"\x00", b"\x00\xff")  # keys.escape
                if len(esc) <= keys.INLINE_BYTES:
                    lv = self.last_version
                    txn = self.txn
                    skey = self.gprefix + _SESSION_U64.pack(0xCF, session)
                    row = txn.get(skey, db=self.sessions)
                    if row is not None:
                        if len(row) == _SROW.size and row[0] == codec.STRUCT_FORMAT:
                            _f, last_seq, result, last_ts = _SROW.unpack(row)
                        else:
                            last_seq, result, last_ts = codec.decode_session(row)
                        if last_ts + self.ttl >= (ts if ts > lv else lv):  # not expired
                            if seq == last_seq:
                                return result
                            if seq < last_seq:
                                return Stale(seq, last_seq)
                    v = ts if ts > lv else lv + 1
                    self.last_version = v
                    # keys.key_stem + keys.inv(v) -> keys.encode_value, of an inline key
                    txn.put(self._bprefix + esc + _TERM_INV.pack(1, keys.MAX_VERSION - v),
                            b"\x01" + value, db=self.data)
                    txn.put(skey, _SROW.pack(codec.STRUCT_FORMAT, seq, v, v)
                            if type(seq) is int and 0 <= seq <= _U64_MAX
                            else codec.encode_session(seq, v, v), db=self.sessions)
                    return v
        return self._run(cmd)

    def _run(self, cmd):
        if isinstance(cmd, Noop) or cmd is None:
            return None
        if isinstance(cmd, Rejected):
            return cmd
        if isinstance(cmd, Batch):
            return [self.run(c) if not isinstance(c, Batch) else Rejected("nested Batch")
                    for c in cmd.commands]
        if not isinstance(cmd, (Put, Delete, Cas)):
            return Rejected(f"unknown command {type(cmd).__name__}")
        try:
            _validate(cmd)
            if cmd.session is None:
                skey = None
            else:  # encoding the session id validates it too
                skey = self.gprefix + codec.encode_session_key(cmd.session)
        except InvalidInput as exc:
            return Rejected(str(exc))
        if skey is None:
            return self._execute(cmd)
        now = max(cmd.ts, self.last_version)
        row = self.txn.get(skey, db=self.sessions)
        if row is not None:
            last_seq, result, last_ts = codec.decode_session(row)
            if last_ts + self.ttl >= now:  # not expired
                if cmd.seq == last_seq:
                    return result
                if cmd.seq < last_seq:
                    return Stale(cmd.seq, last_seq)
        result = self._execute(cmd)
        self.txn.put(skey, codec.encode_session(cmd.seq, result, max(now, self.last_version)),
                     db=self.sessions)
        return result

    def _next_version(self, ts: int) -> int:
        v = max(ts, self.last_version + 1)
        self.last_version = v
        return v

    def _execute(self, cmd):
        stem = keys.key_stem(self.bucket, cmd.key)
        if isinstance(cmd, Put):
            v = self._next_version(cmd.ts)
            self.txn.put(stem + keys.inv(v), keys.encode_value(cmd.key, cmd.value), db=self.data)
            return v
        if self._cursor is None:
            self._cursor = self.txn.cursor(db=self.data)
        cur = newest(self._cursor, stem, None)
        live = cur is not None and not keys.is_tombstone(cur[0])
        if isinstance(cmd, Delete):
            v = self._next_version(cmd.ts)
            if live:
                self.txn.put(stem + keys.inv(v), keys.encode_value(cmd.key, None), db=self.data)
            return (live, v)
        # Cas
        current = keys.decode_value(cur[0]) if live else None
        if current != cmd.expected:
            return (False, cur[1] if live else None)
        v = self._next_version(cmd.ts)
        if cmd.new is not None or live:
            self.txn.put(stem + keys.inv(v), keys.encode_value(cmd.key, cmd.new), db=self.data)
        return (True, v)


def _validate(cmd) -> None:
    codec.check_key(cmd.key)
    if isinstance(cmd, Put):
        codec.check_value(cmd.value)
    elif isinstance(cmd, Cas):
        if cmd.expected is not None:
            codec.check_value(cmd.expected)
        if cmd.new is not None:
            codec.check_value(cmd.new)
    if not isinstance(cmd.ts, int) or cmd.ts < 0 or cmd.ts >= keys.MAX_VERSION:
        raise InvalidInput(f"bad timestamp {cmd.ts!r}")


def scan(txn, data_db, bucket: int, prefix: bytes, start_after: bytes | None, limit: int,
         max_bytes: int, as_of: int | None):
    """Visible (key, value, version) in key order; `more` is True when stopped by a limit."""
    rng = keys.prefix_range_start(bucket, prefix)
    filter_prefix = len(keys.escape(prefix)) > keys.INLINE_BYTES
    seek = rng
    if start_after is not None:
        seek = max(rng, keys.after_stem(keys.key_stem(bucket, start_after)))
    target = keys.inv(as_of) if as_of is not None else None
    items: list[tuple[bytes, bytes, int]] = []
    size = 0
    cur = txn.cursor(db=data_db)
    ok = cur.set_range(seek)
    while ok:
        k = cur.key()
        if not k.startswith(rng):
            break
        stem = k[:-8]
        if target is not None and k[-8:] < target:  # newest versions are too new: skip them
            if not cur.set_range(stem + target):
                break
            if cur.key()[:-8] != stem:
                continue  # no version old enough; now on the next key
            k = cur.key()
        v = cur.value()
        if not keys.is_tombstone(v):
            ukey = keys.user_key(stem, v)
            if not filter_prefix or ukey.startswith(prefix):
                value = keys.decode_value(v)
                n = len(ukey) + len(value)
                if len(items) >= limit or (items and size + n > max_bytes):
                    return items, True
                items.append((ukey, value, keys.version_of(k)))
                size += n
        ok = _next_stem(cur, stem)
    return items, False


def _next_stem(cur, stem: bytes) -> bool:
    """Move the cursor to the first record of the next key; False at the end."""
    for _ in range(3):  # few versions per key are the common case: step
        if not cur.next():
            return False
        if cur.key()[:-8] != stem:
            return True
    return cur.set_range(keys.after_stem(stem))


def gc(txn, data_db, bucket: int, before_ts: int, max_work: int, cursor: bytes | None):
    """Returns (resume cursor or None when done, versions deleted)."""
    bp = keys.bucket_prefix(bucket)
    target = keys.inv(before_ts)
    cur = txn.cursor(db=data_db)
    ok = cur.set_range(cursor if cursor is not None and cursor.startswith(bp) else bp)
    work = deleted = 0
    while ok:
        k = cur.key()
        if not k.startswith(bp):
            return None, deleted
        if work >= max_work:
            return k[:-8], deleted
        stem = k[:-8]
        work += 1
        if k[-8:] < target:
            if not cur.set_range(stem + target):
                return None, deleted
            if cur.key()[:-8] != stem:
                continue
        # On the newest version at or before before_ts: keep it, delete every older one. A
        # tombstone goes too, but last, so that a pass cut short never uncovers older data.
        tomb = cur.key() if keys.is_tombstone(cur.value()) else None
        ok = cur.next()
        progress = 0
        while ok:
            k = cur.key()
            if k[:-8] != stem:
                break
            if work >= max_work and progress:
                return stem, deleted  # resume this key (its kept versions come first)
            progress += 1
            cur.delete()
            deleted += 1
            work += 1
            ok = bool(cur.key())
        if tomb is not None:
            nxt = cur.key() if ok else None
            txn.delete(tomb, db=data_db)
            deleted += 1
            work += 1
            ok = nxt is not None and cur.set_range(nxt)
    return None, deleted
