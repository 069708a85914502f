"""Membership changes: the codec of CONF_CHANGE entries and the single-server change rules.

A CONF_CHANGE entry's data is `encode_conf_change(change)`. Changes are single-server (Raft
dissertation §4.1): each adds or removes one voter (or only touches learners), so any majority
of the old configuration overlaps any majority of the new one. The leader allows at most one
change that is not yet applied, and none before an entry of its own term is committed (the fix
for the single-server bug found by Ongaro, raft-dev 2015): see `Raft.propose_conf_change`.
A change takes effect on each node when its driver applies the entry (`apply_conf_change`).
The leader does not remove or demote itself (transfer leadership first): in a two-voter group
the survivor could otherwise need the removed node's vote, which the removed node's longer log
withholds, and the removed node never campaigns. A leader that applies its own removal anyway
(proposed by a predecessor) hands leadership over before stepping down.
"""

from __future__ import annotations

import struct

from .types import ConfChange, ConfChangeError, ConfChangeType, ConfState

_HEADER = struct.Struct(">BQ")
_VERSION = 1


def encode_conf_change(change: ConfChange) -> bytes:
    return bytes((_VERSION,)) + _HEADER.pack(int(change.type), change.node_id) + change.context


def decode_conf_change(data: bytes) -> ConfChange:
    """Inverse of `encode_conf_change`; raises ConfChangeError for malformed data."""
    if len(data) < 1 + _HEADER.size or data[0] != _VERSION:
        raise ConfChangeError(f"malformed conf change entry ({len(data)} bytes)")
    kind, node_id = _HEADER.unpack_from(data, 1)
    try:
        change_type = ConfChangeType(kind)
    except ValueError:
        raise ConfChangeError(f"unknown conf change type {kind}") from None
    return ConfChange(change_type, node_id, bytes(data[1 + _HEADER.size :]))


def check_conf_change(conf: ConfState, change: ConfChange) -> None:
    """Raise ConfChangeError if `change` is not a valid single-server change of `conf`."""
    node = change.node_id
    if not isinstance(node, int) or node <= 0:
        raise ConfChangeError(f"invalid node id {node!r}")
    voters, learners = conf.voters, conf.learners
    kind = change.type
    if kind == ConfChangeType.ADD_VOTER:
        if node in voters:
            raise ConfChangeError(f"node {node} is already a voter")
    elif kind == ConfChangeType.ADD_LEARNER:
        if node in learners:
            raise ConfChangeError(f"node {node} is already a learner")
        if node in voters and len(voters) == 1:
            raise ConfChangeError(f"cannot demote the last voter {node}")
    elif kind == ConfChangeType.REMOVE_NODE:
        if node not in voters and node not in learners:
            raise ConfChangeError(f"node {node} is not a member")
        if node in voters and len(voters) == 1:
            raise ConfChangeError(f"cannot remove the last voter {node}")
    else:
        raise ConfChangeError(f"unknown conf change type {kind!r}")


def apply_to_conf_state(conf: ConfState, change: ConfChange) -> ConfState:
    """The configuration after `change`; an invalid change leaves it as it is (all nodes
    apply the same committed entries, so they agree on the outcome either way)."""
    try:
        check_conf_change(conf, change)
    except ConfChangeError:
        return conf
    node = change.node_id
    voters = [v for v in conf.voters if v != node]
    learners = [v for v in conf.learners if v != node]
    if change.type == ConfChangeType.ADD_VOTER:
        voters.append(node)
    elif change.type == ConfChangeType.ADD_LEARNER:
        learners.append(node)
    return ConfState(voters=tuple(sorted(voters)), learners=tuple(sorted(learners)))
