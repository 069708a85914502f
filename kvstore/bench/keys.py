"""Key choosers for YCSB-style workloads: uniform, zipfian (scrambled) and latest.

The zipfian generator follows Gray et al., "Quickly generating billion-record synthetic
databases" (SIGMOD 1994), as YCSB does: after an O(n) zeta sum it draws a rank in O(1), rank 0
being the most popular with probability 1/zeta(n, theta) and rank k having weight 1/(k+1)^theta.
Ranks are *scrambled* (hashed) onto key numbers so that hot keys are spread over the keyspace
and therefore over buckets, as in YCSB's ScrambledZipfianGenerator; `latest` draws a zipfian
distance back from the newest inserted key (YCSB's SkewedLatestGenerator).
"""

from __future__ import annotations

import random

ZIPFIAN_THETA = 0.99
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


def fnv1a64(value: int) -> int:
    """FNV-1a over the 8 little-endian bytes of `value` (YCSB's key scrambler)."""
    h = _FNV_OFFSET
    for _ in range(8):
        h ^= value & 0xFF
        h = (h * _FNV_PRIME) & _MASK64
        value >>= 8
    return h


def key_name(number: int) -> bytes:
    """The key of record `number`: b"user" + its scrambled number, as YCSB names records."""
    return b"user%020d" % fnv1a64(number)


class UniformChooser:
    def __init__(self, item_count: int, rng: random.Random) -> None:
        if item_count < 1:
            raise ValueError("item_count must be >= 1")
        self.item_count = item_count
        self._rng = rng

    def next(self) -> int:
        return int(self._rng.random() * self.item_count)

    def grow(self, item_count: int) -> None:
        self.item_count = max(self.item_count, item_count)


class ZipfianRanks:
    """Draws ranks 0..n-1, rank 0 the most popular; `grow(n)` extends n incrementally."""

    def __init__(self, item_count: int, rng: random.Random, theta: float = ZIPFIAN_THETA) -> None:
        if item_count < 1:
            raise ValueError("item_count must be >= 1")
        if not 0 < theta < 1:
            raise ValueError("theta must be in (0, 1)")
        self._rng = rng
        self.theta = theta
        self._alpha = 1.0 / (1.0 - theta)
        self._zeta2 = 1.0 + 0.5**theta
        self.item_count = 0
        self._zetan = 0.0
        self.grow(item_count)

    def grow(self, item_count: int) -> None:
        if item_count <= self.item_count:
            return
        theta = self.theta
        self._zetan += sum(1.0 / (i**theta) for i in range(self.item_count + 1, item_count + 1))
        self.item_count = item_count
        n = item_count
        self._eta = (1.0 - (2.0 / n) ** (1.0 - self.theta)) / (1.0 - self._zeta2 / self._zetan) if n > 1 else 0.0

    def probability_of_rank0(self) -> float:
        return 1.0 / self._zetan

    def next(self) -> int:
        u = self._rng.random()
        uz = u * self._zetan
        if uz < 1.0:
            return 0
        if uz < self._zeta2:
            return 1 if self.item_count > 1 else 0
        rank = int(self.item_count * (self._eta * u - self._eta + 1.0) ** self._alpha)
        return min(rank, self.item_count - 1)


class ZipfianChooser:
    """Scrambled zipfian: popular ranks land on key numbers spread over the keyspace."""

    def __init__(self, item_count: int, rng: random.Random, theta: float = ZIPFIAN_THETA) -> None:
        self._ranks = ZipfianRanks(item_count, rng, theta)
        self.item_count = item_count

    def next(self) -> int:
        return fnv1a64(self._ranks.next()) % self.item_count

    def grow(self, item_count: int) -> None:
        # The hot set stays fixed while inserts add cold keys at the end, as in YCSB.
        self.item_count = max(self.item_count, item_count)
        self._ranks.grow(self.item_count)


class LatestChooser:
    """The newest keys are the hottest: key = newest - zipfian rank."""

    def __init__(self, item_count: int, rng: random.Random, theta: float = ZIPFIAN_THETA) -> None:
        self._ranks = ZipfianRanks(item_count, rng, theta)
        self.item_count = item_count

    def next(self) -> int:
        return self.item_count - 1 - self._ranks.next()

    def grow(self, item_count: int) -> None:
        if item_count > self.item_count:
            self.item_count = item_count
            self._ranks.grow(item_count)


CHOOSERS = {"uniform": UniformChooser, "zipfian": ZipfianChooser, "latest": LatestChooser}


def make_chooser(distribution: str, item_count: int, rng: random.Random):
    try:
        cls = CHOOSERS[distribution]
    except KeyError:
        raise ValueError(f"unknown key distribution {distribution!r}; choose one of {sorted(CHOOSERS)}") from None
    return cls(item_count, rng)
