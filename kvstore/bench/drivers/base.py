"""The small interface every store driver implements, and driver errors.

A driver is created in each generator process from a plain dict spec (so worker processes can
build their own), opened once with a nursery for any background tasks (connection readers),
then used concurrently by many tasks. `durability` says in one line what an acknowledged write
survives on this store, so the comparison table can say it per store.
"""

from __future__ import annotations

import trio


class DriverError(Exception):
    """A request the store answered with an error; `kind` names it in the error counts."""

    def __init__(self, kind: str, message: str = "") -> None:
        super().__init__(f"{kind}: {message}" if message else kind)
        self.kind = kind


class Unsupported(DriverError):
    def __init__(self, what: str) -> None:
        super().__init__("unsupported", what)


class Driver:
    name = "driver"
    durability = "unknown"

    async def open(self, nursery: trio.Nursery) -> None:
        """Connect; background tasks (if any) go into `nursery`, which outlives every request."""

    async def close(self) -> None:
        """Release connections; must not raise if open() failed half-way."""

    async def read(self, key: bytes) -> bytes | None:
        raise NotImplementedError

    async def update(self, key: bytes, value: bytes) -> None:
        raise NotImplementedError

    async def insert(self, key: bytes, value: bytes) -> None:
        await self.update(key, value)

    async def scan(self, prefix: bytes, count: int) -> int:
        """Read the first `count` records (in key order) whose keys start with `prefix`;
        returns how many. (A prefix, not a start key: kvstore's client scans by prefix.)"""
        raise Unsupported(f"{self.name} has no ordered range scan")

    def describe(self) -> dict:
        return {"name": self.name, "durability": self.durability}

    @staticmethod
    def error_kind(exc: BaseException) -> str:
        """A short stable name for an error, used as a key in the error counts."""
        if isinstance(exc, DriverError):
            return exc.kind
        if isinstance(exc, (OSError, trio.BrokenResourceError, trio.ClosedResourceError)):
            return "connection"
        return type(exc).__name__
