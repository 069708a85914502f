"""Seeded generators: the nemesis schedule and the operations each client worker invokes.

The schedule is computed up front from the seed, so a seed names a run's faults exactly (the
client ops interleave with them in real time, which no seed can fix). Every enabled family is
used at least once, round robin first, then at random; with two or more families a second
fault sometimes starts while the first holds (composition).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Step:
    at_s: float
    action: str  # "start" | "stop"
    family: str


def nemesis_schedule(
    seed: int,
    families: list[str],
    duration_s: float,
    quiet_s: tuple[float, float] = (2.0, 4.0),
    fault_s: tuple[float, float] = (3.0, 7.0),
    overlap_p: float = 0.3,
) -> list[Step]:
    """Steps sorted by time; every start has a stop at or before duration_s."""
    rng = random.Random(f"nemesis-{seed}")
    steps: list[Step] = []
    if not families or duration_s <= 0:
        return steps
    t = rng.uniform(*quiet_s) / 2
    order = list(families)
    rng.shuffle(order)
    k = 0
    while True:
        fam = order[k] if k < len(order) else rng.choice(families)
        k += 1
        hold = rng.uniform(*fault_s)
        if t + hold > duration_s:
            break
        steps.append(Step(round(t, 3), "start", fam))
        others = [f for f in families if f != fam]
        if others and rng.random() < overlap_p:
            fam2 = rng.choice(others)
            t2 = t + rng.uniform(0.2, 0.6) * hold
            hold2 = min(rng.uniform(*fault_s) / 2, duration_s - t2)
            steps.append(Step(round(t2, 3), "start", fam2))
            steps.append(Step(round(t2 + hold2, 3), "stop", fam2))
            t = max(t + hold, t2 + hold2)
            steps.append(Step(round(t + 1e-3, 3), "stop", fam))
        else:
            t += hold
            steps.append(Step(round(t, 3), "stop", fam))
        t += rng.uniform(*quiet_s)
    steps.sort(key=lambda s: (s.at_s, s.action == "start"))
    return steps


class RegisterOps:
    """read (linearizable or follower) / write of a unique value / cas, on a few keys spread
    over many buckets. Values are strings "w<worker>-<n>", unique in the run."""

    def __init__(self, keys: list[str], seed: int, worker: int) -> None:
        self.keys = keys
        self.rng = random.Random(f"ops-{seed}-{worker}")
        self.worker = worker
        self.counter = itertools.count(1)
        self.last_seen: dict[str, str | None] = {}

    def next(self) -> dict:
        key = self.rng.choice(self.keys)
        r = self.rng.random()
        if r < 0.25:
            return {"f": "read", "key": key, "consistency": "linearizable"}
        if r < 0.5:
            return {"f": "read", "key": key, "consistency": "follower"}
        value = f"w{self.worker}-{next(self.counter)}"
        if r < 0.8:
            return {"f": "write", "key": key, "value": value}
        return {"f": "cas", "key": key, "value": [self.last_seen.get(key), value]}

    def observe(self, key: str, value) -> None:
        self.last_seen[key] = value


class SetOps:
    """add of a unique element ("<worker>-<n>") to one of a few sets."""

    def __init__(self, keys: list[str], seed: int, worker: int) -> None:
        self.keys = keys
        self.rng = random.Random(f"set-{seed}-{worker}")
        self.worker = worker
        self.counter = itertools.count(1)

    def next(self) -> dict:
        return {"f": "add", "key": self.rng.choice(self.keys), "value": f"{self.worker}-{next(self.counter)}"}

    def observe(self, key, value) -> None:
        pass


def register_keys(count: int) -> list[str]:
    return [f"jr{i}" for i in range(count)]


def set_keys(count: int) -> list[str]:
    return [f"js{i}" for i in range(count)]
