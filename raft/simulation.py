"""A deterministic cluster simulator that checks the Raft core against the paper's invariants.

Theory of operation
-------------------
A `Cluster` holds N simulated nodes, each a `RawNode` over a storage, driven exactly as a real
node drives it (`Ready` docstring): send `messages` -> persist snapshot, entries, hard state
-> send `persisted_messages` -> apply `committed_entries` -> serve `read_states` -> `advance`.
Everything a node keeps outside its storage (the `RawNode`, the applied state machine, reads
in flight) is volatile: a crash throws it away, and a crash can strike between any two of
those stages ("mid-Ready"). A restart rebuilds the node from its storage alone.

The network holds messages in flight with a delivery time in ticks. It drops, duplicates and
delays them (delays reorder), and partitions cut links one way or both ways. Time exists only
as ticks; randomness only from a `random.Random` seeded by the run's seed. The same seed
always produces the same run (VOPR-style: the fault mix itself is drawn from the seed, and
each fault family may be switched off for a seed — swarm testing).

The `Checker` (raft/simulation_checker.py) watches every Ready, apply and read, and checks
after every step:
- election safety: at most one leader per term, ever;
- leader append-only: a leader never truncates or overwrites its own log;
- log matching: two entries with the same index and term carry the same data and follow
  entries with the same term (by induction: the logs are identical up to there);
- leader completeness: a leader holds every entry committed in an earlier term;
- state machine safety: no two nodes apply different entries at one index; each node
  applies indexes in order, once;
- committed entries are never lost: a node's durable state after a crash agrees with what
  was committed, and after healing every live member applies everything committed;
- linearizable reads: a ReadIndex read's index is not below any commit index known anywhere
  when the read began, and the value it returns is not older than the last write committed
  before the read began.

`run_seed` runs one seeded schedule: a fault phase, then a liveness phase (heal everything;
a leader must emerge and proposals made after healing must apply on every live member within
a bounded number of ticks). Failures raise `SimulationFailure` carrying the seed, the
violated invariant and the last events (the trace).

The primitives (`tick`, `deliver`, `crash`, `restart`, `propose`, ...) are public so the
hypothesis state machine in the tests can drive the same cluster rule by rule.
"""

from __future__ import annotations

import collections
import random
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import IntEnum
from typing import Any

from .confchange import decode_conf_change
from .config import Config
from .rawnode import RawNode
from .simulation_checker import (
    KEYS,
    Checker,
    InvariantViolation,
    PendingRead,
    StateMachine,
    decode_put,
    encode_put,
)
from .storage import MemoryStorage
from .types import (
    ConfChange,
    ConfChangeError,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    ProposalDropped,
    RaftError,
    Ready,
    Role,
)

TRACE_EVENTS = 200

# ---------------------------------------------------------------------------------------------
# Errors


