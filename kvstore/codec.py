"""Raft messages <-> plain msgpack-able lists, for the peer transport.

A message becomes one flat list (positional, no field names: the transport carries thousands
per second), prefixed with its Raft group id:

    [group, type, to, frm, term, log_term, index, entries, commit, reject, reject_hint,
     snapshot, context]

`entries` is flat too, four items per entry: [term, index, type, data, term, index, ...].
`snapshot` is None or [index, term, voters, learners, voters_outgoing, data].
Decoding validates shapes and types and raises `CodecError` for anything else: a peer's
frame is input like any other and must never crash the node.
"""

from __future__ import annotations

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
    """A peer sent a raft message we cannot decode."""


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
