"""One test per claim of the Raft paper (and dissertation) that the core must uphold.

Section numbers refer to "In Search of an Understandable Consensus Algorithm" (extended) and
Ongaro's dissertation (§6.4 reads, §4 membership, §3.10 leadership transfer, §9.6 PreVote).
The network is the small synchronous one of core_network.py.
"""

from __future__ import annotations

import random

import pytest

from raft import (
    NONE,
    Config,
    ConfChange,
    ConfChangeError,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    MessageType,
    ProgressState,
    ProposalDropped,
    RawNode,
    Role,
)

from .core_network import Network

APP = MessageType.APP
T = MessageType


def roles(net: Network) -> dict[int, Role]:
    return {n: rn.role for n, rn in net.nodes.items()}


def log_terms(net: Network, node: int) -> list[tuple[int, int]]:
    s = net.storages[node]
    return [(i, s.term(i)) for i in range(s.first_index(), s.last_index() + 1)]


# ------------------------------------------------------------------------------ §5.2 election


def test_election_followers_elect_one_leader_after_timeout():
    net = Network(voters=(1, 2, 3, 4, 5))
    assert set(roles(net).values()) == {Role.FOLLOWER}
    net.tick(times=25)  # > 2 * election_tick: someone must have timed out
    leader = net.leader()
    assert leader is not None
    terms = {rn.term for rn in net.nodes.values()}
    assert len(terms) == 1
    assert all(rn.leader == leader for rn in net.nodes.values())


def test_election_timeout_is_randomized_in_range():
    storage = MemoryStorage()
    storage.bootstrap(ConfState(voters=(1, 2, 3)))
    node = RawNode(Config(1, election_tick=10, rng=random.Random(7)), storage)
    seen = set()
    for _ in range(200):
        node.raft.become_follower(node.raft.term + 1, NONE)
        seen.add(node.raft.randomized_election_timeout)
    assert min(seen) >= 10 and max(seen) < 20
    assert len(seen) > 5  # actually random, not a constant


def test_election_follower_times_out_into_prevote_then_candidate():
    net = Network()
    n1 = net.nodes[1]
    for _ in range(20):
        n1.tick()
        if n1.role != Role.FOLLOWER:
            break
    assert n1.role == Role.PRE_CANDIDATE  # a pre-vote round first: term unchanged
    assert n1.term == 1
    net.deliver()
    assert n1.role == Role.LEADER and n1.term == 2


def test_election_candidate_with_stale_log_loses():
    net = Network(pre_vote=False, check_quorum=False)
    net.elect(1)
    net.isolate(3)
    net.propose(1, b"a")  # 1 and 2 have index 3; 3 does not
    net.heal()
    net.sent.clear()
    net.nodes[3].campaign()
    net.deliver()
    assert net.nodes[3].role == Role.FOLLOWER
    grants = [m for m in net.sent if m.type == T.VOTE_RESP and m.to == 3 and not m.reject]
    assert grants == []


def test_election_candidate_steps_down_on_leader_of_same_term():
    net = Network(check_quorum=False)
    net.elect(1)
    n2 = net.nodes[2]
    n2.raft.become_candidate()  # term 3
    assert n2.role == Role.CANDIDATE
    # An append from a leader of the candidate's own term (3 won it) makes it a follower.
    n2.step(Message(T.HEARTBEAT, 2, 3, n2.term))
    assert n2.role == Role.FOLLOWER and n2.leader == 3 and n2.term == 3


# ------------------------------------------------------------------------ §5.2/5.4.1 voting


def test_voting_at_most_one_vote_per_term():
    net = Network(pre_vote=False, check_quorum=False)
    n3 = net.nodes[3]
    n3.step(Message(T.VOTE, 3, 1, 5, log_term=1, index=1))
    n3.step(Message(T.VOTE, 3, 2, 5, log_term=1, index=1))
    rd = n3.ready()
    votes = [(m.to, m.reject) for m in rd.persisted_messages if m.type == T.VOTE_RESP]
    assert votes == [(1, False), (2, True)]
    assert rd.hard_state.vote == 1 and rd.hard_state.term == 5
    assert rd.must_sync
    assert not any(m.type == T.VOTE_RESP for m in rd.messages)  # only after persisting
    net.storages[3].persist_ready(rd)
    n3.advance(rd)
    # The same candidate asking again (a retry) gets the vote again.
    n3.step(Message(T.VOTE, 3, 1, 5, log_term=1, index=1))
    rd = n3.ready()
    assert [(m.to, m.reject) for m in rd.persisted_messages] == [(1, False)]


