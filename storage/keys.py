"""Key layout of the MVCC data (named database `data`).

    bucket (4 bytes BE) + enc(key) + inverted version (8 bytes BE, 2**64-1 - version)

so all versions of a key are adjacent, newest first, and keys sort in user-key order.

enc(key) escapes 0x00 as 00 FF and ends with the terminator 00 01. Because 00 01 sorts below
00 FF and below every other byte, key b"a" (61 00 01) sorts before b"a\\x00..." (61 00 FF ...)
and before b"ab", and the escaped form of a prefix is a prefix of the escaped form of every key
that starts with it: a prefix scan is one range.

LMDB limits keys to 511 bytes, and user keys may be up to MAX_KEY_BYTES (4 KiB). A key whose
escaped form is longer than `INLINE_BYTES` is stored as

    escaped head (>= INLINE_BYTES bytes, never ending inside an escape pair)
    + 00 02 + xxh64(key) (8 bytes)

and the full key is kept in the value (see `encode_value`). Such a key still sorts correctly
against every shorter key and against long keys with a different head; only long keys that
share the same head sort among themselves by hash (pagination stays consistent because
`start_after` seeks by the same encoding). Two such keys with equal heads AND equal 64-bit
hashes would be confused; the probability is negligible and is accepted.

Values: one tag byte (0 tombstone, 1 value; +2 when the full key follows as
4-byte length + key, for long keys) then the value.
"""

from __future__ import annotations

import struct

import xxhash

INLINE_BYTES = 480
MAX_VERSION = (1 << 64) - 1
TERMINATOR = b"\x00\x01"
LONG_MARK = b"\x00\x02"
_BUCKET = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")

TOMBSTONE, VALUE, LONG_TOMBSTONE, LONG_VALUE = 0, 1, 2, 3


def bucket_prefix(bucket: int) -> bytes:
    return _BUCKET.pack(bucket)


def escape(key: bytes) -> bytes:
    return key.replace(b"\x00", b"\x00\xff")


def unescape(esc: bytes) -> bytes:
    return esc.replace(b"\x00\xff", b"\x00")


def key_stem(bucket: int, key: bytes) -> bytes:
    """Everything of a data key but the version: the same for all versions of `key`."""
    esc = escape(key)
    if len(esc) <= INLINE_BYTES:
        return _BUCKET.pack(bucket) + esc + TERMINATOR
    head = esc[:INLINE_BYTES]
    if head[-1] == 0:  # do not end inside an escape pair
        head = esc[: INLINE_BYTES + 1]
    return _BUCKET.pack(bucket) + head + LONG_MARK + _U64.pack(xxhash.xxh64_intdigest(key))


_SHORT_STEM_MAX = 4 + INLINE_BYTES + len(TERMINATOR)


def is_long_stem(stem: bytes) -> bool:
    return len(stem) > _SHORT_STEM_MAX  # long stems are at least 4 + 480 + 2 + 8 bytes


def inv(version: int) -> bytes:
    return _U64.pack(MAX_VERSION - version)


def version_of(data_key) -> int:
    return MAX_VERSION - _U64.unpack_from(data_key, len(data_key) - 8)[0]


def stem_of(data_key: bytes) -> bytes:
    return data_key[:-8]


def after_stem(stem: bytes) -> bytes:
    """A seek target past every version of the key with `stem` (and before longer keys)."""
    # A short key K sorts before a long key whose head equals enc(K) (... 00 02 ...).
    return stem[:-2] + LONG_MARK if not is_long_stem(stem) else stem + b"\xff" * 9


def prefix_range_start(bucket: int, prefix: bytes) -> bytes:
    """Seek target for the first key that starts with `prefix`; also the range's prefix,
    as long as the escaped prefix fits inline."""
    esc = escape(prefix)
    return _BUCKET.pack(bucket) + esc[:INLINE_BYTES]


def user_key(stem: bytes, value) -> bytes:
    if is_long_stem(stem):
        (n,) = _U32.unpack_from(value, 1)
        return bytes(value[5 : 5 + n])
    return unescape(stem[4:-2])


def encode_value(key: bytes, value: bytes | None) -> bytes:
    """The stored value of a version; None is a tombstone."""
    if len(key) + key.count(0) > INLINE_BYTES:  # the escaped key does not fit inline
        head = bytes([LONG_TOMBSTONE if value is None else LONG_VALUE]) + _U32.pack(len(key)) + key
    else:
        head = bytes([TOMBSTONE if value is None else VALUE])
    return head if value is None else head + value


def decode_value(raw) -> bytes | None:
    """The user value of a stored version, None for a tombstone."""
    tag = raw[0]
    if tag == VALUE:
        return bytes(raw[1:])
    if tag == TOMBSTONE or tag == LONG_TOMBSTONE:
        return None
    (n,) = _U32.unpack_from(raw, 1)
    return bytes(raw[5 + n :])


def is_tombstone(raw) -> bool:
    return raw[0] == TOMBSTONE or raw[0] == LONG_TOMBSTONE
