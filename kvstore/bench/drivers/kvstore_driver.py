"""kvstore driver: the project's own trio AsyncClient (bucket-map routing, pipelined connections)."""

from __future__ import annotations

import trio

from kvstore.bench.drivers.base import Driver, DriverError

DURABILITY = ("Raft per bucket, 3 replicas; a write is acknowledged after a majority fsynced it "
              "to its Raft log (WAL: one fdatasync per node turn for all buckets; the applied "
              "state goes to LMDB in synced commits every 100 ms, redone from the WAL after a "
              "crash)")


class KvstoreDriver(Driver):
    name = "kvstore"
    durability = DURABILITY

    def __init__(self, endpoints: list[str], consistency: str = "linearizable", timeout_s: float = 5.0,
                 durability: str | None = None) -> None:
        if consistency not in ("linearizable", "follower"):
            raise ValueError("kvstore reads are linearizable or follower")
        self.endpoints = endpoints
        self.consistency = consistency
        self.timeout_s = timeout_s
        if durability:
            self.durability = durability
        self.client = None
        self._done = trio.Event()

    def describe(self) -> dict:
        return {"name": self.name, "durability": self.durability, "reads": self.consistency}

    async def open(self, nursery: trio.Nursery) -> None:
        await nursery.start(self._hold)

    async def _hold(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        from client import AsyncClient

        async with AsyncClient(self.endpoints, timeout=self.timeout_s) as client:
            self.client = client
            await client.bucket_map()
            # The load loop awaits these once per op: the client's own coroutines, with no
            # driver coroutine in between (the loop ignores what update/insert return).
            self.update = self.insert = client.put
            if self.consistency == "linearizable":
                self.read = client.get  # its default consistency
            task_status.started()
            await self._done.wait()

    async def close(self) -> None:
        self._done.set()

    def error_kind(self, exc: BaseException) -> str:
        from client import errors

        for cls, kind in ((errors.OutcomeUnknown, "outcome-unknown"), (errors.Unavailable, "unavailable"),
                          (errors.InvalidRequest, "invalid"), (errors.ClientClosed, "closed")):
            if isinstance(exc, cls):
                return kind
        return Driver.error_kind(exc)

    async def read(self, key: bytes) -> bytes | None:
        return await self.client.get(key, consistency=self.consistency)

    async def update(self, key: bytes, value: bytes) -> None:
        await self.client.put(key, value)

    async def scan(self, prefix: bytes, count: int) -> int:
        return len(await self.client.scan(prefix, limit=count, consistency=self.consistency))


__all__ = ["KvstoreDriver", "DriverError"]