def test_voting_rejects_candidate_with_less_up_to_date_log():
    net = Network(pre_vote=False, check_quorum=False)
    net.elect(1)
    net.propose(1, b"a", b"b")  # everyone's log ends at (4, 2)
    n2 = net.nodes[2]
    cases = [  # (candidate's last log term, last index) -> granted?
        (2, 3, False),  # same term, shorter log
        (1, 10, False),  # longer log, older term
        (2, 4, True),  # identical
        (3, 1, True),  # newer term wins even if shorter
    ]
    for i, (lterm, lindex, granted) in enumerate(cases):
        term = 10 + i
        n2.step(Message(T.VOTE, 2, 3, term, log_term=lterm, index=lindex))
        rd = n2.ready()
        net.storages[2].persist_ready(rd)
        n2.advance(rd)
        (resp,) = [m for m in rd.persisted_messages if m.type == T.VOTE_RESP]
        assert resp.reject is (not granted), (lterm, lindex)


def test_voting_candidate_counts_own_vote_only_once_persisted():
    net = Network(voters=(1, 2), pre_vote=False)
    n1 = net.nodes[1]
    n1.campaign()
    rd = n1.ready()
    (vote,) = [m for m in rd.messages if m.type == T.VOTE]
    # Peer 2 grants before 1 has persisted its own vote: not yet a quorum of 2.
    n1.step(Message(T.VOTE_RESP, 1, 2, vote.term))
    assert n1.role == Role.CANDIDATE
    net.storages[1].persist_ready(rd)
    n1.advance(rd)
    assert n1.role == Role.LEADER


# --------------------------------------------------------------------- §5.3 log replication


def test_replication_commits_when_a_majority_has_the_entry():
    net = Network(voters=(1, 2, 3, 4, 5))
    net.elect(1)
    net.isolate(4)
    net.isolate(5)
    net.propose(1, b"a")
    assert net.nodes[1].status().commit == 3
    assert net.applied[1] == net.applied[2] == net.applied[3] == [b"a"]
    net.isolate(3)
    net.propose(1, b"b")  # only 1 and 2 have it: no majority
    assert net.nodes[1].status().commit == 3
    assert net.applied[1] == [b"a"]
    net.heal()
    net.tick(times=2)
    assert all(net.applied[n] == [b"a", b"b"] for n in net.nodes)


def test_replication_leader_own_append_counts_only_once_persisted():
    net = Network()
    net.elect(1)
    net.crash(3)
    leader, storage = net.nodes[1], net.storages[1]
    leader.propose(b"x")
    rd = leader.ready()
    (app,) = [m for m in rd.messages if m.type == APP and m.to == 2]
    # The follower acknowledges before the leader has persisted the entry itself.
    net.nodes[2].step(app)
    rd2 = net.nodes[2].ready()
    net.storages[2].persist_ready(rd2)
    net.nodes[2].advance(rd2)
    for m in rd2.persisted_messages:
        leader.step(m)
    assert leader.status().commit == 2  # 1 of 2 durable copies of 3 voters: not committed
    storage.persist_ready(rd)
    leader.advance(rd)
    assert leader.status().commit == 3


def test_replication_batches_entries_within_max_size_per_msg():
    net = Network(max_size_per_msg=1000)
    net.elect(1)
    net.sent.clear()
    for _ in range(50):
        net.nodes[1].propose(b"x" * 100)  # 116 bytes each with overhead: 8 per message
    net.deliver()
    apps = [m for m in net.sent if m.type == APP and m.to == 2 and m.entries]
    sizes = [len(m.entries) for m in apps]
    assert sum(sizes) == 50
    assert max(sizes) == 8 and len(apps) == 7
    assert net.applied[2] == [b"x" * 100] * 50


def test_replication_pipelines_at_most_max_inflight_messages():
    net = Network(max_size_per_msg=1, max_inflight_msgs=4)
    net.elect(1)
    net.filter = lambda m: m.type != T.APP_RESP  # acknowledgements are lost
    for i in range(10):
        net.nodes[1].propose(b"%d" % i)
    net.deliver()
    apps_to_2 = [m for m in net.sent if m.type == APP and m.to == 2 and m.entries]
    pr = net.nodes[1].status().progress[2]
    assert pr.state == ProgressState.REPLICATE and pr.inflight == 4
    net.sent.clear()
    net.nodes[1].propose(b"more")
    net.deliver()
    assert not [m for m in net.sent if m.type == APP and m.to == 2]  # window full
    net.filter = None
    net.tick(times=3)  # heartbeat responses reopen the window; acks drain it
    assert net.applied[2] == [b"%d" % i for i in range(10)] + [b"more"]
    assert apps_to_2  # sanity


