"""AsyncClient: the trio client. Routing, retries and the outcome rules live here.

Theory of operation
- Routing: the bucket map (op "map") is fetched from any known node and cached. A write or a
  linearizable read goes to the bucket's cached leader; a follower read goes to a random
  replica of the bucket (spreading a hot bucket's reads). NOT_LEADER hints update the cached
  leader and are followed at once; WRONG_BUCKET, or an epoch newer than ours, refreshes the
  map (one refresh at a time, shared by every waiting request). A node that refused a
  connection, lost one, or stayed silent for a whole attempt is *suspect* for a second: other
  replicas are asked first (they know whether leadership moved) and hints to it are not
  followed blindly, so a paused leader costs one attempt window, not one per retry.
- Retries: one operation is a loop of attempts inside ONE deadline (`timeout`). Each attempt
  waits at most `attempt_timeout` for its reply, so a paused or partitioned node costs one
  attempt, not the whole deadline. Between attempts that made no progress we sleep with
  exponential backoff and jitter (never past the deadline); following a fresh leader hint is
  immediate.
- Outcome rules for writes (the Jepsen checker depends on them):
    * an attempt is *maybe applied* if its request may have reached a node and no definite
      answer came back: a timeout after sending, the connection lost after sending, or the
      node's TIMEOUT status;
    * an attempt is *definitely not applied* if it was never sent (no connection, connection
      refused, no in-flight slot in time) or the node said so (NOT_LEADER, WRONG_BUCKET,
      UNAVAILABLE);
    * every attempt of one write carries the same (session, seq), so any OK reply is THE
      answer, even after earlier attempts were maybe applied (the node answers a duplicate
      from its session table);
    * at the deadline: OutcomeUnknown if any attempt was maybe applied, else Unavailable.
      No retry starts in the last 10% of the timeout, so that the last attempt is usually
      answered rather than cut off (which would make a refused write look unknown).
    * INVALID is InvalidRequest, except after a maybe-applied attempt, where it is reported
      as OutcomeUnknown (conservative: we cannot prove the earlier attempt was rejected too).
  A read never has an effect, so a failed read is Unavailable. A read is only ever answered by
  the reply to its own request id, so it can never return another request's (stale) value.
- Pipelining: one `Connection` per node with many requests in flight; see client/connection.py.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import random
from collections import deque
from typing import Any, Iterable

import trio

from client.connection import Call, Connection, Flusher, NotSent, split_addr
from client.errors import ClientClosed, Compacted, InvalidRequest, KVError, OutcomeUnknown, Unavailable
from client.routing import BucketMap, MapError
from client.sessions import SessionPool
from client.wire import MAX_KEY_BYTES, MAX_VALUE_BYTES, Status, as_bytes, hash_tag

CONSISTENCIES = ("linearizable", "follower")
MAX_IMMEDIATE_HOPS = 3  # leader hints followed without backoff, in a row
SCAN_CONCURRENCY = 64  # buckets scanned at once
RETRY_RESERVE_FRACTION = 0.1  # of an operation's timeout, see _execute
TIMER_SLACK_SECONDS = 0.005
SUSPECT_SECONDS = 1.0  # a node that refused a connection, dropped one or went silent
_OK = int(Status.OK)

# attempt kinds: a reply; never sent; sent and the connection died; sent and no reply in time
# on a connection that is still receiving (a slow node, not a dead one)
_REPLY, _NOT_SENT, _MAYBE, _SLOW = "reply", "not sent", "connection lost after sending", "no reply in time"


class _Backoff:
    """Exponential backoff with jitter, never sleeping past the deadline."""

    def __init__(self, rng: random.Random, base: float, cap: float) -> None:
        self._rng, self._base, self._cap = rng, base, cap
        self._n = 0

    async def sleep(self, deadline: float) -> None:
        delay = min(self._cap, self._base * (2 ** self._n))
        self._n = min(self._n + 1, 30)
        delay = self._rng.uniform(delay / 2, delay)
        await trio.sleep_until(min(deadline, trio.current_time() + delay))


class _LazyBackoff:
    """An operation's _Backoff, made on its first sleep (most operations never retry)."""

    __slots__ = ("_client", "_backoff")

    def __init__(self, client: "AsyncClient") -> None:
        self._client = client
        self._backoff: _Backoff | None = None

    async def sleep(self, deadline: float) -> None:
        if self._backoff is None:
            self._backoff = _Backoff(self._client._rng, *self._client._backoff)
        await self._backoff.sleep(deadline)


