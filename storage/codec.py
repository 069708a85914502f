"""Every on-disk and in-entry encoding of the storage engine, in one place.

Each record starts with a format version byte (`FORMAT`), then:
- a Raft log entry: struct `>QB` (term, entry type) followed by the raw entry data (a fixed
  header rather than msgpack so that `term(i)` needs no decoding of the payload);
- everything else: msgpack of a small list (hard state, conf state, snapshot record, apply
  state, session row, node metadata, commands, snapshot chunks);
except the two records written on every apply, which are a struct `>QQQ` after the format
byte `STRUCT_FORMAT` when their fields fit: the apply state (bucket, applied index, last
version) and a session row whose result is an int (last seq, result, last ts).
Decoding an unknown version raises `CorruptData`, so a future format is never misread.
"""

from __future__ import annotations

import struct
import threading

import msgpack

from client.wire import MAX_KEY_BYTES, MAX_VALUE_BYTES
from raft.types import ConfState, Entry, EntryType, HardState, Snapshot, SnapshotMetadata

from .commands import Batch, Cas, Delete, Noop, Put, Rejected, Stale
from .errors import CorruptData, InvalidInput, KeyTooLarge, ValueTooLarge

FORMAT = 1
_V = bytes([FORMAT])
_ENTRY_HEAD = struct.Struct(">BQB")


class _Packers(threading.local):
    """One msgpack Packer per thread: `msgpack.packb` builds a new Packer on every call,
    which costs more than packing a small list."""

    def __init__(self) -> None:
        self.pack = msgpack.Packer(use_bin_type=True).pack


_packers = _Packers()


def pack(obj) -> bytes:
    return _V + _packers.pack(obj)