def diverge_node_1(net: Network) -> None:
    """Node 1 (leader of term 2) appends 50 entries nobody else gets, and crashes; node 2
    leads term 3 and commits 30 entries at the same indexes; then node 2 crashes and node 3
    leads term 4 with node 1 back: node 1's log diverges from index 3 to 52."""
    net.elect(1)
    net.isolate(1)
    for i in range(50):
        net.nodes[1].propose(b"lost%d" % i)
    net.deliver()
    net.crash(1)
    net.heal()
    net.elect(2)
    net.propose(2, *[b"ok%d" % i for i in range(30)])
    net.crash(2)
    net.restart(1)
    net.sent.clear()
    net.elect(3)
    net.deliver()


def test_replication_consistency_check_repairs_a_diverged_follower():
    net = Network(check_quorum=False)
    diverge_node_1(net)
    net.propose(3, b"new")
    assert net.applied[1] == net.applied[3] == [b"ok%d" % i for i in range(30)] + [b"new"]
    assert log_terms(net, 1) == log_terms(net, 3)
    assert not any(b"lost" in e.data for e in net.storages[1].entries(2, 36))


def test_replication_fast_backtracking_skips_a_diverged_term_per_round_trip():
    net = Network(check_quorum=False)
    diverge_node_1(net)
    rejects = [m for m in net.sent if m.type == T.APP_RESP and m.frm == 1 and m.reject]
    # Leader 3 probed at index 33; node 1 diverges from index 3 on: one hint jumps back.
    assert len(rejects) == 1
    assert rejects[0].index == 33 and rejects[0].reject_hint == 33 and rejects[0].log_term == 2
    assert log_terms(net, 1) == log_terms(net, 3)


# ------------------------------------------------------------------- §5.4.2 commitment rules


def figure8_setup(net: Network) -> None:
    """Paper Figure 8 (a)-(c): at the end, leader 1 (term 4) has replicated the term-2 entry
    at index 3 to a majority (1, 2, 3), while node 5 (crashed) holds term-3 entries there."""
    net.elect(1)  # term 2; index 2 is its empty entry, committed everywhere
    for other in (3, 4, 5):
        net.cut(1, other)
    net.propose(1, b"x")  # index 3, term 2: only on 1 and 2
    net.crash(1)
    net.heal()
    net.cut(5, 2)
    net.filter = lambda m: not (m.frm == 5 and m.type == APP)
    net.elect(5)  # term 3, with votes of 3 and 4
    net.nodes[5].propose(b"y")  # index 4, term 3: only on 5
    net.deliver()
    net.crash(5)
    net.heal()
    net.filter = None
    net.restart(1)
    # No term-4 entry gets appended anywhere but at 1 (one entry per message, and an append
    # that the receiver would reject anyway passes, so that backtracking works).
    net.filter = lambda m: not (m.type == APP and any(e.term == 4 for e in m.entries)
                                and net.storages[m.to].last_index() >= m.index)
    net.elect(1)
    assert net.nodes[1].term == 4
    net.tick(nodes=[1, 2, 3, 4], times=3)
    assert net.storages[3].term(3) == 2 and net.storages[4].term(3) == 2


def test_commitment_figure8_old_term_entry_on_majority_is_not_committed():
    net = Network(voters=(1, 2, 3, 4, 5), check_quorum=False, max_size_per_msg=1)
    figure8_setup(net)
    leader = net.nodes[1].status()
    assert sum(p.match >= 3 for p in leader.progress.values()) >= 3  # a majority of 5
    assert leader.commit == 2  # a majority has index 3, but it is from term 2
    # (d) And rightly so: 1 crashes, 5 wins with its term-3 log and overwrites index 3.
    net.crash(1)
    net.filter = None
    net.restart(5)
    net.elect(5)
    net.tick(nodes=[5, 2, 3, 4], times=3)
    for node in (2, 3, 4, 5):
        assert net.storages[node].term(3) == 3
        assert net.applied[node] == [b"y"]  # b"x" was never applied anywhere


def test_commitment_figure8_current_term_entry_commits_old_ones():
    net = Network(voters=(1, 2, 3, 4, 5), check_quorum=False, max_size_per_msg=1)
    figure8_setup(net)
    net.filter = None
    net.tick(nodes=[1, 2, 3, 4], times=3)  # (e): the term-4 entry reaches a majority
    assert net.nodes[1].status().commit == 4
    assert all(net.applied[n] == [b"x"] for n in (1, 2, 3, 4))
    net.crash(1)
    net.restart(5)
    net.tick(nodes=[2, 3, 4, 5], times=60)  # 5 can never win: its log is behind
    assert net.nodes[5].role != Role.LEADER
    assert all(net.applied[n] == [b"x"] for n in (2, 3, 4))


