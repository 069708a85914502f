"""The Raft state machine of one peer (sans-IO): roles, elections, replication, reads.

Theory of operation
-------------------
`Raft` reacts to three kinds of input: `tick()` (logical time), `step(message)` (a message
from a peer, or a local report such as SNAP_STATUS), and local requests (`propose`,
`read_index`, `transfer_leader`, ...). It never performs I/O: it appends outgoing messages
to `msgs` (may be sent at once) or `msgs_after_persist` (may be sent only once the state they
acknowledge — a vote, appended entries, a new term — is durable), and keeps new log entries in
the unstable part of `RaftLog`. `RawNode` packs all that into a `Ready`.

Rules this module obeys (Raft paper §5, dissertation §3, §4, §6, §9):
- Terms: any message with a higher term makes us a follower of that term first, except
  PRE_VOTE (and granted PRE_VOTE_RESP), which never change terms; and except vote requests
  inside a leader lease (check_quorum: we heard from a leader less than an election timeout
  ago), which are ignored unless they come from a leader transfer.
- Votes: one per term, only for a candidate whose log is at least as up to date (§5.4.1).
  A candidate counts its own vote only after `advance` confirms the vote is durable.
- Commitment: the leader commits index i once a quorum of voters has i durable and
  term(i) == current term (§5.4.2); its own log counts only once persisted (`on_persisted`).
  A new leader appends an empty entry of its term so that it can commit.
- Reads (§6.4): the leader records its commit index for a read and confirms it is still
  leader by a heartbeat round acknowledged by a quorum; until an entry of its term is
  committed it queues reads. Followers forward READ_INDEX to the leader.
- Membership: single-server changes, at most one unapplied, none before the leader's first
  entry commits, never the leader's own removal (see confchange.py); they take effect when
  the driver applies them. A leader that applies its own removal hands leadership to the
  most up-to-date voter (TIMEOUT_NOW) and then steps down.
- Leader transfer (§3.10): the leader stops taking proposals, brings the target up to date,
  sends TIMEOUT_NOW; the target campaigns at once, its VOTEs marked CAMPAIGN_TRANSFER so that
  followers in a lease answer them. The leader gives up after an election timeout.
"""

from __future__ import annotations

from .confchange import apply_to_conf_state, check_conf_change, encode_conf_change
from .config import Config
from .fastinit import new_entry
from .log import RaftLog
from .progress import Progress, ProgressState
from .storage import ENTRY_OVERHEAD, Storage, limit_size
from .types import (
    NONE,
    Compacted,
    ConfChange,
    ConfChangeError,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ProposalDropped,
    ReadState,
    Role,
    Snapshot,
    SnapshotTemporarilyUnavailable,
    Unavailable,
)

CAMPAIGN_TRANSFER = b"raft:transfer"
"""`context` of the VOTE requests of an election started by a leader transfer."""

APP = MessageType.APP
APP_RESP = MessageType.APP_RESP
VOTE = MessageType.VOTE
VOTE_RESP = MessageType.VOTE_RESP
PRE_VOTE = MessageType.PRE_VOTE
PRE_VOTE_RESP = MessageType.PRE_VOTE_RESP
HEARTBEAT = MessageType.HEARTBEAT
HEARTBEAT_RESP = MessageType.HEARTBEAT_RESP
SNAP = MessageType.SNAP
SNAP_STATUS = MessageType.SNAP_STATUS
READ_INDEX = MessageType.READ_INDEX
READ_INDEX_RESP = MessageType.READ_INDEX_RESP
TIMEOUT_NOW = MessageType.TIMEOUT_NOW
UNREACHABLE = MessageType.UNREACHABLE

FOLLOWER = Role.FOLLOWER
PRE_CANDIDATE = Role.PRE_CANDIDATE
CANDIDATE = Role.CANDIDATE
LEADER = Role.LEADER

REPLICATE = ProgressState.REPLICATE
PROBE = ProgressState.PROBE
SNAPSHOT = ProgressState.SNAPSHOT

