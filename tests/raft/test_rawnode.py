"""RawNode's driver contract: Ready ordering, persistence before acknowledgement, status."""

from __future__ import annotations

import pickle

import pytest

from raft import (
    Message,
    Config,
    ConfChange,
    ConfChangeType,
    ConfState,
    HardState,
    MemoryStorage,
    MessageType,
    RaftError,
    RawNode,
    Role,
    decode_conf_change,
    encode_conf_change,
)

from .core_network import Network


def single_node() -> tuple[RawNode, MemoryStorage]:
    storage = MemoryStorage()
    storage.bootstrap(ConfState(voters=(1,)))
    return RawNode(Config(1), storage), storage


def drain(node: RawNode, storage: MemoryStorage) -> list:
    applied = []
    for _ in range(20):
        if not node.has_ready():
            return applied
        rd = node.ready()
        storage.persist_ready(rd)
        applied.extend(rd.committed_entries)
        node.advance(rd)
    raise AssertionError("Ready never ran out")


def test_single_node_elects_itself_and_commits_after_persisting():
    node, storage = single_node()
    node.campaign()
    assert node.role == Role.CANDIDATE  # its own vote counts only once durable
    rd = node.ready()
    assert rd.hard_state == HardState(term=2, vote=1, commit=1) and rd.must_sync
    storage.persist_ready(rd)
    node.advance(rd)
    assert node.role == Role.LEADER
    node.propose(b"x")
    rd = node.ready()
    assert [e.data for e in rd.entries] == [b"", b"x"]
    assert rd.committed_entries == []  # not durable on the only voter yet
    storage.persist_ready(rd)
    node.advance(rd)
    rd = node.ready()
    assert [e.data for e in rd.committed_entries] == [b"", b"x"]
    storage.persist_ready(rd)
    node.advance(rd)
    assert node.status().applied == 3 and node.status().commit == 3


def test_ready_twice_without_advance_is_an_error():
    node, storage = single_node()
    node.campaign()
    rd = node.ready()
    with pytest.raises(RaftError):
        node.ready()
    with pytest.raises(RaftError):
        node.advance(type(rd)())
    node.advance(rd)


def test_vote_and_append_responses_wait_for_persistence():
    net = Network()
    net.elect(1)
    kinds_before = [(m.type, m.frm) for m in net.sent]
    net.propose(1, b"a")
    # Find the Ready where node 2 acknowledged: APP_RESP only in persisted_messages.
    n2 = net.nodes[2]
    net.nodes[1].propose(b"b")
    rd1 = net.nodes[1].ready()
    assert [m.type for m in rd1.messages] == [MessageType.APP, MessageType.APP]
    assert rd1.persisted_messages == []
    net.storages[1].persist_ready(rd1)
    net.nodes[1].advance(rd1)
    n2.step(rd1.messages[0])
    rd2 = n2.ready()
    assert rd2.messages == []
    assert [m.type for m in rd2.persisted_messages] == [MessageType.APP_RESP]
    assert rd2.entries and rd2.must_sync
    n2.advance(rd2)
    assert (MessageType.VOTE_RESP, 2) in kinds_before


def test_status_reports_leader_progress():
    net = Network()
    net.elect(2)
    net.propose(2, b"a", b"b")
    st = net.nodes[2].status()
    assert st.role == Role.LEADER and st.leader == 2 and st.id == 2
    assert st.commit == st.applied == st.last_index == 4
    assert {n: p.match for n, p in st.progress.items()} == {1: 4, 2: 4, 3: 4}
    assert net.nodes[1].status().progress == {}
    assert net.nodes[1].status().leader == 2


def test_conf_change_codec_roundtrip():
    cc = ConfChange(ConfChangeType.ADD_LEARNER, 7, b"ctx")
    assert decode_conf_change(encode_conf_change(cc)) == cc


def test_malformed_messages_are_refused_with_a_clear_error():
    from raft import Entry, MalformedMessage, Message, Snapshot

    node, _ = single_node()
    bad = [
        Message(MessageType.APP, 1, 2, 5, log_term=1, index=3, entries=(Entry(5, 9),)),
        Message(MessageType.APP, 1, 2, 5, index=-1),
        Message(MessageType.SNAP, 1, 2, 5, snapshot=Snapshot()),
        Message(MessageType.VOTE, 1, 2, 5, entries=(Entry(5, 1),)),
        Message(99, 1, 2, 5),
    ]
    for m in bad:
        with pytest.raises(MalformedMessage):
            node.step(m)
    assert node.status().term == 1  # nothing changed
    # Messages for someone else, or pretending to be from us, are ignored.
    node.step(Message(MessageType.HEARTBEAT, 7, 2, 9))
    node.step(Message(MessageType.HEARTBEAT, 1, 1, 9))
    assert node.status().term == 1