class _AttemptTimer:
    """Expires attempts: one task, and the (deadline, call) of every attempt in flight.

    Deadlines are honoured to within TIMER_SLACK_SECONDS, so one wake-up handles many. Most
    attempts get the same window, so their deadlines arrive in order: those go to a FIFO (an
    append, no heap work); a deadline earlier than the FIFO's last goes to a heap.
    Entries of calls already done (answered, lost) are dropped from the front of the FIFO and
    the top of the heap rather than waited for: `arm` drops up to two (so the FIFO holds about
    the calls in flight), and the timer sleeps until the deadline of the first call still
    waiting, not of the first entry. Under a steady load of answered requests it wakes about
    once per attempt window instead of once per TIMER_SLACK_SECONDS.
    """

    def __init__(self) -> None:
        self._fifo: deque[tuple[float, Call]] = deque()
        self._heap: list[tuple[float, int, Call]] = []
        self._count = 0
        self._target = math.inf
        self._wake = trio.Event()

    def arm(self, deadline: float, call: Call) -> None:
        fifo = self._fifo
        if fifo and fifo[0][1]._flag:  # done: nothing to expire
            fifo.popleft()
            if fifo and fifo[0][1]._flag:
                fifo.popleft()
        if not fifo or deadline >= fifo[-1][0]:
            fifo.append((deadline, call))
        else:
            self._count += 1
            heapq.heappush(self._heap, (deadline, self._count, call))
        if deadline + TIMER_SLACK_SECONDS < self._target:
            self._wake.set()

    def _expire(self, now: float) -> float:
        """Sets every call whose deadline passed; returns the first deadline still to watch."""
        heap = self._heap
        fifo = self._fifo
        while fifo:
            deadline, call = fifo[0]
            if deadline <= now:
                fifo.popleft()
                if not call._flag:
                    call.set()  # neither a reply nor lost: the waiter sees it expired
            elif call._flag:
                fifo.popleft()  # done before its deadline
            else:
                break
        while heap:
            deadline, _, call = heap[0]
            if deadline <= now:
                heapq.heappop(heap)
                if not call._flag:
                    call.set()
            elif call._flag:
                heapq.heappop(heap)
            else:
                break
        return min(fifo[0][0] if fifo else math.inf, heap[0][0] if heap else math.inf)

    async def run(self) -> None:
        while True:
            self._target = self._expire(trio.current_time()) + TIMER_SLACK_SECONDS
            self._wake = trio.Event()
            with trio.move_on_at(self._target):
                await self._wake.wait()


class _OpState:
    __slots__ = ("write", "maybe_applied", "why_unknown", "last", "attempts")

    def __init__(self, write: bool) -> None:
        self.write = write
        self.maybe_applied = False
        self.why_unknown = ""  # the first attempt that may have been applied
        self.last = "no attempt was made before the deadline"
        self.attempts = 0


def _key(key) -> bytes:
    key = as_bytes(key, "key")
    if len(key) > MAX_KEY_BYTES:
        raise InvalidRequest(f"key of {len(key)} bytes exceeds {MAX_KEY_BYTES}")
    return key


def _value(value, what: str = "value") -> bytes:
    value = as_bytes(value, what)
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidRequest(f"{what} of {len(value)} bytes exceeds {MAX_VALUE_BYTES}")
    return value


