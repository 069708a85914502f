"""Nemeses: small objects with start(rng) and stop(), each one family of fault.

    kill       kill -9 a random node / the node leading the most buckets / a majority; stop
               restarts them
    pause      SIGSTOP the same kinds of targets; stop sends SIGCONT
    partition  isolate one node, split majority/minority, a bridge (two halves that only the
               middle node sees), a one-way cut, or flapping (a new random partition every
               ~1 s until stopped) - blackhole routes inside the namespaces (netns hosts only)
    clock      restart 1..minority nodes with KVSTORE_CLOCK_OFFSET_MS skewed by up to +-60 s
               (kvstore/hlc.py reads the offset once, at start); stop restarts them unskewed
    membership not offered: the node has no membership-change API yet

start() returns a JSON-able description of what it did (it goes into the history). Process
faults never pick a node another process fault already holds (a paused node is not also
killed), so the composition stays meaningful; partitions are independent of them.
"""

from __future__ import annotations

import random
import threading

from .cluster import Cluster

FAMILIES = ("kill", "pause", "partition", "clock")


class Nemesis:
    family = "?"

    def __init__(self, cluster: Cluster, busy: set[int]) -> None:
        self.cluster = cluster
        self.busy = busy  # nodes held by a process fault (shared by all process nemeses)
        self.active = False

    def start(self, rng: random.Random) -> dict:
        raise NotImplementedError

    def stop(self) -> dict:
        raise NotImplementedError


def _free(nem: Nemesis) -> list[int]:
    return [i for i in nem.cluster.nodes if i not in nem.busy]


def _pick_targets(nem: Nemesis, rng: random.Random, modes: tuple[str, ...]) -> tuple[str, list[int]]:
    free = _free(nem)
    n = nem.cluster.n
    majority = n // 2 + 1
    modes = tuple(m for m in modes if m != "majority" or len(free) >= majority)
    mode = rng.choice(modes) if modes else "none"
    if not free or mode == "none":
        return "none", []
    if mode == "leader":
        counts: dict[int, int] = {}
        for b, leader in nem.cluster.leaders().items():
            if leader in free:
                counts[leader] = counts.get(leader, 0) + 1
        if counts:
            best = max(sorted(counts), key=lambda i: counts[i])
            return "leader", [best]
        mode = "random"  # no leader known right now
    if mode == "majority":
        return "majority", sorted(rng.sample(free, majority))
    return "random", [rng.choice(free)]


class _ProcessNemesis(Nemesis):
    """Hits the picked nodes' processes on start and heals them on stop."""

    modes = ("random", "leader", "majority")
    healed = ""  # the key that lists the healed nodes in stop()'s record

    def __init__(self, cluster, busy) -> None:
        super().__init__(cluster, busy)
        self.targets: list[int] = []

    def _hit(self, i: int) -> None:
        raise NotImplementedError

    def _heal(self, i: int) -> None:
        raise NotImplementedError

    def start(self, rng):
        mode, self.targets = _pick_targets(self, rng, self.modes)
        self.busy.update(self.targets)
        for i in self.targets:
            self._hit(i)
        self.active = True
        return {"mode": mode, "nodes": self.targets}

    def stop(self):
        for i in self.targets:
            self._heal(i)
        self.busy.difference_update(self.targets)
        done, self.targets = self.targets, []
        self.active = False
        return {self.healed: done}


class Kill(_ProcessNemesis):
    family = "kill"
    healed = "restarted"

    def _hit(self, i: int) -> None:
        self.cluster.kill(i)

    def _heal(self, i: int) -> None:
        self.cluster.start(i)


class Pause(_ProcessNemesis):
    family = "pause"
    healed = "resumed"

    def _hit(self, i: int) -> None:
        self.cluster.pause(i)

    def _heal(self, i: int) -> None:
        self.cluster.resume(i)


def partition_pairs(components: list[list[int]]) -> set[tuple[int, int]]:
    """Both directions between every two nodes in different components."""
    where = {i: c for c, comp in enumerate(components) for i in comp}
    return {(a, b) for a in where for b in where if where[a] != where[b]}


def bridge_pairs(nodes: list[int]) -> set[tuple[int, int]]:
    """Two halves that cannot talk to each other; the middle node talks to both."""
    mid = len(nodes) // 2
    left, right = nodes[:mid], nodes[mid + 1 :]
    return {(a, b) for a in left for b in right} | {(b, a) for a in left for b in right}


