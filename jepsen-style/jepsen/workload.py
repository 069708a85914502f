"""Client workers: invoke ops from a generator, record invoke/completion in the history.

Outcome mapping (DESIGN.md, jepsen-io/etcd): a result is `ok`; `client.errors.Unavailable`
(definitely not applied) is `fail`; `OutcomeUnknown`, a timeout, a lost connection, or any
unexpected exception is `info`, and the worker then continues as a new process (its old op may
still take effect). When the run stops recording, completions that arrive late are dropped,
which leaves their ops as info: conservative.

Set workload: a set is one key holding comma-separated elements; add = read, then cas(old,
old + element), retried while the cas loses the race or is definitely not applied. Only a cas
with an unknown outcome makes the add `info`; giving up after the attempts is `fail` (none of
them applied).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from client.errors import OutcomeUnknown, Unavailable

from .history import FAIL, INFO, INVOKE, OK, Event, HistoryWriter

SET_ADD_ATTEMPTS = 20


def _s(v: bytes | None) -> str | None:
    return None if v is None else v.decode("utf-8", "replace")


def _b(v: str | None) -> bytes | None:
    return None if v is None else v.encode()


def decode_set(v: bytes | None) -> list[str]:
    return [e for e in (v or b"").decode().split(",") if e]


class Recorder:
    """The history plus a switch: once `closed`, completions are no longer recorded."""

    def __init__(self, history: HistoryWriter) -> None:
        self.history = history
        self.closed = threading.Event()
        self.unexpected_errors: list[str] = []

    def record(self, ev: Event) -> None:
        if ev.type != INVOKE and self.closed.is_set():
            return
        self.history.record(ev)


def execute(client, op: dict):
    """Runs one op against the client; returns its result for the history."""
    f, key = op["f"], op["key"]
    if f == "read":
        return _s(client.get(key, consistency=op.get("consistency", "linearizable")))
    if f == "write":
        client.put(key, _b(op["value"]))
        return op["value"]
    if f == "cas":
        expected, new = op["value"]
        return bool(client.cas(key, _b(expected), _b(new)))
    if f == "add":
        return set_add(client, key, op["value"])
    if f == "read-set":
        return decode_set(client.get(key))
    raise ValueError(f"unknown op {f!r}")


def set_add(client, key: str, element: str) -> str:
    for _ in range(SET_ADD_ATTEMPTS):
        try:
            cur = client.get(key)
        except Unavailable:
            time.sleep(0.05)
            continue
        elems = decode_set(cur)
        if element in elems:  # cannot happen (an unknown cas ends the add), but be safe
            return element
        new = ",".join(elems + [element]).encode()
        try:
            if client.cas(key, cur, new):
                return element
        except Unavailable:
            time.sleep(0.05)
    raise Unavailable(f"add of {element} lost {SET_ADD_ATTEMPTS} cas races or was refused each time")


def run_op(client, rec: Recorder, process, op: dict) -> tuple[str, object]:
    """Invokes and completes one op in the history; returns (completion type, result)."""
    f = op["f"]
    hist_f = "read" if f == "read-set" else f
    rec.record(Event(process, INVOKE, hist_f, op["key"], op.get("value"), consistency=op.get("consistency")))
    try:
        result = execute(client, op)
    except Unavailable as exc:
        rec.record(Event(process, FAIL, hist_f, op["key"], op.get("value"), error=f"unavailable: {exc}"[:200]))
        return FAIL, None
    except OutcomeUnknown as exc:
        rec.record(Event(process, INFO, hist_f, op["key"], op.get("value"), error=f"unknown: {exc}"[:200]))
        return INFO, None
    except Exception as exc:  # anything else: we cannot know what happened
        msg = f"{type(exc).__name__}: {exc}"[:200]
        rec.unexpected_errors.append(msg)
        rec.record(Event(process, INFO, hist_f, op["key"], op.get("value"), error=msg))
        return INFO, None
    rec.record(Event(process, OK, hist_f, op["key"], result, consistency=op.get("consistency")))
    return OK, result


class Worker(threading.Thread):
    def __init__(self, wid: int, concurrency: int, client_factory: Callable, opgen, rec: Recorder,
                 stop: threading.Event, interval_s: float) -> None:
        super().__init__(name=f"jepsen-worker-{wid}", daemon=True)
        self.wid = wid
        self.process = wid
        self.concurrency = concurrency
        self.client_factory = client_factory
        self.opgen = opgen
        self.rec = rec
        self.stop_ev = stop
        self.interval_s = interval_s
        self.counts = {OK: 0, FAIL: 0, INFO: 0}

    def run(self) -> None:
        client = self.client_factory()
        try:
            next_at = time.monotonic()
            while not self.stop_ev.is_set():
                op = self.opgen.next()
                t, result = run_op(client, self.rec, self.process, op)
                self.counts[t] += 1
                if t == OK:  # what this worker last saw of the key: the next cas expects it
                    if op["f"] == "read":
                        self.opgen.observe(op["key"], result)
                    elif op["f"] == "write":
                        self.opgen.observe(op["key"], op["value"])
                    elif op["f"] == "cas" and result:
                        self.opgen.observe(op["key"], op["value"][1])
                if t == INFO:
                    self.process += self.concurrency  # the old op may still be in flight
                next_at += self.interval_s
                delay = next_at - time.monotonic()
                if delay > 0:
                    self.stop_ev.wait(delay)
                else:
                    next_at = time.monotonic()
        finally:
            try:
                client.close()
            except Exception:
                pass
