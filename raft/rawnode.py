"""`RawNode`: the driver-facing API of one Raft peer (etcd-io/raft's RawNode shape).

The driver loop (see `Ready` in types.py for the exact ordering rules):

    node = RawNode(Config(id=1), storage)
    while True:
        node.tick()                      # every tick interval
        node.step(message)               # for each message from a peer
        node.propose(b"...")             # client writes (on the leader)
        if node.has_ready():
            rd = node.ready()
            send(rd.messages)
            storage.persist(rd.snapshot, rd.entries, rd.hard_state)  # durably if rd.must_sync
            send(rd.persisted_messages)
            for entry in rd.committed_entries: apply(entry)  # CONF_CHANGE: apply_conf_change
            serve(rd.read_states)
            node.advance(rd)

Exactly one Ready may be outstanding: `ready()` again before `advance()` raises RaftError.
`tick`, `step` and the requests may be called between `ready()` and `advance()`; what they
produce goes into the next Ready.

Bootstrapping a group with voters [1, 2, 3]: on each of nodes 1-3, before creating the
RawNode, write the bootstrap snapshot to the empty storage —
`MemoryStorage.bootstrap(ConfState(voters=(1, 2, 3)))`, or for another storage apply
`raft.storage.bootstrap_snapshot(conf_state)` and persist `HardState(term=1, commit=1)`.
A node added later starts from an empty storage; the leader sends it a snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import Config
from .confchange import decode_conf_change
from .core import Raft
from .fastinit import new_hard_state
from .progress import ProgressState
from .storage import Storage
from .types import (
    NONE,
    ConfChange,
    ConfState,
    Message,
    MessageType,
    RaftError,
    Ready,
    Role,
    SoftState,
)


class MalformedMessage(RaftError, ValueError):
    """A peer sent a message that no correct peer sends (the caller should drop it)."""


_MESSAGE_TYPES = frozenset(MessageType)
_APP = MessageType.APP  # module constants: enum attribute access is slow in CPython
_SNAP = MessageType.SNAP
_SNAP_STATUS = MessageType.SNAP_STATUS
_UNREACHABLE = MessageType.UNREACHABLE
_LEADER = Role.LEADER
_FOLLOWER = Role.FOLLOWER


def _check_message(m: Message) -> None:
    """Cheap shape checks, so that a bad peer gets an error instead of corrupting state."""
    t = m.type
    if t not in _MESSAGE_TYPES:
        raise MalformedMessage(f"unknown message type {t!r}")
    if m.frm <= 0 or m.term < 0 or m.index < 0 or m.log_term < 0 or m.commit < 0:
        raise MalformedMessage(f"negative or missing field in {t!r} from {m.frm}")
    ents = m.entries
    if ents:
        if t != _APP:
            raise MalformedMessage(f"{m.type!r} carries entries")
        first, last = ents[0].index, ents[-1].index
        if first != m.index + 1 or last != m.index + len(ents):
            raise MalformedMessage(f"append at {m.index} carries entries {first}..{last}")
        if ents[0].term < m.log_term or ents[-1].term > m.term:
            raise MalformedMessage("append entries' terms out of order")
    elif t == _SNAP and (m.snapshot is None or m.snapshot.is_empty()):
        raise MalformedMessage("snapshot message without a snapshot")


@dataclass(slots=True, frozen=True)
class PeerStatus:
    """What the leader knows of one peer."""

    match: int
    next: int
    state: ProgressState
    recent_active: bool
    is_learner: bool
    inflight: int


@dataclass(slots=True, frozen=True)
class Status:
    id: int
    term: int
    vote: int
    commit: int
    applied: int
    role: Role
    leader: int
    lead_transferee: int = NONE
    conf_state: ConfState = field(default_factory=ConfState)
    last_index: int = 0
    # On the leader: index of the last membership change (or of its first entry); another
    # change is accepted once `applied` reaches it.
    pending_conf_index: int = 0
    # Filled on the leader only: each member's replication progress (including its own).
    progress: dict[int, PeerStatus] = field(default_factory=dict)


class RawNode:
    # What the driver last acknowledged (`advance`): the soft and hard state as plain ints, so
    # that has_ready/ready compare fields without building objects.
    __slots__ = ("raft", "_prev_lead", "_prev_role", "_prev_term", "_prev_vote",
                 "_prev_commit", "_outstanding")

    def __init__(self, config: Config, storage: Storage) -> None:
        self.raft = Raft(config, storage)
        r = self.raft
        self._prev_lead = r.lead
        self._prev_role = r.role
        self._prev_term = r.term
        self._prev_vote = r.vote
        self._prev_commit = r.log.committed
        self._outstanding: Ready | None = None

    # -- inputs

    def tick(self) -> None:
        """Advance logical time by one tick (elections, heartbeats, check-quorum)."""
        self.raft.tick()

    def campaign(self) -> None:
        """Start an election now (as if the election timeout elapsed)."""
        self.raft.hup()

    def step(self, message: Message) -> None:
        """Feed a message from a peer (or a local report: SNAP_STATUS / UNREACHABLE with
        `to` = this node and `frm` = the peer; `report_snapshot` / `report_unreachable` build
        them). Messages addressed to another node, or claiming to come from this node, are
        ignored; malformed ones raise MalformedMessage."""
        r = self.raft
        if message.to != r.id:
            return
        t = message.type
        if message.frm == r.id and t != _SNAP_STATUS and t != _UNREACHABLE:
            return
        _check_message(message)
        r.step(message)

    def propose(self, data: bytes) -> None:
        """Append `data` as a new entry; raises ProposalDropped unless this node is the leader
        (not transferring leadership, below max_uncommitted_size). Acceptance is no promise of
        commitment: the driver learns of it when the entry appears in `committed_entries`."""
        self.raft.propose([data])

    def propose_many(self, datas: list[bytes]) -> None:
        """`propose` for a batch of entries, all or none."""
        if datas:
            self.raft.propose(datas)

    def propose_conf_change(self, change: ConfChange) -> int:
        """Propose a membership change; returns the index of its CONF_CHANGE entry.

        Raises ProposalDropped if not leader or transferring, ConfChangeError if the change is
        invalid for the current configuration or another change (or this leader's first
        entry) is not applied yet."""
        return self.raft.propose_conf_change(change)

    def apply_conf_change(self, change: ConfChange | bytes) -> ConfState:
        """Apply a committed CONF_CHANGE entry (its decoded ConfChange, or the entry's data);
        returns the new configuration, which the driver should persist with its applied
        index (e.g. `MemoryStorage.set_conf_state`). Invalid changes leave it unchanged."""
        if isinstance(change, (bytes, bytearray, memoryview)):
            change = decode_conf_change(bytes(change))
        return self.raft.apply_conf_change(change)

    def read_index(self, context: bytes) -> None:
        """Request a linearizable read; a `ReadState(index, context)` appears in a later Ready
        once this node may serve it after applying `index`. On a follower the request is
        forwarded to the leader; raises ProposalDropped if no leader is known. A request is
        silently dropped if leadership changes before it completes (the driver times out and
        retries). `context` must be non-empty and unique among pending reads."""
        if not context:
            raise ValueError("read_index needs a non-empty context")
        self.raft.read_index(context)

    def transfer_leader(self, to: int) -> bool:
        """On the leader, start handing leadership to voter `to` (proposals are refused
        meanwhile; the attempt is abandoned after an election timeout). Returns False (and
        does nothing) on a non-leader or for a non-voter."""
        return self.raft.transfer_leader(to)

    def report_unreachable(self, node: int) -> None:
        """The transport failed to deliver to `node`: stop pipelining to it."""
        r = self.raft
        r.step(Message(MessageType.UNREACHABLE, r.id, node))

    def report_snapshot(self, node: int, ok: bool) -> None:
        """The transport finished sending a SNAP message to `node` (ok) or gave up.

        The driver MUST report the outcome of every SNAP message of a Ready (also when it
        drops it): until then the leader sends `node` nothing but heartbeats."""
        r = self.raft
        r.step(Message(MessageType.SNAP_STATUS, r.id, node, reject=not ok))

    # -- outputs

    # The three methods below run once per Ready (has_ready more often): they read the log's
    # fields directly instead of through its small accessors (same conditions as
    # RaftLog.has_next_unstable_entries / next_unstable_snapshot / has_next_committed_entries).

    def has_ready(self) -> bool:
        if self._outstanding is not None:
            return False
        r = self.raft
        if r.need_bcast:
            r.flush()
        if r.msgs or r.msgs_after_persist or r.read_states:
            return True
        log = r.log
        if log.in_progress < log.offset + len(log.ents):
            return True  # unstable entries not yet handed out
        if log.snapshot is not None:
            if not log.snapshot_in_progress:
                return True
        elif log.committed > log.applying:
            return True  # committed entries to apply (not before a pending snapshot)
        return (log.committed != self._prev_commit or r.term != self._prev_term
                or r.vote != self._prev_vote or r.lead != self._prev_lead
                or r.role != self._prev_role)

    def ready(self) -> Ready:
        if self._outstanding is not None:
            raise RaftError("advance() the previous Ready before asking for another")
        r = self.raft
        if r.need_bcast:
            r.flush()
        log = r.log
        lead = r.lead
        role = r.role
        soft = None
        if lead != self._prev_lead or role != self._prev_role:
            soft = SoftState(lead, role)
        term = r.term
        vote = r.vote
        commit = log.committed
        hard = None
        must_sync = False
        if term != self._prev_term or vote != self._prev_vote:
            must_sync = True
            hard = new_hard_state(term, vote, commit)
        elif commit != self._prev_commit:
            hard = new_hard_state(term, vote, commit)
        ents = log.ents
        start = log.in_progress - log.offset
        if start < len(ents):
            entries = ents[start:]  # a copy: the log keeps them until they are stable
            must_sync = True
            log.in_progress = log.offset + len(ents)
        else:
            entries = []
        snap = log.snapshot
        if snap is not None:
            if log.snapshot_in_progress:
                snap = None
            else:
                log.snapshot_in_progress = True
                must_sync = True
            committed = []  # the snapshot must be applied first
        elif commit > log.applying:
            committed = log.entries(log.applying + 1, commit + 1,
                                    r.cfg.max_committed_size_per_ready)
            if committed:
                log.applying = committed[-1].index
        else:
            committed = []
        # Hand over the outboxes, leaving fresh (empty) ones behind.
        msgs = r.msgs
        r.msgs = []
        after = r.msgs_after_persist
        r.msgs_after_persist = []
        reads = r.read_states
        r.read_states = []
        rd = Ready(soft, hard, entries, snap, committed, msgs, after, reads, must_sync)
        self._outstanding = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """The driver has done everything `rd` asked (persisted, sent, applied)."""
        if rd is not self._outstanding:
            raise RaftError("advance() must be given the Ready last returned by ready()")
        self._outstanding = None
        r = self.raft
        log = r.log
        soft = rd.soft_state
        if soft is not None:
            self._prev_lead = soft.leader
            self._prev_role = soft.role
        hard = rd.hard_state
        if hard is not None:
            self._prev_term = hard.term
            self._prev_vote = hard.vote
            self._prev_commit = hard.commit
        snap = rd.snapshot
        if snap is not None:
            index = snap.metadata.index
            log.stable_snapshot_to(index)
            log.applied_to(index)
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        committed = rd.committed_entries
        if committed:
            log.applied_to(committed[-1].index)
            if r.uncommitted_size and r.role == _LEADER:
                r.reduce_uncommitted_size(committed)
        if r.role != _FOLLOWER or r.transfer_campaign_ticks:
            r.on_persisted(hard)  # (it has nothing to do for a follower without a transfer)

    # -- introspection

    def status(self) -> Status:
        r = self.raft
        progress = {}
        if r.role == Role.LEADER:
            progress = {
                node: PeerStatus(pr.match, pr.next, pr.state, pr.recent_active, pr.is_learner,
                                 len(pr.inflights))
                for node, pr in r.prs.items()
            }
        return Status(id=r.id, term=r.term, vote=r.vote, commit=r.log.committed,
                      applied=r.log.applied, role=r.role, leader=r.lead,
                      lead_transferee=r.lead_transferee, conf_state=r.conf,
                      last_index=r.log.last_index(), pending_conf_index=r.pending_conf_index,
                      progress=progress)

    @property
    def id(self) -> int:
        return self.raft.id

    @property
    def role(self) -> Role:
        return self.raft.role

    @property
    def leader(self) -> int:
        return self.raft.lead

    @property
    def term(self) -> int:
        return self.raft.term