def test_commitment_new_leader_appends_an_empty_entry_of_its_term():
    net = Network()
    net.elect(2)
    (entry,) = net.storages[2].entries(2, 3)
    assert entry == Entry(2, 2)  # (term 2, index 2, NORMAL, b"")
    assert all(net.storages[n].hard_state.commit == 2 for n in net.nodes)


# ---------------------------------------------------------------------------- §9.6 PreVote


def test_prevote_partitioned_node_rejoining_does_not_disrupt_leader():
    net = Network()
    net.elect(1)
    net.isolate(3)
    net.tick(times=100)  # node 3 times out again and again, in pre-vote only
    assert net.nodes[3].term == 2
    assert net.nodes[3].role == Role.PRE_CANDIDATE
    net.heal()
    net.propose(1, b"a")
    net.tick(times=5)
    assert net.leader() == 1 and {rn.term for rn in net.nodes.values()} == {2}
    assert net.applied[3] == [b"a"]


def test_prevote_does_not_change_terms_when_not_granted():
    net = Network()
    net.elect(1)
    net.tick(times=1)
    n2 = net.nodes[2]
    # A pre-vote for a far future term while a leader is alive: ignored (lease), no term bump.
    n2.step(Message(T.PRE_VOTE, 2, 3, 9, log_term=2, index=2))
    assert n2.term == 2 and n2.leader == 1
    assert not n2.has_ready()  # ignored: no answer, no state change
    # Once the lease is over, the pre-vote is granted — still without changing the term.
    for _ in range(10):
        n2.raft.election_elapsed += 1
    n2.step(Message(T.PRE_VOTE, 2, 3, 9, log_term=2, index=2))
    rd = n2.ready()
    assert [(m.type, m.term, m.reject) for m in rd.messages] == [(T.PRE_VOTE_RESP, 9, False)]
    assert rd.hard_state is None and n2.term == 2


def test_without_prevote_and_checkquorum_rejoining_node_disrupts():
    # The contrast that motivates PreVote: the isolated node inflates its term.
    net = Network(pre_vote=False, check_quorum=False)
    net.elect(1)
    net.isolate(3)
    net.tick(times=100)
    assert net.nodes[3].term > 5
    net.heal()
    net.tick(times=30)
    assert min(rn.term for rn in net.nodes.values()) > 5  # the old leader's term is gone


# ----------------------------------------------------------------------- §6.2 CheckQuorum


def test_checkquorum_isolated_leader_steps_down():
    net = Network()
    net.elect(1)
    net.isolate(1)
    net.tick(nodes=[1], times=25)
    assert net.nodes[1].role == Role.FOLLOWER
    with pytest.raises(ProposalDropped):
        net.nodes[1].propose(b"x")


def test_checkquorum_followers_in_lease_ignore_vote_requests():
    net = Network(pre_vote=False)
    net.elect(1)
    net.tick(times=2)
    n2 = net.nodes[2]
    n2.step(Message(T.VOTE, 2, 3, 50, log_term=5, index=100))
    assert n2.term == 2 and n2.leader == 1
    assert not any(m.type == T.VOTE_RESP for m in n2.ready().persisted_messages)


def test_checkquorum_stale_leader_learns_new_term_and_steps_down():
    net = Network()
    net.elect(1)
    net.isolate(1)
    net.tick(nodes=[2, 3], times=30)  # 2 or 3 becomes leader of term 3
    new = net.leader() if net.leader() != 1 else None
    assert any(rn.role == Role.LEADER and rn.term == 3 for rn in net.nodes.values())
    assert net.nodes[1].role == Role.LEADER  # not ticked: still believes it leads term 2
    net.heal()
    net.tick(nodes=[1], times=1)  # its heartbeat gets answered with the newer term
    assert net.nodes[1].role == Role.FOLLOWER and net.nodes[1].term == 3
    assert new is None or net.nodes[new].role == Role.LEADER


# -------------------------------------------------------------------------- §6.4 ReadIndex


def test_read_index_leader_confirms_leadership_with_a_heartbeat_round():
    net = Network()
    net.elect(1)
    net.propose(1, b"a")
    net.nodes[1].read_index(b"r1")
    assert net.read_states[1] == []  # not before the heartbeat round
    net.deliver()
    (rs,) = net.read_states[1]
    assert rs.context == b"r1" and rs.index == 3


def test_read_index_leader_in_minority_serves_nothing():
    net = Network(voters=(1, 2, 3, 4, 5))
    net.elect(1)
    net.isolate(1)
    net.nodes[1].read_index(b"r")
    net.tick(nodes=[1], times=5)
    assert net.read_states[1] == []


