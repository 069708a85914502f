"""Hybrid logical clock: versions that follow causality and stay close to wall time.

A timestamp is one int, nanoseconds since the Unix epoch, where a logical tick is +1 (the
convention of storage/commands.py). `now()` never goes backwards and never repeats;
`observe(ts)` moves the clock past a timestamp seen elsewhere (an applied write), so a node
that becomes leader stamps later than everything it has applied, even with a skewed clock.
(The store also makes versions strictly increasing per group whatever the stamp says.)

The wall clock is read through a hook: the jepsen suite skews a node's clock with the
environment variable KVSTORE_CLOCK_OFFSET_MS (added to the real clock).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

NS_PER_MS = 1_000_000


def system_wall_ns() -> int:
    return time.time_ns()


def skewed_wall_clock(offset_ms: int) -> Callable[[], int]:
    if offset_ms == 0:
        return system_wall_ns
    offset_ns = offset_ms * NS_PER_MS
    return lambda: time.time_ns() + offset_ns


def clock_offset_ms_from_env(environ=os.environ) -> int:
    raw = environ.get("KVSTORE_CLOCK_OFFSET_MS", "").strip()
    try:
        return int(raw) if raw else 0
    except ValueError:
        raise ValueError(f"KVSTORE_CLOCK_OFFSET_MS must be an int of milliseconds, not {raw!r}") from None


def wall_clock_from_env(environ=os.environ) -> Callable[[], int]:
    """The wall clock, offset by KVSTORE_CLOCK_OFFSET_MS if set (a test hook for clock skew)."""
    return skewed_wall_clock(clock_offset_ms_from_env(environ))


class HybridClock:
    def __init__(self, wall_ns: Callable[[], int] = system_wall_ns) -> None:
        self._wall_ns = wall_ns
        self._last = 0

    @property
    def last(self) -> int:
        return self._last

    def now(self) -> int:
        """A timestamp greater than every one this clock returned or observed."""
        wall = self._wall_ns()
        ts = wall if wall > self._last else self._last + 1
        self._last = ts
        return ts

    def observe(self, ts: int) -> None:
        """Remember a timestamp from elsewhere so that later `now()` values exceed it."""
        if ts > self._last:
            self._last = ts