def unpack(raw) -> object:
    if not raw or raw[0] != FORMAT:
        raise CorruptData(f"unknown record format {raw[:1]!r}")
    try:
        return msgpack.unpackb(memoryview(raw)[1:], raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise CorruptData(f"malformed record: {exc}") from None


# -- raft ------------------------------------------------------------------------------------


def encode_entry(e: Entry) -> bytes:
    return _ENTRY_HEAD.pack(FORMAT, e.term, e.type) + e.data


def entry_term(raw) -> int:
    if raw[0] != FORMAT:
        raise CorruptData(f"unknown entry format {raw[0]}")
    return _ENTRY_HEAD.unpack_from(raw)[1]


def decode_entry(index: int, raw) -> Entry:
    v, term, typ = _ENTRY_HEAD.unpack_from(raw)
    if v != FORMAT:
        raise CorruptData(f"unknown entry format {v}")
    return Entry(term, index, EntryType(typ), bytes(raw[_ENTRY_HEAD.size :]))


def encode_hard_state(hs: HardState) -> bytes:
    return pack([hs.term, hs.vote, hs.commit])


def decode_hard_state(raw) -> HardState:
    term, vote, commit = unpack(raw)
    return HardState(term, vote, commit)


def conf_state_list(cs: ConfState) -> list:
    return [list(cs.voters), list(cs.learners), list(cs.voters_outgoing)]


def conf_state_from(obj) -> ConfState:
    voters, learners, outgoing = obj
    return ConfState(tuple(voters), tuple(learners), tuple(outgoing))


def encode_conf_state(cs: ConfState) -> bytes:
    return pack(conf_state_list(cs))


def decode_conf_state(raw) -> ConfState:
    return conf_state_from(unpack(raw))


def metadata_list(m: SnapshotMetadata) -> list:
    return [m.index, m.term, conf_state_list(m.conf_state)]


def metadata_from(obj) -> SnapshotMetadata:
    index, term, cs = obj
    return SnapshotMetadata(index, term, conf_state_from(cs))


def encode_snapshot(s: Snapshot) -> bytes:
    return pack([metadata_list(s.metadata), s.data])


def decode_snapshot(raw) -> Snapshot:
    meta, data = unpack(raw)
    return Snapshot(metadata_from(meta), data)


# -- apply state and sessions ---------------------------------------------------------------


# The apply state and the common session row (an int result: a Put's version) are fixed
# structs after their own format byte (STRUCT_FORMAT): they are written once per group and
# per command on every apply. Other values (out of range, a tuple result) use msgpack.
STRUCT_FORMAT = 2
_STRUCT3 = struct.Struct(">BQQQ")
_U64_MAX = (1 << 64) - 1
_SESSION_U64 = struct.Struct(">BQ")


def encode_apply_state(bucket: int, applied: int, last_version: int) -> bytes:
    if type(bucket) is int and type(applied) is int and type(last_version) is int \
            and 0 <= bucket <= _U64_MAX and 0 <= applied <= _U64_MAX \
            and 0 <= last_version <= _U64_MAX:
        return _STRUCT3.pack(STRUCT_FORMAT, bucket, applied, last_version)
    return pack([bucket, applied, last_version])


def decode_apply_state(raw) -> tuple[int, int, int]:
    if raw and raw[0] == STRUCT_FORMAT:
        return _unpack3(raw)
    bucket, applied, version = unpack(raw)
    return bucket, applied, version


def _unpack3(raw) -> tuple[int, int, int]:
    try:
        _f, a, b, c = _STRUCT3.unpack(raw)
    except struct.error as exc:
        raise CorruptData(f"malformed record: {exc}") from None
    return a, b, c


def encode_session_key(session) -> bytes:
    """msgpack of the session id; an int in u64 range always as msgpack's 9-byte uint64 form
    (one struct pack: cheaper than msgpack, and still one encoding per id)."""
    if type(session) is int and 0 <= session <= _U64_MAX:
        return _SESSION_U64.pack(0xCF, session)
    if isinstance(session, bool) or not isinstance(session, (int, bytes)):
        raise InvalidInput(f"session must be int or bytes, not {type(session).__name__}")
    if isinstance(session, int):
        if 0 <= session <= _U64_MAX:  # an int subclass
            return _SESSION_U64.pack(0xCF, int(session))
        if session < -(1 << 63) or session > _U64_MAX:
            raise InvalidInput(f"session id {session} is out of range")
    return msgpack.packb(session, use_bin_type=True)


def result_obj(result):
    """A command result as msgpack-able data (for the session table and snapshots)."""
    if isinstance(result, tuple):
        return list(result)
    return result


def result_from(obj):
    return tuple(obj) if isinstance(obj, list) else obj


def encode_session(last_seq: int, result, last_ts: int) -> bytes:
    if type(result) is int and type(last_seq) is int and type(last_ts) is int \
            and 0 <= last_seq <= _U64_MAX and 0 <= result <= _U64_MAX \
            and 0 <= last_ts <= _U64_MAX:
        return _STRUCT3.pack(STRUCT_FORMAT, last_seq, result, last_ts)
    return pack([last_seq, result_obj(result), last_ts])


def decode_session(raw) -> tuple[int, object, int]:
    if raw and raw[0] == STRUCT_FORMAT:
        return _unpack3(raw)
    seq, result, ts = unpack(raw)
    return seq, result_from(result), ts


# -- commands --------------------------------------------------------------------------------

_PUT, _DELETE, _CAS, _NOOP, _BATCH = 1, 2, 3, 4, 5


def check_key(key) -> bytes:
    if not isinstance(key, bytes):
        raise InvalidInput(f"key must be bytes, not {type(key).__name__}")
    if len(key) > MAX_KEY_BYTES:
        raise KeyTooLarge(f"key of {len(key)} bytes exceeds MAX_KEY_BYTES={MAX_KEY_BYTES}")
    return key


def check_value(value) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidInput(f"value must be bytes, not {type(value).__name__}")
    if len(value) > MAX_VALUE_BYTES:
        raise ValueTooLarge(
            f"value of {len(value)} bytes exceeds MAX_VALUE_BYTES={MAX_VALUE_BYTES}")
    return value


def _check_session(session, seq) -> None:
    if session is not None:
        encode_session_key(session)
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise InvalidInput(f"seq must be a non-negative int, not {seq!r}")


def _command_list(cmd) -> list:
    if isinstance(cmd, Put):
        check_key(cmd.key)
        check_value(cmd.value)
        _check_session(cmd.session, cmd.seq)
        return [_PUT, cmd.key, cmd.value, cmd.ts, cmd.session, cmd.seq]
    if isinstance(cmd, Delete):
        check_key(cmd.key)
        _check_session(cmd.session, cmd.seq)
        return [_DELETE, cmd.key, cmd.ts, cmd.session, cmd.seq]
    if isinstance(cmd, Cas):
        check_key(cmd.key)
        if cmd.expected is not None:
            check_value(cmd.expected)
        if cmd.new is not None:
            check_value(cmd.new)
        _check_session(cmd.session, cmd.seq)
        return [_CAS, cmd.key, cmd.expected, cmd.new, cmd.ts, cmd.session, cmd.seq]
    if isinstance(cmd, Noop):
        return [_NOOP, cmd.index]
    if isinstance(cmd, Batch):
        if any(isinstance(c, Batch) for c in cmd.commands):
            raise InvalidInput("a Batch cannot contain a Batch")
        return [_BATCH, [_command_list(c) for c in cmd.commands]]
    raise InvalidInput(f"not a command: {type(cmd).__name__}")


def encode_command(cmd) -> bytes:
    """Bytes for a Raft entry's data. Raises KeyTooLarge / ValueTooLarge / InvalidInput."""
    return pack(_command_list(cmd))


def _command_from(obj):
    tag = obj[0]
    if tag == _PUT:
        return Put(obj[1], obj[2], obj[3], obj[4], obj[5])
    if tag == _DELETE:
        return Delete(obj[1], obj[2], obj[3], obj[4])
    if tag == _CAS:
        return Cas(obj[1], obj[2], obj[3], obj[4], obj[5], obj[6])
    if tag == _NOOP:
        return Noop(obj[1])
    if tag == _BATCH:
        return Batch(tuple(_command_from(c) for c in obj[1]))
    raise CorruptData(f"unknown command tag {tag!r}")


def decode_command(data) -> object:
    """The command in a Raft entry's data; empty data (an empty entry) is `Noop()`.

    Malformed data decodes to `Rejected(reason)` rather than raising: applying a log must
    never crash, and every replica rejects the same entry the same way."""
    if not data:
        return Noop()
    try:
        obj = unpack(data)
        if not isinstance(obj, list) or not obj:
            raise CorruptData("command is not a list")
        return _command_from(obj)
    except (CorruptData, IndexError, TypeError, ValueError) as exc:
        return Rejected(f"undecodable command: {exc}")


# -- results over the wire -------------------------------------------------------------------


def result_to_wire(result):
    """A command result as plain msgpack-able data (for the node's replies)."""
    if isinstance(result, Stale):
        return {"error": "stale", "seq": result.seq, "last_seq": result.last_seq}
    if isinstance(result, Rejected):
        return {"error": "rejected", "reason": result.reason}
    if isinstance(result, list):
        return [result_to_wire(r) for r in result]
    return result_obj(result)
