"""Seeded random schedules over the small network: drops, duplicates, reordering,
partitions, crashes and restarts, with the paper's safety properties checked after every
step and a heal-and-converge phase at the end. (The big simulator is raft/simulation.py;
this is the core's own quick smoke screen.)"""

from __future__ import annotations

import pickle
import random

import pytest

from raft import ConfChange, ConfChangeError, ConfChangeType, ProposalDropped, Role

from .core_network import Network


class Checker:
    def __init__(self, net: Network) -> None:
        self.net = net
        self.leaders: dict[int, int] = {}  # term -> leader
        self.reads: list[tuple[int, bytes, int]] = []  # (node, context, min index)
        self.reads_served = 0
        self.changes = 0
        self.compactions = 0

    def check(self) -> None:
        net = self.net
        for node, rn in net.nodes.items():
            if rn.role == Role.LEADER:  # Election Safety
                assert self.leaders.setdefault(rn.term, node) == node, (rn.term, node)
        seqs = sorted(net.applied.values(), key=len)  # State Machine Safety
        for shorter, longer in zip(seqs, seqs[1:]):
            assert longer[: len(shorter)] == shorter
        for node, states in net.read_states.items():  # ReadIndex linearizability
            while states:
                rs = states.pop()
                expected = [r for r in self.reads if r[0] == node and r[1] == rs.context]
                assert len(expected) == 1
                assert rs.index >= expected[0][2], (rs, expected)
                self.reads_served += 1


def run(seed: int, voters=(1, 2, 3), steps: int = 400, membership: bool = False,
        lazy_advance: bool = False, compaction: bool = True, **config) -> Checker:
    rng = random.Random(seed)
    net = Network(voters=voters, seed=seed, max_size_per_msg=200, max_inflight_msgs=4,
                  lazy_advance=lazy_advance, **config)
    checker = Checker(net)
    if membership:
        net.add_node(len(voters) + 1)  # a spare node, empty until it is added
    counter = 0
    for step in range(steps):
        action = rng.random()
        nodes = list(net.nodes)
        if action < 0.35:
            node = rng.choice(nodes)
            net.nodes[node].tick()
        elif action < 0.55:
            leader = [n for n in nodes if net.nodes[n].role == Role.LEADER]
            for node in leader:
                counter += 1
                try:
                    net.nodes[node].propose(b"v%d" % counter)
                except ProposalDropped:
                    pass
        elif action < 0.60:
            node = rng.choice(nodes)
            context = b"r%d" % step
            floor = max(net.applied_index.values())
            try:
                net.nodes[node].read_index(context)
                checker.reads.append((node, context, floor))
            except ProposalDropped:
                pass
        elif action < 0.62 and len(net.down) < (len(voters) - 1) // 2:
            net.crash(rng.choice(nodes))
        elif action < 0.66 and net.down:
            net.restart(rng.choice(sorted(net.down)))
        elif action < 0.68:
            net.cut(*rng.sample(list(voters), 2))
        elif action < 0.71:
            net.heal()
        elif action < 0.72:
            leader = [n for n in nodes if net.nodes[n].role == Role.LEADER]
            if leader:
                net.nodes[leader[0]].transfer_leader(rng.choice(list(voters)))
        elif action < 0.76 and compaction:
            node = rng.choice(nodes)
            storage, index = net.storages[node], net.applied_index[node]
            if index > storage.snapshot().metadata.index and index >= storage.first_index():
                data = pickle.dumps(net.applied[node])
                storage.create_snapshot(index, storage.conf_state, data)
                storage.compact(index)
                checker.compactions += 1
        elif action < 0.78 and membership:
            leader = [n for n in nodes if net.nodes[n].role == Role.LEADER]
            if leader:
                conf = net.nodes[leader[0]].status().conf_state
                kind = rng.choice(list(ConfChangeType))
                target = rng.choice(list(net.storages))
                try:
                    net.nodes[leader[0]].propose_conf_change(ConfChange(kind, target))
                    checker.changes += 1
                except (ConfChangeError, ProposalDropped):
                    pass
        for node in list(net.nodes):
            net.process(node)
        # Deliver a random part of the queue in random order, dropping and duplicating some.
        queue = list(net.queue)
        net.queue.clear()
        rng.shuffle(queue)
        for m in queue:
            r = rng.random()
            if r < 0.3:
                net.queue.append(m)  # delayed
                continue
            if r < 0.4 or (m.frm, m.to) in net.cut_links or m.to not in net.nodes:
                net.report(m, False)
                continue  # dropped
            net.nodes[m.to].step(m)
            net.report(m, True)
            if r > 0.97:
                net.nodes[m.to].step(m)  # duplicated
        checker.check()
    # Heal everything and converge.
    net.heal()
    for node in sorted(net.down):
        net.restart(node)
    # Liveness: a leader emerges and a new entry reaches every member (re-proposed if a
    # leadership change loses it; with neither PreVote nor CheckQuorum a removed node may
    # disrupt for a while, as the dissertation's §4.2.3 warns).
    proposed_in_term = None
    for _ in range(400):
        net.tick()
        checker.check()
        leader = net.leader()
        if leader is None:
            continue
        rn = net.nodes[leader]
        conf = rn.status().conf_state
        members = (*conf.voters, *conf.learners)
        if all(net.applied[n][-1:] == [b"final"] for n in members):
            break
        if proposed_in_term != rn.term:
            try:
                rn.propose(b"final")  # refused while a transfer is under way
                proposed_in_term = rn.term
            except ProposalDropped:
                pass
    else:
        raise AssertionError("no leader, or the final entry never reached every member")
    for node in members:
        assert net.applied[node] == net.applied[leader], node
    return checker


@pytest.mark.parametrize("seed", range(40))
def test_random_schedule_three_nodes(seed):
    run(seed)


@pytest.mark.parametrize("seed", range(15))
def test_random_schedule_five_nodes(seed):
    run(1000 + seed, voters=(1, 2, 3, 4, 5))


@pytest.mark.parametrize("seed", range(30))
def test_random_schedule_with_membership_changes(seed):
    run(2000 + seed, membership=True)


@pytest.mark.parametrize("seed", range(30))
def test_random_schedule_steps_between_ready_and_advance(seed):
    run(3000 + seed, membership=seed % 2 == 0, lazy_advance=True)


@pytest.mark.parametrize("seed", range(20))
def test_random_schedule_without_prevote_and_checkquorum(seed):
    run(4000 + seed, membership=True, pre_vote=False, check_quorum=False)