def random_topology(rng: random.Random, nodes: list[int], kinds: tuple[str, ...]) -> tuple[str, set, dict]:
    nodes = list(nodes)
    rng.shuffle(nodes)
    kind = rng.choice(kinds)
    n = len(nodes)
    if kind == "isolate" or n < 3 and kind in ("bridge", "majority"):
        one = nodes[0]
        return "isolate", partition_pairs([[one], nodes[1:]]), {"isolated": one}
    if kind == "majority":
        minority = sorted(nodes[: (n - 1) // 2])
        majority = sorted(nodes[(n - 1) // 2 :])
        return "majority", partition_pairs([minority, majority]), {"minority": minority, "majority": majority}
    if kind == "bridge":
        return "bridge", bridge_pairs(nodes), {"order": nodes, "bridge": nodes[n // 2]}
    if kind == "one-way":
        src = nodes[0]
        return "one-way", {(src, d) for d in nodes[1:]}, {"cannot_send": src}
    raise ValueError(f"unknown partition kind {kind!r}")


class Partition(Nemesis):
    family = "partition"
    kinds = ("isolate", "majority", "bridge", "one-way", "flapping")

    def __init__(self, cluster, busy, flap_interval_s: float = 1.0) -> None:
        super().__init__(cluster, busy)
        if not cluster.hosts.supports_partition:
            raise ValueError(f"partitions need netns hosts (these are {cluster.hosts.mode})")
        self.flap_interval_s = flap_interval_s
        self._flapper: threading.Thread | None = None
        self._stop_flap = threading.Event()

    def start(self, rng):
        kind = rng.choice(self.kinds)
        nodes = list(self.cluster.nodes)
        if kind == "flapping":
            seed = rng.getrandbits(32)
            self._stop_flap.clear()
            self._flapper = threading.Thread(target=self._flap, args=(random.Random(seed),), daemon=True)
            self._flapper.start()
            self.active = True
            return {"kind": "flapping", "seed": seed}
        kind, pairs, desc = random_topology(rng, nodes, self.kinds[:-1])
        self.cluster.hosts.set_blocked(pairs)
        self.active = True
        return {"kind": kind, **desc}

    def _flap(self, rng: random.Random) -> None:
        nodes = list(self.cluster.nodes)
        on = False
        while not self._stop_flap.wait(self.flap_interval_s * rng.uniform(0.5, 1.5)):
            if on:
                self.cluster.hosts.set_blocked(set())
            else:
                _k, pairs, _d = random_topology(rng, nodes, ("isolate", "majority", "bridge"))
                self.cluster.hosts.set_blocked(pairs)
            on = not on

    def stop(self):
        if self._flapper is not None:
            self._stop_flap.set()
            self._flapper.join(timeout=10)
            self._flapper = None
        self.cluster.hosts.heal()
        self.active = False
        return {"healed": True}


class Clock(Nemesis):
    family = "clock"
    max_skew_ms = 60_000

    def __init__(self, cluster, busy) -> None:
        super().__init__(cluster, busy)
        self.targets: list[int] = []

    def start(self, rng):
        free = _free(self)
        k = rng.randint(1, max(1, (self.cluster.n - 1) // 2))
        self.targets = sorted(rng.sample(free, min(k, len(free))))
        self.busy.update(self.targets)
        skews = {}
        for i in self.targets:
            skew = rng.choice([-1, 1]) * rng.randint(100, self.max_skew_ms)
            skews[i] = skew
            self.cluster.restart(i, clock_offset_ms=skew)
        self.active = True
        return {"skew_ms": skews}

    def stop(self):
        for i in self.targets:
            self.cluster.restart(i, clock_offset_ms=0)
        self.busy.difference_update(self.targets)
        done, self.targets = self.targets, []
        self.active = False
        return {"reset": done}


def build(families: list[str], cluster: Cluster) -> dict[str, Nemesis]:
    busy: set[int] = set()
    out = {}
    for fam in families:
        if fam == "kill":
            out[fam] = Kill(cluster, busy)
        elif fam == "pause":
            out[fam] = Pause(cluster, busy)
        elif fam == "partition":
            out[fam] = Partition(cluster, busy)
        elif fam == "clock":
            out[fam] = Clock(cluster, busy)
        elif fam == "membership":
            raise ValueError("membership changes: the node has no membership-change API yet")
        else:
            raise ValueError(f"unknown nemesis {fam!r} (known: {', '.join(FAMILIES)})")
    return out