def test_read_index_new_leader_waits_for_its_first_commit():
    net = Network()
    net.elect(1)
    net.propose(1, b"a")
    # Leader 2 of term 3 whose empty entry cannot commit yet (its appends are dropped).
    net.filter = lambda m: not (m.frm == 2 and m.type == APP)
    net.nodes[1].raft.become_follower(2, NONE)
    net.nodes[3].raft.become_follower(2, NONE)
    net.elect(2)
    net.nodes[2].read_index(b"r")
    net.tick(nodes=[2], times=1)
    assert net.read_states[2] == []
    net.filter = None
    net.tick(times=2)
    (rs,) = net.read_states[2]
    assert rs.index == net.nodes[2].status().commit == 4


def test_read_index_forwarded_from_follower():
    net = Network()
    net.elect(1)
    net.propose(1, b"a", b"b")
    net.nodes[3].read_index(b"f1")
    net.deliver()
    (rs,) = net.read_states[3]
    assert rs.context == b"f1" and rs.index == 4
    assert net.read_states[1] == []
    # No leader known: the request is refused rather than silently lost.
    node = RawNode(Config(9), MemoryStorage())
    with pytest.raises(ProposalDropped):
        node.read_index(b"x")


def test_read_index_single_voter_is_immediate():
    net = Network(voters=(1,))
    net.elect(1)
    net.propose(1, b"a")
    net.nodes[1].read_index(b"r")
    net.deliver()
    assert [(r.index, r.context) for r in net.read_states[1]] == [(3, b"r")]


# --------------------------------------------------------------------------- learners (§4.2.1)


def test_learner_receives_entries_but_neither_votes_nor_counts():
    net = Network(voters=(1, 2, 3), learners=(4,))
    net.elect(1)
    net.propose(1, b"a")
    assert net.applied[4] == [b"a"]
    net.crash(2)
    net.crash(3)
    net.propose(1, b"b")  # leader + learner is no quorum
    assert net.nodes[1].status().commit == 3
    assert net.applied[4] == [b"a"]
    net.tick(nodes=[4], times=50)
    assert net.nodes[4].role == Role.FOLLOWER  # a learner never campaigns


# -------------------------------------------------------------------- §4.1 membership change


def test_membership_add_learner_then_promote_to_voter():
    net = Network()
    net.elect(1)
    net.propose(1, b"a")
    net.add_node(4)
    net.change(1, ConfChange(ConfChangeType.ADD_LEARNER, 4))
    net.tick(times=3)
    assert net.applied[4] == [b"a"]  # caught up (its storage was empty)
    assert net.nodes[1].status().conf_state == ConfState(voters=(1, 2, 3), learners=(4,))
    net.change(1, ConfChange(ConfChangeType.ADD_VOTER, 4))
    for node in net.nodes:
        assert net.nodes[node].status().conf_state == ConfState(voters=(1, 2, 3, 4))
        assert net.storages[node].conf_state == ConfState(voters=(1, 2, 3, 4))
    net.crash(2)
    net.propose(1, b"b")  # 1, 3, 4 are a majority of 4
    assert net.applied[4] == [b"a", b"b"]


def test_membership_only_one_change_at_a_time():
    net = Network()
    net.elect(1)
    n1 = net.nodes[1]
    n1.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    with pytest.raises(ConfChangeError):
        n1.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 5))
    net.deliver()  # the first commits and is applied
    n1.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 5))


def test_membership_new_leader_changes_only_after_its_first_commit():
    net = Network()
    net.filter = lambda m: not (m.frm == 1 and m.type == APP)
    net.elect(1)
    with pytest.raises(ConfChangeError):
        net.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    net.filter = None
    net.tick(times=2)
    net.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))


def test_membership_invalid_changes_are_refused():
    net = Network(voters=(1,))
    net.elect(1)
    n1 = net.nodes[1]
    for bad in (ConfChange(ConfChangeType.REMOVE_NODE, 1),  # the last voter
                ConfChange(ConfChangeType.REMOVE_NODE, 9),  # not a member
                ConfChange(ConfChangeType.ADD_VOTER, 1),  # already a voter
                ConfChange(ConfChangeType.ADD_VOTER, 0)):  # not a node id
        with pytest.raises(ConfChangeError):
            n1.propose_conf_change(bad)
    with pytest.raises(ProposalDropped):
        net.nodes[1].raft.become_follower(3, NONE)
        n1.propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, 2))


def test_membership_remove_follower_shrinks_quorum():
    net = Network()
    net.elect(1)
    net.change(1, ConfChange(ConfChangeType.REMOVE_NODE, 3))
    net.crash(3)
    net.crash(2)
    net.propose(1, b"a")  # quorum of {1, 2} is 2: no commit with 2 down
    assert net.applied[1] == []
    net.restart(2)
    net.tick(times=3)
    assert net.applied[1] == net.applied[2] == [b"a"]


