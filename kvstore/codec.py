"""Raft messages on the peer wire: a binary batch per frame (hot path), and a msgpack list
form (the snapshot stream's hello).

Peer frames
-----------
A peer connection carries the framing of client/wire.py (4-byte big-endian length, then a
msgpack list of items); its first frame is the handshake [["peer", {"id": n}]]. Every later
frame is a list whose items are either

* a msgpack `bin` holding a **raft batch** (all the raft messages of one flush to that peer),
  told apart from every other item by its type (bytes, where other items are lists) and its
  first byte, the batch kind `RAFT_BATCH` (0x01); or
* a msgpack list: ["leaders", node_id, [[bucket, term], ...]] gossip (node.py).

The transport writes the usual frame [<bin raft batch>] with no msgpack call at all: the batch
is built in a bytearray that starts with room for the frame's 15-byte prefix (frame length,
fixarray-of-1 0x91, bin32 0xc6 + length, kind, count), filled in when the frame is sealed.

A raft batch (little-endian, fixed-size headers, no field names):

    kind u8 (=1) | count u32 | count x message

    message:  group u32 | type u8 | flags u8 (bit 0 reject, bit 1 has snapshot)
              | to u64 | frm u64 | term u64 | log_term u64 | index u64 | commit u64
              | reject_hint u64 | n_entries u32 | context_len u32        (70 bytes)
              | context bytes | n_entries x entry | snapshot (if flag bit 1)
    entry:    term u64 | index u64 | type u8 | data_len u32 (21 bytes) | data bytes
    snapshot: index u64 | term u64 | n_voters u32 | n_learners u32 | n_outgoing u32
              | data_len u32 (32 bytes) | voters, learners, outgoing: u64 each | data bytes

Fixed sizes cost bytes (70 per message where msgpack took ~25) but no Python work per field:
one `struct` call packs or unpacks a whole header. Decoding stores a `Message`'s fields
directly (no `__init__` call) and builds entries with raft.fastinit. Everything a peer can
get wrong raises `CodecError`: an unknown kind, message or entry type, unknown flag bits, a
header or data running past the end, bytes left over after `count` messages; integers and
bools cannot be of the wrong type (struct). A length that is wrong but lands on a valid
layout is not caught (there is no checksum: TCP's, and the peer being this same code, are
relied on). Values that do not fit (a negative or > 64-bit field, a group >= 2**32) are
refused when encoding, also with `CodecError`.

List form (`encode_message` / `decode_message`): a message as one flat msgpack-able list,
prefixed with its group:

    [group, type, to, frm, term, log_term, index, entries, commit, reject, reject_hint,
     snapshot, context]

`entries` is flat too, four items per entry: [term, index, type, data, term, index, ...].
`snapshot` is None or [index, term, voters, learners, voters_outgoing, data].
Decoding validates shapes and types and raises `CodecError` for anything else: a peer's
frame is input like any other and must never crash the node.
"""

from __future__ import annotations

import dataclasses
import struct

import msgpack

from client.wire import MAX_FRAME_BYTES
from raft.fastinit import new_entry
from raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)

_MESSAGE_TYPES = {int(t): t for t in MessageType}
_ENTRY_TYPES = {int(t): t for t in EntryType}
_INT_ONLY = {int}


class CodecError(ValueError):
    """A raft message we cannot decode (a peer's) or encode (a value out of range)."""


def encode_entries(entries) -> list:
    flat: list = []
    for e in entries:
        flat += (e.term, e.index, int(e.type), e.data)
    return flat


def decode_entries(flat) -> tuple[Entry, ...]:
    if not isinstance(flat, list) or len(flat) % 4:
        raise CodecError("entries must be a flat list of 4-tuples")
    out = []
    for i in range(0, len(flat), 4):
        term, index, typ, data = flat[i], flat[i + 1], flat[i + 2], flat[i + 3]
        if type(term) is not int or type(index) is not int or type(data) is not bytes:
            raise CodecError("bad entry")
        t = _ENTRY_TYPES.get(typ)
        if t is None:
            raise CodecError(f"bad entry type {typ!r}")
        out.append(Entry(term, index, t, data))
    return tuple(out)


def encode_snapshot(s: Snapshot | None):
    if s is None:
        return None
    m = s.metadata
    cs = m.conf_state
    return [m.index, m.term, list(cs.voters), list(cs.learners), list(cs.voters_outgoing), s.data]


def _ids(x) -> tuple[int, ...]:
    if not isinstance(x, list) or not all(type(i) is int for i in x):
        raise CodecError("node id list expected")
    return tuple(x)


def decode_snapshot(x) -> Snapshot | None:
    if x is None:
        return None
    if not isinstance(x, list) or len(x) != 6:
        raise CodecError("bad snapshot")
    index, term, voters, learners, outgoing, data = x
    if type(index) is not int or type(term) is not int or type(data) is not bytes:
        raise CodecError("bad snapshot metadata")
    cs = ConfState(_ids(voters), _ids(learners), _ids(outgoing))
    return Snapshot(SnapshotMetadata(index, term, cs), data)


