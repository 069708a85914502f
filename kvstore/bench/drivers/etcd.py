"""etcd driver over the v3 HTTP/JSON gateway (/v3/kv/put, /v3/kv/range; keys base64).

The `etcd3` PyPI package breaks with current protobuf, and grpcio would not run under trio,
so this posts JSON over keep-alive HTTP/1.1. Reads are linearizable (etcd's default) unless
consistency is "serializable" (a local read on the member that gets the request).
"""

from __future__ import annotations

import base64
import json

import trio

from kvstore.bench.drivers.base import Driver, DriverError
from kvstore.bench.drivers.http11 import HttpPool

DURABILITY = ("3-node Raft; a write is acknowledged after a majority fsynced its WAL "
              "(etcd always fsyncs; batched)")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key with this prefix (etcd's range_end)."""
    p = bytearray(prefix)
    while p and p[-1] == 0xFF:
        p.pop()
    if not p:
        return b"\0"
    p[-1] += 1
    return bytes(p)


class EtcdDriver(Driver):
    name = "etcd"
    durability = DURABILITY

    def __init__(self, endpoints: list[str], consistency: str = "linearizable") -> None:
        if consistency not in ("linearizable", "serializable"):
            raise ValueError("etcd reads are linearizable or serializable")
        self.pool = HttpPool(endpoints)
        self.serializable = consistency == "serializable"

    def describe(self) -> dict:
        return {"name": self.name, "durability": self.durability,
                "reads": "serializable (local)" if self.serializable else "linearizable (ReadIndex)"}

    async def close(self) -> None:
        with trio.CancelScope(shield=True):
            await self.pool.aclose()

    async def _post(self, path: str, payload: dict) -> dict:
        status, body = await self.pool.post(path, json.dumps(payload).encode())
        if status != 200:
            try:
                message = json.loads(body).get("message") or body[:200].decode(errors="replace")
            except ValueError:
                message = body[:200].decode(errors="replace")
            raise DriverError(f"http-{status}", message)
        return json.loads(body)

    async def read(self, key: bytes) -> bytes | None:
        payload = {"key": _b64(key)}
        if self.serializable:
            payload["serializable"] = True
        reply = await self._post("/v3/kv/range", payload)
        kvs = reply.get("kvs")
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None

    async def update(self, key: bytes, value: bytes) -> None:
        await self._post("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    async def scan(self, prefix: bytes, count: int) -> int:
        payload = {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)), "limit": count}
        if self.serializable:
            payload["serializable"] = True
        reply = await self._post("/v3/kv/range", payload)
        return len(reply.get("kvs") or ())
