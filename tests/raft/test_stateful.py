"""A hypothesis state machine over the deterministic cluster simulator (raft/simulation.py).

Every rule is one operation of the simulated world (ticks, message delivery, drops,
duplicates, partitions, crashes — also half-way through a Ready —, restarts, proposals,
ReadIndex reads, membership changes, leader transfers, compaction); the Raft paper's
invariants are checked after every rule, and teardown heals everything and requires
liveness. A failure shrinks to a minimal schedule.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from raft.simulation import Cluster, FaultRates, Stage, check_liveness, heal, quiet_step


class RaftCluster(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # No random network faults: the rules are the faults. Short election timeouts so
        # that a few rules reach interesting states.
        self.c = c = Cluster(3, seed=7, rates=FaultRates(), election_tick=4, heartbeat_tick=1)
        # Start from a working cluster: a leader and a few committed writes.
        for _ in range(100):
            quiet_step(c)
            if c.leader() is not None and c.checker.writes:
                break
            if c.leader() is not None:
                c.propose(c.leader(), "a")
        assert c.leader() is not None

    # -- helpers --

    def _node(self, i: int):
        ids = sorted(n.id for n in self.c.nodes.values() if not n.removed)
        return self.c.nodes[ids[i % len(ids)]]

    def _live(self, i: int):
        live = self.c.live()
        return live[i % len(live)] if live else None

    def _settle(self) -> None:
        self.c.drain_all()

    # -- time and network --

    @rule(rounds=st.integers(1, 12))
    def tick_and_deliver(self, rounds: int) -> None:
        """Everyone ticks, then every message in flight is delivered, `rounds` times."""
        c = self.c
        for _ in range(rounds):
            c.now += 1
            c.resume_due()
            for node in c.active():
                c.tick(node)
            for msg in c.net.take_due(c.now, c.held()):
                c.deliver(msg)
            self._settle()

    @rule(i=st.integers(0, 7))
    def tick_one(self, i: int) -> None:
        node = self._live(i)
        if node is not None:
            self.c.tick(node)
            self._settle()

    @precondition(lambda self: self.c.net.in_flight)
    @rule(i=st.integers(0, 63))
    def deliver(self, i: int) -> None:
        c = self.c
        c.deliver(c.net.take(i % len(c.net.in_flight)))
        self._settle()

    @precondition(lambda self: self.c.net.in_flight)
    @rule(i=st.integers(0, 63))
    def drop(self, i: int) -> None:
        c = self.c
        msg = c.net.take(i % len(c.net.in_flight))
        c.log(f"drop {msg.type.name} {msg.frm}->{msg.to}")

    @precondition(lambda self: self.c.net.in_flight)
    @rule(i=st.integers(0, 63))
    def duplicate(self, i: int) -> None:
        c = self.c
        f = c.net.in_flight[i % len(c.net.in_flight)]
        c.net.send(f.msg, c.now)

    @rule(mask=st.integers(1, 30), one_way=st.booleans())
    def partition(self, mask: int, one_way: bool) -> None:
        ids = sorted(n.id for n in self.c.nodes.values() if not n.removed)
        side = {nid for k, nid in enumerate(ids) if mask >> k & 1}
        rest = set(ids) - side
        if side and rest:
            self.c.net.partition([side, rest], one_way)
            self.c.log(f"partition {sorted(side)} {'->' if one_way else '|'} {sorted(rest)}")

    @rule(one_way=st.booleans())
    def isolate_leader(self, one_way: bool) -> None:
        leader = self.c.leader()
        if leader is not None:
            self.c.partition_random(around=leader)

    @rule()
    def heal_network(self) -> None:
        self.c.heal_network()

    # -- nodes --

    @rule(i=st.integers(0, 7))
    def crash(self, i: int) -> None:
        node = self._live(i)
        if node is not None:
            self.c.crash(node)

    @rule(stage=st.sampled_from(Stage))
    def crash_leader(self, stage: Stage) -> None:
        leader = self.c.leader()
        if leader is not None:
            self.c.propose(leader, handle_ready=False)  # a pending Ready to interrupt
            self.c.crash(leader, stage)

    @precondition(lambda self: self.c.net.in_flight)
    @rule(i=st.integers(0, 63), stage=st.sampled_from(Stage))
    def deliver_then_crash(self, i: int, stage: Stage) -> None:
        """Deliver a message, then crash its receiver half-way through the Ready it causes."""
        c = self.c
        msg = c.net.take(i % len(c.net.in_flight))
        node = c.nodes.get(msg.to)
        c.deliver(msg, handle_ready=False)
        if node is not None and node.raw is not None:
            c.crash(node, stage)
        self._settle()

    @rule(i=st.integers(0, 7), ticks=st.integers(1, 12), leader=st.booleans())
    def pause(self, i: int, ticks: int, leader: bool) -> None:
        """Stop a node (no ticks, messages held) for a while, as if SIGSTOPped."""
        node = self.c.leader() if leader else self._live(i)
        if node is not None:
            self.c.pause(node, ticks)

    @rule(i=st.integers(0, 7))
    def restart(self, i: int) -> None:
        node = self._node(i)
        if node.raw is None:
            self.c.restart(node)
            self._settle()

    @rule(i=st.integers(0, 7))
    def compact(self, i: int) -> None:
        node = self._live(i)
        if node is not None:
            self.c.compact(node)

    # -- clients and operators --

    @rule(i=st.integers(0, 7), to_leader=st.booleans())
    def propose(self, i: int, to_leader: bool) -> None:
        node = self.c.leader() if to_leader else self._live(i)
        if node is not None:
            self.c.propose(node)
            self._settle()

    @rule(i=st.integers(0, 7))
    def read(self, i: int) -> None:
        node = self._live(i)
        if node is not None:
            self.c.read(node)
            self._settle()

    @rule()
    def conf_change(self) -> None:
        leader = self.c.leader()
        cc = self.c.random_conf_change()
        if leader is not None and cc is not None:
            self.c.propose_conf_change(leader, cc)
            self._settle()

    @rule(i=st.integers(0, 7))
    def transfer(self, i: int) -> None:
        leader = self.c.leader()
        voters = [v for v in self.c.conf.voters if leader is not None and v != leader.id]
        if voters:
            self.c.transfer(leader, voters[i % len(voters)])
            self._settle()

    # -- invariants --

    @invariant()
    def raft_invariants(self) -> None:
        # Election safety, leader append-only, leader completeness (log matching, state
        # machine safety and linearizable reads are checked as events happen).
        self.c.check()

    def teardown(self) -> None:
        # Liveness: heal everything; a leader emerges and new writes apply everywhere.
        heal(self.c)
        check_liveness(self.c, writes=2)


RaftCluster.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRaftCluster = RaftCluster.TestCase
