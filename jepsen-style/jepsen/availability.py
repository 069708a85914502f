"""Availability figures: how much of the workload succeeded during faults, and how long each
bucket went without a successful op around a fault. Informational: a CP store may refuse
service during a partition; the figures say how much, they do not pass or fail a run.
"""

from __future__ import annotations

from typing import Any, Callable

from .history import FAIL, INFO, OK, Op

NS = 1_000_000_000


def _in_any(t: int, intervals) -> bool:
    return any(s <= t <= (e if e is not None else t) for s, e, _f in intervals)


def check(
    ops: list[Op],
    intervals: list[tuple[int, int | None, str]],
    bucket_of: Callable[[Any], int] | None = None,
    end_time: int | None = None,
) -> dict:
    during = {OK: 0, FAIL: 0, INFO: 0}
    outside = {OK: 0, FAIL: 0, INFO: 0}
    for op in ops:
        (during if _in_any(op.start, intervals) else outside)[op.type] += 1

    def share(c):
        total = sum(c.values())
        return round(c[OK] / total, 4) if total else None

    out = {
        "during_faults": dict(during, ok_share=share(during)),
        "outside_faults": dict(outside, ok_share=share(outside)),
        "fault_intervals": len(intervals),
    }
    if bucket_of is None:
        return out
    # Longest gap between successive ok completions of one bucket that overlaps a fault.
    oks: dict[int, list[int]] = {}
    for op in ops:
        if op.type == OK and op.complete is not None:
            oks.setdefault(bucket_of(op.key), []).append(op.complete.time)
    horizon = end_time if end_time is not None else max((t for ts in oks.values() for t in ts), default=0)
    closed = [(s, e if e is not None else horizon, f) for s, e, f in intervals]
    per_bucket = {}
    for b, ts in oks.items():
        ts.sort()
        worst = 0
        for s, e, _f in closed:
            # from the fault's start to the first ok after its end: the longest stretch with
            # no ok op on this bucket (no ok at all after the start: up to the horizon)
            points = [s]
            for t in ts:
                if t > s:
                    points.append(t)
                    if t > e:
                        break
            if len(points) == 1 or points[-1] <= e:
                points.append(max(horizon, e))
            worst = max(worst, max(b2 - a2 for a2, b2 in zip(points, points[1:])))
        per_bucket[b] = round(worst / NS, 3)
    out["longest_unavailability_after_fault_s"] = {
        "max": max(per_bucket.values(), default=0.0),
        "buckets": len(per_bucket),
        "worst_buckets": dict(sorted(per_bucket.items(), key=lambda kv: -kv[1])[:10]),
    }
    return out
