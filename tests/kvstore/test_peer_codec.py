"""The binary raft batch of the peer wire (kvstore/codec.py): every message shape round-trips
through a real peer frame (client/wire.py framing, split anywhere), values that do not fit are
refused when encoding, and every malformed batch a peer could send is a CodecError."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given, settings, strategies as st

from client.wire import MAX_FRAME_BYTES, MAX_VALUE_BYTES, FrameDecoder
from kvstore import codec
from raft.types import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)

u64 = st.integers(0, 2**64 - 1)
small = st.integers(0, 1000)
ints = st.one_of(small, u64)  # mostly small, like real terms and indexes, sometimes huge
groups = st.one_of(st.integers(0, 65), st.integers(0, 2**32 - 1))
entries = st.builds(Entry, ints, ints, st.sampled_from(list(EntryType)), st.binary(max_size=300))
node_ids = st.lists(ints, max_size=5).map(tuple)
snapshots = st.builds(
    Snapshot,
    st.builds(SnapshotMetadata, ints, ints, st.builds(ConfState, node_ids, node_ids, node_ids)),
    st.binary(max_size=64))
messages = st.builds(
    Message, st.sampled_from(list(MessageType)), ints, ints, ints, ints, ints,
    st.lists(entries, max_size=5).map(tuple), ints, st.booleans(), ints,
    st.none() | snapshots, st.binary(max_size=16))
gossip = st.builds(lambda n, led: ["leaders", n, [list(x) for x in led]],
                   st.integers(1, 9), st.lists(st.tuples(st.integers(0, 63), small), max_size=8))


def frame_of(msgs, items=()) -> bytes:
    buf = codec.new_batch()
    for g, m in msgs:
        codec.append_message(buf, g, m)
    return bytes(codec.seal(buf, len(msgs), [codec.pack_item(i) for i in items]))


def blob_of(msgs) -> bytes:
    [[blob]] = FrameDecoder().feed(frame_of(msgs))
    return blob


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(groups, messages), min_size=1, max_size=8),
       st.lists(gossip, max_size=3), st.data())
def test_batches_round_trip_through_peer_frames_split_anywhere(msgs, items, data):
    frame = frame_of(msgs, items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(frame)), max_size=4)))
    dec = FrameDecoder()
    frames = []
    prev = 0
    for c in [*cuts, len(frame)]:
        frames += dec.feed(frame[prev:c])
        prev = c
    assert len(frames) == 1
    [blob, *rest] = frames[0]
    assert rest == items
    assert type(blob) is bytes and codec.batch_count(blob) == len(msgs)
    assert codec.decode_batch(blob) == msgs


@given(st.lists(gossip, min_size=1, max_size=20))
def test_a_frame_of_items_only_has_no_batch(items):
    [frame] = FrameDecoder().feed(frame_of([], items))
    assert frame == items


def test_the_usual_frame_is_the_batch_buffer_itself():
    buf = codec.new_batch()
    codec.append_message(buf, 1, Message(MessageType.HEARTBEAT, 2, 1, 3))
    assert codec.seal(buf, 1) is buf  # no copy
    [[blob]] = FrameDecoder().feed(bytes(buf))
    assert blob[0] == codec.RAFT_BATCH


def test_large_values_and_many_entries():
    big = Entry(3, 10, EntryType.NORMAL, b"\x00\xff" * (MAX_VALUE_BYTES // 2))
    many = tuple(Entry(3, 11 + i, EntryType(i % 2), bytes([i % 256]) * (i % 50))
                 for i in range(2000))
    snap = Snapshot(SnapshotMetadata(9, 3, ConfState((1, 2, 3), (4,), (1, 2))), b"s" * 500_000)
    msgs = [(1, Message(MessageType.APP, 2, 1, 3, 3, 9, (big,), 9)),
            (2, Message(MessageType.APP, 2, 1, 3, 3, 10, many, 9)),
            (3, Message(MessageType.SNAP, 2, 1, 3, snapshot=snap))]
    assert codec.decode_batch(blob_of(msgs)) == msgs


def test_decoded_messages_have_every_field_set():
    # decode_batch stores Message's fields one by one (codec._MESSAGE_FIELDS, checked against
    # raft/types.py at import): a field it missed would be unset, and this would raise
    [(_g, m)] = codec.decode_batch(blob_of([(1, Message(MessageType.APP_RESP, 2, 1, 3))]))
    assert {f.name: getattr(m, f.name) for f in dataclasses.fields(Message)} == {
        f.name: getattr(Message(MessageType.APP_RESP, 2, 1, 3), f.name)
        for f in dataclasses.fields(Message)}
    assert codec._MESSAGE_FIELDS == tuple(f.name for f in dataclasses.fields(Message))


@pytest.mark.parametrize("group, m", [
    (2**32, Message(MessageType.APP, 2, 1, 1)),
    (-1, Message(MessageType.APP, 2, 1, 1)),
    (1, Message(MessageType.APP, 2, 1, -5)),
    (1, Message(MessageType.APP, 2, 1, 2**64)),
    (1, Message(MessageType.APP, 2, 1, 1.5)),
    (1, Message(MessageType.APP, 2, 1, 1, entries=(Entry(-1, 1),))),
    (1, Message(MessageType.APP, 2, 1, 1, entries=(Entry(1, 1, EntryType.NORMAL, "str"),))),
    (1, Message(MessageType.SNAP, 2, 1, 1, snapshot=Snapshot(
        SnapshotMetadata(1, 1, ConfState((-2,)))))),
])
def test_values_that_do_not_fit_are_refused_and_leave_the_batch_as_it_was(group, m):
    buf = codec.new_batch()
    codec.append_message(buf, 1, Message(MessageType.HEARTBEAT, 2, 1, 3))
    before = bytes(buf)
    with pytest.raises(codec.CodecError):
        codec.append_message(buf, group, m)
    assert bytes(buf) == before


def test_a_frame_larger_than_the_wire_allows_is_refused():
    buf = codec.new_batch()
    huge = Entry(1, 1, EntryType.NORMAL, b"x" * (MAX_FRAME_BYTES // 2))
    codec.append_message(buf, 1, Message(MessageType.APP, 2, 1, 1, entries=(huge, huge)))
    with pytest.raises(codec.CodecError):
        codec.seal(buf, 1)


SAMPLE = [
    (1, Message(MessageType.APP, 2, 1, 7, 7, 40, (Entry(7, 41, EntryType.NORMAL, b"v" * 30),
                                                  Entry(7, 42, EntryType.CONF_CHANGE, b"")), 39)),
    (2, Message(MessageType.HEARTBEAT, 2, 1, 7, commit=39, context=b"ctx")),
    (3, Message(MessageType.SNAP, 2, 1, 7, reject=True,
                snapshot=Snapshot(SnapshotMetadata(5, 6, ConfState((1, 2), (3,))), b"data"))),
]


def test_every_truncation_of_a_batch_is_a_codec_error():
    blob = blob_of(SAMPLE)
    for n in range(len(blob)):
        with pytest.raises(codec.CodecError):
            codec.decode_batch(blob[:n])


def _patched(blob: bytes, offset: int, fmt: str, value: int) -> bytes:
    b = bytearray(blob)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


MSG0 = 5  # the first message's header starts after kind and count
ENT0 = MSG0 + 70  # SAMPLE's first message has no context: its first entry follows


@pytest.mark.parametrize("mutate", [
    lambda b: b + b"\x00",  # bytes after the last message
    lambda b: b"\x02" + b[1:],  # unknown batch kind
    lambda b: b"",
    lambda b: _patched(b, 1, "<I", 4),  # more messages announced than present
    lambda b: _patched(b, 1, "<I", 2),  # fewer: the rest is left over
    lambda b: _patched(b, 1, "<I", 2**32 - 1),
    lambda b: _patched(b, MSG0 + 4, "<B", 0),  # no message type 0
    lambda b: _patched(b, MSG0 + 4, "<B", 15),
    lambda b: _patched(b, MSG0 + 4, "<B", 255),
    lambda b: _patched(b, MSG0 + 5, "<B", 4),  # an unknown flag
    lambda b: _patched(b, MSG0 + 5, "<B", 2),  # a snapshot flag without a snapshot
    lambda b: _patched(b, MSG0 + 62, "<I", 3),  # one entry more than present
    lambda b: _patched(b, MSG0 + 62, "<I", 2**32 - 1),
    lambda b: _patched(b, MSG0 + 66, "<I", 2**32 - 1),  # context past the end
    lambda b: _patched(b, ENT0 + 16, "<B", 2),  # no entry type 2
    lambda b: _patched(b, ENT0 + 17, "<I", 2**31),  # entry data past the end
])
def test_malformed_batches_are_codec_errors(mutate):
    with pytest.raises(codec.CodecError):
        codec.decode_batch(mutate(blob_of(SAMPLE)))


def test_malformed_snapshot_parts_are_codec_errors():
    blob = blob_of(SAMPLE[2:])  # one SNAP message: header, then the snapshot's 32 bytes
    snap = MSG0 + 70
    for offset, value in [(16, 2**32 - 1), (20, 2**31), (24, 2**32 - 1), (28, 2**31), (28, 3)]:
        with pytest.raises(codec.CodecError):
            codec.decode_batch(_patched(blob, snap + offset, "<I", value))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_batches_decode_or_raise_codec_error_only(data):
    blob = bytearray(blob_of(SAMPLE))
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    try:
        out = codec.decode_batch(bytes(blob))
    except codec.CodecError:
        return
    assert all(isinstance(m, Message) for _g, m in out)


@given(st.binary(max_size=200))
def test_random_bytes_are_codec_errors_or_messages(b):
    try:
        codec.decode_batch(b)
    except codec.CodecError:
        pass