def encode_message(group: int, m: Message) -> list:
    return [
        group,
        int(m.type),
        m.to,
        m.frm,
        m.term,
        m.log_term,
        m.index,
        encode_entries(m.entries) if m.entries else [],
        m.commit,
        m.reject,
        m.reject_hint,
        encode_snapshot(m.snapshot),
        m.context,
    ]


def decode_message(x) -> tuple[int, Message]:
    """-> (group, message). Raises CodecError on any malformed input."""
    if type(x) is not list or len(x) != 13:
        raise CodecError("a raft message is a list of 13 items")
    group, typ, to, frm, term, log_term, index, ents, commit, reject, hint, snap, ctx = x
    # one type check of the eight integers (bool is not int here: type(True) is bool)
    if {type(group), type(to), type(frm), type(term), type(log_term), type(index),
            type(commit), type(hint)} != _INT_ONLY:
        raise CodecError("integer field expected")
    t = _MESSAGE_TYPES.get(typ)
    if t is None:
        raise CodecError(f"unknown message type {typ!r}")
    if type(reject) is not bool or type(ctx) is not bytes:
        raise CodecError("bad reject/context field")
    # positional: Message(type, to, frm, term, log_term, index, entries, commit, reject,
    # reject_hint, snapshot, context) - about half the cost of keywords
    return group, Message(t, to, frm, term, log_term, index,
                          decode_entries(ents) if ents else (), commit, reject, hint,
                          decode_snapshot(snap) if snap is not None else None, ctx)


# -- the binary raft batch (see the module docstring) -------------------------------------------

RAFT_BATCH = 0x01  # a raft batch's first byte
_MSG = struct.Struct("<IBBQQQQQQQII")
_ENT = struct.Struct("<QQBI")
_SNAP = struct.Struct("<QQIIII")
# the frame prefix a batch's bytearray starts with: frame length (big-endian, client/wire.py),
# fixarray of 1, bin32 and its length (msgpack), then the batch's kind and count
_PREFIX = struct.Struct(">IBBIB")
_COUNT = struct.Struct("<I")
PREFIX_BYTES = _PREFIX.size + _COUNT.size  # 15
_MSG_SIZE = _MSG.size
_ENT_SIZE = _ENT.size
_BATCH_HEAD = 5  # kind + count, inside the bin

# type byte -> enum; None for a byte that is no type (index 0 of MessageType is unused)
_MSG_BY_BYTE = tuple(_MESSAGE_TYPES.get(i) for i in range(max(_MESSAGE_TYPES) + 1))
_ENT_BY_BYTE = tuple(_ENTRY_TYPES[i] for i in range(len(_ENTRY_TYPES)))
_REJECT = (False, True, False, True)  # flags -> reject, for the four valid flag values
# decode_batch sets these fields of a Message one by one: a field added to or renamed in
# raft/types.py must be added there too, so it stops the import instead of going unset
_MESSAGE_FIELDS = ("type", "to", "frm", "term", "log_term", "index", "entries", "commit",
                   "reject", "reject_hint", "snapshot", "context")
if tuple(f.name for f in dataclasses.fields(Message)) != _MESSAGE_FIELDS:
    raise ImportError("raft.types.Message's fields changed: update kvstore/codec.py decode_batch")
_EMPTY = bytes(10) + bytes([RAFT_BATCH]) + bytes(4)  # the prefix: lengths and count to come


def new_batch() -> bytearray:
    """An empty raft batch to `append_message` to: the frame prefix, filled in by `seal`."""
    return bytearray(_EMPTY)


def append_message(buf: bytearray, group: int, m: Message) -> None:
    """Encode `m` (of raft group `group`) at the end of `buf`; on CodecError `buf` is as it was."""
    start = len(buf)
    ents = m.entries
    ctx = m.context
    snap = m.snapshot
    try:
        buf += _MSG.pack(group, m.type, 2 + m.reject if snap is not None else m.reject,
                         m.to, m.frm, m.term, m.log_term, m.index, m.commit, m.reject_hint,
                         len(ents), len(ctx))
        if ctx:
            buf += ctx
        if ents:
            pack = _ENT.pack
            for e in ents:
                d = e.data
                buf += pack(e.term, e.index, e.type, len(d))
                buf += d
        if snap is not None:
            md = snap.metadata
            cs = md.conf_state
            ids = cs.voters + cs.learners + cs.voters_outgoing
            buf += _SNAP.pack(md.index, md.term, len(cs.voters), len(cs.learners),
                              len(cs.voters_outgoing), len(snap.data))
            buf += struct.pack(f"<{len(ids)}Q", *ids)
            buf += snap.data
    except (struct.error, TypeError, AttributeError) as exc:
        del buf[start:]
        raise CodecError(f"cannot encode {m!r:.200}: {exc}") from None