def _field(payload, name: str, op: str):
    try:
        return payload[name]
    except (KeyError, TypeError, IndexError):
        raise KVError(f"malformed {op} reply from the node: {payload!r:.200}") from None


def _parse_addrs(addrs: Iterable[str] | str) -> list[str]:
    if isinstance(addrs, str):
        addrs = [a.strip() for a in addrs.split(",") if a.strip()]
    out = []
    for a in addrs:
        if not isinstance(a, str):
            raise TypeError(f"node address must be a 'host:port' str, not {type(a).__name__}")
        split_addr(a)  # ValueError when malformed
        out.append(a)
    if not out:
        raise ValueError("at least one node address ('host:port') is needed")
    return out


class AsyncClient:
    """The trio client. Use as `async with AsyncClient(["127.0.0.1:7001"]) as c: ...`.

    Every method takes `timeout=` (seconds, the whole operation's deadline including retries);
    the default is the constructor's `timeout`.

    addrs            seed nodes, ["host:port", ...] or "host:port,host:port"; the rest of the
                     cluster is learned from the bucket map
    attempt_timeout  how long one attempt waits for its reply (default: a third of the time
                     left, at least 0.5 s)
    max_inflight     requests in flight per connection (back-pressure beyond that)
    scan_page        items asked per scan request (halved automatically if refused)
    backoff_base, backoff_cap   exponential backoff between retries, seconds (with jitter)
    rng              a random.Random for jitter, replica choice and session ids (tests)
    """

    def __init__(
        self,
        addrs: Iterable[str] | str,
        timeout: float = 5.0,
        *,
        attempt_timeout: float | None = None,
        max_inflight: int = 1024,
        scan_page: int = 1000,
        backoff_base: float = 0.005,
        backoff_cap: float = 0.25,
        rng: random.Random | None = None,
    ) -> None:
        self._seeds = _parse_addrs(addrs)
        self._timeout = self._check_timeout(timeout)
        self._attempt_timeout = attempt_timeout
        if max_inflight < 1 or scan_page < 1:
            raise ValueError("max_inflight and scan_page must be >= 1")
        self._max_inflight = max_inflight
        self._scan_page = scan_page
        self._backoff = (backoff_base, backoff_cap)
        self._rng = rng or random.Random()
        self._sessions = SessionPool(None if rng is None else random.Random(rng.getrandbits(64)))
        self._map: BucketMap | None = None
        self._refreshing: trio.Event | None = None
        self._conns: dict[str, Connection] = {}
        self._timer = _AttemptTimer()
        self._flusher = Flusher()
        self._suspects: dict[str, float] = {}  # addr -> until when to prefer other replicas
        self._nursery: trio.Nursery | None = None
        self._nursery_cm = None
        self._closed = False
        self.retries = 0

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> "AsyncClient":
        if self._nursery is not None or self._closed:
            raise RuntimeError("an AsyncClient can be entered only once")
        self._nursery_cm = trio.open_nursery()
        outer = await self._nursery_cm.__aenter__()
        self._nursery = await outer.start(self._background)
        # requests are written at the end of the scheduler pass that queued them
        trio.lowlevel.add_instrument(self._flusher)
        return self

    async def _background(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        # Background tasks (connections, map refreshes, the timer) live in this inner nursery,
        # so closing the client cancels them and never the caller's own code in the block.
        async with trio.open_nursery() as nursery:
            task_status.started(nursery)
            nursery.start_soon(self._timer.run)

    async def __aexit__(self, *exc_info) -> bool:
        self._shutdown()
        try:
            # The background tasks never raise; telling the nursery that the body ended
            # normally lets the body's own exception (OutcomeUnknown, ...) propagate as itself
            # rather than wrapped in an ExceptionGroup.
            await self._nursery_cm.__aexit__(None, None, None)
        finally:
            with contextlib.suppress(KeyError):  # (trio drops an instrument that raised)
                trio.lowlevel.remove_instrument(self._flusher)
        return False

    def _shutdown(self) -> None:
        self._closed = True
        for conn in list(self._conns.values()):
            conn.close()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def aclose(self) -> None:
        """Close every connection; operations still running are cancelled."""
        self._shutdown()
        await trio.lowlevel.checkpoint()

    close = aclose

    def statistics(self) -> dict:
        return {
            "map_epoch": None if self._map is None else self._map.epoch,
            "retries": self.retries,
            "connections": {a: c.statistics() for a, c in self._conns.items()},
            **self._sessions.statistics(),
        }

    # -- the operations ------------------------------------------------------------------

    async def put(self, key, value, *, timeout: float | None = None) -> int:
        """Write `value` under `key`; returns the write's version."""
        key, value = _key(key), _value(value)
        payload = await self._write("put", key, {"key": key, "value": value}, timeout, len(value))
        return _field(payload, "version", "put")

    async def delete(self, key, *, timeout: float | None = None) -> bool:
        """Delete `key`; returns whether it existed."""
        key = _key(key)
        payload = await self._write("delete", key, {"key": key}, timeout, 0)
        return bool(_field(payload, "existed", "delete"))

    async def cas(self, key, expected, new, *, timeout: float | None = None) -> bool:
        """Set `key` to `new` iff its value is `expected` (None: absent); `new` None deletes."""
        key = _key(key)
        expected = None if expected is None else _value(expected, "expected")
        new = None if new is None else _value(new, "new")
        size = len(expected or b"") + len(new or b"")
        payload = await self._write("cas", key, {"key": key, "expected": expected, "new": new}, timeout, size)
        return bool(_field(payload, "ok", "cas"))

    async def get(self, key, *, consistency: str = "linearizable", timeout: float | None = None) -> bytes | None:
        """The value of `key`, or None when absent."""
        # get_with_version's body (one coroutine less on the most frequent call)
        key = _key(key)
        self._check_consistency(consistency)
        deadline = self._deadline(timeout)
        payload = await self._execute(
            "get", {"key": key, "consistency": consistency}, deadline, _OpState(write=False), key=key,
            follower=consistency == "follower",
        )
        return _field(payload, "value", "get")

    async def get_with_version(
        self, key, *, consistency: str = "linearizable", timeout: float | None = None
    ) -> tuple[bytes | None, int | None]:
        """(value, version) of `key`; (None, None) when absent."""
        key = _key(key)
        self._check_consistency(consistency)
        deadline = self._deadline(timeout)
        state = _OpState(write=False)
        payload = await self._execute(
            "get", {"key": key, "consistency": consistency}, deadline, state, key=key,
            follower=consistency == "follower",
        )
        return _field(payload, "value", "get"), payload.get("version")

    async def scan(
        self, prefix=b"", limit: int | None = None, *, consistency: str = "linearizable",
        timeout: float | None = None,
    ) -> list[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with `prefix`, in key order, at most `limit`.

        Fanned out over every bucket (or just one, when the prefix holds a complete `{tag}`),
        each bucket paged and read with `consistency`; the result is merged in key order.
        Each page is its own read: a scan is not a snapshot across buckets.
        """
        prefix = as_bytes(prefix, "prefix")
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int):
                raise TypeError(f"limit must be an int or None, not {type(limit).__name__}")
            if limit < 0:
                raise InvalidRequest(f"limit must be >= 0, got {limit}")
            if limit == 0:
                return []
        self._check_consistency(consistency)
        deadline = self._deadline(timeout)
        state = _OpState(write=False)
        bmap = await self._current_map(deadline, state)
        if bmap is None:
            raise Unavailable(f"scan: {state.last}")
        if hash_tag(prefix) != prefix:  # every key with this prefix has this prefix's hash tag
            buckets = [bmap.bucket_of(prefix)]
        else:
            buckets = list(range(bmap.num_buckets))
        results: list[list[tuple[bytes, bytes]]] = []
        errors: list[BaseException] = []
        limiter = trio.CapacityLimiter(SCAN_CONCURRENCY)

        async def scan_bucket(bucket: int, cancel: trio.CancelScope) -> None:
            async with limiter:
                try:
                    results.append(await self._scan_bucket(bucket, prefix, limit, consistency, deadline))
                except KVError as exc:
                    errors.append(exc)
                    cancel.cancel()

        async with trio.open_nursery() as nursery:
            for bucket in buckets:
                nursery.start_soon(scan_bucket, bucket, nursery.cancel_scope)
        if errors:
            raise errors[0]
        merged = list(heapq.merge(*results))
        return merged if limit is None else merged[:limit]

    async def _scan_bucket(self, bucket, prefix, limit, consistency, deadline) -> list[tuple[bytes, bytes]]:
        items: list[tuple[bytes, bytes]] = []
        start_after = None
        max_page = self._scan_page
        while True:
            page = max_page if limit is None else min(max_page, limit - len(items))
            args = {"prefix": prefix, "start_after": start_after, "limit": page, "consistency": consistency}
            try:
                payload = await self._execute(
                    "scan", args, deadline, _OpState(write=False), bucket=bucket,
                    follower=consistency == "follower",
                )
            except InvalidRequest:
                if page <= 1:
                    raise
                max_page = page // 2  # e.g. "reply too large": large values, fewer per page
                continue
            got = _field(payload, "items", "scan")
            items.extend((bytes(k), bytes(v)) for k, v in got)
            if not got or not payload.get("more") or (limit is not None and len(items) >= limit):
                items.sort()
                return items
            start_after = items[-1][0]

    async def bucket_map(self, *, refresh: bool = False, timeout: float | None = None) -> dict:
        """The cached bucket map as a plain dict (fetched first if needed or asked)."""
        deadline = self._deadline(timeout)
        if refresh or self._map is None:
            await self._refresh(deadline, None)
        state = _OpState(write=False)
        bmap = await self._current_map(deadline, state)
        if bmap is None:
            raise Unavailable(state.last)
        return bmap.to_dict()

    async def status(self, addr: str | None = None, *, timeout: float | None = None) -> dict:
        """The status dict of the node at `addr` (default: the first seed)."""
        addr = addr or self._seeds[0]
        split_addr(addr)
        deadline = self._deadline(timeout)
        kind, status, payload = await self._attempt(addr, "status", {}, deadline)
        if kind == _REPLY and status == Status.OK:
            return payload
        raise Unavailable(f"status of {addr}: {kind} {status!r} {payload!r:.200}")

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _check_timeout(timeout) -> float:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
        if not timeout > 0 or math.isnan(timeout):
            raise InvalidRequest(f"timeout must be > 0 seconds, got {timeout}")
        return float(timeout)

    @staticmethod
    def _check_consistency(consistency) -> None:
        if consistency not in CONSISTENCIES:
            raise InvalidRequest(f"consistency must be one of {CONSISTENCIES}, got {consistency!r}")

    def _deadline(self, timeout) -> float:
        if self._nursery is None:
            raise RuntimeError("use the client inside `async with AsyncClient(...) as client:`")
        if self._closed:
            raise ClientClosed("the client is closed")
        timeout = self._timeout if timeout is None else self._check_timeout(timeout)
        return trio.current_time() + timeout

    def _attempt_window(self, deadline: float, now: float) -> float:
        """How long one attempt may wait for its reply."""
        if self._attempt_timeout is not None:
            return self._attempt_timeout
        return max(0.5, (deadline - now) / 3)

    async def _write(self, op: str, key: bytes, args: dict, timeout, size: int) -> Any:
        deadline = self._deadline(timeout)
        session = self._sessions.acquire()
        args["session"] = session.id
        args["seq"] = session.next_seq()
        state = _OpState(write=True)
        reusable = False
        try:
            payload = await self._execute(op, args, deadline, state, key=key, size=size)
            reusable = True
            return payload
        except (Unavailable, InvalidRequest):
            reusable = not state.maybe_applied
            raise
        finally:
            self._sessions.release(session, reusable)

    # -- the retry loop ------------------------------------------------------------------

    async def _execute(
        self, op: str, args: dict, deadline: float, state: _OpState, *, key: bytes | None = None,
        bucket: int | None = None, follower: bool = False, size: int = 0,
    ) -> Any:
        """Run `op` until a definite answer or the deadline; applies the outcome rules."""
        backoff = _LazyBackoff(self)
        start = -1  # where this op starts among a bucket's replicas (drawn when first needed)
        rotate = 0
        hops = 0
        size += 64 + (len(key) if key else 0)
        # A retry is started only while this much time is left, so that the last attempt can
        # still be answered: an attempt cut off by the deadline makes a write's outcome
        # unknown, even when every earlier attempt was refused.
        now = trio.current_time()
        reserve = (deadline - now) * RETRY_RESERVE_FRACTION
        first = True
        while True:
            if not first:
                now = trio.current_time()
            if now >= deadline or (not first and deadline - now < reserve):
                break
            first = False
            bmap = self._map
            if bmap is None:
                bmap = await self._current_map(deadline, state)
                if bmap is None:
                    break
                now = trio.current_time()
            b = bmap.bucket_of(key) if key is not None else bucket
            args["bucket"] = b
            addr = None if follower else bmap.leader_addr(b)
            suspects = self._suspects
            if addr is None or suspects:  # choose among the replicas
                replicas = bmap.replica_addrs(b) if b is not None and b < bmap.num_buckets else []
                if suspects:
                    now = trio.current_time()
                    if addr is not None and suspects.get(addr, -math.inf) > now:
                        if any(suspects.get(r, -math.inf) <= now for r in replicas if r != addr):
                            addr = None  # the leader looks down: ask the others, they know more
                    healthy = [r for r in replicas if suspects.get(r, -math.inf) <= now]
                    replicas = healthy or replicas
                if addr is None and replicas:
                    if start < 0:
                        start = self._rng.randrange(1 << 30)
                    addr = replicas[(start + rotate) % len(replicas)]
            if addr is None:
                state.last = f"bucket {b} has no replica with a known address"
                await self._refresh(deadline, None)
                await backoff.sleep(deadline)
                continue
            if state.attempts:
                self.retries += 1
            state.attempts += 1
            window = self._attempt_timeout
            if window is None:  # _attempt_window, inlined
                window = max(0.5, (deadline - now) / 3)
            until = now + window
            if until > deadline:
                until = deadline
            conn = self._conns.get(addr)
            call = None if conn is None else conn.submit_nowait(op, args, size)
            if call is not None:  # the fast path of _attempt, inlined (one coroutine less)
                self._timer.arm(until, call)
                try:
                    await call.wait()
                except BaseException:  # cancelled by the caller: stop waiting for the reply
                    conn.abandon(call)
                    raise
                if call.status is not None:
                    if self._suspects:
                        self._suspects.pop(addr, None)
                    kind, status, payload = _REPLY, call.status, call.payload
                    call.payload = None  # the timer may hold `call` a while
                else:
                    kind, status, payload = self._no_reply(addr, conn, call)
            else:
                kind, status, payload = await self._attempt(addr, op, args, until, size)

            if kind != _REPLY:
                state.last = f"{op} to {addr}: {kind}"
                if kind != _NOT_SENT and state.write:
                    self._maybe_applied(state)
                if kind != _SLOW:  # unreachable or dead: try another replica next
                    bmap.forget_leader(b, addr)
                    rotate += 1
                elif follower:  # a replica slow to serve (cut off from its leader?): another
                    rotate += 1
                await backoff.sleep(deadline)
                continue
            if status == _OK:
                if not follower and bmap.nodes.get(bmap.buckets[b].leader) != addr:  # leader_addr
                    bmap.note_leader(b, bmap.node_id_of(addr), addr)  # it answered as leader
                return payload
            reason = payload.get("reason") if isinstance(payload, dict) else None
            payload = payload if isinstance(payload, dict) else {}
            state.last = f"{op} to {addr}: {_status_name(status)} {reason or ''}".rstrip()
            if status == Status.NOT_LEADER:
                epoch = payload.get("epoch")
                if isinstance(epoch, int) and epoch > bmap.buckets[b].epoch:
                    self._refresh_soon()
                if follower:
                    follower = False  # this replica cannot serve follower reads: use the leader
                bmap.note_leader(b, payload.get("leader"), payload.get("leader_addr"))
                new = bmap.leader_addr(b)
                if (new is not None and new != addr and hops < MAX_IMMEDIATE_HOPS
                        and self._suspects.get(new, -math.inf) <= trio.current_time()):
                    hops += 1
                    continue
                hops = 0
                rotate += 1
                await backoff.sleep(deadline)
            elif status == Status.WRONG_BUCKET:
                epoch = payload.get("epoch")
                old_epoch = bmap.epoch
                bmap.forget_leader(b, addr)
                rotate += 1
                want = epoch if isinstance(epoch, int) and epoch > old_epoch else None
                await self._refresh(deadline, want)
                if self._map is None or self._map.epoch <= old_epoch:
                    await backoff.sleep(deadline)
            elif status == Status.TIMEOUT:
                if state.write:
                    self._maybe_applied(state)
                await backoff.sleep(deadline)
            elif status == Status.UNAVAILABLE:
                rotate += 1  # e.g. a replica that knows no leader: another one may
                await backoff.sleep(deadline)
            elif status == Status.INVALID:
                if state.maybe_applied:
                    raise OutcomeUnknown(
                        f"{op}: an earlier attempt may have been applied; a retry was refused "
                        f"as invalid: {reason}"
                    )
                raise InvalidRequest(reason or f"{op} refused as invalid")
            elif status == Status.COMPACTED:
                raise Compacted(reason or "history compacted")
            else:  # a status this client does not know: treat like TIMEOUT (conservative)
                if state.write:
                    self._maybe_applied(state)
                await backoff.sleep(deadline)
        if state.maybe_applied:
            raise OutcomeUnknown(
                f"{op}: outcome unknown at the deadline ({state.attempts} attempts; maybe applied "
                f"by attempt {state.why_unknown}; last: {state.last})"
            )
        raise Unavailable(f"{op}: not applied before the deadline ({state.attempts} attempts; last: {state.last})")

    @staticmethod
    def _maybe_applied(state: _OpState) -> None:
        if not state.maybe_applied:
            state.maybe_applied = True
            state.why_unknown = f"{state.attempts} ({state.last})"

    async def _attempt(self, addr: str, op: str, args: dict, until: float, size: int = 64):
        """Send one request to `addr` and wait for its reply until `until`.

        Returns (kind, status, payload) with kind _REPLY, _NOT_SENT, _MAYBE or _SLOW.
        """
        conn = self._conns.get(addr)
        call = None if conn is None else conn.submit_nowait(op, args, size)
        if call is None:  # slow path: connect first, or wait for an in-flight slot
            with trio.move_on_at(until):
                try:
                    conn = await self._connection(addr)
                    call = await conn.submit(op, args, size)
                except NotSent:
                    self._suspect(addr)
                    return _NOT_SENT, None, None
            if call is None:
                return _NOT_SENT, None, None
        # The attempt's timeout is the client's timer, not a cancel scope per request: a
        # cancel scope with its own deadline costs about as much CPU as the rest of a request.
        # (_execute inlines this part for a request queued at once.)
        self._timer.arm(until, call)
        try:
            await call.wait()
        except BaseException:  # cancelled by the caller: stop waiting for the reply
            conn.abandon(call)
            raise
        if call.status is not None:
            if self._suspects:
                self._suspects.pop(addr, None)
            payload, call.payload = call.payload, None  # the timer may hold `call` a while
            return _REPLY, call.status, payload
        return self._no_reply(addr, conn, call)

    def _no_reply(self, addr: str, conn: Connection, call: Call):
        """The (kind, None, None) of an attempt that ended without a reply."""
        if call.lost:
            self._suspect(addr)
            return (_MAYBE if call.sent else _NOT_SENT), None, None
        if not conn.abandon(call):  # expired by the timer
            return _NOT_SENT, None, None
        if conn.last_receive_time < call.sent_at:
            # Nothing at all came back on this connection since we sent: the node looks
            # paused or cut off. Close it so its other requests fail over now too.
            conn.close(f"no reply from {addr} within the attempt timeout")
            self._suspect(addr)
            return _MAYBE, None, None
        return _SLOW, None, None

    def _suspect(self, addr: str) -> None:
        """`addr` failed us (refused, lost, or silent): prefer other replicas for a while."""
        self._suspects[addr] = trio.current_time() + SUSPECT_SECONDS

    async def _connection(self, addr: str) -> Connection:
        conn = self._conns.get(addr)
        if conn is None or conn.closed:
            if self._closed:
                raise NotSent("client closed")
            conn = Connection(addr, self._max_inflight, self._flusher)
            self._conns[addr] = conn
            connect_timeout = self._attempt_timeout or max(0.5, self._timeout / 3)
            self._nursery.start_soon(conn.run, connect_timeout, self._connection_closed)
        await conn.ready.wait()
        if conn.closed:
            raise NotSent(str(conn.error))
        return conn

    def _connection_closed(self, conn: Connection) -> None:
        if self._conns.get(conn.addr) is conn:
            del self._conns[conn.addr]

    # -- the bucket map ------------------------------------------------------------------

    async def _current_map(self, deadline: float, state: _OpState) -> BucketMap | None:
        while self._map is None:
            if trio.current_time() >= deadline:
                state.last = "could not fetch the bucket map from any node"
                return None
            await self._refresh(deadline, None)
        return self._map

    def _refresh_soon(self) -> None:
        if self._refreshing is None and not self._closed:
            self._refreshing = trio.Event()
            self._nursery.start_soon(self._refresh_task, None, self._refreshing)

    async def _refresh(self, deadline: float, want_epoch: int | None) -> None:
        """Refresh the map (single flight: joins a refresh already running); waits until done
        or the deadline."""
        if self._closed:
            raise ClientClosed("the client is closed")
        if self._refreshing is None:
            self._refreshing = trio.Event()
            self._nursery.start_soon(self._refresh_task, want_epoch, self._refreshing)
        done = self._refreshing
        with trio.move_on_at(deadline):
            await done.wait()

    async def _refresh_task(self, want_epoch: int | None, done: trio.Event) -> None:
        deadline = trio.current_time() + self._timeout
        backoff = _Backoff(self._rng, *self._backoff)
        try:
            while trio.current_time() < deadline:
                known = self._map.all_addrs() if self._map is not None else []
                self._rng.shuffle(known)
                candidates = known + [s for s in self._seeds if s not in known]
                now = trio.current_time()  # nodes that failed us recently go last
                candidates.sort(key=lambda a: self._suspects.get(a, -math.inf) > now)
                best: BucketMap | None = None
                for addr in candidates:
                    now = trio.current_time()
                    window = min(deadline, now + self._attempt_window(deadline, now))
                    kind, status, payload = await self._attempt(addr, "map", {}, window)
                    if kind != _REPLY or status != Status.OK:
                        continue
                    try:
                        m = BucketMap.from_wire(payload)
                    except MapError:
                        continue
                    if best is None or m.epoch > best.epoch:
                        best = m
                    if want_epoch is None or m.epoch >= want_epoch:
                        break
                if best is not None:
                    if self._map is None or best.epoch >= self._map.epoch:
                        self._map = best
                    return
                await backoff.sleep(deadline)
        finally:
            self._refreshing = None
            done.set()


def _status_name(status) -> str:
    try:
        return Status(status).name
    except ValueError:
        return f"status {status}"
