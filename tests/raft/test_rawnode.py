"""RawNode's driver contract: Ready ordering, persistence before acknowledgement, status."""

from __future__ import annotations

import pytest

from raft import (
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
