"""Configuration of one Raft peer (`RawNode`)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from .types import NONE


@dataclass(slots=True)
class Config:
    """Tunables of one peer; times are in ticks (the driver decides how long a tick is).

    - `election_tick`: a follower that hears nothing from a leader for a randomized timeout in
      `[election_tick, 2 * election_tick)` ticks starts an election. Must exceed
      `heartbeat_tick` (etcd advises 10x).
    - `heartbeat_tick`: a leader sends heartbeats every this many ticks.
    - `max_size_per_msg`: soft bound on the bytes of entries in one append message (at least
      one entry is always sent).
    - `max_inflight_msgs`: append messages that may be in flight to one follower in
      replicate state (pipelining bound).
    - `check_quorum`: a leader steps down if it has not heard from a quorum within an election
      timeout; followers then ignore vote requests while they believe a leader is alive.
    - `pre_vote`: a pre-election round (no term bump) before a real election, so a node
      rejoining from a partition cannot disrupt a healthy leader.
    - `applied`: the index the driver's state machine has applied (on restart).
    - `rng`: the only source of randomness (default `random.Random(id)`).
    - `max_uncommitted_size`: bytes of entry payloads a leader accepts beyond its commit
      index before it drops proposals (0 = unlimited).
    - `max_committed_size_per_ready`: soft bound on the bytes of `committed_entries` handed
      out in one `Ready` (at least one entry).
    - `bcast_commit`: a leader whose commit index moves tells every follower at once (in an
      append, empty if need be). Off (as raft-rs's `skip_bcast_commit`): followers learn it
      with the next append or heartbeat — half the messages per write under load, followers
      apply later; a follower whose read index is answered is sent an append at once so its
      read does not wait for a heartbeat.
    - `quiet_heartbeats`: a leader's heartbeat round skips a peer in replicate state that was
      sent an append since the previous round (the append reset the peer's election timer and
      carried the commit index; its answer marks the peer active). Under load the appends do
      the heartbeats' work, and a multi-raft node with many groups sends far fewer messages.
      Rounds that confirm a read are never skipped.
    - `lean_reads`: the heartbeat round a ReadIndex starts goes only to as many voters as a
      quorum needs besides the leader (those heard from most recently), not to every peer: in
      a 3-node group one heartbeat and one answer per read round instead of two of each. If one
      of them does not answer, the next tick's round (to every peer, carrying the newest
      pending read) confirms the read. A quorum of acknowledgements is required either way.
    """

    id: int
    election_tick: int = 10
    heartbeat_tick: int = 1
    max_size_per_msg: int = 1 << 20
    max_inflight_msgs: int = 256
    check_quorum: bool = True
    pre_vote: bool = True
    applied: int = 0
    rng: random.Random | None = None
    max_uncommitted_size: int = 0
    max_committed_size_per_ready: int = 64 << 20
    bcast_commit: bool = True
    quiet_heartbeats: bool = False
    lean_reads: bool = False

    def __post_init__(self) -> None:
        if self.rng is None:
            self.rng = random.Random(self.id)

    def validate(self) -> None:
        if not isinstance(self.id, int) or self.id == NONE or self.id < 0:
            raise ValueError(f"raft id must be a positive int, got {self.id!r}")
        if self.heartbeat_tick <= 0:
            raise ValueError("heartbeat_tick must be greater than 0")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError("election_tick must be greater than heartbeat_tick")
        if self.max_inflight_msgs <= 0:
            raise ValueError("max_inflight_msgs must be greater than 0")
        if self.max_size_per_msg <= 0:
            raise ValueError("max_size_per_msg must be greater than 0")
        if self.applied < 0 or self.max_uncommitted_size < 0:
            raise ValueError("applied and max_uncommitted_size must not be negative")