class SimulationFailure(AssertionError):
    """A seeded run failed; carries what is needed to reproduce and understand it."""

    def __init__(self, seed: int | None, error: BaseException, trace: list[str],
                 rates: FaultRates | None = None) -> None:
        self.seed = seed
        self.rates = rates
        self.error = error
        self.trace = trace
        self.invariant = getattr(error, "invariant", type(error).__name__)
        super().__init__(f"seed {seed}: {error if hasattr(error, 'invariant') else repr(error)}")

    def report(self, events: int = TRACE_EVENTS) -> str:
        trace = self.trace[-events:] if events > 0 else []
        detail = getattr(self.error, "detail", None) or repr(self.error)
        lines = [f"seed {self.seed} FAILED: {self.invariant}: {detail}"]
        if self.rates is not None:
            lines.append(f"fault rates: {self.rates.describe()}")
        lines.append(f"last {len(trace)} events:")
        lines += ["  " + e for e in trace]
        lines.append(f"seed {self.seed} FAILED: {self.invariant}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Fault rates, drawn per seed


# Set while a mutation is applied (simulation_mutations.py): the multi-group knobs
# (bcast_commit off, quiet_heartbeats) stay at the textbook message flow, as when the mutation
# catch rates in the README were measured. A mutation that loses acknowledged entries leaves a
# leader believing a follower has more than it has; with fewer messages the run then ends in a
# slow liveness failure rather than a fast safety one (still caught, at ~1 s per seed).
TEXTBOOK_FLOW = False


@dataclass(slots=True)
class FaultRates:
    """Probabilities per step (per message for the network ones); 0 switches a fault off."""

    drop: float = 0.0
    duplicate: float = 0.0
    delay_max_ticks: int = 0
    partition: float = 0.0
    heal: float = 0.1
    crash: float = 0.0
    crash_mid_ready: float = 0.5  # share of crashes that interrupt a Ready half-way
    crash_at_sync: float = 0.0  # a Ready to persist or apply is interrupted by a crash
    restart_ticks: tuple[int, int] = (1, 30)  # a crashed node restarts after this many ticks
    leader_focus: float = 0.5  # share of crashes, pauses and partitions aimed at a leader
    pause: float = 0.0  # a node stops (no ticks, no messages) as if SIGSTOPped, then resumes
    pause_ticks: tuple[int, int] = (5, 40)
    propose: float = 0.3
    read: float = 0.1
    conf_change: float = 0.0
    transfer: float = 0.0
    compact: float = 0.0
    defer_ready: float = 0.0  # a delivered message's Ready waits (the node batches)
    skip_tick: float = 0.0  # a node's clock misses a tick (clock skew)
    unreachable: float = 0.0  # a dropped message is reported unreachable to its sender
    # Per-seed knobs of the core (small messages split appends: more interleavings).
    max_size_per_msg: int = 4096
    max_inflight_msgs: int = 16
    pre_vote: bool = True
    check_quorum: bool = True
    bcast_commit: bool = True
    quiet_heartbeats: bool = False
    lean_reads: bool = False

    @classmethod
    def draw(cls, rng: random.Random) -> FaultRates:
        def some(choices: list[float], off: float = 0.3) -> float:
            return 0.0 if rng.random() < off else rng.choice(choices)

        # drawn from the state without consuming it: every seed keeps the schedule it had
        # before this knob existed. Only the state's ints are hashed: the whole state ends
        # with None, whose hash is its address (it differed between processes, so the knobs
        # of a seed did too)
        knobs = random.Random(hash(rng.getstate()[1]))
        bcast_commit = knobs.random() < 0.5 or TEXTBOOK_FLOW
        quiet_heartbeats = knobs.random() < 0.5 and not TEXTBOOK_FLOW
        lean_reads = knobs.random() < 0.5 and not TEXTBOOK_FLOW
        return cls(
            lean_reads=lean_reads,
            bcast_commit=bcast_commit,
            quiet_heartbeats=quiet_heartbeats,
            drop=some([0.01, 0.05, 0.15, 0.3]),
            duplicate=some([0.01, 0.05, 0.15]),
            delay_max_ticks=rng.choice([0, 1, 2, 3, 6]),
            partition=some([0.005, 0.02, 0.05]),
            heal=rng.choice([0.02, 0.05, 0.2]),
            crash=some([0.002, 0.01, 0.03]),
            crash_mid_ready=rng.choice([0.0, 0.5, 0.9]),
            crash_at_sync=some([0.002, 0.01, 0.03]),
            restart_ticks=rng.choice([(0, 3), (1, 30), (10, 100)]),
            leader_focus=rng.choice([0.0, 0.5, 0.9]),
            pause=some([0.005, 0.02, 0.05]),
            pause_ticks=rng.choice([(1, 10), (5, 40), (20, 60)]),
            propose=rng.choice([0.1, 0.3, 0.8]),
            read=rng.choice([0.0, 0.1, 0.4]),
            conf_change=some([0.005, 0.02, 0.05]),
            transfer=some([0.005, 0.02]),
            compact=some([0.01, 0.05, 0.2]),
            defer_ready=rng.choice([0.0, 0.3, 0.8]),
            skip_tick=some([0.05, 0.2], off=0.6),
            unreachable=some([0.1, 0.5]),
            max_size_per_msg=rng.choice([1, 64, 4096]),
            max_inflight_msgs=rng.choice([1, 4, 256]),
            pre_vote=rng.random() < 0.75,
            check_quorum=rng.random() < 0.75,
        )

    def describe(self) -> str:
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self))


class Stage(IntEnum):
    """Where a crash interrupts the handling of a Ready (see `Cluster.handle_ready`)."""

    BEFORE_PERSIST = 0  # `messages` sent, nothing persisted
    AFTER_PERSIST = 1  # persisted, `persisted_messages` not sent
    AFTER_SEND = 2  # `persisted_messages` sent, nothing applied
    MID_APPLY = 3  # some committed entries applied
    BEFORE_ADVANCE = 4  # all applied and reads served, `advance` not called


# ---------------------------------------------------------------------------------------------
# Adapters to the core's API (kept in one place)


def _role_term(raw: RawNode) -> tuple[Role, int]:
    return raw.role, raw.term


def _decode_conf_change(entry: Entry) -> ConfChange:
    return decode_conf_change(entry.data)


def _bootstrap(storage: Any, voters: tuple[int, ...]) -> None:
    storage.bootstrap(ConfState(voters=voters))


StorageFactory = Callable[[int], Any]


def memory_storage(node_id: int) -> MemoryStorage:
    return MemoryStorage()


# ---------------------------------------------------------------------------------------------
# The network


@dataclass(slots=True)
class InFlight:
    deliver_at: int
    seq: int
    msg: Message


class Network:
    """Messages in flight, with drops, duplicates, delays and one-way link cuts."""

    def __init__(self, rng: random.Random, rates: FaultRates) -> None:
        self.rng = rng
        self.rates = rates
        self.in_flight: list[InFlight] = []
        self.cut: set[tuple[int, int]] = set()  # (frm, to) links that lose everything
        self._seq = 0
        self.lossless = False  # liveness phase: no drops or duplicates

    def blocked(self, frm: int, to: int) -> bool:
        return (frm, to) in self.cut

    def send(self, msg: Message, now: int) -> bool:
        """Queue `msg`; False if it was lost at once (cut link or drop)."""
        if self.blocked(msg.frm, msg.to):
            return False
        r = self.rates
        if not self.lossless and r.drop and self.rng.random() < r.drop:
            return False
        copies = 2 if (not self.lossless and r.duplicate and self.rng.random() < r.duplicate) else 1
        for _ in range(copies):
            delay = self.rng.randint(0, r.delay_max_ticks) if r.delay_max_ticks else 0
            self._seq += 1
            self.in_flight.append(InFlight(now + delay, self._seq, msg))
        return True

    def take_due(self, now: int, held: frozenset[int] = frozenset()) -> list[Message]:
        """Remove and return the messages due by `now`, in delivery order; those to `held`
        nodes (paused) stay queued."""
        due = [f for f in self.in_flight if f.deliver_at <= now and f.msg.to not in held]
        if not due:
            return []
        self.in_flight = [f for f in self.in_flight
                          if f.deliver_at > now or f.msg.to in held]
        due.sort(key=lambda f: (f.deliver_at, f.seq))
        return [f.msg for f in due]

    def retime(self, node_id: int, now: int) -> None:
        """A resumed node reads its backlog in some order, maybe after serving clients."""
        span = self.rates.delay_max_ticks + 1
        for f in self.in_flight:
            if f.msg.to == node_id and f.deliver_at <= now:
                f.deliver_at = now + self.rng.randint(1, span)

    def take(self, i: int) -> Message:
        return self.in_flight.pop(i).msg

    def forget(self, node_id: int) -> None:
        self.in_flight = [f for f in self.in_flight if f.msg.to != node_id]

    def partition(self, groups: list[set[int]], one_way: bool) -> None:
        """Cut every link between different groups (only from earlier to later groups if
        `one_way`)."""
        for gi, a in enumerate(groups):
            for gj, b in enumerate(groups):
                if gi == gj or (one_way and gj < gi):
                    continue
                for x in a:
                    for y in b:
                        self.cut.add((x, y))

    def heal(self) -> None:
        self.cut.clear()


