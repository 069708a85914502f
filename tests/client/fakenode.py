"""A scriptable fake cluster speaking client/wire.py, for testing the client alone.

N fake nodes listen on 127.0.0.1 (free ports) inside one trio loop on a background thread.
They share one in-memory store with a session table (so duplicates are answered, not applied
again, like the real state machine). By default node `leaders[b]` leads bucket b and every
node is a replica of every bucket.

`script(node, op, args)` is called (on the fake's thread) for every request; it returns None
for the normal behaviour or one of the actions below. Every request is logged in `requests`
as (node, op, args); every received frame's message count in `frames`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import trio

from client.wire import FrameDecoder, Status, bucket_of, encode_frame


@dataclass
class Reply:  # answer with this status and payload instead of the normal behaviour
    status: int
    payload: object = None
    apply: bool = False  # apply the write first (e.g. a TIMEOUT for a write that did commit)


@dataclass
class Drop:  # close the connection without answering; apply=True: apply the write first
    apply: bool = False


@dataclass
class Silent:  # never answer; apply=True: apply the write anyway
    apply: bool = False


@dataclass
class Delay:  # answer normally after `seconds` (or with `reply`, decided now, sent then)
    seconds: float
    reply: Reply | None = None


@dataclass
class Garbage:  # answer with bytes that are not a valid frame
    data: bytes = b"\x00\x00\x00\x01\xc1"


def error(reason="", leader=None, leader_addr=None, epoch=1) -> dict:
    return {"reason": reason, "leader": leader, "leader_addr": leader_addr, "epoch": epoch}


class FakeCluster:
    def __init__(self, n: int = 3, num_buckets: int = 4, start_listening: bool = True) -> None:
        self.n = n
        self.num_buckets = num_buckets
        self.leaders = [0] * num_buckets
        self.epoch = 1
        self.store: dict[bytes, tuple[bytes, int]] = {}
        self.version = 0
        self.sessions: dict[tuple[int, int], tuple[int, object]] = {}
        self.applied: list[tuple[int, int]] = []  # (session, seq) of every applied write
        self.applied_keys: list[bytes] = []  # the key of every applied write
        self.requests: list[tuple[int, str, dict]] = []
        self.frames: list[int] = []
        self.script = None
        self.addrs: list[str] = []
        self.down: set[int] = set()  # nodes that refuse connections (listener closed)
        self._token = None
        self._listeners: dict[int, trio.SocketListener] = {}
        self._conn_scopes: dict[int, list[trio.CancelScope]] = {}
        self._ready = threading.Event()
        self._stop = None
        self._thread = threading.Thread(target=lambda: trio.run(self._main), daemon=True)

    # -- control from the test thread --------------------------------------------------------

    def __enter__(self) -> "FakeCluster":
        self._thread.start()
        assert self._ready.wait(10), "fake cluster did not start"
        return self

    def __exit__(self, *exc) -> None:
        self._run_soon(lambda: self._stop.set())
        self._thread.join(10)

    def _run_soon(self, fn) -> None:
        try:
            self._token.run_sync_soon(fn)
        except trio.RunFinishedError:
            pass

    def _run_sync(self, fn):
        done = threading.Event()
        out = []

        def wrapper():
            out.append(fn())
            done.set()

        self._run_soon(wrapper)
        assert done.wait(10)
        return out[0]

    def kill(self, node: int) -> None:
        """Close node's listener and connections: later connects are refused."""
        def do():
            self.down.add(node)
            for scope in self._conn_scopes.get(node, []):
                scope.cancel()
            listener = self._listeners.pop(node, None)
            if listener is not None:
                listener.socket.close()
        self._run_sync(do)

    def ops(self, op: str) -> list[tuple[int, dict]]:
        return [(node, args) for node, o, args in list(self.requests) if o == op]

    def map_payload(self) -> dict:
        return {
            "epoch": self.epoch,
            "num_buckets": self.num_buckets,
            "nodes": {i: a for i, a in enumerate(self.addrs)},
            "buckets": [[self.epoch, list(range(self.n)), self.leaders[b]] for b in range(self.num_buckets)],
        }

    # -- the fake's trio side ---------------------------------------------------------------

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for i in range(self.n):
                listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
                self._listeners[i] = listeners[0]
                port = listeners[0].socket.getsockname()[1]
                self.addrs.append(f"127.0.0.1:{port}")
                nursery.start_soon(self._accept_loop, i, listeners[0])
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    async def _accept_loop(self, node: int, listener: trio.SocketListener) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    stream = await listener.accept()
                except (trio.ClosedResourceError, OSError):
                    return
                nursery.start_soon(self._serve, node, stream)

    async def _serve(self, node: int, stream: trio.SocketStream) -> None:
        scope = trio.CancelScope()
        self._conn_scopes.setdefault(node, []).append(scope)
        send_lock = trio.Lock()
        decoder = FrameDecoder()
        with scope:
            try:
                async with trio.open_nursery() as nursery:
                    while True:
                        data = await stream.receive_some(65536)
                        if not data:
                            break
                        for messages in decoder.feed(data):
                            self.frames.append(len(messages))
                            for rid, op, args in messages:
                                self.requests.append((node, op, args))
                                nursery.start_soon(self._handle, node, stream, send_lock, scope, rid, op, args)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        await trio.aclose_forcefully(stream)

    async def _handle(self, node, stream, send_lock, scope, rid, op, args) -> None:
        action = self.script(node, op, args) if self.script else None
        if isinstance(action, Delay):
            await trio.sleep(action.seconds)
            action = action.reply
        if isinstance(action, Garbage):
            async with send_lock:
                try:
                    await stream.send_all(action.data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    scope.cancel()
            return
        if isinstance(action, (Drop, Silent)):
            if action.apply:
                self._normal(node, op, args)
            if isinstance(action, Drop):
                scope.cancel()
            return
        if isinstance(action, Reply):
            if action.apply:
                self._normal(node, op, args)
            status, payload = action.status, action.payload
        else:
            status, payload = self._normal(node, op, args)
        async with send_lock:
            try:
                await stream.send_all(encode_frame([[rid, int(status), payload]]))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                scope.cancel()

    def _normal(self, node: int, op: str, args: dict):
        if op == "map":
            return Status.OK, self.map_payload()
        if op == "status":
            return Status.OK, {"node": node}
        b = args.get("bucket")
        if op != "scan" and b != bucket_of(args["key"], self.num_buckets):
            return Status.WRONG_BUCKET, error("wrong bucket", epoch=self.epoch)
        leader = self.leaders[b]
        if leader != node and not (op in ("get", "scan") and args.get("consistency") == "follower"):
            return Status.NOT_LEADER, error("not leader", leader, self.addrs[leader], self.epoch)
        if op == "get":
            value, version = self.store.get(args["key"], (None, None))
            return Status.OK, {"value": value, "version": version}
        if op == "scan":
            keys = sorted(k for k in self.store if k.startswith(args["prefix"])
                          and bucket_of(k, self.num_buckets) == b
                          and (args["start_after"] is None or k > args["start_after"]))
            page = keys[: args["limit"]]
            return Status.OK, {"items": [[k, self.store[k][0]] for k in page], "more": len(keys) > len(page)}
        # writes: exactly once per (session, seq)
        sess = (b, args["session"])
        last = self.sessions.get(sess)
        if last is not None and last[0] == args["seq"]:
            return Status.OK, last[1]
        if last is not None and last[0] > args["seq"]:
            return Status.INVALID, error("stale seq")
        result = self._apply(op, args)
        self.applied.append((args["session"], args["seq"]))
        self.applied_keys.append(args["key"])
        self.sessions[sess] = (args["seq"], result)
        return Status.OK, result

    def _apply(self, op: str, args: dict) -> dict:
        key = args["key"]
        self.version += 1
        if op == "put":
            self.store[key] = (args["value"], self.version)
            return {"version": self.version}
        if op == "delete":
            existed = self.store.pop(key, None) is not None
            return {"existed": existed, "version": self.version}
        if op == "cas":
            current = self.store.get(key, (None, None))[0]
            if current != args["expected"]:
                return {"ok": False, "version": None}
            if args["new"] is None:
                self.store.pop(key, None)
            else:
                self.store[key] = (args["new"], self.version)
            return {"ok": True, "version": self.version}
        raise AssertionError(op)


HANG_GUARD_SECONDS = 20  # a call that takes this long has ignored its deadline


def run(afn):
    """trio.run(afn) with a guard: a test that hangs fails instead."""
    async def main():
        with trio.fail_after(HANG_GUARD_SECONDS):
            return await afn()

    return trio.run(main)
