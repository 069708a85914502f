"""Shape of the key choosers (seeded, so these are deterministic)."""

import random
from collections import Counter

import pytest

from kvstore.bench.keys import LatestChooser, UniformChooser, ZipfianChooser, ZipfianRanks, key_name
from kvstore.bench.workloads import OpGenerator, get_workload

N = 1000
SAMPLES = 200_000


def test_zipfian_ranks_follow_power_law():
    ranks = ZipfianRanks(N, random.Random(7))
    counts = Counter(ranks.next() for _ in range(SAMPLES))
    assert set(counts) <= set(range(N))
    p0 = counts[0] / SAMPLES
    assert p0 == pytest.approx(ranks.probability_of_rank0(), rel=0.05)
    # weight of rank k is 1/(k+1)^theta: rank 1 carries 0.5^0.99 of rank 0's
    assert counts[1] / counts[0] == pytest.approx(0.5**0.99, rel=0.08)
    # popularity falls with rank, by decade
    decades = [sum(counts[r] for r in range(lo, lo + 10)) for lo in (0, 10, 100, 500)]
    assert decades == sorted(decades, reverse=True)
    # the hottest 1% of keys take a large share (about 37% for theta 0.99, n=1000)
    top = sum(counts[r] for r in range(N // 100))
    assert 0.30 < top / SAMPLES < 0.45


def test_uniform_is_flat():
    ch = UniformChooser(100, random.Random(3))
    counts = Counter(ch.next() for _ in range(100_000))
    assert set(counts) == set(range(100))
    assert max(counts.values()) < 1.25 * min(counts.values())


def test_scrambled_zipfian_is_skewed_but_spread_over_keyspace():
    ch = ZipfianChooser(N, random.Random(11))
    counts = Counter(ch.next() for _ in range(SAMPLES))
    hottest = [k for k, _ in counts.most_common(10)]
    # same skew as the ranks...
    assert counts.most_common(1)[0][1] / SAMPLES > 0.05
    # ...but the hot keys are not the first key numbers
    assert hottest != list(range(10))
    assert max(hottest) > N // 2


def test_latest_prefers_newest_and_follows_inserts():
    ch = LatestChooser(N, random.Random(5))
    counts = Counter(ch.next() for _ in range(SAMPLES))
    assert counts.most_common(1)[0][0] == N - 1
    assert counts[N - 1] > counts[N - 2] > counts[N - 50]
    ch.grow(N + 100)
    counts = Counter(ch.next() for _ in range(50_000))
    assert counts.most_common(1)[0][0] == N + 99
    assert max(counts) == N + 99


def test_inserts_of_processes_never_collide():
    keys = set()
    for p in range(3):
        gen = OpGenerator(get_workload("D"), 100, 10, seed=1, process_index=p, process_count=3)
        for _ in range(3000):
            op, key, _ = gen.next()
            if op == "insert":
                assert key not in keys
                keys.add(key)
    assert len(keys) > 300
    assert key_name(1) != key_name(2)


def test_workload_mix():
    gen = OpGenerator(get_workload("B"), 100, 100, seed=2)
    ops = Counter(gen.next()[0] for _ in range(20_000))
    assert ops["read"] / 20_000 == pytest.approx(0.95, abs=0.01)
    assert set(ops) == {"read", "update"}
    op, key, value = OpGenerator(get_workload("W"), 10, 100).next()
    assert op == "update" and len(value) == 100 and key.startswith(b"user")
    op, key, n = OpGenerator(get_workload("E"), 10, 100, scan_max=5, seed=3).next()
    assert op in ("scan", "insert")