def test_membership_leader_cannot_remove_itself():
    net = Network()
    net.elect(1)
    for kind in (ConfChangeType.REMOVE_NODE, ConfChangeType.ADD_LEARNER):
        with pytest.raises(ConfChangeError):
            net.nodes[1].propose_conf_change(ConfChange(kind, 1))


def test_membership_removed_leader_hands_over_leadership():
    net = Network()
    net.elect(2)
    removal = net.nodes[2].propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 1))
    # Node 1 gets the entry but never hears from 2 that it committed...
    net.filter = lambda m: not (m.frm == 2 and m.to == 1 and m.commit >= removal)
    net.deliver()
    assert net.nodes[2].status().conf_state.voters == (2, 3)
    assert net.nodes[1].status().conf_state.voters == (1, 2, 3)
    # ... and becomes leader (a transfer that 2 had started before it applied the removal).
    net.nodes[1].step(Message(T.TIMEOUT_NOW, 1, 2, net.nodes[2].term))
    net.filter = None
    net.cut(1, 2)
    net.deliver()
    # 1 won with 3's vote, committed its first entry, applied its own removal: it hands
    # leadership to the most up-to-date voter rather than leaving 2 and 3 to sort it out.
    assert net.nodes[1].status().conf_state.voters == (2, 3)
    assert any(m.type == T.TIMEOUT_NOW and (m.frm, m.to) == (1, 3) for m in net.sent)
    assert net.nodes[3].role == Role.LEADER
    net.heal()
    net.tick(times=2)
    assert net.nodes[1].role == Role.FOLLOWER and net.leader() == 3
    net.propose(3, b"after")
    assert net.applied[2] == net.applied[3] == [b"after"]
    with pytest.raises(ProposalDropped):
        net.nodes[1].propose(b"no longer a member")
    net.tick(nodes=[1], times=50)
    assert net.nodes[1].role == Role.FOLLOWER  # a removed node never campaigns


# -------------------------------------------------------------------- §3.10 leader transfer


def test_leader_transfer_to_up_to_date_follower():
    net = Network()
    net.elect(1)
    net.propose(1, b"a")
    assert net.nodes[1].transfer_leader(3)
    net.deliver()
    assert net.leader() == 3 and net.nodes[3].term == 3
    net.propose(3, b"b")
    assert all(net.applied[n] == [b"a", b"b"] for n in net.nodes)


def test_leader_transfer_catches_up_a_lagging_target_first():
    net = Network()
    net.elect(1)
    net.isolate(3)
    net.propose(1, b"a", b"b")
    net.heal()
    net.nodes[1].transfer_leader(3)
    with pytest.raises(ProposalDropped):
        net.nodes[1].propose(b"refused during transfer")
    net.deliver()
    assert net.leader() == 3
    assert net.applied[3] == [b"a", b"b"]


def test_leader_transfer_aborts_after_an_election_timeout():
    net = Network()
    net.elect(1)
    net.crash(3)
    assert net.nodes[1].transfer_leader(3)
    assert net.nodes[1].status().lead_transferee == 3
    net.tick(times=11)
    assert net.nodes[1].status().lead_transferee == NONE
    assert net.leader() == 1
    net.propose(1, b"accepted again")
    assert net.applied[2] == [b"accepted again"]


def test_leader_transfer_to_non_voter_is_ignored():
    net = Network(voters=(1, 2, 3), learners=(4,))
    net.elect(1)
    assert not net.nodes[1].transfer_leader(4)
    assert not net.nodes[2].transfer_leader(3)  # not the leader


# ------------------------------------------------------------------ §7 snapshots, compaction


def compact(net: Network, node: int) -> None:
    import pickle

    index = net.applied_index[node]
    storage = net.storages[node]
    storage.create_snapshot(index, storage.conf_state, pickle.dumps(net.applied[node]))
    storage.compact(index)


def test_snapshot_sent_to_follower_behind_compacted_log():
    net = Network()
    net.elect(1)
    net.crash(3)
    net.propose(1, *[b"v%d" % i for i in range(20)])
    compact(net, 1)
    assert net.storages[1].first_index() == 23
    net.restart(3)
    net.sent.clear()
    net.tick(times=3)
    snaps = [m for m in net.sent if m.type == T.SNAP]
    assert len(snaps) == 1 and snaps[0].to == 3
    assert net.applied[3] == [b"v%d" % i for i in range(20)]
    assert net.storages[3].snapshot().metadata.index == 22
    net.nodes[1].report_snapshot(3, True)
    net.propose(1, b"after")
    assert net.applied[3][-1] == b"after"
    assert net.nodes[1].status().progress[3].state == ProgressState.REPLICATE


