import pytest
from hypothesis import given, strategies as st

from client.wire import FrameDecoder, FrameError, bucket_of, encode_frame, hash_tag


@given(st.lists(st.lists(st.integers(-2**63, 2**64 - 1) | st.binary() | st.text(), max_size=4), min_size=1, max_size=5),
       st.integers(min_value=1, max_value=64))
def test_frames_round_trip_in_any_chunking(frames, chunk):
    data = b"".join(encode_frame(f) for f in frames)
    dec = FrameDecoder()
    out = []
    for i in range(0, len(data), chunk):
        out.extend(dec.feed(data[i : i + chunk]))
    assert out == frames


def test_oversized_and_malformed_frames_are_errors():
    with pytest.raises(FrameError):
        FrameDecoder(max_frame_bytes=10).feed(b"\x00\x00\x01\x00")
    with pytest.raises(FrameError):
        FrameDecoder().feed(b"\x00\x00\x00\x01\xc1")  # 0xc1 is never valid msgpack
    with pytest.raises(FrameError):
        FrameDecoder().feed(b"\x00\x00\x00\x01\x05")  # a bare int, not a list


def test_hash_tags_put_related_keys_in_one_bucket():
    assert hash_tag(b"user:{42}:name") == b"42"
    assert hash_tag(b"{}x") == b"{}x"
    assert bucket_of(b"a{u1}b", 64) == bucket_of(b"{u1}", 64)
    assert all(0 <= bucket_of(bytes([i]), 7) < 7 for i in range(256))


@given(st.lists(st.binary(max_size=5000), min_size=1, max_size=6), st.lists(st.integers(1, 9000), min_size=1, max_size=40))
def test_frames_round_trip_in_uneven_pieces(values, cuts):
    """Frames decoded straight out of a read, a rest kept, a large frame completed piece by
    piece: the same frames in the same order, and nothing left over."""
    frames = [[[i, v]] for i, v in enumerate(values)]
    data = b"".join(encode_frame(f) for f in frames)
    dec = FrameDecoder()
    out, pos, k = [], 0, 0
    while pos < len(data):
        step = cuts[k % len(cuts)]
        k += 1
        out.extend(dec.feed(data[pos : pos + step]))
        pos += step
    assert out == frames
    assert dec.feed(b"") == []


def test_a_bad_frame_after_a_good_one_in_one_read_is_an_error():
    good = encode_frame([[1, "get", {}]])
    with pytest.raises(FrameError):
        FrameDecoder().feed(good + b"\x00\x00\x00\x01\xc1")
    dec = FrameDecoder()
    assert dec.feed(good + b"\x00\x00") == [[[1, "get", {}]]]  # a partial length is kept
    with pytest.raises(FrameError):
        dec.feed(b"\x00\x01\x05")
