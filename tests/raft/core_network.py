"""A tiny synchronous network of RawNodes for the paper-claim tests (not the simulator).

Messages go through one FIFO queue; links can be cut, nodes isolated, crashed (losing only
what was never handed to storage) and restarted. Every node persists each Ready in full
before sending its `persisted_messages`, so storage is exactly the durable state. The state
machine of a node is the list of applied NORMAL payloads; snapshots carry it pickled.
"""

from __future__ import annotations

import pickle
import random
from collections import deque
from typing import Callable

from raft import (
    Config,
    ConfChange,
    ConfState,
    EntryType,
    MemoryStorage,
    Message,
    MessageType,
    RawNode,
    Role,
)


class Network:
    def __init__(self, voters=(1, 2, 3), learners=(), *, seed=0, lazy_advance=False,
                 **config) -> None:
        self.config = config
        # lazy_advance: keep each Ready outstanding (persisted, sent, applied) and advance it
        # only at the node's next processing, so steps and ticks land in between.
        self.lazy_advance = lazy_advance
        self.outstanding: dict[int, object] = {}
        self.seed = seed
        self.conf = ConfState(voters=tuple(voters), learners=tuple(learners))
        self.storages: dict[int, MemoryStorage] = {}
        self.nodes: dict[int, RawNode] = {}
        self.applied: dict[int, list[bytes]] = {}
        self.applied_index: dict[int, int] = {}
        self.read_states: dict[int, list] = {}
        self.queue: deque[Message] = deque()
        self.cut_links: set[tuple[int, int]] = set()
        self.down: set[int] = set()
        self.sent: list[Message] = []  # every message handed to the network, for assertions
        self.filter: Callable[[Message], bool] | None = None  # False = drop
        for node in (*voters, *learners):
            storage = MemoryStorage()
            storage.bootstrap(self.conf)
            self._start(node, storage, applied=1, state=[])

    def _start(self, node: int, storage: MemoryStorage, applied: int, state: list) -> None:
        rng = random.Random(self.seed * 1000 + node)
        cfg = Config(node, rng=rng, applied=applied, **self.config)
        self.storages[node] = storage
        self.nodes[node] = RawNode(cfg, storage)
        self.applied[node] = state
        self.applied_index[node] = applied
        self.read_states.setdefault(node, [])

    def add_node(self, node: int) -> None:
        """A brand-new node with empty storage (to be added by a membership change)."""
        self._start(node, MemoryStorage(), applied=0, state=[])

    # -- faults

    def cut(self, a: int, b: int) -> None:
        self.cut_links |= {(a, b), (b, a)}

    def isolate(self, node: int) -> None:
        for other in self.nodes:
            if other != node:
                self.cut(node, other)

    def heal(self) -> None:
        self.cut_links.clear()

    def crash(self, node: int) -> None:
        """Stop `node`: it loses all volatile state (storage keeps what was persisted)."""
        self.down.add(node)
        self.nodes.pop(node)
        self.outstanding.pop(node, None)

    def restart(self, node: int) -> None:
        """Start `node` again from its storage and its (durable) applied state."""
        self.down.discard(node)
        state = self.applied[node]
        self._start(node, self.storages[node], self.applied_index[node], state)

    # -- driving

    def process(self, node: int) -> bool:
        """Handle every Ready of `node`; True if there was one."""
        rn = self.nodes[node]
        storage = self.storages[node]
        did = False
        if node in self.outstanding:
            rn.advance(self.outstanding.pop(node))
        for _ in range(100):
            if not rn.has_ready():
                break
            did = True
            rd = rn.ready()
            self._send(rd.messages)
            if rd.snapshot is not None:
                self.applied[node] = pickle.loads(rd.snapshot.data) if rd.snapshot.data else []
                self.applied_index[node] = rd.snapshot.metadata.index
            storage.persist_ready(rd)
            self._send(rd.persisted_messages)
            for entry in rd.committed_entries:
                if entry.type == EntryType.CONF_CHANGE:
                    storage.set_conf_state(rn.apply_conf_change(entry.data))
                elif entry.data:
                    self.applied[node].append(entry.data)
                self.applied_index[node] = entry.index
            self.read_states[node].extend(rd.read_states)
            if self.lazy_advance:
                self.outstanding[node] = rd
                break
            rn.advance(rd)
        else:
            raise AssertionError(f"node {node} never ran out of Ready")
        return did

    def _send(self, msgs: list[Message]) -> None:
        self.sent.extend(msgs)
        self.queue.extend(msgs)

    def deliver(self, max_messages: int = 100_000) -> int:
        """Process Readies and deliver messages until the network is quiet."""
        delivered = 0
        while True:
            busy = False
            for node in list(self.nodes):
                if node in self.nodes:
                    busy |= self.process(node)
            if not self.queue and not busy:
                return delivered
            while self.queue:
                m = self.queue.popleft()
                delivered += 1
                if delivered > max_messages:
                    raise AssertionError("network did not quiesce")
                if ((m.frm, m.to) in self.cut_links or m.to not in self.nodes
                        or self.filter is not None and not self.filter(m)):
                    self.report(m, False)
                    continue
                self.nodes[m.to].step(m)
                self.report(m, True)

    def report(self, m: Message, delivered: bool) -> None:
        """What a transport does: report the outcome of every snapshot it was asked to send."""
        if m.type == MessageType.SNAP and m.frm in self.nodes:
            self.nodes[m.frm].report_snapshot(m.to, delivered)

    def tick(self, nodes=None, times: int = 1) -> None:
        for _ in range(times):
            for node in nodes or list(self.nodes):
                self.nodes[node].tick()
            self.deliver()

    def elect(self, node: int) -> None:
        """Make `node` leader by campaigning (pre-vote included) and delivering; a second
        attempt covers a first one that only taught `node` a newer term."""
        for _ in range(3):
            self.nodes[node].campaign()
            self.deliver()
            if self.nodes[node].role == Role.LEADER:
                return
        raise AssertionError(f"node {node} was not elected: {self.nodes[node].status()}")

    def leader(self) -> int | None:
        leaders = [n for n, rn in self.nodes.items() if rn.role == Role.LEADER]
        return leaders[0] if len(leaders) == 1 else None

    def propose(self, node: int, *datas: bytes) -> None:
        for data in datas:
            self.nodes[node].propose(data)
        self.deliver()

    def change(self, node: int, change: ConfChange) -> None:
        self.nodes[node].propose_conf_change(change)
        self.deliver()

    def stabilize(self, ticks: int = 100) -> None:
        """Tick everyone (delivering in between) for a while."""
        self.tick(times=ticks)