def test_snapshot_ready_carries_snapshot_before_entries_and_applies_atomically():
    net = Network()
    net.elect(1)
    net.crash(3)
    net.propose(1, b"a", b"b")
    compact(net, 1)
    leader = net.nodes[1]
    snap = net.storages[1].snapshot()
    net.restart(3)
    n3 = net.nodes[3]
    n3.step(Message(T.SNAP, 3, 1, leader.term, snapshot=snap))
    rd = n3.ready()
    assert rd.snapshot == snap and rd.committed_entries == [] and rd.must_sync
    assert [m.type for m in rd.persisted_messages] == [T.APP_RESP]
    assert rd.persisted_messages[0].index == snap.metadata.index
    net.storages[3].persist_ready(rd)
    n3.advance(rd)
    st = n3.status()
    assert st.commit == st.applied == snap.metadata.index


def test_snapshot_failed_send_is_retried():
    net = Network()
    net.elect(1)
    net.crash(3)
    net.propose(1, b"a")
    compact(net, 1)
    net.restart(3)
    net.filter = lambda m: m.type != T.SNAP  # the transport fails (and reports it)
    net.sent.clear()
    net.tick(times=4)
    snaps = [m for m in net.sent if m.type == T.SNAP]
    assert len(snaps) >= 2  # retried after each reported failure (once per heartbeat)
    assert net.applied[3] == []
    net.filter = None
    net.tick(times=3)
    assert net.applied[3] == [b"a"]


# -------------------------------------------------------------------- crash and recovery


def test_crash_restart_keeps_committed_entries_and_vote():
    net = Network()
    net.elect(1)
    net.propose(1, b"a", b"b")
    for node in (1, 2, 3):
        net.crash(node)
        net.restart(node)
    net.tick(times=30)
    leader = net.leader()
    assert leader is not None
    net.propose(leader, b"c")
    assert all(net.applied[n] == [b"a", b"b", b"c"] for n in net.nodes)


def test_unpersisted_entries_are_lost_on_crash_without_harm():
    net = Network()
    net.elect(1)
    net.nodes[1].propose(b"never persisted")
    net.crash(1)  # before its Ready was handled: nothing was sent or stored
    net.restart(1)
    net.tick(times=30)
    leader = net.leader()
    net.propose(leader, b"x")
    assert all(net.applied[n] == [b"x"] for n in net.nodes)


def test_max_uncommitted_size_drops_proposals():
    net = Network(max_uncommitted_size=1000)
    net.elect(1)
    net.crash(2)
    net.crash(3)
    n1 = net.nodes[1]
    n1.propose(b"x" * 600)
    with pytest.raises(ProposalDropped):
        n1.propose(b"x" * 600)
    net.restart(2)
    net.restart(3)
    net.tick(times=3)  # committed: room again
    n1.propose(b"x" * 600)


def test_read_index_only_voter_waits_for_its_first_commit():
    # A group shrunk to one voter whose stored commit index lags its log (commit indexes
    # are persisted lazily): entries 3..5 may well be committed, so a read must wait.
    storage = MemoryStorage()
    storage.bootstrap(ConfState(voters=(1,)))
    storage.append([Entry(2, i, data=b"e%d" % i) for i in range(2, 6)])
    storage.set_hard_state(HardState(term=2, vote=1, commit=2))
    node = RawNode(Config(1), storage)
    node.campaign()
    for _ in range(5):
        rd = node.ready()
        storage.persist_ready(rd)
        node.advance(rd)
        if node.role == Role.LEADER:
            break
    assert node.role == Role.LEADER and node.status().commit == 2
    node.read_index(b"r")
    states = []
    for _ in range(5):
        if not node.has_ready():
            break
        rd = node.ready()
        states.extend(rd.read_states)
        storage.persist_ready(rd)
        node.advance(rd)
    assert [(s.index, s.context) for s in states] == [(6, b"r")]


