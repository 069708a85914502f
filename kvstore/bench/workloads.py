"""YCSB-style workload mixes and the per-process operation generator."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

from kvstore.bench.keys import key_name, make_chooser

OPS = ("read", "update", "insert", "scan")
SCAN_PREFIX_BYTES = 6


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    read: float = 0.0
    update: float = 0.0
    insert: float = 0.0
    scan: float = 0.0
    distribution: str = "zipfian"

    def mix(self) -> dict[str, float]:
        return {op: getattr(self, op) for op in OPS if getattr(self, op) > 0}


WORKLOADS: dict[str, Workload] = {
    "A": Workload("A", "update heavy: 50% read, 50% update", read=0.5, update=0.5),
    "B": Workload("B", "read mostly: 95% read, 5% update", read=0.95, update=0.05),
    "C": Workload("C", "read only", read=1.0),
    "D": Workload("D", "read latest: 95% read, 5% insert", read=0.95, insert=0.05, distribution="latest"),
    "E": Workload("E", "short ranges: 95% scan, 5% insert", scan=0.95, insert=0.05),
    "W": Workload("W", "write only: 100% update", update=1.0),
}


def get_workload(name: str) -> Workload:
    try:
        return WORKLOADS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose one of {sorted(WORKLOADS)}") from None


class OpGenerator:
    """Draws (op, key, value-or-scan-length) tuples for one generator process.

    Inserts of several processes never collide: process i of n inserts record numbers
    records + i, records + i + n, ... (each process only knows its own inserts, so `latest`
    reads follow the newest keys this process wrote, plus the preloaded ones).
    """

    def __init__(
        self,
        workload: Workload,
        records: int,
        value_size: int,
        *,
        distribution: str | None = None,
        scan_max: int = 100,
        seed: int = 1,
        process_index: int = 0,
        process_count: int = 1,
    ) -> None:
        if records < 1:
            raise ValueError("records must be >= 1")
        if value_size < 0:
            raise ValueError("value_size must be >= 0")
        self.workload = workload
        self.records = records
        self.value_size = value_size
        self.scan_max = max(1, scan_max)
        self._rng = random.Random(seed * 1_000_003 + process_index)
        self._chooser = make_chooser(distribution or workload.distribution, records, self._rng)
        self._thresholds: list[tuple[float, str]] = []
        total = sum(workload.mix().values())
        acc = 0.0
        for op, share in workload.mix().items():
            acc += share / total
            self._thresholds.append((acc, op))
        self._process_index = process_index
        self._process_count = process_count
        self._inserted = 0
        self._value_pool = os.urandom(max(4096, value_size * 16))

    def value(self) -> bytes:
        start = int(self._rng.random() * (len(self._value_pool) - self.value_size))
        return self._value_pool[start : start + self.value_size]

    def _next_insert_number(self) -> int:
        number = self.records + self._process_index + self._inserted * self._process_count
        self._inserted += 1
        return number

    def next(self) -> tuple[str, bytes, object]:
        u = self._rng.random()
        op = self._thresholds[-1][1]
        for threshold, name in self._thresholds:
            if u < threshold:
                op = name
                break
        if op == "insert":
            number = self._next_insert_number()
            self._chooser.grow(number + 1)
            return op, key_name(number), self.value()
        key = key_name(self._chooser.next())
        if op == "update":
            return op, key, self.value()
        if op == "scan":
            # a short range: the first 1..scan_max keys sharing the chosen key's first
            # SCAN_PREFIX_BYTES bytes (about 1/18 of the keyspace: "user" + 2 digits)
            return op, key[:SCAN_PREFIX_BYTES], 1 + int(self._rng.random() * self.scan_max)
        return op, key, None
