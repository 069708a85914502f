"""The set checker: every acknowledged add must be in the final read, nothing else may be.

Ops: f "add" (value: the element, unique per run) and f "read" (ok value: the elements now in
the set stored under that key). The final read of a key is its last ok read; the run does it
after healing every fault. Adds that ended info may or may not be present ("recovered" when
they are); adds that failed definitely must not be present.
"""

from __future__ import annotations

from typing import Any, Iterable

from .history import FAIL, OK, Op, pair


def check(events_or_ops: Iterable) -> dict:
    items = list(events_or_ops)
    ops = items if (items and isinstance(items[0], Op)) else pair(items)
    attempted: dict[Any, Any] = {}
    acked: dict[Any, Any] = {}
    failed: dict[Any, Any] = {}
    final: dict[Any, tuple[int, set]] = {}
    for op in ops:
        if op.f == "add":
            el = op.invoke.value
            attempted[el] = op.key
            if op.type == OK:
                acked[el] = op.key
            elif op.type == FAIL:
                failed[el] = op.key
        elif op.f == "read" and op.type == OK:
            order = op.complete.index if op.complete.index >= 0 else op.complete.time
            prev = final.get(op.key)
            if prev is None or order > prev[0]:
                final[op.key] = (order, set(op.complete.value or []))
    keys_with_adds = set(attempted.values())
    missing_reads = sorted(str(k) for k in keys_with_adds - set(final))
    present: dict[Any, Any] = {}
    for key, (_o, els) in final.items():
        for el in els:
            present[el] = key
    lost = sorted((el for el, k in acked.items() if present.get(el) != k), key=str)
    unexpected = sorted((el for el in present if el not in attempted), key=str)
    resurrected = sorted((el for el in present if el in failed), key=str)
    recovered = sorted((el for el in present if el in attempted and el not in acked and el not in failed), key=str)
    valid = not lost and not unexpected and not resurrected and not missing_reads
    return {
        "valid": valid,
        "attempted": len(attempted),
        "acknowledged": len(acked),
        "present": len(present),
        "recovered": len(recovered),
        "lost": lost[:50],
        "lost_count": len(lost),
        "unexpected": unexpected[:50],
        "unexpected_count": len(unexpected),
        "failed_but_present": resurrected[:50],
        "keys_without_final_read": missing_reads,
    }
