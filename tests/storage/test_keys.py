"""The data key layout sorts like the user keys (see storage/keys.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from storage import keys as K

short = st.binary(max_size=12) | st.lists(
    st.sampled_from([b"\x00", b"\x01", b"\xff", b"a"]), max_size=8).map(b"".join)
long_keys = st.tuples(st.sampled_from([b"a" * 478, b"a" * 479, b"\x00" * 240, b"b" * 500]),
                      short).map(b"".join)
any_key = short | long_keys


def same_long_head(a: bytes, b: bytes) -> bool:
    sa, sb = K.key_stem(1, a), K.key_stem(1, b)
    return K.is_long_stem(sa) and K.is_long_stem(sb) and sa[:-8] == sb[:-8]


@settings(max_examples=300)
@given(a=any_key, b=any_key, va=st.integers(0, 2**63), vb=st.integers(0, 2**63))
def test_order_matches_user_keys(a, b, va, vb):
    ka, kb = K.key_stem(1, a) + K.inv(va), K.key_stem(1, b) + K.inv(vb)
    assert len(ka) <= 511 and len(kb) <= 511  # LMDB's key limit
    if a == b:
        assert (ka < kb) == (va > vb)  # newest first
    elif not same_long_head(a, b):
        assert (ka < kb) == (a < b)
    # every version of a key sits before the seek target past it, and the next key after
    after = K.after_stem(K.key_stem(1, a))
    assert ka < after
    if a < b and not same_long_head(a, b):
        assert after <= kb


@given(key=any_key, prefix=short)
def test_prefix_range(key, prefix):
    stem = K.key_stem(1, key)
    if key.startswith(prefix):
        assert stem.startswith(K.prefix_range_start(1, prefix))


@given(key=any_key, value=st.one_of(st.none(), st.binary(max_size=20)))
def test_value_round_trip(key, value):
    raw = K.encode_value(key, value)
    assert K.decode_value(raw) == value
    assert K.is_tombstone(raw) == (value is None)
    assert K.user_key(K.key_stem(1, key), raw) == key
