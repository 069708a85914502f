import random

from hypothesis import given, settings, strategies as st

from jepsen import generator, nemesis


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2**32), st.lists(st.sampled_from(nemesis.FAMILIES), min_size=1, max_size=4, unique=True),
       st.floats(0, 120))
def test_schedule_is_well_formed(seed, families, duration):
    steps = generator.nemesis_schedule(seed, families, duration)
    assert steps == generator.nemesis_schedule(seed, families, duration)  # the seed names it
    active = set()
    last = 0.0
    for s in steps:
        assert s.at_s >= last and s.at_s <= duration + 0.01
        last = s.at_s
        if s.action == "start":
            assert s.family not in active
            active.add(s.family)
        else:
            assert s.family in active
            active.remove(s.family)
    assert not active  # everything started is stopped


def test_every_family_is_used_in_a_long_enough_run():
    steps = generator.nemesis_schedule(7, list(nemesis.FAMILIES), 60)
    assert {s.family for s in steps} == set(nemesis.FAMILIES)


def test_register_ops_use_unique_values():
    gens = [generator.RegisterOps(generator.register_keys(8), 1, w) for w in range(3)]
    values = [op["value"] if op["f"] == "write" else op["value"][1]
              for g in gens for op in (g.next() for _ in range(300)) if op["f"] in ("write", "cas")]
    assert len(values) == len(set(values)) > 100


def test_partition_topologies():
    nodes = [1, 2, 3, 4, 5]
    assert nemesis.partition_pairs([[1], [2, 3]]) == {(1, 2), (2, 1), (1, 3), (3, 1)}
    pairs = nemesis.bridge_pairs(nodes)  # 1,2 | 3 | 4,5
    assert (1, 4) in pairs and (5, 2) in pairs and not any(3 in p for p in pairs)
    rng = random.Random(3)
    for _ in range(50):
        kind, pairs, desc = nemesis.random_topology(rng, nodes, ("isolate", "majority", "bridge", "one-way"))
        if kind == "majority":
            assert len(desc["minority"]) == 2 and len(desc["majority"]) == 3
        if kind == "one-way":
            assert all(a == desc["cannot_send"] for a, _ in pairs) and len(pairs) == 4
        if kind == "isolate":
            assert len(pairs) == 8
