"""The thin kvstore client: `Client` (blocking, thread-safe) and `AsyncClient` (trio).

    from client import Client
    with Client(["127.0.0.1:7001", "127.0.0.1:7002"]) as c:
        c.put(b"k", b"v")
        c.get(b"k")

Errors are in `client.errors` (Unavailable / OutcomeUnknown / InvalidRequest, base KVError).
"""

from client.aio import AsyncClient
from client.errors import ClientClosed, Compacted, InvalidRequest, KVError, OutcomeUnknown, Unavailable
from client.sync import Client

__all__ = [
    "Client",
    "AsyncClient",
    "KVError",
    "Unavailable",
    "OutcomeUnknown",
    "InvalidRequest",
    "Compacted",
    "ClientClosed",
]
