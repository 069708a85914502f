"""Client: the blocking, thread-safe client, a thin shell over AsyncClient.

Why this shape: the sync Client runs ONE AsyncClient in a trio loop on a background daemon
thread and hands every call to it. So all threads that share a Client share its connections
(one per node) and its pipelining: requests that several threads issue at the same moment go
out in one frame, and their replies come back in one. Thread safety is the trio loop's: all
client state lives on that one thread and is touched by nothing else.

Each call crosses threads twice: `TrioToken.run_sync_soon` (thread-safe) starts a task in the
client's nursery, and the caller blocks on a `queue.SimpleQueue` for the task's outcome. This
avoids `trio.from_thread.run`'s "not from a trio thread" restriction, so a Client may even be
used (blocking) from code that runs under some other trio loop.

Measured (client CPU per put against a trivial trio server on loopback, medians of three runs
on the shared, heavily loaded 2-core machine; `python -m tests.client.bench_overhead`): AsyncClient
sequential ~120 us, AsyncClient with 128 concurrent tasks ~21 us; this Client from one thread
~260 us (the two thread hand-offs cost ~45 us CPU and, under load, ~200 us of wake-up latency),
from 16 threads ~58 us, because the threads' requests share frames. A simpler design (a
blocking socket per thread) would save the hand-offs for a lone thread but lose the sharing
and duplicate the whole routing/retry logic in a blocking flavour; a program that needs every
microsecond uses AsyncClient directly.

Closing the client cancels calls still running; they raise ClientClosed. A Client dropped
without close() stops its thread when it is garbage-collected.
"""

from __future__ import annotations

import inspect
import queue
import threading
import weakref
from typing import Iterable

import outcome
import trio

from client.aio import AsyncClient
from client.errors import ClientClosed, KVError

START_TIMEOUT_SECONDS = 30.0
WAKE_CHECK_SECONDS = 1.0  # how often a waiting caller checks that the loop is still alive


class _Loop:
    """The trio thread running one AsyncClient. It holds no reference to its Client, so a
    Client that is dropped without close() is still collected, and its finalizer stops this."""

    def __init__(self, aclient: AsyncClient) -> None:
        self.aclient = aclient
        self.closed = False
        self._lock = threading.Lock()
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._thread = threading.Thread(target=self._thread_main, name="kvstore-client", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._started.wait(START_TIMEOUT_SECONDS):
            raise KVError("the client's trio thread did not start")
        if self._start_error is not None:
            raise self._start_error

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # surfaced to the constructor if it happened at start
            self._start_error = exc
        finally:
            self._started.set()

    async def _main(self) -> None:
        async with self.aclient:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._token = trio.lowlevel.current_trio_token()
                self._stop = trio.Event()
                self._started.set()
                await self._stop.wait()
                nursery.cancel_scope.cancel()

    def call(self, method: str, args: tuple, kwargs: dict):
        """Run `aclient.<method>(*args, **kwargs)` on the loop; block for its outcome."""
        if self.closed:
            raise ClientClosed("the client is closed")
        done: queue.SimpleQueue = queue.SimpleQueue()
        try:
            self._token.run_sync_soon(self._spawn, getattr(self.aclient, method), args, kwargs, done)
        except trio.RunFinishedError:
            raise ClientClosed("the client is closed") from None
        while True:
            try:
                result = done.get(timeout=WAKE_CHECK_SECONDS)
                break
            except queue.Empty:
                if not self._thread.is_alive():  # the loop ended without running the call
                    raise ClientClosed("the client's loop stopped") from None
        if isinstance(result, outcome.Error) and isinstance(result.error, trio.Cancelled):
            raise ClientClosed("the client was closed while the call ran")
        return result.unwrap()

    def _spawn(self, fn, args, kwargs, done: queue.SimpleQueue) -> None:
        """On the trio thread: run one call as a task of the loop's nursery."""
        try:
            self._nursery.start_soon(self._run_one, fn, args, kwargs, done)
        except RuntimeError:  # the nursery is closing
            done.put(outcome.Error(ClientClosed("the client is closed")))

    @staticmethod
    async def _run_one(fn, args, kwargs, done: queue.SimpleQueue) -> None:
        try:
            result = fn(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
        except BaseException as exc:  # handed to the calling thread, Cancelled included
            done.put(outcome.Error(exc))
            if not isinstance(exc, Exception):
                raise
            return
        done.put(outcome.Value(result))

    def stop(self) -> None:
        """Stop the loop and close its connections (idempotent, from any thread)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        try:
            self._token.run_sync_soon(self._stop.set)
        except trio.RunFinishedError:
            pass
        if threading.current_thread() is not self._thread:
            self._thread.join(START_TIMEOUT_SECONDS)


class Client:
    """Blocking client: `Client(["127.0.0.1:7001", ...], timeout=5.0)`; safe to share between
    threads. Same methods as AsyncClient; use `close()` or `with Client(...) as c:`."""

    def __init__(self, addrs: Iterable[str] | str, timeout: float = 5.0, **kwargs) -> None:
        loop = _Loop(AsyncClient(addrs, timeout, **kwargs))  # validates the arguments here
        loop.start()
        self._loop = loop
        self._finalizer = weakref.finalize(self, loop.stop)

    def _call(self, method: str, *args, **kwargs):
        return self._loop.call(method, args, kwargs)

    # -- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        """Stop the client's thread and close its connections (idempotent)."""
        self._finalizer()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- the operations (see AsyncClient for their documentation) ------------------------

    def put(self, key, value, *, timeout: float | None = None) -> int:
        return self._call("put", key, value, timeout=timeout)

    def get(self, key, *, consistency: str = "linearizable", timeout: float | None = None) -> bytes | None:
        return self._call("get", key, consistency=consistency, timeout=timeout)

    def get_with_version(self, key, *, consistency: str = "linearizable", timeout: float | None = None):
        return self._call("get_with_version", key, consistency=consistency, timeout=timeout)

    def delete(self, key, *, timeout: float | None = None) -> bool:
        return self._call("delete", key, timeout=timeout)

    def cas(self, key, expected, new, *, timeout: float | None = None) -> bool:
        return self._call("cas", key, expected, new, timeout=timeout)

    def scan(self, prefix=b"", limit: int | None = None, *, consistency: str = "linearizable",
             timeout: float | None = None) -> list[tuple[bytes, bytes]]:
        return self._call("scan", prefix, limit, consistency=consistency, timeout=timeout)

    def bucket_map(self, *, refresh: bool = False, timeout: float | None = None) -> dict:
        return self._call("bucket_map", refresh=refresh, timeout=timeout)

    def status(self, addr: str | None = None, *, timeout: float | None = None) -> dict:
        return self._call("status", addr, timeout=timeout)

    def statistics(self) -> dict:
        return self._call("statistics")
