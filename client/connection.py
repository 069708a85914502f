"""One pipelined connection from the client to one node.

Theory of operation
- `submit()` takes an in-flight slot, gives the request the next request id and puts it in the
  outbox and in `pending`. Nothing is written by the submitting task.
- The whole outbox goes out as ONE frame (and so one syscall: a non-blocking write): every
  request queued in the same scheduling moment shares a frame. DESIGN.md: per-request
  syscalls dominate the cost. Who writes:
    * with a `Flusher` (AsyncClient installs one): a trio instrument whose `before_io_wait`
      hook runs once per pass of trio's scheduler, after every task that was runnable has
      run. It writes the outbox of each connection that got requests in that pass, so the
      requests of a pass leave at the end of that very pass, with no writer task to wake
      (one task switch and one scheduler pass less per frame);
    * otherwise, and whenever a write did not take the whole frame (full send buffer) or
      failed, the connection's writer task: it sends the rest by awaiting, then drains the
      outbox itself until it is empty (every request queued while a send ran shares a frame).
  The flusher writes only while the writer task is parked idle, so frames never interleave.
- One reader task decodes reply frames and completes pending calls by request id. A reply
  for an id nobody waits for any more (an abandoned call) is dropped, so a late reply can
  never be taken for the answer to another request.
- In-flight requests are bounded by a semaphore. A slot is returned when the reply arrives or
  the connection dies; abandoning a call that was already sent does not return it (the node is
  still working on it), which is the back-pressure on a slow node.
- Every call knows whether its bytes may have left this process: `sent` becomes True just
  before the frame holding it is handed to the socket. When the connection dies, a call not
  yet sent fails as *not sent* (definitely not applied), any other as *maybe sent* (the node
  may have applied it). The retry logic in `client.aio` turns that into Unavailable versus
  OutcomeUnknown.
"""

from __future__ import annotations

import math
import os
import struct

import msgpack
import trio

from client.wire import MAX_FRAME_BYTES, FrameDecoder, FrameError

FRAME_SOFT_LIMIT_BYTES = 4 * 1024 * 1024  # split a batch above this (wire max is 16 MiB)
RECEIVE_BYTES = 256 * 1024
_LEN = struct.Struct(">I")  # the frame header of client/wire.py


def _nothing() -> None:
    pass


def split_addr(addr: str) -> tuple[str, int]:
    """"host:port" or "[v6]:port" -> (host, port); ValueError when malformed."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address must be 'host:port', got {addr!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class Done:
    """A one-shot flag with at most one waiting task: what `Call.done` needs, without the
    generality (and the CPU per request) of a trio.Event. Same `set`/`is_set`/`wait` API."""

    __slots__ = ("_flag", "_task")

    def __init__(self) -> None:
        self._flag = False
        self._task = None

    def is_set(self) -> bool:
        return self._flag

    def set(self) -> None:
        if not self._flag:
            self._flag = True
            task = self._task
            if task is not None:
                self._task = None
                trio.lowlevel.reschedule(task)

    async def wait(self) -> None:
        if self._flag:
            await trio.lowlevel.checkpoint()
            return
        if self._task is not None:
            raise RuntimeError("another task is already waiting for this call")
        self._task = trio.lowlevel.current_task()

        def abort(_raise_cancel):
            self._task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


class Call(Done):
    """One request on a connection. It is its own `Done` (one object per request, not two),
    set when a reply came (`status` is not None), the connection died (`lost`), or the
    client's timer expired the attempt (neither); `call.done` is the call itself."""

    __slots__ = ("rid", "msg", "size", "sent", "lost", "abandoned", "status", "payload", "sent_at")

    def __init__(self, rid: int, msg: list, size: int) -> None:
        self._flag = False
        self._task = None
        self.rid = rid
        self.msg = msg
        self.size = size
        self.sent = False
        self.lost = False
        self.abandoned = False
        self.status: int | None = None
        self.payload = None
        self.sent_at = math.inf

    @property
    def done(self) -> "Call":
        return self


