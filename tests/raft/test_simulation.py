"""The deterministic cluster simulator: seeded schedules against the Raft core, and the
checker's own tests (each invariant must be able to fail)."""

from __future__ import annotations

import collections
import os

import pytest

from raft.simulation import (
    Checker,
    Cluster,
    FaultRates,
    InvariantViolation,
    PendingRead,
    SimNode,
    SimulationFailure,
    Stage,
    StateMachine,
    check_liveness,
    encode_put,
    fault_step,
    heal,
    quiet_step,
    run_seed,
)
from raft.storage import MemoryStorage
from raft.types import ConfState, Entry, HardState, Role

# ---------------------------------------------------------------------------------------------
# Seeded schedules (the default suite runs a few hundred; scripts/sim.py runs thousands)

SEEDS_3 = int(os.environ.get("KVSTORE_SIM_SEEDS", "800"))
SEEDS_5 = max(SEEDS_3 // 4, 1)
STEPS = 200

_totals: collections.Counter[str] = collections.Counter()


def _run_block(start: int, count: int, nodes: int) -> None:
    for seed in range(start, start + count):
        try:
            res = run_seed(seed, nodes=nodes, steps=STEPS)
        except SimulationFailure as f:
            pytest.fail(f.report(), pytrace=False)
        _totals.update(res.stats)


@pytest.mark.parametrize("block", range(4))
def test_seeded_schedules_three_nodes(block: int) -> None:
    per = SEEDS_3 // 4
    _run_block(block * per, per, nodes=3)


def test_seeded_schedules_five_nodes() -> None:
    _run_block(100_000, SEEDS_5, nodes=5)


def test_seeded_schedules_exercise_every_fault() -> None:
    """The schedules above really do crash nodes mid-Ready, pause them, install snapshots,
    change membership, transfer leadership and serve reads (a simulator that never does is
    useless). Runs after the seeded tests (it sums their statistics) or on its own."""
    if not _totals:
        _run_block(0, 30, nodes=3)
    for what in ("crashes", "crashes_mid_ready", "restarts", "snapshots_installed",
                 "conf_changes_committed", "transfers", "reads_served", "partitions",
                 "dropped", "compactions", "applied", "pauses", "proposals"):
        assert _totals[what] > 0, f"no {what} in {dict(_totals)}"


def test_same_seed_same_run() -> None:
    a = Cluster(3, seed=42, rates=FaultRates.draw(__import__("random").Random(42)))
    b = Cluster(3, seed=42, rates=FaultRates.draw(__import__("random").Random(42)))
    for _ in range(150):
        fault_step(a)
        fault_step(b)
    assert a.trace_lines() == b.trace_lines()
    assert a.stats == b.stats


def test_storage_factory_is_used() -> None:
    made: list[int] = []

    def factory(node_id: int) -> MemoryStorage:
        made.append(node_id)
        return MemoryStorage()

    run_seed(3, nodes=3, steps=50, storage_factory=factory)
    assert made[:3] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------
# The driver: crashes lose exactly what was not persisted


def _elect(c: Cluster) -> SimNode:
    for _ in range(500):
        quiet_step(c)
        leader = c.leader()
        if leader is not None and all(n.sm.applied >= leader.sm.applied for n in c.live()):
            return leader
    raise AssertionError("no leader")


def test_crash_before_persist_loses_the_unpersisted_entry() -> None:
    c = Cluster(3, seed=1)
    leader = _elect(c)
    last = leader.storage.last_index()
    leader.raw.propose(encode_put("a", "lost"))
    c.crash(leader, Stage.BEFORE_PERSIST)
    assert leader.raw is None
    assert leader.storage.last_index() == last


def test_crash_after_persist_keeps_the_entry() -> None:
    c = Cluster(3, seed=1)
    leader = _elect(c)
    last = leader.storage.last_index()
    leader.raw.propose(encode_put("a", "kept"))
    c.crash(leader, Stage.AFTER_PERSIST)
    assert leader.storage.last_index() == last + 1
    c.restart(leader)
    heal(c)
    check_liveness(c)


def test_restart_rebuilds_the_state_machine_from_storage() -> None:
    c = Cluster(3, seed=5)
    leader = _elect(c)
    for _ in range(5):
        c.propose(leader, "a")
        quiet_step(c)
    for _ in range(20):
        quiet_step(c)
    follower = next(n for n in c.live() if n is not leader)
    c.compact(follower)
    snap = follower.storage.snapshot().metadata.index
    assert snap > 1 and follower.storage.first_index() > 2
    c.crash(follower)
    c.restart(follower)
    # Straight after the restart: the snapshot's state, plus the committed entries after it
    # that the restart re-applied.
    assert follower.sm.applied >= snap
    c.checker.check_snapshot_state(follower.id, follower.sm)
    c.propose(c.leader(), "a")
    for _ in range(30):
        quiet_step(c)
    assert follower.sm.applied == leader.sm.applied
    assert follower.sm.kv == leader.sm.kv and follower.sm.kv["a"] == "w6"


# ---------------------------------------------------------------------------------------------
# The checker: every invariant can fail


def _storage_with(terms: list[int]) -> MemoryStorage:
    s = MemoryStorage()
    s.append([Entry(t, i + 1, data=f"e{i + 1}t{t}".encode()) for i, t in enumerate(terms)])
    return s


def test_election_safety_violation() -> None:
    ck = Checker()
    ck.observe_role(1, Role.LEADER, 5)
    ck.observe_role(1, Role.LEADER, 5)
    ck.observe_role(2, Role.LEADER, 6)
    with pytest.raises(InvariantViolation, match="election_safety"):
        ck.observe_role(3, Role.LEADER, 5)


def test_log_matching_violation_same_index_and_term_different_data() -> None:
    ck = Checker()
    ck.observe_append(1, MemoryStorage(), [Entry(1, 1, data=b"x")])
    with pytest.raises(InvariantViolation, match="log_matching"):
        ck.observe_append(2, MemoryStorage(), [Entry(1, 1, data=b"y")])


def test_log_matching_violation_different_predecessor() -> None:
    ck = Checker()
    ck.observe_append(1, _storage_with([1]), [Entry(2, 2, data=b"x")])
    with pytest.raises(InvariantViolation, match="log_matching"):
        ck.observe_append(2, _storage_with([2]), [Entry(2, 2, data=b"x")])


def test_log_matching_violation_term_goes_down() -> None:
    ck = Checker()
    with pytest.raises(InvariantViolation, match="log_matching"):
        ck.observe_append(1, _storage_with([3]), [Entry(2, 2)])


def test_state_machine_safety_violation() -> None:
    ck = Checker()
    a, b = SimNode(1, MemoryStorage()), SimNode(2, MemoryStorage())
    ck.observe_apply(a, Entry(1, 1, data=encode_put("k", "v1")), 1)
    with pytest.raises(InvariantViolation, match="state_machine_safety"):
        ck.observe_apply(b, Entry(2, 1, data=encode_put("k", "v2")), 2)


def test_state_machine_safety_violation_gap() -> None:
    ck = Checker()
    a = SimNode(1, MemoryStorage())
    with pytest.raises(InvariantViolation, match="state_machine_safety"):
        ck.observe_apply(a, Entry(1, 2), 1)


def test_leader_completeness_violation() -> None:
    ck = Checker()
    node = SimNode(1, MemoryStorage())
    ck.observe_apply(node, Entry(1, 1), 1)
    node.sm.applied = 1
    ck.observe_apply(node, Entry(1, 2), 1)
    # Node 2 becomes leader of term 2 with a log that has a different entry 2.
    with pytest.raises(InvariantViolation, match="leader_completeness"):
        ck.check_leader(2, 2, _storage_with([1, 2]))
    # A leader of term 1 (a stale one) is not required to have what term 1 committed... but
    # a leader of term 2 with the right log passes.
    ck.check_leader(3, 2, _storage_with([1, 1]))


def test_leader_append_only_violation() -> None:
    ck = Checker()
    ck.check_leader(1, 3, _storage_with([1, 3, 3]))
    with pytest.raises(InvariantViolation, match="leader_append_only"):
        ck.check_leader(1, 3, _storage_with([1, 3]))
    with pytest.raises(InvariantViolation, match="leader_append_only"):
        ck.check_leader(1, 3, _storage_with([1, 3, 2, 3]))


def test_committed_never_lost_violation() -> None:
    ck = Checker()
    node = SimNode(1, _storage_with([1, 1]))
    ck.observe_apply(node, Entry(1, 1, data=b"e1t1"), 1)
    node.sm.applied = 1
    ck.observe_apply(node, Entry(1, 2, data=b"e2t1"), 1)
    other = SimNode(2, _storage_with([1, 2]))
    other.storage.set_hard_state(HardState(term=2, commit=2))
    with pytest.raises(InvariantViolation, match="committed_never_lost"):
        ck.check_durable(other)
    beyond = SimNode(3, _storage_with([1]))
    beyond.storage.set_hard_state(HardState(term=2, commit=2))
    with pytest.raises(InvariantViolation, match="committed_never_lost"):
        ck.check_durable(beyond)


def test_linearizable_read_violations() -> None:
    ck = Checker()
    node = SimNode(1, MemoryStorage())
    ck.observe_apply(node, Entry(1, 1, data=encode_put("k", "w1")), 1)
    node.sm.applied = 1
    ck.observe_apply(node, Entry(1, 2, data=encode_put("k", "w2")), 1)
    floor = ck.read_began()
    assert floor == 2
    read = PendingRead(1, "k", b"r", floor, 0)
    # A read index below what was committed when the read began.
    with pytest.raises(InvariantViolation, match="linearizable_reads"):
        ck.read_served(1, read, 1, StateMachine(kv={"k": "w2"}, applied=2))
    # A stale value.
    with pytest.raises(InvariantViolation, match="linearizable_reads"):
        ck.read_served(1, read, 2, StateMachine(kv={"k": "w1"}, applied=2))
    ck.read_served(1, read, 2, StateMachine(kv={"k": "w2"}, applied=2))


def test_snapshot_state_must_match_the_committed_log() -> None:
    ck = Checker()
    node = SimNode(1, MemoryStorage())
    ck.observe_apply(node, Entry(1, 1, data=encode_put("k", "w1")), 1)
    ck.check_snapshot_state(1, StateMachine(kv={"k": "w1"}, applied=1))
    with pytest.raises(InvariantViolation, match="state_machine_safety"):
        ck.check_snapshot_state(1, StateMachine(kv={}, applied=1))


def test_storage_has_the_write_methods_the_simulator_uses() -> None:
    # The simulator relies on these write methods of the storage it is given.
    for name in ("append", "set_hard_state", "apply_snapshot", "compact", "create_snapshot",
                 "bootstrap", "set_conf_state"):
        assert callable(getattr(MemoryStorage, name)), name
    s = MemoryStorage()
    s.bootstrap(ConfState(voters=(1, 2, 3)))
    assert s.snapshot().metadata.index >= 1
