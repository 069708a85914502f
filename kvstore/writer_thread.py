"""A dedicated storage writer thread fed whole batches (the alternative to trio.to_thread).

`await writer.call(fn, *args)` runs `fn(*args)` on the one long-lived thread and returns its
result (or raises its exception) in the trio task. Hand-off: a `queue.SimpleQueue` put, and the
result comes back through `TrioToken.run_sync_soon` — cheaper than `trio.to_thread.run_sync`'s
thread cache and limiter machinery. A call is never abandoned: if the waiting task is
cancelled, the wait is shielded until the storage call has finished (an fsync in progress
must complete before shutdown closes the store).
"""

from __future__ import annotations

import queue
import threading

import outcome
import trio


class WriterThread:
    def __init__(self, name: str = "kvstore-writer") -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            fn, args, done = job
            result = outcome.capture(fn, *args)
            try:
                self._token.run_sync_soon(done, result)
            except trio.RunFinishedError:
                return

    async def call(self, fn, *args):
        box: list = []
        ev = trio.Event()

        def done(result) -> None:
            box.append(result)
            ev.set()

        self._jobs.put((fn, args, done))
        with trio.CancelScope(shield=True):
            await ev.wait()
        return box[0].unwrap()

    def close(self) -> None:
        self._jobs.put(None)
