"""Errors raised by the storage engine. Every one is a `StorageError`."""

from __future__ import annotations


class StorageError(Exception):
    """Base of the storage engine's errors (not to be confused with raft's `StorageError`)."""


class InvalidInput(StorageError, ValueError):
    """The caller passed something the store cannot hold (bad type, gap in a log append...)."""


class KeyTooLarge(InvalidInput):
    """A key is longer than `client.wire.MAX_KEY_BYTES`."""


class ValueTooLarge(InvalidInput):
    """A value is longer than `client.wire.MAX_VALUE_BYTES`."""


class StoreLocked(StorageError):
    """Another process (or another `NodeStore` in this one) has the directory open."""


class DiskFull(StorageError):
    """The disk (or the file size limit) is full; the failed write left no trace."""


class StoreClosed(StorageError):
    """The store was used after `close()`."""


class SnapshotAborted(StorageError):
    """A snapshot stream became invalid (the group was removed or replaced meanwhile)."""


class CorruptData(StorageError):
    """Bytes on disk do not decode (unknown format version or malformed record)."""


class HistoryCompacted(StorageError):
    """A read `as_of` a time older than the bucket's GC horizon: the versions it would need
    may have been garbage-collected, so it is refused rather than answered wrongly."""