class NotSent(Exception):
    """The request was definitely not sent (no connection, or it closed before sending)."""


class Flusher(trio.abc.Instrument):
    """Writes the outboxes of connections that got requests, once per scheduler pass.

    Installed with `trio.lowlevel.add_instrument`; trio calls `before_io_wait` after running
    every runnable task of a pass, just before it polls for I/O. It never raises (an
    instrument that raises is removed by trio): a connection's own errors end that connection.
    """

    def __init__(self) -> None:
        self.dirty: list[Connection] = []
        self.frames = 0  # frames written by the flusher (statistics, tests)

    def before_io_wait(self, timeout: float) -> None:
        if self.dirty:
            dirty, self.dirty = self.dirty, []
            for conn in dirty:
                try:
                    conn._flush_nowait()
                except Exception as exc:  # a bug: end that connection, keep the flusher
                    conn.error = exc
                    conn._scope.cancel()


class Connection:
    def __init__(self, addr: str, max_inflight: int = 1024, flusher: Flusher | None = None) -> None:
        self.addr = addr
        self.ready = trio.Event()  # set once connected, or once connecting failed
        self.error: BaseException | None = None
        self.closed = False
        self.last_receive_time = -math.inf
        self.frames_sent = 0
        self.messages_sent = 0
        self.frames_received = 0
        self.messages_received = 0
        self._stream: trio.SocketStream | None = None
        self._pending: dict[int, Call] = {}
        self._outbox: list[Call] = []
        self._writer_task = None  # the writer task while it is parked with an empty outbox
        self._flusher = flusher
        self._dirty = False  # in the flusher's list
        self._tail: list = []  # frames (or their rest) the flusher left to the writer task
        self._token = None  # to wake trio's I/O wait when the flusher hands the writer work
        self._fd = -1
        self._pack = msgpack.Packer(use_bin_type=True).pack  # one packer for every frame
        # in-flight slots: a counter, and a lot where submit() waits when none is free (a
        # released slot is handed to the first waiter, as trio.Semaphore does)
        self._free = max_inflight
        self._slot_waiters = trio.lowlevel.ParkingLot()
        self._next_rid = 1
        self._scope = trio.CancelScope()

    # -- used by the client --------------------------------------------------------------

    def submit_nowait(self, op: str, args: dict, size: int = 64) -> Call | None:
        """Queue a request if the connection is open and has a free slot, else None."""
        if self.closed or self._free <= 0 or not self.ready.is_set():
            return None
        self._free -= 1
        return self._queue(op, args, size)

    async def submit(self, op: str, args: dict, size: int = 64) -> Call:
        """Queue a request; waits for an in-flight slot. Raises NotSent if the connection died."""
        if self.closed:
            raise NotSent(self.error or "connection closed")
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._free > 0:
            self._free -= 1
            await trio.lowlevel.cancel_shielded_checkpoint()
        else:
            await self._slot_waiters.park()  # woken holding the slot of a finished call
        if self.closed:
            self._release_slot()
            raise NotSent(self.error or "connection closed")
        return self._queue(op, args, size)

    def _release_slot(self) -> None:
        if self._slot_waiters:
            self._slot_waiters.unpark()
        else:
            self._free += 1

    def _queue(self, op: str, args: dict, size: int) -> Call:
        rid = self._next_rid
        self._next_rid = rid + 1
        call = Call(rid, [rid, op, args], size)
        self._pending[rid] = call
        self._outbox.append(call)
        if self._flusher is not None:
            if not self._dirty:
                self._dirty = True
                self._flusher.dirty.append(self)
        else:
            task = self._writer_task
            if task is not None:
                self._writer_task = None
                trio.lowlevel.reschedule(task)
        return call

    def abandon(self, call: Call) -> bool:
        """The caller stops waiting for `call`; returns whether it may have been sent."""
        if call.status is not None or call.lost:
            return call.sent
        if not call.sent:
            self._outbox.remove(call)
            del self._pending[call.rid]
            self._release_slot()
            call.lost = True
            call.set()
            return False
        call.abandoned = True
        return True

    def close(self, reason: str = "closed by client") -> None:
        if self.error is None:
            self.error = ConnectionError(reason)
        self.closed = True
        self._scope.cancel()

    def statistics(self) -> dict:
        return {
            "in_flight": len(self._pending),
            "frames_sent": self.frames_sent,
            "messages_sent": self.messages_sent,
            "frames_received": self.frames_received,
            "messages_received": self.messages_received,
        }

    # -- the connection's own tasks ------------------------------------------------------

    async def run(self, connect_timeout: float, on_closed) -> None:
        """Connect, then read and write until closed or broken. Never raises (but Cancelled)."""
        try:
            with self._scope:
                try:
                    host, port = split_addr(self.addr)
                    with trio.fail_after(connect_timeout):
                        self._stream = await trio.open_tcp_stream(host, port)
                except (OSError, ValueError, trio.TooSlowError) as exc:
                    self.error = exc
                    return
                self._fd = self._stream.socket.fileno()
                self._token = trio.lowlevel.current_trio_token()
                self.ready.set()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader, nursery.cancel_scope)
                    nursery.start_soon(self._writer, nursery.cancel_scope)
        finally:
            self.closed = True
            if self.error is None:
                self.error = ConnectionError("connection closed")
            self.ready.set()
            self._fail_pending()
            if self._stream is not None:
                with trio.CancelScope(shield=True):
                    await trio.aclose_forcefully(self._stream)
            on_closed(self)

    def _fail_pending(self) -> None:
        pending, self._pending = self._pending, {}
        self._outbox = []
        for call in pending.values():
            call.lost = True
            call.set()
            self._release_slot()

    def _encode(self, batch: list[Call]) -> list[bytes]:
        """The frames of `batch` (one unless very large); marks its calls sent. Everything is
        encoded before anything is written: a call counts as sent from here on, and its args
        are captured as they are now."""
        if sum([call.size for call in batch]) <= FRAME_SOFT_LIMIT_BYTES:
            frames = [[call.msg for call in batch]]  # the common case: one frame
        else:
            frames = []
            msgs: list = []
            size = 0
            for call in batch:
                if msgs and size + call.size > FRAME_SOFT_LIMIT_BYTES:
                    frames.append(msgs)
                    msgs, size = [], 0
                msgs.append(call.msg)
                size += call.size
            frames.append(msgs)
        pack = self._pack
        datas = []
        for msgs in frames:
            body = pack(msgs)
            if len(body) > MAX_FRAME_BYTES:
                raise FrameError(f"frame of {len(body)} bytes exceeds {MAX_FRAME_BYTES}")
            datas.append(_LEN.pack(len(body)) + body)
        now = trio.current_time()
        for call in batch:
            call.sent = True
            call.sent_at = now
            call.msg = None  # encoded: do not keep (possibly large) values alive
        self.messages_sent += len(batch)
        return datas

    def _flush_nowait(self) -> None:
        """The flusher's part: write the outbox now, without awaiting; what the socket does not
        take goes to the writer task. Never raises."""
        self._dirty = False
        if not self._outbox or self._writer_task is None or self.closed:
            return  # nothing to do, or the writer task is at work: it drains the outbox itself
        batch, self._outbox = self._outbox, []
        try:
            datas = self._encode(batch)
        except Exception as exc:  # a frame too large, or a bug: this connection ends
            self.error = exc
            self._scope.cancel()
            return
        del batch
        fd = self._fd
        for i, data in enumerate(datas):
            try:
                n = os.write(fd, data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                n = 0  # the writer task's send sees the error and ends the connection
            if n < len(data):
                self._tail = [memoryview(data)[n:], *datas[i + 1:]]
                task, self._writer_task = self._writer_task, None
                trio.lowlevel.reschedule(task)
                # trio computed its I/O wait timeout before this hook ran: make it not wait
                self._token.run_sync_soon(_nothing)
                return
            self.frames_sent += 1
            self._flusher.frames += 1

    async def _wait_work(self) -> None:
        """Park the writer until there is an outbox to drain (no flusher) or a tail to send."""
        self._writer_task = trio.lowlevel.current_task()

        def abort(_raise_cancel):
            self._writer_task = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    async def _writer(self, scope: trio.CancelScope) -> None:
        assert self._stream is not None
        fd = self._fd
        try:
            while True:
                if self._tail:
                    tail, self._tail = self._tail, []
                    for data in tail:
                        await self._stream.send_all(data)
                        self.frames_sent += 1
                    del tail
                    continue
                if not self._outbox:
                    await self._wait_work()
                    continue
                batch, self._outbox = self._outbox, []
                datas = self._encode(batch)
                del batch
                for data in datas:
                    # One non-blocking write straight to the socket: a frame of requests
                    # usually fits the send buffer, and trio's send_all (a checkpoint, a
                    # conflict detector, error translation) costs more CPU than the syscall.
                    # Only what a full buffer did not take is sent by awaiting.
                    try:
                        n = os.write(fd, data)
                    except (BlockingIOError, InterruptedError):
                        n = 0
                    if n < len(data):
                        await self._stream.send_all(memoryview(data)[n:])
                    self.frames_sent += 1
                del datas
        except Exception as exc:  # broken socket, bad frame, or a bug: this connection ends
            self.error = exc
            scope.cancel()

    async def _reader(self, scope: trio.CancelScope) -> None:
        assert self._stream is not None
        decoder = FrameDecoder()
        feed = decoder.feed
        fd = self._stream.socket.fileno()
        pending = self._pending
        wait_readable = trio.lowlevel.wait_readable
        current_time = trio.current_time
        read = os.read
        try:
            while True:
                # park until readable, then one read: trio's receive_some would first try a
                # read that usually finds nothing, and yield once more after a good one
                await wait_readable(fd)
                try:
                    data = read(fd, RECEIVE_BYTES)
                except (BlockingIOError, InterruptedError):
                    continue
                if not data:
                    raise ConnectionError("connection closed by the node")
                self.last_receive_time = current_time()
                frames = feed(data)
                self.frames_received += len(frames)
                if pending is not self._pending:  # _fail_pending swapped it (cannot happen
                    pending = self._pending  # while this task runs, but stay correct)
                for messages in frames:
                    for message in messages:
                        # _dispatch, inlined: [rid: int, status: int, payload]
                        if type(message) is list and len(message) == 3 and type(message[0]) is int \
                                and type(message[1]) is int:
                            call = pending.pop(message[0], None)
                            self.messages_received += 1
                            if call is None:
                                continue  # an id we never sent or already failed: nobody waits
                            self._release_slot()
                            if call.abandoned:
                                continue  # the caller gave up on it: must not be taken for anything
                            call.status = message[1]
                            call.payload = message[2]
                            call.set()
                        else:
                            self._dispatch(message)
        except Exception as exc:  # broken socket, bad frame, or a bug: this connection ends
            self.error = exc
            scope.cancel()

    def _dispatch(self, message) -> None:
        """One reply message (the reader inlines the common case of this)."""
        if not (isinstance(message, list) and len(message) == 3 and isinstance(message[1], int)):
            raise FrameError(f"malformed reply {message!r:.200}")
        if message[0] is None:  # the node could not read a request's id (see wire.py): if
            return  # it could not read the frame either, it closes the connection itself
        if not isinstance(message[0], int):
            raise FrameError(f"malformed reply {message!r:.200}")
        rid, status, payload = message
        self.messages_received += 1
        call = self._pending.pop(rid, None)
        if call is None:
            return  # a reply to an id we never sent or already failed: nothing waits for it
        self._release_slot()
        if call.abandoned:
            return  # the caller gave up on it: the reply must not be taken for anything
        call.status = status
        call.payload = payload
        call.set()
