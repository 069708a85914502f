"""PySyncObj driver: the replicated dict behind the RESP front end of `kvstore bench pysyncobj-node`."""

from __future__ import annotations

import trio

from kvstore.bench.drivers.base import Driver
from kvstore.bench.drivers.resp import RespPool

DEFAULT_DURABILITY = ("3-node PySyncObj (Raft) ReplDict; a write is acknowledged once committed by a "
                      "majority; file journal is an mmap without fsync (survives a process crash, "
                      "not power loss); reads are local to the node (not linearizable)")


class PySyncObjDriver(Driver):
    name = "pysyncobj"

    def __init__(self, endpoints: list[str], connections: int = 4, durability: str | None = None) -> None:
        self.pool = RespPool(endpoints, connections)
        self.durability = durability or DEFAULT_DURABILITY

    async def open(self, nursery: trio.Nursery) -> None:
        await self.pool.open(nursery)

    async def close(self) -> None:
        await self.pool.aclose()

    async def read(self, key: bytes) -> bytes | None:
        return await self.pool.pick().call(b"GET", key)

    async def update(self, key: bytes, value: bytes) -> None:
        await self.pool.pick().call(b"SET", key, value)
