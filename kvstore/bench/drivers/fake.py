"""An in-memory driver for testing the generator itself: a dict, optional latency and stalls."""

from __future__ import annotations

import bisect

import trio

from kvstore.bench.drivers.base import Driver, DriverError


class FakeDriver(Driver):
    """`latency_s` per request; between `stall_from_s` and `stall_until_s` (seconds after
    open) every request waits until the stall ends, as a store pausing for GC or an election
    would; `fail_every` makes every n-th request fail with kind "fake"."""

    name = "fake"
    durability = "none (in-memory fake)"

    def __init__(self, latency_s: float = 0.0, stall_from_s: float | None = None,
                 stall_until_s: float | None = None, fail_every: int = 0) -> None:
        self.latency_s = latency_s
        self.stall_from_s = stall_from_s
        self.stall_until_s = stall_until_s
        self.fail_every = fail_every
        self.data: dict[bytes, bytes] = {}
        self._sorted_keys: list[bytes] = []
        self._requests = 0
        self._opened_at = 0.0

    async def open(self, nursery: trio.Nursery) -> None:
        self._opened_at = trio.current_time()

    async def _serve(self) -> None:
        self._requests += 1
        if self.fail_every and self._requests % self.fail_every == 0:
            raise DriverError("fake", "injected failure")
        if self.stall_from_s is not None and self.stall_until_s is not None:
            now = trio.current_time() - self._opened_at
            if self.stall_from_s <= now < self.stall_until_s:
                await trio.sleep_until(self._opened_at + self.stall_until_s)
        if self.latency_s:
            await trio.sleep(self.latency_s)
        else:
            await trio.lowlevel.checkpoint()

    async def read(self, key: bytes) -> bytes | None:
        await self._serve()
        return self.data.get(key)

    async def update(self, key: bytes, value: bytes) -> None:
        await self._serve()
        if key not in self.data:
            bisect.insort(self._sorted_keys, key)
        self.data[key] = value

    async def scan(self, prefix: bytes, count: int) -> int:
        await self._serve()
        i = bisect.bisect_left(self._sorted_keys, prefix)
        return sum(1 for k in self._sorted_keys[i : i + count] if k.startswith(prefix))