# ---------------------------------------------------------------------------------------------
# A simulated node


@dataclass(slots=True)
class SimNode:
    id: int
    storage: Any
    raw: Any = None  # None while crashed (or before start / after removal)
    sm: StateMachine = field(default_factory=StateMachine)
    conf_state: ConfState = field(default_factory=ConfState)
    ready_to_serve: list[tuple[int, bytes]] = field(default_factory=list)  # (index, ctx)
    removed: bool = False
    restart_at: int = 0  # while crashed: when the fault schedule restarts it
    paused_until: int = 0  # paused (no ticks, no messages, no clients) until this tick
    client_backlog: list[tuple[str, str, tuple[int, int]]] = field(default_factory=list)
    term_vote: tuple[int, int] = (0, 0)  # as last persisted

    @property
    def alive(self) -> bool:
        return self.raw is not None


# ---------------------------------------------------------------------------------------------
# The cluster


class Cluster:
    """N simulated nodes, a network and a checker; every operation is deterministic given
    the `rng`."""

    def __init__(
        self,
        n: int = 3,
        *,
        seed: int = 0,
        rates: FaultRates | None = None,
        storage_factory: StorageFactory = memory_storage,
        reopen: Callable[[int, Any], Any] | None = None,
        election_tick: int = 10,
        heartbeat_tick: int = 1,
        max_size_per_msg: int | None = None,
        max_inflight_msgs: int | None = None,
        max_nodes: int | None = None,
    ) -> None:
        if n < 1:
            raise ValueError("a cluster needs at least one node")
        self.seed = seed
        self.rng = random.Random(seed)
        self.rates = rates if rates is not None else FaultRates()
        self.net = Network(random.Random(self.rng.getrandbits(64)), self.rates)
        self.checker = Checker()
        self.storage_factory = storage_factory
        self.reopen = reopen
        self.election_tick = election_tick
        self.heartbeat_tick = heartbeat_tick
        self.max_size_per_msg = max_size_per_msg or self.rates.max_size_per_msg
        self.max_inflight_msgs = max_inflight_msgs or self.rates.max_inflight_msgs
        self.initial_voters = tuple(range(1, n + 1))
        self.max_nodes = max_nodes if max_nodes is not None else n + 2
        self.next_id = n + 1
        self.now = 0
        self.nodes: dict[int, SimNode] = {}
        # Events as (tick, text or message delivered), formatted only when shown.
        self.trace: collections.deque[tuple[int, str | Message]] = collections.deque(
            maxlen=TRACE_EVENTS)
        self.reads: dict[bytes, PendingRead] = {}
        self._op = 0
        self.conf = ConfState(voters=self.initial_voters)  # latest committed configuration
        self.stats: collections.Counter[str] = collections.Counter()
        self._pending_shutdown: list[SimNode] = []
        self.faulty = True  # False in the liveness phase: no faults strike on their own
        self.client_leader: SimNode | None = None  # where clients send requests first
        for nid in self.initial_voters:
            storage = storage_factory(nid)
            _bootstrap(storage, self.initial_voters)
            self.nodes[nid] = SimNode(nid, storage)
        boot = self.nodes[1].storage.snapshot().metadata
        self.checker.bootstrap(boot.index, boot.term)
        for nid in self.initial_voters:
            self._start(self.nodes[nid])

    # -- bookkeeping --------------------------------------------------------------------------

    def log(self, text: str) -> None:
        self.trace.append((self.now, text))

    def trace_lines(self) -> list[str]:
        return [f"t={t} " + (e if isinstance(e, str) else "deliver " + _fmt(e))
                for t, e in self.trace]

    def live(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.raw is not None]

    def active(self) -> list[SimNode]:
        """Live and not paused."""
        return [n for n in self.nodes.values() if n.raw is not None and n.paused_until <= self.now]

    def held(self) -> frozenset[int]:
        return frozenset(n.id for n in self.nodes.values() if n.paused_until > self.now)

    def pause(self, node: SimNode, ticks: int) -> None:
        if node.raw is None or ticks <= 0:
            return
        node.paused_until = max(node.paused_until, self.now + ticks)
        self.stats["pauses"] += 1
        self.log(f"n{node.id} PAUSE until t={node.paused_until}")

    def resume_due(self) -> None:
        for n in self.nodes.values():
            if n.paused_until and n.paused_until <= self.now:
                n.paused_until = 0
                self.log(f"n{n.id} resumes")
                self.net.retime(n.id, self.now)
                # Client requests that waited in its socket come first.
                backlog, n.client_backlog = n.client_backlog, []
                for kind, key, began in backlog:
                    if kind == "read":
                        self.read(n, key, began=began)
                    else:
                        self.propose(n, key)

    def submit(self, node: SimNode, kind: str) -> None:
        """A client sends a write or a read to `node`; a paused node gets it on resuming."""
        key = self.rng.choice(KEYS)
        if node.paused_until > self.now:
            node.client_backlog.append((kind, key, (self.checker.read_began(), self.now)))
        elif kind == "read":
            self.read(node, key)
        else:
            self.propose(node, key)

    def members(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.conf.voters) | set(self.conf.learners)))

    def leaders(self) -> list[SimNode]:
        out = []
        for n in self.active():
            role, _ = _role_term(n.raw)
            if role == Role.LEADER:
                out.append(n)
        return out

    def some_leader(self) -> SimNode | None:
        """A node that believes it leads (maybe a stale one: clients have stale maps too)."""
        leaders = self.leaders()
        return self.rng.choice(leaders) if leaders else None

    def leader(self) -> SimNode | None:
        """The live leader with the highest term, if any."""
        best, best_term = None, -1
        for n in self.active():
            role, term = _role_term(n.raw)
            if role == Role.LEADER and term > best_term:
                best, best_term = n, term
        return best

    def _config(self, node: SimNode, applied: int) -> Any:
        return Config(
            id=node.id,
            election_tick=self.election_tick,
            heartbeat_tick=self.heartbeat_tick,
            max_size_per_msg=self.max_size_per_msg,
            max_inflight_msgs=self.max_inflight_msgs,
            check_quorum=self.rates.check_quorum,
            pre_vote=self.rates.pre_vote,
            bcast_commit=self.rates.bcast_commit,
            quiet_heartbeats=self.rates.quiet_heartbeats,
            lean_reads=self.rates.lean_reads,
            applied=applied,
            rng=random.Random(self.rng.getrandbits(64)),
        )

    def _start(self, node: SimNode) -> None:
        """(Re)build the node's volatile state from its storage alone."""
        snap = node.storage.snapshot()
        node.sm = StateMachine.from_snapshot(snap)
        hs, node.conf_state = node.storage.initial_state()
        node.term_vote = (hs.term, hs.vote)
        node.ready_to_serve = []
        node.raw = RawNode(self._config(node, node.sm.applied), node.storage)
        self._observe(node)

    def _observe(self, node: SimNode) -> None:
        role, term = _role_term(node.raw)
        self.checker.observe_role(node.id, role, term)

    # -- the driver ---------------------------------------------------------------------------

    def _send(self, msg: Message) -> None:
        to = self.nodes.get(msg.to)
        if to is None or to.removed:
            self.log(f"lost {_fmt(msg)} (no such node)")
            self._on_lost(msg)
            return
        ok = self.net.send(msg, self.now)
        if not ok:
            self.stats["dropped"] += 1
            self._on_lost(msg)

    def _on_lost(self, msg: Message) -> None:
        """Tell the sender what its transport would notice: a snapshot that did not arrive
        (always: raft waits for this report), sometimes an unreachable peer."""
        sender = self.nodes.get(msg.frm)
        if sender is None or sender.raw is None:
            return
        if msg.type == MessageType.SNAP:
            sender.raw.report_snapshot(msg.to, False)
        elif self.rates.unreachable and self.rng.random() < self.rates.unreachable:
            sender.raw.report_unreachable(msg.to)

    def handle_ready(self, node: SimNode, crash_at: Stage | None = None) -> bool:
        """Drive one Ready of `node` through the stages; crash at `crash_at` if given.
        Returns False if the node crashed."""
        raw = node.raw
        rd: Ready = raw.ready()
        if crash_at is None and self.faulty and self.rates.crash_at_sync:
            rate = self.rates.crash_at_sync
            hs = rd.hard_state
            if hs is not None and (hs.term, hs.vote) != node.term_vote:
                rate *= 10  # elections are rare and their durable votes matter most
            if (rd.must_sync or rd.committed_entries) and self.rng.random() < rate:
                crash_at = self.rng.choice(list(Stage))
        ck = self.checker
        outbox = len(self.net.in_flight)  # what this Ready sends is queued from here on
        role_before, term_before = _role_term(raw)
        if rd.soft_state is not None:
            ck.observe_role(node.id, rd.soft_state.role, term_before)
        if rd.hard_state is not None:
            ck.observe_commit(rd.hard_state.commit, rd.hard_state.term)
        # 1. messages that do not wait for persistence
        for m in rd.messages:
            self._send(m)
        if crash_at == Stage.BEFORE_PERSIST:
            return self._crash_mid_ready(node, crash_at, outbox)
        # 2. persist: snapshot, entries, hard state
        st = node.storage
        if rd.snapshot is not None and not rd.snapshot.is_empty():
            if role_before == Role.LEADER:
                raise InvariantViolation(
                    "leader_append_only", f"leader {node.id} installs a snapshot"
                )
            ck.observe_snapshot(node.id, rd.snapshot)
            st.apply_snapshot(rd.snapshot)
        if rd.entries:
            if role_before == Role.LEADER and rd.soft_state is None:
                if rd.entries[0].index <= st.last_index():
                    raise InvariantViolation(
                        "leader_append_only",
                        f"leader {node.id} (term {term_before}) rewrites its log from index "
                        f"{rd.entries[0].index} (last {st.last_index()})",
                    )
            ck.observe_append(node.id, st, rd.entries)
            st.append(rd.entries)
        if rd.hard_state is not None:
            st.set_hard_state(rd.hard_state)
            node.term_vote = (rd.hard_state.term, rd.hard_state.vote)
        if crash_at == Stage.AFTER_PERSIST:
            return self._crash_mid_ready(node, crash_at, outbox)
        # 3. messages that had to wait for persistence
        for m in rd.persisted_messages:
            self._send(m)
        if crash_at == Stage.AFTER_SEND:
            return self._crash_mid_ready(node, crash_at, outbox)
        # 4. apply
        if rd.snapshot is not None and not rd.snapshot.is_empty():
            node.sm = StateMachine.from_snapshot(rd.snapshot)
            node.conf_state = rd.snapshot.metadata.conf_state
            ck.check_snapshot_state(node.id, node.sm)
            self.log(f"n{node.id} installs snapshot {rd.snapshot.metadata.index}")
            self.stats["snapshots_installed"] += 1
        cut = (
            self.rng.randrange(len(rd.committed_entries) + 1)
            if crash_at == Stage.MID_APPLY
            else None
        )
        for i, e in enumerate(rd.committed_entries):
            if cut is not None and i == cut:
                return self._crash_mid_ready(node, crash_at, outbox)
            self._apply(node, e, term_before)
        if cut is not None:
            return self._crash_mid_ready(node, crash_at, outbox)
        # 5. reads
        for rs in rd.read_states:
            node.ready_to_serve.append((rs.index, rs.context))
        self._serve_reads(node)
        if crash_at == Stage.BEFORE_ADVANCE:
            return self._crash_mid_ready(node, crash_at, outbox)
        raw.advance(rd)
        self._observe(node)
        return True

    def _apply(self, node: SimNode, e: Entry, term_now: int) -> None:
        first = self.checker.observe_apply(node, e, term_now)
        self.stats["applied"] += 1
        node.sm.applied = e.index
        if e.type == EntryType.CONF_CHANGE:
            cc = _decode_conf_change(e)
            node.conf_state = node.raw.apply_conf_change(cc)
            if first:
                self._conf_committed(cc)
        elif e.data:
            put = decode_put(e.data)
            if put is not None:
                node.sm.kv[put[0]] = put[1]

    def _conf_committed(self, cc: ConfChange) -> None:
        """The first node to apply a membership change acts on it cluster-wide: the new node
        is started (an operator starts it once the change is committed), a removed node is
        shut down for good."""
        voters = set(self.conf.voters)
        learners = set(self.conf.learners)
        nid = cc.node_id
        if cc.type == ConfChangeType.ADD_VOTER:
            voters.add(nid)
            learners.discard(nid)
        elif cc.type == ConfChangeType.ADD_LEARNER:
            learners.add(nid)
            voters.discard(nid)
        else:
            voters.discard(nid)
            learners.discard(nid)
        self.conf = ConfState(voters=tuple(sorted(voters)), learners=tuple(sorted(learners)))
        self.stats["conf_changes_committed"] += 1
        self.log(f"conf committed {cc.type.name} {nid} -> voters={self.conf.voters} "
                 f"learners={self.conf.learners}")
        if cc.type != ConfChangeType.REMOVE_NODE and nid not in self.nodes:
            node = SimNode(nid, self.storage_factory(nid))
            self.nodes[nid] = node
            self._start(node)
        elif cc.type == ConfChangeType.REMOVE_NODE and nid in self.nodes:
            gone = self.nodes[nid]
            gone.removed = True
            self._pending_shutdown.append(gone)

    def _serve_reads(self, node: SimNode) -> None:
        if not node.ready_to_serve:
            return
        keep = []
        for index, ctx in node.ready_to_serve:
            if index > node.sm.applied:
                keep.append((index, ctx))
                continue
            read = self.reads.pop(ctx, None)
            if read is None or read.node_id != node.id:
                continue  # not ours, or served already (a duplicated response)
            self.checker.read_served(node.id, read, index, node.sm)
            self.stats["reads_served"] += 1
            self.log(f"n{node.id} serves read {ctx.decode()} {read.key}={node.sm.kv.get(read.key)}"
                     f" at index {index} (applied {node.sm.applied}, floor {read.floor_commit})")
        node.ready_to_serve = keep

    def drain(self, node: SimNode, limit: int = 16) -> None:
        """Handle Readies until none is left (bounded)."""
        for _ in range(limit):
            if node.raw is None or not node.raw.has_ready():
                break
            self.handle_ready(node)
        self._shutdown_removed()

    def drain_all(self) -> None:
        for node in list(self.nodes.values()):
            self.drain(node)

    def _shutdown_removed(self) -> None:
        while self._pending_shutdown:
            gone = self._pending_shutdown.pop()
            if gone.raw is not None:
                self.log(f"n{gone.id} shut down (removed)")
            gone.raw = None
            self.net.forget(gone.id)
            for ctx in [c for c, r in self.reads.items() if r.node_id == gone.id]:
                del self.reads[ctx]

    # -- operations (the hypothesis rules call these) ------------------------------------

    def tick(self, node: SimNode) -> None:
        if node.raw is None:
            return
        node.raw.tick()
        self._observe(node)

    def deliver(self, msg: Message, *, handle_ready: bool = True) -> None:
        node = self.nodes.get(msg.to)
        if node is None or node.raw is None or node.removed:
            self._on_lost(msg)  # the transport notices the peer is down
            return
        if self.net.blocked(msg.frm, msg.to):
            self.stats["cut"] += 1
            self._on_lost(msg)
            return
        self.trace.append((self.now, msg))
        if msg.type == MessageType.SNAP:
            sender = self.nodes.get(msg.frm)
            if sender is not None and sender.raw is not None:
                sender.raw.report_snapshot(msg.to, True)
        node.raw.step(msg)
        self.stats["delivered"] += 1
        self._observe(node)
        if handle_ready:
            self.drain(node)

    def crash(self, node: SimNode, stage: Stage | None = None) -> None:
        """Crash `node`; with a stage and a pending Ready, half-way through that Ready."""
        if node.raw is None:
            return
        if stage is not None and node.raw.has_ready():
            self.handle_ready(node, crash_at=stage)
            self._shutdown_removed()
        if node.raw is not None:
            self._crash(node, None)

    def _crash_mid_ready(self, node: SimNode, stage: Stage, outbox: int) -> bool:
        """A crash half-way through a Ready: what the node "sent" may still have been in its
        transport's buffers (a batch per peer per turn), so each such message is lost with
        probability 1/2. (Losing messages is always allowed; this loses them exactly when
        it hurts most: together with the sender's crash.)"""
        sent = self.net.in_flight[outbox:]
        if sent:
            kept = [f for f in sent if self.rng.random() < 0.5]
            self.net.in_flight[outbox:] = kept
            self.stats["lost_in_crash"] += len(sent) - len(kept)
        return self._crash(node, stage)

    def _crash(self, node: SimNode, stage: Stage | None) -> bool:
        self.log(f"n{node.id} CRASH" + (f" at {stage.name}" if stage is not None else ""))
        self.stats["crashes"] += 1
        lo, hi = self.rates.restart_ticks
        node.restart_at = self.now + self.rng.randint(lo, hi)
        if stage is not None:
            self.stats["crashes_mid_ready"] += 1
        node.raw = None
        node.ready_to_serve = []
        node.client_backlog = []
        for ctx in [c for c, r in self.reads.items() if r.node_id == node.id]:
            del self.reads[ctx]
        if self.reopen is not None:
            node.storage = self.reopen(node.id, node.storage)
        self.checker.check_durable(node)
        return False

    def restart(self, node: SimNode) -> None:
        if node.raw is not None or node.removed:
            return
        self.log(f"n{node.id} restart")
        self.stats["restarts"] += 1
        self._start(node)
        self.drain(node)

    def propose(self, node: SimNode, key: str | None = None, *, handle_ready: bool = True
                ) -> str | None:
        """Propose a write of a fresh value; returns the value, or None if dropped."""
        if node.raw is None:
            return None
        key = key if key is not None else self.rng.choice(KEYS)
        self._op += 1
        value = f"w{self._op}"
        try:
            node.raw.propose(encode_put(key, value))
        except ProposalDropped:
            self.stats["proposals_dropped"] += 1
            return None
        self.stats["proposals"] += 1
        self.log(f"n{node.id} propose {key}={value}")
        if handle_ready:
            self.drain(node)
        return value

    def read(self, node: SimNode, key: str | None = None, *,
             began: tuple[int, int] | None = None) -> bytes | None:
        """Start a ReadIndex read of `key` at `node`; `began` = (commit floor, tick) when the
        client sent it, if earlier (it waited in a paused node's socket)."""
        if node.raw is None:
            return None
        key = key if key is not None else self.rng.choice(KEYS)
        self._op += 1
        ctx = f"r{self._op}".encode()
        floor, at = began if began is not None else (self.checker.read_began(), self.now)
        read = PendingRead(node.id, key, ctx, floor, at)
        try:
            node.raw.read_index(ctx)
        except RaftError:
            return None
        self.reads[ctx] = read
        self.stats["reads"] += 1
        self.log(f"n{node.id} read {ctx.decode()} {key} (floor {read.floor_commit})")
        self.drain(node)
        return ctx

    def conf_change(self, node: SimNode, cc: ConfChange) -> bool:
        if node.raw is None:
            return False
        try:
            node.raw.propose_conf_change(cc)
        except (ProposalDropped, ConfChangeError) as e:
            self.log(f"n{node.id} conf change {cc.type.name} {cc.node_id} refused: {e!r}")
            return False
        self.stats["conf_changes"] += 1
        self.log(f"n{node.id} propose conf change {cc.type.name} {cc.node_id}")
        self.drain(node)
        return True

    def random_conf_change(self) -> ConfChange | None:
        """Learner-first: add a learner (a fresh id), promote a learner, remove a learner or
        a voter (keeping at least three voters)."""
        voters, learners = list(self.conf.voters), list(self.conf.learners)
        options: list[ConfChange] = []
        if len(voters) + len(learners) < self.max_nodes:
            options.append(ConfChange(ConfChangeType.ADD_LEARNER, self.next_id))
        for lid in learners:
            options.append(ConfChange(ConfChangeType.ADD_VOTER, lid))
            options.append(ConfChange(ConfChangeType.REMOVE_NODE, lid))
        if len(voters) > 3:
            for vid in voters:
                options.append(ConfChange(ConfChangeType.REMOVE_NODE, vid))
        if not options:
            return None
        cc = self.rng.choice(options)
        return cc

    def propose_conf_change(self, node: SimNode, cc: ConfChange) -> bool:
        ok = self.conf_change(node, cc)
        if ok and cc.type == ConfChangeType.ADD_LEARNER and cc.node_id == self.next_id:
            self.next_id += 1
        return ok

    def transfer(self, node: SimNode, to: int) -> None:
        if node.raw is None:
            return
        self.log(f"n{node.id} transfer leadership to {to}")
        self.stats["transfers"] += 1
        node.raw.transfer_leader(to)
        self.drain(node)

    def compact(self, node: SimNode) -> None:
        """Snapshot the applied state and drop a random prefix of the log."""
        if node.raw is None:
            return
        st = node.storage
        applied = node.sm.applied
        first = st.first_index()
        if applied < first:
            return
        snap_index = st.snapshot().metadata.index
        if applied > snap_index:
            st.create_snapshot(applied, node.conf_state, node.sm.snapshot_data())
            # The configuration in force at the snapshot: a restart starts from the snapshot
            # and re-applies the committed entries after it (the applied index is volatile).
            st.set_conf_state(node.conf_state)
        upto = self.rng.randint(first, applied)
        st.compact(upto)
        self.stats["compactions"] += 1
        self.log(f"n{node.id} compact to {upto} (snapshot at {applied})")

    def partition_random(self, around: SimNode | None = None) -> None:
        """Split the nodes in two at random; with `around`, put it in the minority side."""
        ids = [n.id for n in self.nodes.values() if not n.removed]
        self.rng.shuffle(ids)
        if len(ids) < 2:
            return
        if around is not None and around.id in ids:
            ids.remove(around.id)
            ids.insert(0, around.id)
            cut = self.rng.randint(1, max(1, (len(ids) - 1) // 2))
        else:
            cut = self.rng.randint(1, len(ids) - 1)
        groups = [set(ids[:cut]), set(ids[cut:])]
        one_way = self.rng.random() < 0.3
        self.net.partition(groups, one_way)
        self.stats["partitions"] += 1
        self.log(f"partition {sorted(groups[0])} {'->' if one_way else '|'} {sorted(groups[1])}")

    def heal_network(self) -> None:
        if self.net.cut:
            self.log("heal network")
        self.net.heal()

    # -- checks ---------------------------------------------------------------------------

    def check(self) -> None:
        """The checks that need every node's storage to hold its whole log (quiet points)."""
        for node in self.live():
            role, term = _role_term(node.raw)
            self.checker.observe_role(node.id, role, term)
            if role == Role.LEADER:
                self.checker.check_leader(node.id, term, node.storage)

    def quiet(self) -> bool:
        return all(not n.raw.has_ready() for n in self.live())


def _fmt(m: Message) -> str:
    s = f"{m.type.name} {m.frm}->{m.to} t{m.term}"
    if m.type in (MessageType.APP, MessageType.SNAP):
        s += f" i{m.index}/{m.log_term} n{len(m.entries)} c{m.commit}"
        if m.snapshot is not None:
            s += f" snap{m.snapshot.metadata.index}"
    elif m.type in (MessageType.APP_RESP,):
        s += f" i{m.index}" + (f" REJ hint{m.reject_hint}" if m.reject else "")
    elif m.type in (MessageType.VOTE, MessageType.PRE_VOTE):
        s += f" last{m.index}/{m.log_term}"
    elif m.type in (MessageType.VOTE_RESP, MessageType.PRE_VOTE_RESP):
        s += " REJ" if m.reject else " ok"
    elif m.type == MessageType.HEARTBEAT:
        s += f" c{m.commit}"
    if m.context:
        s += f" ctx={m.context.decode(errors='replace')}"
    return s


# ---------------------------------------------------------------------------------------------
# Seeded schedules


@dataclass(slots=True)
class SimResult:
    seed: int
    rates: FaultRates
    ticks: int
    stats: collections.Counter[str]


def fault_step(c: Cluster) -> None:
    """One tick of the fault phase: time, delivery, faults and client operations drawn from
    the per-seed rates, then every pending Ready is handled and the invariants checked."""
    r, rng = c.rates, c.rng
    c.now += 1
    c.resume_due()
    for node in c.active():
        if r.skip_tick and rng.random() < r.skip_tick:
            continue
        c.tick(node)
    for msg in c.net.take_due(c.now, c.held()):
        c.deliver(msg, handle_ready=not (r.defer_ready and rng.random() < r.defer_ready))
    # Faults strike while some Readies may still be pending (ticks, deferred deliveries).
    if r.partition and rng.random() < r.partition:
        c.partition_random(c.some_leader() if rng.random() < r.leader_focus else None)
    if c.net.cut and rng.random() < r.heal:
        c.heal_network()
    if r.pause and rng.random() < r.pause:
        active = c.active()
        leader = c.some_leader() if rng.random() < r.leader_focus else None
        if active:
            c.pause(leader if leader is not None else rng.choice(active),
                    rng.randint(*r.pause_ticks))
    if r.crash and rng.random() < r.crash:
        live = c.live()
        leader = c.some_leader() if rng.random() < r.leader_focus else None
        if live:
            victim = leader if leader is not None else rng.choice(live)
            mid = rng.random() < r.crash_mid_ready
            c.crash(victim, rng.choice(list(Stage)) if mid else None)
    for node in list(c.nodes.values()):
        if node.raw is None and not node.removed and c.now >= node.restart_at:
            c.restart(node)
    # Clients: to the leader they last heard of (maybe paused or stale), to a node that
    # believes it leads, or to any node.
    cached = c.client_leader
    # A client learns of a new leader when a request fails; one to a paused node just hangs
    # until the client's timeout, so it keeps trying the paused node for a while.
    if cached is None or rng.random() < (0.02 if cached.paused_until > c.now else 0.1):
        c.client_leader = c.some_leader()
    for kind, rate, to_leader in (("write", r.propose, 0.8), ("read", r.read, 0.5)):
        live = c.live()
        if live and rate and rng.random() < rate:
            target = c.client_leader if rng.random() < 0.5 else c.some_leader()
            if target is None or target.raw is None or rng.random() >= to_leader:
                target = rng.choice(live)
            c.submit(target, kind)
    if r.conf_change and rng.random() < r.conf_change:
        leader = c.leader()
        cc = c.random_conf_change()
        if leader is not None and cc is not None:
            c.propose_conf_change(leader, cc)
    if r.transfer and rng.random() < r.transfer:
        leader = c.leader()
        if leader is not None:
            targets = [v for v in c.conf.voters if v != leader.id]
            if targets:
                c.transfer(leader, rng.choice(targets))
    if r.compact and rng.random() < r.compact:
        live = c.active()
        if live:
            c.compact(rng.choice(live))
    c.drain_all()
    c.check()


def quiet_step(c: Cluster) -> None:
    """One tick without faults (the liveness phase)."""
    c.now += 1
    for node in c.live():
        c.tick(node)
    for msg in c.net.take_due(c.now):
        c.deliver(msg)
    c.drain_all()
    c.check()


def heal(c: Cluster) -> None:
    """End every fault: reconnect the network, stop losing messages, restart crashed nodes."""
    c.log("HEAL: network, losses off, restart all")
    c.heal_network()
    c.net.lossless = True
    c.faulty = False
    for node in c.nodes.values():
        if node.paused_until > c.now:
            node.paused_until = c.now
    c.resume_due()
    for node in list(c.nodes.values()):
        if node.raw is None and not node.removed:
            c.restart(node)
    c.drain_all()


def check_liveness(c: Cluster, *, writes: int = 3, bound_ticks: int | None = None) -> int:
    """After `heal`: a leader emerges and `writes` fresh proposals apply on every live member
    within `bound_ticks`; then every member's state equals the committed log. Returns the
    ticks it took."""
    start = c.now
    if bound_ticks is None:
        # Elections, plus catching up the most lagging member: with tiny messages and one
        # append in flight, every entry can cost a round trip.
        members = [c.nodes[i] for i in c.members() if i in c.nodes]
        top = max((n.storage.last_index() for n in c.live()), default=0)
        lag = top - min((m.sm.applied for m in members), default=top) + writes
        round_trip = 2 * c.rates.delay_max_ticks + 2
        bound_ticks = 60 * c.election_tick + lag * round_trip
    bound = bound_ticks
    pending: dict[str, int] = {}  # value -> tick it was (re)proposed at
    repropose_ticks = 4 * c.election_tick
    done_values: list[str] = []
    while True:
        if c.now - start > bound:
            leader = c.leader()
            raise InvariantViolation(
                "liveness",
                f"after healing at t={start}, {c.now - start} ticks: leader="
                f"{leader.id if leader else None}, writes not applied everywhere: "
                f"{sorted(pending)}; members {c.members()} applied "
                f"{ {n.id: n.sm.applied for n in c.live()} }",
            )
        leader = c.leader()
        if leader is not None:
            while len(done_values) + len(pending) < writes:
                v = c.propose(leader, KEYS[len(pending) % len(KEYS)])
                if v is None:
                    break
                pending[v] = c.now
            for v, at in list(pending.items()):
                if v in c.checker.write_index:
                    continue
                if c.now - at >= repropose_ticks:  # lost with a leader change: propose again
                    del pending[v]
        members = [c.nodes[i] for i in c.members() if i in c.nodes]
        for v in list(pending):
            idx = c.checker.write_index.get(v)
            if idx is not None and all(m.raw is not None and m.sm.applied >= idx for m in members):
                del pending[v]
                done_values.append(v)
        if len(done_values) >= writes and not pending:
            break
        quiet_step(c)
    # Every member converged on the committed log; nothing committed was lost.
    for m in members:
        c.checker.check_snapshot_state(m.id, m.sm)
        c.checker.check_durable(m)
    return c.now - start


def run_seed(
    seed: int,
    *,
    nodes: int = 3,
    steps: int = 300,
    storage_factory: StorageFactory = memory_storage,
    reopen: Callable[[int, Any], Any] | None = None,
    rates: FaultRates | None = None,
    liveness: bool = True,
    rounds: int = 1,
) -> SimResult:
    """Run one seeded schedule: `rounds` times a fault phase of `steps` ticks followed by a
    liveness phase. Raises `SimulationFailure` on any invariant violation or core error."""
    rng = random.Random(seed)
    rates = rates if rates is not None else FaultRates.draw(rng)
    c: Cluster | None = None
    try:
        c = Cluster(
            nodes, seed=rng.getrandbits(64), rates=rates, storage_factory=storage_factory,
            reopen=reopen,
        )
        for _ in range(rounds):
            c.net.lossless = False
            c.faulty = True
            for _ in range(steps):
                fault_step(c)
            if liveness:
                heal(c)
                check_liveness(c)
    except Exception as e:  # any core exception is a failure too
        trace = c.trace_lines() if c is not None else []
        raise SimulationFailure(seed, e, trace, rates) from e
    return SimResult(seed, rates, c.now, c.stats)