def test_leader_transfer_waits_for_pending_conf_change_to_apply():
    net = Network()
    net.elect(1)
    net.add_node(4)
    index = net.nodes[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    net.deliver()
    assert net.nodes[2].status().applied >= index
    # Node 2 is told to campaign while it has a committed but unapplied membership change:
    # it waits until the change is applied (advance), then campaigns.
    n2, leader = net.nodes[2], net.nodes[1]
    leader.propose_conf_change(ConfChange(ConfChangeType.ADD_VOTER, 4))
    rd = leader.ready()
    net.storages[1].persist_ready(rd)
    leader.advance(rd)
    for m in rd.messages:
        if m.to == 2:
            n2.step(m)
    rd2 = n2.ready()
    net.storages[2].persist_ready(rd2)
    n2.advance(rd2)
    for m in rd2.persisted_messages:
        leader.step(m)
    rd = leader.ready()  # now committed: the append carrying the commit index
    net.storages[1].persist_ready(rd)
    leader.advance(rd)
    for m in rd.messages:
        if m.to == 2:
            n2.step(m)
    rd2 = n2.ready()
    assert [e.index for e in rd2.committed_entries][-1] == index + 1
    n2.step(Message(T.TIMEOUT_NOW, 2, 1, leader.term))
    assert n2.role == Role.FOLLOWER  # not while the change is unapplied
    net.storages[2].persist_ready(rd2)
    for e in rd2.committed_entries:
        if e.type == EntryType.CONF_CHANGE:
            n2.apply_conf_change(e.data)
    n2.advance(rd2)
    assert n2.role == Role.CANDIDATE and n2.term == leader.term + 1


def test_without_commit_broadcast_followers_learn_commit_from_the_next_message():
    """bcast_commit=False (raft-rs's skip_bcast_commit): a commit moving sends nothing by
    itself; the next heartbeat carries it; a follower whose read index is answered gets an
    append at once, so it can serve the read without waiting for a heartbeat."""
    net = Network(bcast_commit=False)
    net.elect(1)
    net.propose(1, b"a")
    lead = net.nodes[1].raft.log.committed
    assert lead == 3
    # the entry is committed on the leader; the followers have it but not its commit
    for f in (2, 3):
        assert net.nodes[f].raft.log.last_index() == 3
        assert net.nodes[f].raft.log.committed < lead
        assert b"a" not in net.applied[f]
    appends_before = sum(1 for m in net.sent if m.type == MessageType.APP)
    net.nodes[3].read_index(b"r")
    net.deliver()
    (rs,) = net.read_states[3]
    assert rs.index == lead
    assert net.nodes[3].raft.log.committed >= rs.index and b"a" in net.applied[3]
    assert sum(1 for m in net.sent if m.type == MessageType.APP) > appends_before
    # node 2 learns the commit from the next heartbeat (a tick later)
    net.tick(times=net.nodes[1].raft.cfg.heartbeat_tick)
    assert net.nodes[2].raft.log.committed == lead and b"a" in net.applied[2]


def test_with_commit_broadcast_followers_learn_commit_at_once():
    net = Network()
    net.elect(1)
    net.propose(1, b"a")
    for f in (2, 3):
        assert net.nodes[f].raft.log.committed == 3 and b"a" in net.applied[f]


def test_quiet_heartbeats_skip_peers_that_just_got_an_append():
    net = Network(quiet_heartbeats=True)
    net.elect(1)
    leader = net.nodes[1]
    hb = leader.raft.cfg.heartbeat_tick
    assert hb == 1  # a round on every tick

    def heartbeats_in(fn):
        before = len(net.sent)
        fn()
        return [m.to for m in net.sent[before:] if m.type == MessageType.HEARTBEAT]

    # appends flow to both followers between rounds: the round sends no heartbeat, and many
    # election timeouts of such rounds elect nobody else
    term = leader.raft.term
    for i in range(5 * leader.raft.cfg.election_tick):
        net.propose(1, b"w%d" % i)
        assert heartbeats_in(lambda: net.tick(nodes=[1, 2, 3])) == []
    assert net.leader() == 1 and leader.raft.term == term
    # a quiet round (no append since the last one): everyone gets a heartbeat again
    net.tick(times=hb)
    assert sorted(heartbeats_in(lambda: net.tick(times=hb))) == [2, 3]
    # a round that confirms a read is never skipped
    net.propose(1, b"x")
    leader.read_index(b"r")
    assert sorted(heartbeats_in(net.deliver)) == [2, 3]
    assert net.read_states[1][-1].context == b"r"


def test_lean_reads_confirm_with_just_a_quorum():
    """lean_reads: a read's heartbeat round goes to quorum-1 voters; if one of them is cut off,
    the next tick's round (to everyone) confirms the read."""
    net = Network(voters=(1, 2, 3, 4, 5), lean_reads=True)
    net.elect(1)
    net.propose(1, b"a")
    leader = net.nodes[1]
    before = len(net.sent)
    leader.read_index(b"r1")
    net.deliver()
    hbs = [m for m in net.sent[before:] if m.type == MessageType.HEARTBEAT]
    assert len(hbs) == 2 and all(m.context == b"r1" for m in hbs)  # quorum 3 = leader + 2
    assert net.read_states[1][-1].context == b"r1"
    # cut off one of the voters the next round would pick: the round alone cannot confirm
    target = hbs[0].to
    net.cut(1, target)
    leader.read_index(b"r2")
    net.deliver()
    assert net.read_states[1][-1].context == b"r1"  # not yet
    net.tick(nodes=[1], times=leader.raft.cfg.heartbeat_tick)
    assert net.read_states[1][-1].context == b"r2"
    assert net.read_states[1][-1].index == leader.raft.log.committed
