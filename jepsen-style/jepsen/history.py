"""Histories: what the clients and the nemesis did, one JSON object per line.

An operation is two events of the same `process`: an `invoke`, then exactly one completion —
`ok` (it happened, with its result), `fail` (it definitely did not happen: the client raised
`Unavailable`, or a cas whose condition did not hold is an `ok` with value `false`, never a
`fail`) or `info` (unknown: timeout, lost connection, `OutcomeUnknown`). A process that got an
`info` never invokes again (its op may still be in flight); the worker continues under a new
process id. The nemesis writes `info` events with process "nemesis".

Fields: index, process, type, f, key, value, time (ns since the run started), plus optional
consistency (reads), error (a string), node.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

INVOKE, OK, FAIL, INFO = "invoke", "ok", "fail", "info"
TYPES = (INVOKE, OK, FAIL, INFO)
NEMESIS = "nemesis"


@dataclass(slots=True)
class Event:
    process: Any
    type: str
    f: str
    key: Any = None
    value: Any = None
    time: int = 0
    index: int = -1
    consistency: str | None = None
    error: str | None = None

    def to_json(self) -> dict:
        d = {
            "index": self.index,
            "process": self.process,
            "type": self.type,
            "f": self.f,
            "key": self.key,
            "value": self.value,
            "time": self.time,
        }
        if self.consistency is not None:
            d["consistency"] = self.consistency
        if self.error is not None:
            d["error"] = self.error
        return d

    @classmethod
    def from_json(cls, d: dict) -> "Event":
        if d.get("type") not in TYPES:
            raise ValueError(f"bad event type in {d!r}")
        return cls(
            process=d["process"],
            type=d["type"],
            f=d["f"],
            key=d.get("key"),
            value=d.get("value"),
            time=int(d["time"]),
            index=int(d.get("index", -1)),
            consistency=d.get("consistency"),
            error=d.get("error"),
        )


@dataclass(slots=True)
class Op:
    """An invoke paired with its completion (`complete` None: never completed = info)."""

    process: Any
    f: str
    key: Any
    invoke: Event
    complete: Event | None

    @property
    def type(self) -> str:
        return self.complete.type if self.complete is not None else INFO

    @property
    def start(self) -> int:
        return self.invoke.time

    @property
    def end(self) -> int | None:
        """Completion time, None when unknown (info: it may take effect at any later time)."""
        if self.complete is None or self.complete.type == INFO:
            return None
        return self.complete.time

    @property
    def value(self) -> Any:
        """The completion's value if ok, else the invoke's value."""
        if self.complete is not None and self.complete.type == OK:
            return self.complete.value
        return self.invoke.value


class HistoryWriter:
    """Thread-safe recorder: appends events in memory and to a JSON Lines file as they occur."""

    def __init__(self, path=None, clock_ns=None) -> None:
        import time as _time

        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._file = open(path, "w", buffering=1) if path is not None else None
        self._clock = clock_ns or _time.monotonic_ns
        self._t0 = self._clock()

    def now(self) -> int:
        return self._clock() - self._t0

    def record(self, ev: Event) -> Event:
        with self._lock:
            ev.time = self.now()
            ev.index = len(self._events)
            self._events.append(ev)
            if self._file is not None:
                self._file.write(json.dumps(ev.to_json()) + "\n")
        return ev

    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def write_jsonl(events: Iterable[Event], path) -> None:
    with open(path, "w") as f:
        for ev in events:
            f.write(json.dumps(ev.to_json()) + "\n")


def read_jsonl(path) -> list[Event]:
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(Event.from_json(json.loads(line)))
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{path}:{n}: {exc}") from None
    return out


def pair(events: Iterable[Event]) -> list[Op]:
    """Pairs each client invoke with its process's next completion; skips nemesis events.

    Raises ValueError on a malformed history (a completion without an invoke, two invokes of a
    process in a row): a checker must not guess what such a history meant.
    """
    pending: dict[Any, Event] = {}
    ops: list[Op] = []
    slot: dict[Any, int] = {}
    for ev in events:
        if ev.process == NEMESIS:
            continue
        if ev.type == INVOKE:
            if ev.process in pending:
                raise ValueError(f"process {ev.process} invoked twice without completing: {ev}")
            pending[ev.process] = ev
            slot[ev.process] = len(ops)
            ops.append(Op(ev.process, ev.f, ev.key, ev, None))
        else:
            inv = pending.pop(ev.process, None)
            if inv is None:
                raise ValueError(f"completion without invoke: {ev}")
            if inv.f != ev.f:
                raise ValueError(f"completion {ev} does not match invoke {inv}")
            ops[slot.pop(ev.process)].complete = ev
    return ops


def nemesis_intervals(events: Iterable[Event]) -> list[tuple[int, int | None, str]]:
    """(start, stop or None, family) for each nemesis fault, from start-*/stop-* events."""
    open_: dict[str, int] = {}
    out = []
    for ev in events:
        if ev.process != NEMESIS:
            continue
        if ev.f.startswith("start-"):
            open_[ev.f[6:]] = ev.time
        elif ev.f.startswith("stop-"):
            fam = ev.f[5:]
            if fam in open_:
                out.append((open_.pop(fam), ev.time, fam))
    for fam, t in open_.items():
        out.append((t, None, fam))
    out.sort(key=lambda x: x[0])
    return out


def iter_ops_by_key(ops: Iterable[Op]) -> Iterator[tuple[Any, list[Op]]]:
    by: dict[Any, list[Op]] = {}
    for op in ops:
        by.setdefault(op.key, []).append(op)
    yield from by.items()