def pack_item(item) -> bytes:
    """A non-raft item (a list, e.g. leader gossip) for `seal`'s `items`."""
    try:
        return msgpack.packb(item, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode peer item: {exc}") from None


def seal(buf: bytearray, count: int, items: list[bytes] = ()) -> bytes | bytearray:
    """The peer frame (client/wire.py framing) of a batch of `count` messages (none: no batch
    item) and of the `pack_item`-packed `items`. With no items (the usual frame) this fills in
    the prefix `buf` starts with, and `buf` itself is the frame: no copy."""
    n = len(buf)
    if not items:
        if n - 4 > MAX_FRAME_BYTES:
            raise CodecError(f"frame of {n - 4} bytes exceeds {MAX_FRAME_BYTES}")
        _PREFIX.pack_into(buf, 0, n - 4, 0x91, 0xC6, n - 10, RAFT_BATCH)
        _COUNT.pack_into(buf, 11, count)
        return buf
    parts = []
    n_items = len(items)
    if count:
        n_items += 1
        _COUNT.pack_into(buf, 11, count)
        parts.append(b"\xc6" + (n - 10).to_bytes(4, "big"))
        parts.append(memoryview(buf)[10:])
    parts += items
    if n_items < 16:
        head = bytes([0x90 | n_items])
    elif n_items < 65536:
        head = b"\xdc" + n_items.to_bytes(2, "big")
    else:
        head = b"\xdd" + n_items.to_bytes(4, "big")
    body = b"".join([head, *parts])
    if len(body) > MAX_FRAME_BYTES:
        raise CodecError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
    return len(body).to_bytes(4, "big") + body


def batch_count(blob: bytes) -> int:
    """The message count a raft batch announces (0 if it is too short to say)."""
    return _COUNT.unpack_from(blob, 1)[0] if len(blob) >= _BATCH_HEAD else 0


def decode_batch(blob: bytes) -> list[tuple[int, Message]]:
    """A raft batch (the bin item of a peer frame) -> [(group, message), ...].
    Raises CodecError on any malformed input (nothing is returned then)."""
    end = len(blob)
    if end < _BATCH_HEAD or blob[0] != RAFT_BATCH:
        raise CodecError("not a raft batch")
    (count,) = _COUNT.unpack_from(blob, 1)
    if count * _MSG_SIZE > end:
        raise CodecError(f"a raft batch of {end} bytes cannot hold {count} messages")
    unpack = _MSG.unpack_from
    unpack_ent = _ENT.unpack_from
    msg_types = _MSG_BY_BYTE
    ent_types = _ENT_BY_BYTE
    new = object.__new__
    out = []
    append = out.append
    pos = _BATCH_HEAD
    try:
        for _ in range(count):
            (group, typ, flags, to, frm, term, log_term, index, commit, hint, n_ents,
             n_ctx) = unpack(blob, pos)
            pos += _MSG_SIZE
            t = msg_types[typ]
            if t is None or flags > 3:
                raise CodecError(f"bad message type {typ} or flags {flags}")
            if n_ctx:
                ctx = blob[pos:pos + n_ctx]
                pos += n_ctx
            else:
                ctx = b""
            if n_ents:
                ents = []
                for _ in range(n_ents):
                    e_term, e_index, e_type, n_data = unpack_ent(blob, pos)
                    pos += _ENT_SIZE
                    ents.append(new_entry(e_term, e_index, ent_types[e_type],
                                          blob[pos:pos + n_data]))
                    pos += n_data
                ents = tuple(ents)
            else:
                ents = ()
            if flags & 2:
                s_index, s_term, n_v, n_l, n_o, n_data = _SNAP.unpack_from(blob, pos)
                pos += _SNAP.size
                if 8 * (n_v + n_l + n_o) > end - pos:
                    raise CodecError("snapshot node ids past the end")
                ids = struct.unpack_from(f"<{n_v + n_l + n_o}Q", blob, pos)
                pos += 8 * len(ids)
                cs = ConfState(ids[:n_v], ids[n_v:n_v + n_l], ids[n_v + n_l:])
                snap = Snapshot(SnapshotMetadata(s_index, s_term, cs), blob[pos:pos + n_data])
                pos += n_data
            else:
                snap = None
            # every field stored right here: no Message.__init__ call (~70 ns a message;
            # _MESSAGE_FIELDS fails the import if Message's fields change)
            m = new(Message)
            m.type = t
            m.to = to
            m.frm = frm
            m.term = term
            m.log_term = log_term
            m.index = index
            m.entries = ents
            m.commit = commit
            m.reject = _REJECT[flags]
            m.reject_hint = hint
            m.snapshot = snap
            m.context = ctx
            append((group, m))
    except (struct.error, IndexError) as exc:  # a header past the end, an unknown entry type
        raise CodecError(f"malformed raft batch: {exc}") from None
    # a slice past the end is silently short, but it moved pos past the end: caught here
    if pos != end:
        raise CodecError(f"raft batch of {end} bytes: {count} messages end at {pos}")
    return out