def test_read_index_needs_a_context():
    node, _ = single_node()
    with pytest.raises(ValueError):
        node.read_index(b"")


def test_commit_only_change_does_not_need_sync():
    net = Network()
    net.elect(1)
    n2 = net.nodes[2]
    net.nodes[1].propose(b"a")
    rd1 = net.nodes[1].ready()
    net.storages[1].persist_ready(rd1)
    net.nodes[1].advance(rd1)
    app = [m for m in rd1.messages if m.to == 2][0]
    n2.step(app)
    rd = n2.ready()
    net.storages[2].persist_ready(rd)
    n2.advance(rd)
    n2.step(Message(MessageType.HEARTBEAT, 2, 1, n2.term, commit=3))
    rd = n2.ready()
    assert rd.hard_state.commit == 3 and not rd.must_sync and rd.entries == []
    assert [e.data for e in rd.committed_entries] == [b"a"]
    n2.advance(rd)


def test_propose_many_is_one_batch():
    net = Network()
    net.elect(1)
    net.sent.clear()
    net.nodes[1].propose_many([b"a", b"b", b"c"])
    net.deliver()
    apps = [m for m in net.sent if m.type == MessageType.APP and m.to == 2 and m.entries]
    assert len(apps) == 1 and [e.data for e in apps[0].entries] == [b"a", b"b", b"c"]
    assert net.applied[3] == [b"a", b"b", b"c"]


def test_restart_with_applied_index_does_not_reapply():
    net = Network()
    net.elect(1)
    net.propose(1, b"a", b"b")
    storage = net.storages[2]
    node = RawNode(Config(2, applied=4), storage)
    assert node.status().applied == 4 and node.status().commit == 4
    assert not node.has_ready()
    with pytest.raises(ValueError):
        RawNode(Config(2, applied=99), storage)  # beyond the log: inconsistent storage
    # A commit index persisted lazily (older than applied) is raised to the applied index.
    storage.set_hard_state(HardState(storage.hard_state.term, storage.hard_state.vote, 2))
    node = RawNode(Config(2, applied=4), storage)
    assert node.status().commit == 4 and not node.has_ready()


def test_config_is_validated():
    for bad in (dict(id=0), dict(id=1, election_tick=1, heartbeat_tick=1),
                dict(id=1, max_inflight_msgs=0)):
        with pytest.raises(ValueError):
            RawNode(Config(**bad), MemoryStorage())


def test_unreachable_peer_falls_back_to_probing():
    from raft import ProgressState

    net = Network()
    net.elect(1)
    net.propose(1, b"a")
    assert net.nodes[1].status().progress[2].state == ProgressState.REPLICATE
    net.nodes[1].report_unreachable(2)
    assert net.nodes[1].status().progress[2].state == ProgressState.PROBE
    net.propose(1, b"b")
    assert net.applied[2] == [b"a", b"b"]
    assert net.nodes[1].status().progress[2].state == ProgressState.REPLICATE


def test_committed_entries_are_handed_out_in_bounded_readies():
    node, storage = single_node()
    node.raft.cfg.max_committed_size_per_ready = 100
    node.campaign()
    drain(node, storage)
    for _ in range(10):
        node.propose(b"x" * 40)  # 56 bytes each with the overhead: one per Ready
    sizes = []
    for _ in range(30):
        if not node.has_ready():
            break
        rd = node.ready()
        storage.persist_ready(rd)
        if rd.committed_entries:
            sizes.append(len(rd.committed_entries))
        node.advance(rd)
    assert sum(sizes) == 10 and max(sizes) == 1


def test_snapshot_temporarily_unavailable_is_retried_later():
    from raft import SnapshotTemporarilyUnavailable

    class FlakyStorage(MemoryStorage):
        __slots__ = ("failures",)

        def snapshot(self):
            if self.failures:
                self.failures -= 1
                raise SnapshotTemporarilyUnavailable("being written")
            return super().snapshot()

    net = Network()
    flaky = FlakyStorage()
    flaky.failures = 0
    flaky.bootstrap(net.conf)
    net.storages[1] = flaky
    net.nodes[1] = RawNode(Config(1), flaky)
    net.elect(1)
    net.crash(3)
    net.propose(1, b"a")
    flaky.create_snapshot(net.applied_index[1], flaky.conf_state, pickle.dumps(net.applied[1]))
    flaky.compact(net.applied_index[1])
    flaky.failures = 2
    net.restart(3)
    net.tick(times=6)
    assert flaky.failures == 0
    assert net.storages[3].snapshot().metadata.index == net.applied_index[1]
    assert net.applied[3] == [b"a"]