_NORMAL = EntryType.NORMAL


class _PendingRead:
    __slots__ = ("index", "frm", "context", "acks")

    def __init__(self, index: int, frm: int, context: bytes) -> None:
        self.index = index
        self.frm = frm
        self.context = context
        self.acks: set[int] = set()


class Raft:
    def __init__(self, config: Config, storage: Storage) -> None:
        config.validate()
        self.id = config.id
        self.cfg = config
        self.rng = config.rng
        self.max_msg_size = config.max_size_per_msg
        self.log = RaftLog(storage)
        hard_state, conf_state = storage.initial_state()
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.role = FOLLOWER
        self.lead = NONE
        self.conf = ConfState()
        self.voters: frozenset[int] = frozenset()
        self.quorum = 1
        self.prs: dict[int, Progress] = {}
        self.voter_prs: tuple[Progress, ...] = ()  # the voters' entries of `prs` (maybe_commit)
        self.votes: dict[int, bool] = {}
        self.msgs: list[Message] = []
        self.msgs_after_persist: list[Message] = []
        self.read_states: list[ReadState] = []
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = config.election_tick
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.need_bcast = False
        self.pending_reads: dict[bytes, _PendingRead] = {}  # insertion order = commit order
        self.reads_waiting_for_commit: list[tuple[bytes, int]] = []
        # Ticks left during which a deferred leader-transfer campaign may still start (the
        # old leader gives up on the transfer after an election timeout).
        self.transfer_campaign_ticks = 0
        self._set_conf(conf_state)
        if hard_state.commit:
            self.log.commit_to(min(hard_state.commit, self.log.last_index()))
        if config.applied:
            if config.applied > self.log.committed:
                # Only committed entries are ever applied, so the applied index is a commit
                # index too (a driver may persist commit-only hard states lazily).
                if config.applied > self.log.last_index():
                    raise ValueError(f"applied {config.applied} is beyond the last index "
                                     f"{self.log.last_index()} of the storage")
                self.log.commit_to(config.applied)
            self.log.applied_to(config.applied)
        self.become_follower(self.term, NONE)

    def __repr__(self) -> str:
        return (f"Raft(id={self.id}, term={self.term}, role={self.role.name}, "
                f"lead={self.lead}, {self.log!r})")

    # ------------------------------------------------------------------ configuration

    def promotable(self) -> bool:
        return self.id in self.voters

    def _set_conf(self, conf: ConfState) -> None:
        self.conf = conf
        voters = frozenset(conf.voters) | frozenset(conf.voters_outgoing)
        learners = frozenset(conf.learners) - voters
        self.voters = voters
        self.quorum = len(voters) // 2 + 1
        next_index = self.log.last_index() + 1
        inflight = self.cfg.max_inflight_msgs
        prs = self.prs
        for node in voters | learners:
            pr = prs.get(node)
            if pr is None:
                prs[node] = pr = Progress(next_index, inflight, node in learners)
                if node == self.id and self.log.snapshot is None:
                    pr.match = self.log.stable_last()
            else:
                pr.is_learner = node in learners
        for node in [n for n in prs if n not in voters and n not in learners]:
            del prs[node]
        self.voter_prs = tuple(prs[v] for v in voters)

    def apply_conf_change(self, change: ConfChange) -> ConfState:
        conf = apply_to_conf_state(self.conf, change)
        self._set_conf(conf)
        if self.role != LEADER:
            return conf
        if self.lead_transferee != NONE and self.lead_transferee not in self.voters:
            self.abort_leader_transfer()
        if self.id not in self.voters:
            # Removed or demoted: hand leadership over (see _hand_over) instead of just
            # stepping down. The remaining voters may not know yet that the change
            # committed, and our log may be the only complete one: without us they could
            # neither elect a leader (our vote rejects their shorter logs) nor replace us.
            self._hand_over()
            return conf
        if self.maybe_commit():
            self.need_bcast = True
        else:
            for node in self.prs:
                if node != self.id:
                    self.send_append(node, send_if_empty=False)
        return conf

    # ------------------------------------------------------------------ role changes

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        et = self.cfg.election_tick
        self.randomized_election_timeout = et + self.rng.randrange(et)
        self.lead_transferee = NONE
        self.votes = {}
        next_index = self.log.last_index() + 1
        for node, pr in self.prs.items():
            learner = pr.is_learner
            pr.__init__(next_index, self.cfg.max_inflight_msgs, learner)
            if node == self.id:
                pr.match = self.log.stable_last() if self.log.snapshot is None else 0
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.need_bcast = False
        self.pending_reads = {}
        self.reads_waiting_for_commit = []
        self.transfer_campaign_ticks = 0

    def become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.role = FOLLOWER

    def become_pre_candidate(self) -> None:
        if self.role == LEADER:
            raise AssertionError("leader cannot become pre-candidate")
        # Neither the term nor the vote changes: a pre-election is only a poll.
        self.votes = {}
        self.lead = NONE
        self.role = PRE_CANDIDATE

    def become_candidate(self) -> None:
        if self.role == LEADER:
            raise AssertionError("leader cannot become candidate")
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = CANDIDATE

    def become_leader(self) -> None:
        if self.role == FOLLOWER:
            raise AssertionError("follower cannot become leader directly")
        self._reset(self.term)
        self.lead = self.id
        self.role = LEADER
        own = self.prs.get(self.id)
        if own is not None:
            own.become_replicate()
            # Only what is durable counts toward a quorum (a pending snapshot is not).
            own.match = self.log.stable_last() if self.log.snapshot is None else 0
            own.next = self.log.last_index() + 1
        # An empty entry of the new term: committing it commits everything before (§5.4.2),
        # and until then no membership change and no read is served.
        last = self.log.last_index()
        self.log.append([Entry(self.term, last + 1)])
        self.pending_conf_index = last + 1
        self.bcast_append()

    # ------------------------------------------------------------------ time

    def tick(self) -> None:
        if self.role == LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.transfer_campaign_ticks:
            self.transfer_campaign_ticks -= 1
        if self.election_elapsed >= self.randomized_election_timeout and self.promotable():
            self.election_elapsed = 0
            self.hup()

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                # A leader that is no longer a voter keeps leading until it has handed over:
                # it may hold the only complete log (it cannot commit or serve reads alone).
                if not self._quorum_active() and self.id in self.voters:
                    self.become_follower(self.term, NONE)
                    return
            if self.lead_transferee != NONE:
                self.abort_leader_transfer()
            if self.id not in self.voters:
                self._hand_over()  # the previous attempt did not finish: try again
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            last_read = next(reversed(self.pending_reads), b"") if self.pending_reads else b""
            self.bcast_heartbeat(last_read, quiet=self.cfg.quiet_heartbeats and not last_read)

    def _quorum_active(self) -> bool:
        active = 0
        for node, pr in self.prs.items():
            if node == self.id:
                if node in self.voters:
                    active += 1
                continue
            if pr.recent_active and node in self.voters:
                active += 1
            pr.recent_active = False
        return active >= self.quorum

    # ------------------------------------------------------------------ elections

    def hup(self, transfer: bool = False) -> None:
        """Start an election (pre-vote first unless `transfer` or pre_vote is off)."""
        if self.role == LEADER or not self.promotable():
            return
        log = self.log
        if log.applied < log.committed and log.has_conf_change_between(log.applied + 1,
                                                                       log.committed + 1):
            # Our configuration is about to change: wait until it is applied. A transfer's
            # campaign is only deferred (to on_persisted), or the handover would stall.
            if transfer:
                self.transfer_campaign_ticks = self.cfg.election_tick
            return
        self.transfer_campaign_ticks = 0
        if transfer:
            self.campaign(VOTE, CAMPAIGN_TRANSFER)
        elif self.cfg.pre_vote:
            self.campaign(PRE_VOTE)
        else:
            self.campaign(VOTE)

    def campaign(self, kind: MessageType, context: bytes = b"") -> None:
        if kind == PRE_VOTE:
            self.become_pre_candidate()
            term = self.term + 1
            # A pre-vote needs nothing durable: count our own at once.
            if self.poll(self.id, True) == 1:
                self.campaign(VOTE, context)
                return
        else:
            self.become_candidate()
            term = self.term
            # Our own vote counts once it is durable (see on_persisted).
        last = self.log.last_index()
        last_term = self.log.last_term()
        for node in sorted(self.voters):
            if node != self.id:
                self.msgs.append(Message(kind, node, self.id, term, last_term, last,
                                         context=context))

    def poll(self, node: int, granted: bool) -> int:
        """Record a vote; 1 = won, -1 = lost, 0 = pending."""
        if node not in self.votes:
            self.votes[node] = granted
        yes = no = 0
        for voter in self.voters:
            v = self.votes.get(voter)
            if v is True:
                yes += 1
            elif v is False:
                no += 1
        if yes >= self.quorum:
            return 1
        if len(self.voters) - no < self.quorum:
            return -1
        return 0

    # ------------------------------------------------------------------ messages in

    def step(self, m: Message) -> None:
        t = m.type
        if m.term == self.term or t == SNAP_STATUS or t == UNREACHABLE or t == READ_INDEX:
            pass  # our term (the usual case); local reports and forwarded reads carry none
        elif m.term > self.term:
            if t == VOTE or t == PRE_VOTE:
                in_lease = (self.cfg.check_quorum and self.lead != NONE
                            and self.election_elapsed < self.cfg.election_tick)
                if in_lease and m.context != CAMPAIGN_TRANSFER:
                    return  # a leader is alive: do not let a disruptive node unseat it
            if t == PRE_VOTE or (t == PRE_VOTE_RESP and not m.reject):
                pass  # pre-votes use a future term; they never change ours
            elif t == APP or t == HEARTBEAT or t == SNAP:
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and (t == APP or t == HEARTBEAT):
                # A stale leader (e.g. back from a partition): our answer makes it step down.
                self.msgs_after_persist.append(Message(APP_RESP, m.frm, self.id, self.term))
            elif t == PRE_VOTE:
                self.msgs.append(Message(PRE_VOTE_RESP, m.frm, self.id, self.term,
                                         reject=True))
            return

        if t == VOTE or t == PRE_VOTE:
            self._handle_vote_request(m)
            return
        role = self.role
        if role == LEADER:
            if t == APP_RESP:  # the usual message, dispatched here (as _step_leader would)
                pr = self.prs.get(m.frm)
                if pr is not None:
                    self._handle_append_response(m, pr)
                return
            self._step_leader(m)
        elif role == FOLLOWER:
            if t == APP:  # the usual message, dispatched here (as _step_follower would)
                self.election_elapsed = 0
                self.lead = m.frm
                self._handle_append(m)
                return
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _handle_vote_request(self, m: Message) -> None:
        t = m.type
        can_vote = (self.vote == m.frm
                    or (self.vote == NONE and self.lead == NONE)
                    or (t == PRE_VOTE and m.term > self.term))
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            if t == VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
                self.msgs_after_persist.append(Message(VOTE_RESP, m.frm, self.id, m.term))
            else:
                self.msgs.append(Message(PRE_VOTE_RESP, m.frm, self.id, m.term))
        elif t == VOTE:
            self.msgs_after_persist.append(Message(VOTE_RESP, m.frm, self.id, self.term,
                                                   reject=True))
        else:
            self.msgs.append(Message(PRE_VOTE_RESP, m.frm, self.id, self.term, reject=True))

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == APP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_append(m)
        elif t == HEARTBEAT:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_heartbeat(m)
        elif t == SNAP:
            self.election_elapsed = 0
            self.lead = m.frm
            self._handle_snapshot(m)
        elif t == TIMEOUT_NOW:
            self.hup(transfer=True)
        elif t == READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))
        # READ_INDEX sent to a non-leader, stale responses: dropped.

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t == APP or t == HEARTBEAT or t == SNAP:
            self.become_follower(m.term, m.frm)  # a leader of our term exists
            self._step_follower(m)
        elif (t == PRE_VOTE_RESP and self.role == PRE_CANDIDATE) or (
                t == VOTE_RESP and self.role == CANDIDATE):
            result = self.poll(m.frm, not m.reject)
            if result == 1:
                if self.role == PRE_CANDIDATE:
                    self.campaign(VOTE)
                else:
                    self.become_leader()
            elif result == -1:
                self.become_follower(self.term, NONE)

    # -- follower side of replication

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self.msgs_after_persist.append(Message(APP_RESP, m.frm, self.id, self.term,
                                                   index=log.committed))
            return
        last_new = log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            self.msgs_after_persist.append(Message(APP_RESP, m.frm, self.id, self.term, 0,
                                                   last_new))
            return
        # Fast backtracking: tell the leader the last index whose term is <= the term it
        # assumed at m.index, so it skips a whole diverged term per round trip.
        hint, hint_term = log.find_conflict_by_term(min(m.index, log.last_index()), m.log_term)
        self.msgs_after_persist.append(Message(APP_RESP, m.frm, self.id, self.term,
                                               log_term=hint_term, index=m.index, reject=True,
                                               reject_hint=hint))

    def _handle_heartbeat(self, m: Message) -> None:
        log = self.log
        if m.commit > log.committed:
            last = log.offset + len(log.ents) - 1
            log.commit_to(m.commit if m.commit < last else last)
        self.msgs.append(Message(HEARTBEAT_RESP, m.frm, self.id, self.term, 0, 0, (), 0, False,
                                 0, None, m.context))

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is not None and self._restore(snap):
            index = self.log.last_index()
        else:
            index = self.log.committed
        self.msgs_after_persist.append(Message(APP_RESP, m.frm, self.id, self.term,
                                               index=index))

    def _restore(self, snap: Snapshot) -> bool:
        meta = snap.metadata
        log = self.log
        if meta.index <= log.committed:
            return False
        if log.match_term(meta.index, meta.term):
            # We already have the snapshot's last entry: just learn that it is committed.
            log.commit_to(meta.index)
            return False
        log.restore(snap)
        self.prs = {}
        self._set_conf(meta.conf_state)
        return True

    # -- leader side

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == READ_INDEX:
            self._leader_read_index(m.context, m.frm)
            return
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        if t == APP_RESP:
            self._handle_append_response(m, pr)
        elif t == HEARTBEAT_RESP:
            pr.recent_active = True
            pr.paused = False
            if pr.state == REPLICATE and len(pr.inflights) >= pr.max_inflight:
                pr.inflights.popleft()  # let one append through in case they were lost
            log = self.log
            if pr.match < log.offset + len(log.ents) - 1:
                self.send_append(m.frm)
            if m.context and self.pending_reads:
                self._read_ack(m.frm, m.context)
        elif t == SNAP_STATUS:
            if pr.state != SNAPSHOT:
                return
            if m.reject:
                pr.pending_snapshot = 0
            pr.become_probe()
            # Success: wait for the peer's append response; failure: retry after a heartbeat.
            pr.paused = True
        elif t == UNREACHABLE:
            if pr.state == REPLICATE:
                pr.become_probe()

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        pr.recent_active = True
        if m.reject:
            probe = m.reject_hint
            if m.log_term > 0:
                probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decr_to(m.index, probe):
                if pr.state == REPLICATE:
                    pr.become_probe()
                self.send_append(m.frm)
            return
        if not pr.maybe_update(m.index):
            return
        state = pr.state
        if state == PROBE:
            pr.become_replicate()
        elif state == SNAPSHOT:
            if pr.match + 1 >= self.log.first_index():
                pr.become_probe()
                pr.become_replicate()
        else:
            inflights = pr.inflights  # free_inflights_to, inline (once per acknowledgement)
            index = m.index
            while inflights and inflights[0] <= index:
                inflights.popleft()
        if self.maybe_commit() and self.cfg.bcast_commit:
            self.need_bcast = True  # followers learn the new commit index in this turn's flush
        # Keep the pipeline full: send what the freed window allows (bounded: each send
        # advances `next` until nothing is left, fills the window, or pauses a probe).
        log = self.log
        while pr.next < log.offset + len(log.ents) and self.send_append(m.frm, False):
            pass
        if m.frm == self.lead_transferee and pr.match == self.log.last_index():
            self._send_timeout_now(m.frm)

    def maybe_commit(self) -> bool:
        voter_prs = self.voter_prs
        quorum = self.quorum
        if len(voter_prs) == 3 and quorum == 2:
            # The usual group: the highest index on a quorum is the median of three.
            a, b, c = voter_prs
            a, b, c = a.match, b.match, c.match
            if a < b:
                a, b = b, a
            index = b if c <= b else (c if c < a else a)
        else:
            if len(voter_prs) < quorum:
                return False
            index = sorted([pr.match for pr in voter_prs], reverse=True)[quorum - 1]
        log = self.log
        if index <= log.committed or log.term_or_zero(index) != self.term:
            return False
        log.commit_to(index)
        if self.reads_waiting_for_commit:
            waiting, self.reads_waiting_for_commit = self.reads_waiting_for_commit, []
            for context, frm in waiting:
                self._leader_read_index(context, frm)
        return True

    def on_persisted(self, hard_state: HardState | None) -> None:
        """The driver made a Ready durable (called by RawNode.advance)."""
        if self.transfer_campaign_ticks and self.role == FOLLOWER:
            self.hup(transfer=True)
        if (self.role == CANDIDATE and hard_state is not None and hard_state.term == self.term
                and hard_state.vote == self.id):
            result = self.poll(self.id, True)
            if result == 1:
                self.become_leader()
            elif result == -1:
                self.become_follower(self.term, NONE)
        if self.role == LEADER:
            log = self.log
            own = self.prs.get(self.id)
            # our own match moves only when entries became durable (cheap test first)
            if (own is not None and own.match < log.offset - 1 and log.snapshot is None
                    and own.maybe_update(log.stable_last())):
                if self.maybe_commit() and self.cfg.bcast_commit:
                    self.need_bcast = True

    # ------------------------------------------------------------------ messages out

    def send_append(self, to: int, send_if_empty: bool = True) -> bool:
        pr = self.prs[to]
        log = self.log
        nxt = pr.next
        offset = log.offset
        unstable = log.ents
        last = offset + len(unstable) - 1
        if not send_if_empty and nxt > last:
            return False  # nothing new to send (cheap exit for the pipelining loops)
        state = pr.state  # pr.is_paused(), inline
        if state == REPLICATE:
            if len(pr.inflights) >= pr.max_inflight:
                return False
        elif state != PROBE or pr.paused:
            return False
        prev = nxt - 1
        try:
            prev_term = log.term(prev)
            if nxt == last and nxt >= offset:
                ents = (unstable[-1],)  # the usual case at low load: the one new entry
            elif offset <= nxt <= last:
                # only new (unstable) entries to send, straight from memory
                ents = tuple(limit_size(unstable[nxt - offset :], self.max_msg_size))
            else:
                ents = tuple(log.entries(nxt, last + 1, self.max_msg_size))
        except Compacted:
            return self._send_snapshot(to, pr)
        except Unavailable:
            return False
        if not ents and not send_if_empty:
            return False
        self.msgs.append(Message(APP, to, self.id, self.term, prev_term, prev, ents,
                                 log.committed))
        pr.sent_entries(len(ents), ents[-1].index if ents else prev)
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False
        try:
            snap = self.log.storage.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        if snap.is_empty():
            raise AssertionError("the log is compacted but storage has no snapshot")
        self.msgs.append(Message(SNAP, to, self.id, self.term, snapshot=snap))
        pr.become_snapshot(snap.metadata.index)
        return True

    def bcast_append(self) -> None:
        """Send every peer what it lacks (as many messages as its window allows), or at
        least an empty append carrying the commit index."""
        self.need_bcast = False
        send_append = self.send_append
        log = self.log
        for node, pr in self.prs.items():
            if node != self.id and send_append(node):
                while pr.next < log.offset + len(log.ents) and send_append(node, False):
                    pass

    def flush(self) -> None:
        """Send the appends that proposals and commits made necessary (batched per turn)."""
        if self.need_bcast and self.role == LEADER:
            self.bcast_append()
        self.need_bcast = False

    def bcast_heartbeat(self, context: bytes = b"", quiet: bool = False) -> None:
        """Heartbeat every peer; `quiet`: not those streaming appends (see Config)."""
        committed = self.log.committed
        for node, pr in self.prs.items():
            if node != self.id:
                appended = pr.appended
                pr.appended = False
                if quiet and appended and pr.state == REPLICATE:
                    continue
                match = pr.match
                self.msgs.append(Message(HEARTBEAT, node, self.id, self.term, 0, 0, (),
                                         match if match < committed else committed, False, 0,
                                         None, context))

    # ------------------------------------------------------------------ local requests

    def propose(self, datas: list[bytes]) -> None:
        if self.role != LEADER:
            raise ProposalDropped(f"not the leader (leader is {self.lead or 'unknown'})")
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")
        if self.id not in self.voters:
            raise ProposalDropped("this node is no longer a voter")
        limit = self.cfg.max_uncommitted_size
        if limit:
            size = sum(len(d) for d in datas) + ENTRY_OVERHEAD * len(datas)
            if self.uncommitted_size and self.uncommitted_size + size > limit:
                raise ProposalDropped("too many uncommitted bytes; retry later")
            self.uncommitted_size += size
        log = self.log
        ents = log.ents  # the unstable tail ends at last_index: append in place (hot path)
        index = log.offset + len(ents) - 1
        term = self.term
        for data in datas:
            index += 1
            ents.append(new_entry(term, index, _NORMAL, data))
        self.need_bcast = True

    def propose_conf_change(self, change: ConfChange) -> int:
        if self.role != LEADER:
            raise ProposalDropped(f"not the leader (leader is {self.lead or 'unknown'})")
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"leadership is being transferred to {self.lead_transferee}")
        if self.pending_conf_index > self.log.applied:
            raise ConfChangeError(
                f"a membership change (or this leader's first entry) at index "
                f"{self.pending_conf_index} is not applied yet (applied {self.log.applied})")
        check_conf_change(self.conf, change)
        if change.node_id == self.id and change.type != ConfChangeType.ADD_VOTER:
            # Removing the leader can leave a two-voter group unable to elect (the survivor
            # may need the removed node's vote, which its longer log withholds).
            raise ConfChangeError("the leader cannot remove or demote itself: transfer "
                                  "leadership to another voter first")
        index = self.log.last_index() + 1
        self.log.append([Entry(self.term, index, EntryType.CONF_CHANGE,
                               encode_conf_change(change))])
        self.pending_conf_index = index
        self.need_bcast = True
        return index

    def reduce_uncommitted_size(self, entries: list[Entry]) -> None:
        if self.uncommitted_size:
            size = sum(len(e.data) for e in entries) + ENTRY_OVERHEAD * len(entries)
            self.uncommitted_size = max(0, self.uncommitted_size - size)

    def read_index(self, context: bytes) -> None:
        if self.role == LEADER:
            self._leader_read_index(context, self.id)
        elif self.lead != NONE:
            self.msgs.append(Message(READ_INDEX, self.lead, self.id, 0, context=context))
        else:
            raise ProposalDropped("no leader known to serve the read")

    def _leader_read_index(self, context: bytes, frm: int) -> None:
        log = self.log
        if log.term_or_zero(log.committed) != self.term:
            # Our commit index may lag the true one until our first entry commits (§6.4);
            # even as the only voter (the group may have shrunk under a previous leader).
            self.reads_waiting_for_commit.append((context, frm))
            return
        if len(self.voters) == 1 and self.id in self.voters:
            self._read_ready(log.committed, frm, context)
            return
        if context in self.pending_reads:
            return  # already pending: one answer per context
        read = _PendingRead(log.committed, frm, context)
        if self.id in self.voters:
            read.acks.add(self.id)
        self.pending_reads[context] = read
        if self.cfg.lean_reads:
            self._heartbeat_quorum(context)
        else:
            self.bcast_heartbeat(context)

    def _heartbeat_quorum(self, context: bytes) -> None:
        """A read's heartbeat round to just enough voters for a quorum with our own ack: the
        ones heard from most recently (see Config.lean_reads)."""
        prs = self.prs
        me = self.id
        need = self.quorum - (1 if me in self.voters else 0)
        if need == 1:
            # the usual group of three: the first peer with the largest key (as the sort below)
            best = NONE
            best_key = None
            for n in self.voters:
                pr = prs.get(n) if n != me else None
                if pr is not None:
                    key = (pr.recent_active, pr.match)
                    if best_key is None or key > best_key:
                        best, best_key = n, key
            peers = [best] if best != NONE else []
        else:
            peers = sorted((n for n in self.voters if n != me and n in prs),
                           key=lambda n: (prs[n].recent_active, prs[n].match), reverse=True)
        committed = self.log.committed
        for node in peers[:need]:
            match = prs[node].match
            self.msgs.append(Message(HEARTBEAT, node, me, self.term, 0, 0, (),
                                     match if match < committed else committed, False, 0,
                                     None, context))

    def _read_ack(self, frm: int, context: bytes) -> None:
        read = self.pending_reads.get(context)
        if read is None or frm not in self.voters:
            return
        read.acks.add(frm)
        if len(read.acks) < self.quorum:
            return
        # Leadership confirmed at this read's time: it and every read before it are safe.
        while self.pending_reads:
            ctx, r = next(iter(self.pending_reads.items()))
            del self.pending_reads[ctx]
            self._read_ready(r.index, r.frm, r.context)
            if ctx == context:
                break

    def _read_ready(self, index: int, frm: int, context: bytes) -> None:
        if frm == self.id or frm == NONE:
            self.read_states.append(ReadState(index, context))
        else:
            self.msgs.append(Message(READ_INDEX_RESP, frm, self.id, self.term, index=index,
                                     context=context))
            if not self.cfg.bcast_commit and frm in self.prs:
                self.send_append(frm)  # the follower must learn a commit >= index to serve

    def transfer_leader(self, to: int) -> bool:
        if self.role != LEADER:
            return False
        if to not in self.voters or to == self.id:
            return False
        if self.lead_transferee == to:
            return True
        if self.lead_transferee != NONE:
            self.abort_leader_transfer()
        self.election_elapsed = 0  # the transfer must finish within an election timeout
        self.lead_transferee = to
        pr = self.prs[to]
        if pr.match == self.log.last_index():
            self._send_timeout_now(to)
        else:
            self.send_append(to)
        return True

    def abort_leader_transfer(self) -> None:
        self.lead_transferee = NONE

    def _send_timeout_now(self, to: int) -> None:
        self.msgs.append(Message(TIMEOUT_NOW, to, self.id, self.term))
        if self.id not in self.voters:
            # Handing over: `to` now has our whole log, so the voters can elect a leader
            # without us even if this message is lost. Nothing is left for us to do.
            self.become_follower(self.term, NONE)

    def _hand_over(self) -> None:
        """A leader that is no longer a voter transfers leadership to the most up-to-date
        voter (retried each election timeout while it is still leader)."""
        if self.lead_transferee != NONE or not self.voters:
            return
        prs = self.prs
        best = max(sorted(self.voters), key=lambda n: (prs[n].recent_active, prs[n].match))
        self.election_elapsed = 0
        self.lead_transferee = best
        if prs[best].match == self.log.last_index():
            self._send_timeout_now(best)
        else:
            self.send_append(best)
