"""Redis driver: GET/SET over the pipelined RESP client (single node: the non-replicated ceiling)."""

from __future__ import annotations

import trio

from kvstore.bench.drivers.base import Driver
from kvstore.bench.drivers.resp import RespPool

DEFAULT_DURABILITY = ("single node, no replication; AOF with appendfsync always (fsync before "
                      "the reply, group-committed per event-loop turn)")


class RedisDriver(Driver):
    name = "redis"
    default_durability = DEFAULT_DURABILITY

    def __init__(self, endpoints: list[str], connections: int = 4, durability: str | None = None) -> None:
        self.pool = RespPool(endpoints, connections)
        self.durability = durability or self.default_durability

    async def open(self, nursery: trio.Nursery) -> None:
        await self.pool.open(nursery)

    async def close(self) -> None:
        await self.pool.aclose()

    async def read(self, key: bytes) -> bytes | None:
        return await self.pool.pick().call(b"GET", key)

    async def update(self, key: bytes, value: bytes) -> None:
        await self.pool.pick().call(b"SET", key, value)
