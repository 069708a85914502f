"""The node: one trio task drives every Raft group hosted here (no locks).

Theory of operation
-------------------
Inputs (peer messages, client proposals and reads, snapshot installs, unreachable reports) are
queued by other tasks with plain synchronous calls and wake the loop. One turn of the loop:

1. step queued peer messages into their groups; propose the queued writes of each group as
   ONE entry (a storage `Batch` when several); issue ONE `read_index` per group for all reads
   queued in the turn; tick every group if a tick is due;
2. collect the `Ready` of every group that has one and send its `messages` at once (all groups'
   messages to one peer go out as one frame, written directly at the end of the turn, see
   transport.py); a Ready that needs nothing from storage (heartbeats, read states) is
   finished at once; the others form the turn's storage job.

3. the job: ONE `write_turn` persists all their entries / hard states / snapshots and applies
   all their committed entries (WAL log, the default: one WAL record and one fdatasync, the
   applies into the store's deferred LMDB transaction, committed and synced every 100 ms;
   LMDB log: one transaction, one commit, one fsync), answers the writes whose results that
   produced just before the commit (see `_answer_early`), then sends the
   `persisted_messages`. By default it runs right there, on the loop (see below); with
   `--storage-thread` the writer task runs it on the writer thread while the loop keeps
   turning, and Readies that queue meanwhile form the next job (the group commit);
4. the loop answers the waiting writes, serves reads whose read index is applied, and
   `advance`s those groups.

The loop task is the only one that touches a group; the storage job only runs storage calls.
Raft allows one outstanding Ready per group, so a group whose Ready is in a job simply has no
new Ready until then; the loop keeps stepping its messages and serving every other group.

Storage runs on the loop's own thread by default (`storage_thread=False`): on the shared
2-core machine the worker-thread hand-off cost more CPU (GIL ping-pong, ~300 us per write)
than the overlap bought; `--storage-thread` runs it in a worker thread instead. Moving only the
WAL's fdatasync to a thread (the loop turning meanwhile) was measured too: the same writes/s,
~14 % more CPU per write (more, smaller jobs), so the fsync stays inline. A job on the loop
costs no task switch: the turn runs it and the next iteration finishes it.

A write is answered only after it is applied, which is after it is committed, which needs a
majority's durable persist: SIGKILL loses nothing acknowledged. Commit-only hard-state changes
are not written on their own (the commit index is volatile in Raft); they ride along with the
next real write (and are always written before a log compaction); on restart raft takes the
store's applied index as committed.

Entry data is an 8-byte proposal id (pid) followed by a storage command. The pid is unique per
node incarnation; a result is matched to its waiters by pid when the entry is applied here.
A leader that steps down answers its pending writes TIMEOUT (they may still commit) and its
pending reads NOT_LEADER (a read has no effect; it is safe to retry elsewhere).
"""

from __future__ import annotations

import functools
import logging
import os
import random
import signal
import struct
import sys
import time
from collections import deque
from dataclasses import dataclass, field

import msgpack
import trio

import raft
from client.wire import FrameDecoder, Status, bucket_of
from raft.types import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    ProposalDropped,
    Role,
)
from storage import Batch, Cas, Delete, GroupApply, GroupWrite, NodeStore, Noop, Put, Rejected, Stale
from storage.codec import decode_command, encode_command

from . import codec
from .hlc import HybridClock, wall_clock_from_env
from .placement import META_GROUP, BucketMap, bucket_of_group, group_of_bucket, initial_map
from .protocol import Invalid, Request, parse_request
from .server import ClientConn, Server
from .snapshots import SnapshotTransfer
from .transport import Transport
from .writer_thread import WriterThread

log = logging.getLogger("kvstore.node")

_PID = struct.Struct(">Q")
META_BUCKET = 0xFFFFFFFF  # the meta group's state lives in this (never a user) bucket
MAP_KEY = b"map"
PEER_INBOX_MAX = 100_000
LAG_ENTRIES = 1000
LEADER_GOSSIP_TICKS = 10  # tell peers which buckets we lead every this many ticks
LEADER_HINT_TTL_S = 5.0
DRAIN_TIMEOUT_S = 3.0  # on SIGTERM, at most this long handing leaderships over
# TESTING ONLY - deliberately injected bugs that the jepsen-style suite must catch; never set in
# production. "stale-follower-read": follower reads skip ReadIndex; "ack-before-commit": puts
# are acknowledged as soon as they are proposed; "no-session-dedup": retried writes are applied
# again (writes carry no session).
_INJECTED_BUG = os.environ.get("KVSTORE_BUG", "")


def group_apply(gid: int, bucket: int, ents: list[Entry]) -> GroupApply:
    """The storage apply of committed entries: each entry's command (after its 8-byte pid),
    Noop for an entry without one."""
    cmds = []
    for e in ents:
        if e.type == EntryType.NORMAL and len(e.data) > 8:
            cmds.append(decode_command(e.data[8:]))
        else:
            cmds.append(Noop(e.index))
    return GroupApply(gid, bucket, ents[-1].index, cmds)


@dataclass(slots=True)
class NodeConfig:
    node_id: int
    data_dir: str
    nodes: dict[int, str]
    num_buckets: int = 64
    replication: int = 3
    tick_ms: int = 100
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    compact_threshold: int = 10_000
    request_timeout_s: float = 5.0
    fsync: bool = True
    switch_interval_s: float | None = 0.0005
    # storage writes in a worker thread, or (default) on the loop's thread: measured on the
    # shared 2-core machine, the thread hand-off (GIL ping-pong) cost ~300 us CPU per write
    # and more throughput than the overlap it buys (see README, "Performance")
    storage_thread: bool = False
    # "wal": Raft logs in an append-only WAL, applies in a deferred LMDB transaction that is
    # committed (synced) every 100 ms (storage/wal_store.py); "lmdb": everything in LMDB, one
    # synced commit per job. None: the data directory's mode; a new one: $KVSTORE_STORE_LOG,
    # else wal (measured faster, same durability; see README "Storage"), or lmdb with
    # storage_thread
    log: str | None = None
    listen_host: str | None = None  # bind here instead of the host of this node's address


@dataclass(slots=True, eq=False)
class Waiter:
    conn: ClientConn
    rid: int
    op: str
    deadline: float
    done: bool = False
    t_prop: float = 0.0  # when proposed
    t_commit: float = 0.0  # when raft said committed


@dataclass(slots=True, eq=False)
class Group:
    gid: int
    bucket: int
    voters: tuple[int, ...]
    raw: object
    applied: int = 0
    commit: int = 0
    leader: int = 0
    role: Role = Role.FOLLOWER
    term: int = 0
    first_index: int = 1
    proposals: list = field(default_factory=list)  # [(command, Waiter)] queued this turn
    reads: list = field(default_factory=list)  # [(Request, Waiter)] queued this turn
    read_batches: dict = field(default_factory=dict)  # ctx -> [(Request, Waiter)]
    ready_reads: list = field(default_factory=list)  # [(index, [(Request, Waiter)])]
    pending_pids: set = field(default_factory=set)
    snapshot_sending: set = field(default_factory=set)  # peers we are streaming to
    lazy_hs: HardState | None = None  # a commit-only hard state not yet written
    busy: bool = False  # its Ready is in a storage job (not advanced yet)


class Node:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.id = cfg.node_id
        self.store: NodeStore | None = None
        self.map: BucketMap | None = None
        self.groups: dict[int, Group] = {}
        self.hlc = HybridClock(wall_clock_from_env())
        self._incarnation = random.getrandbits(31) << 32
        self._next_pid = 1
        self._next_ctx = 1
        self._pending: dict[int, list[Waiter]] = {}  # pid -> waiters (one per command)
        self._deadlines: deque = deque()  # (deadline, Waiter), in deadline order
        self._peer_inbox: deque = deque()
        self._peer_inbox_items = 0
        self._remote_leaders: dict[int, tuple[int, int, float]] = {}  # bucket -> (node, term, seen)
        self._local_inbox: deque = deque()  # callables run by the loop between turns
        self._wake = trio.Event()
        self.transport: Transport | None = None
        self.server = Server(self)
        self.snapshots = SnapshotTransfer(self)
        self.started = time.monotonic()
        self.stats = {"turns": 0, "persists": 0, "applied_entries": 0, "proposed": 0,
                      "dropped_peer_msgs": 0, "bad_peer_msgs": 0, "snapshots_sent": 0,
                      "snapshots_installed": 0, "compactions": 0,
                      "storage_ms": 0.0, "store_calls_ms": 0.0, "readies": 0,
                      "writes_timed": 0, "write_queue_s": 0.0,
                      "write_replicate_s": 0.0, "write_apply_s": 0.0}
        self._token = None
        self.port = None
        self._stopping = False
        self._ticks = 0
        self._again = False
        self._lazy_groups: set = set()
        # groups that may have a Ready: stepped, fed, or advanced since the last turn; every
        # group is looked at on a tick and after local actions (`_scan_all`), so a path that
        # forgets to mark a group delays its Ready by a tick at most, never forever
        self._touched: set = set()
        self._fed: set = set()  # groups with queued proposals or reads (see _feed_groups)
        self._scan_all = True
        self._write_queue: list = []
        self._writer_thread: WriterThread | None = None
        self._writer_wake = trio.Event()
        self._job = None  # (--storage-thread) the job on the writer thread
        self._delivered = None  # the applies of the job running now, once answered early
        self._done = None  # (job, results) of a job done, for the loop to finish
        self._installs: list = []  # snapshot installs waiting for their group to be idle
        self._campaign_at_tick = None
        self._next_tick = 0.0

    # -- start-up ---------------------------------------------------------------------------

    def open(self) -> None:
        cfg = self.cfg
        os.makedirs(cfg.data_dir, exist_ok=True)
        path = os.path.join(cfg.data_dir, "store")
        log_mode = cfg.log
        if (log_mode is None and not os.environ.get("KVSTORE_STORE_LOG")
                and not os.path.exists(os.path.join(path, "data.mdb"))):
            # a new data directory: the WAL with deferred commits, unless storage runs on a
            # worker thread (no deferral there, so a WAL fsync plus a synced LMDB commit per
            # job: the LMDB log is faster then)
            log_mode = "lmdb" if cfg.storage_thread else "wal"
        # deferred commits need every store call on the loop's thread (the store's home)
        self.store = NodeStore.open(path, sync=cfg.fsync, log=log_mode,
                                    defer_commits=False if cfg.storage_thread else None)
        stored = self.store.get_meta("cluster")
        wanted = {"node_id": cfg.node_id, "nodes": {int(k): v for k, v in cfg.nodes.items()},
                  "num_buckets": cfg.num_buckets, "replication": cfg.replication}
        if stored is None:
            self._bootstrap(wanted)
        else:
            stored["nodes"] = {int(k): v for k, v in stored["nodes"].items()}
            for k in ("node_id", "nodes", "num_buckets", "replication"):
                if stored.get(k) != wanted[k]:
                    log.warning("bootstrap flag disagrees with the data directory; using the "
                                "data directory's", extra={"flag": k, "flag_value": repr(wanted[k]),
                                                           "stored": repr(stored.get(k))})
            if stored["node_id"] != cfg.node_id:
                raise SystemExit(f"data directory {cfg.data_dir} belongs to node "
                                 f"{stored['node_id']}, not {cfg.node_id}")
            self.map = BucketMap.from_record(self.store.get_meta("map"))
            cfg.nodes = self.map.nodes
            cfg.num_buckets = self.map.num_buckets
        for gid, voters in self.map.groups_of(self.id).items():
            self._open_group(gid, voters)
        # On a new cluster each bucket's preferred leader (its first replica) campaigns early,
        # so leaders start out spread evenly rather than wherever the random timeouts fell.
        self._campaign_at_tick = 3 if stored is None else None
        log.info("node opened", extra={"groups": len(self.groups), "data_dir": cfg.data_dir,
                                       "fresh": stored is None, "log": self.store.log_mode})

    def _bootstrap(self, wanted: dict) -> None:
        self.map = initial_map(wanted["nodes"], wanted["num_buckets"], wanted["replication"])
        if self.id not in self.map.nodes:
            raise SystemExit(f"node {self.id} is not in --cluster")
        writes = []
        for gid, voters in self.map.groups_of(self.id).items():
            cs = ConfState(voters=tuple(voters))
            writes.append(GroupWrite(gid, snapshot=raft.storage.bootstrap_snapshot(cs),
                                     hard_state=HardState(term=1, vote=0, commit=1), conf_state=cs))
        self.store.persist(writes)
        self.store.put_meta("map", self.map.to_record())
        self.store.put_meta("cluster", wanted)
        log.info("bootstrapped a fresh data directory", extra={"buckets": self.map.num_buckets,
                                                                "nodes": len(self.map.nodes)})

    def _open_group(self, gid: int, voters) -> None:
        storage_view = self.store.group(gid)
        hs, _cs = storage_view.initial_state()
        snap_index = storage_view.snapshot().metadata.index
        applied = max(self.store.applied_index(gid), snap_index)
        # The stored commit index may trail the applied index (commit-only hard states are
        # persisted lazily, see _turn); raft takes the applied index as committed then.
        rc = raft.Config(id=self.id, election_tick=self.cfg.election_ticks,
                         heartbeat_tick=self.cfg.heartbeat_ticks, applied=applied,
                         rng=random.Random(), max_size_per_msg=1 << 20, max_inflight_msgs=256,
                         # followers learn a new commit index with the next append, heartbeat
                         # or read round instead of from an append of its own: half the peer
                         # messages per write (only the leader answers writes)
                         bcast_commit=False,
                         # a group streaming appends to a peer sends it no heartbeats: with
                         # 64 groups, heartbeats were ~40 % of the peer messages under load
                         quiet_heartbeats=True,
                         # a read round asks one follower (of 2), not both: half its messages
                         lean_reads=True)
        raw = raft.RawNode(rc, storage_view)
        bucket = META_BUCKET if gid == META_GROUP else bucket_of_group(gid)
        g = Group(gid=gid, bucket=bucket, voters=tuple(voters), raw=raw, applied=applied,
                  commit=hs.commit, first_index=storage_view.first_index(), term=hs.term)
        self.groups[gid] = g

    def is_peer(self, node_id: int) -> bool:
        return node_id in self.map.nodes and node_id != self.id

    # -- the service --------------------------------------------------------------------------

    async def serve(self, *, task_status=trio.TASK_STATUS_IGNORED, host: str | None = None) -> None:
        if self.cfg.switch_interval_s:
            sys.setswitchinterval(self.cfg.switch_interval_s)
        self._token = trio.lowlevel.current_trio_token()
        bind_host, port = self.map.nodes[self.id].rsplit(":", 1)
        self.transport = Transport(self.id, self.map.nodes, self._on_unreachable)
        try:
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(functools.partial(
                    trio.serve_tcp, self.server.handle, int(port),
                    host=host or self.cfg.listen_host or bind_host))
                self.port = listeners[0].socket.getsockname()[1]
                nursery.start_soon(self.transport.run)
                nursery.start_soon(self._loop)
                nursery.start_soon(self._ticker)
                if self.cfg.storage_thread:
                    nursery.start_soon(self._writer)
                log.info("serving", extra={"addr": self.map.nodes[self.id]})
                task_status.started(self.port)
        finally:
            self._stopping = True

    def close(self) -> None:
        if self._writer_thread is not None:
            self._writer_thread.close()
        if self.store is not None:
            lazy = [GroupWrite(g.gid, hard_state=g.lazy_hs) for g in self._lazy_groups
                    if g.lazy_hs is not None]
            if lazy:
                try:
                    self.store.persist(lazy)
                except Exception:
                    log.exception("could not write the last commit indexes (harmless)")
            self.store.close()
            self.store = None
            log.info("store closed")

    async def drain(self) -> None:
        """Transfer every leadership this node holds to an up-to-date replica and wait (the
        caller bounds the wait) until none is left."""
        self._local_inbox.append(self._transfer_leaderships)
        self._kick()
        while True:
            led = [g for g in self.groups.values() if g.role == Role.LEADER and len(g.voters) > 1]
            if not led:
                log.info("leaderships handed over")
                return
            if not any(self.transport.is_connected(p) for g in led for p in g.voters if p != self.id):
                log.info("no replica reachable to hand leaderships to")
                return
            await trio.sleep(0.05)
            if self._ticks % 10 == 0:  # retry for groups whose transfer was abandoned
                self._local_inbox.append(self._transfer_leaderships)

    def _transfer_leaderships(self) -> None:
        for g in self.groups.values():
            if g.role != Role.LEADER or len(g.voters) < 2:
                continue
            progress = self._progress(g)
            others = [(m, p) for p, m in progress.items() if p != self.id and p in g.voters]
            if others:
                _m, target = max(others)
                g.raw.transfer_leader(target)
        self._wake.set()

    def _kick(self) -> None:
        self._wake.set()

    def _on_unreachable(self, peer: int) -> None:
        self._local_inbox.append(lambda: self._report_unreachable(peer))
        self._kick()

    def _report_unreachable(self, peer: int) -> None:
        for g in self.groups.values():
            if g.role == Role.LEADER and peer in g.voters:
                g.raw.report_unreachable(peer)

    def on_peer_items(self, peer: int, items: list) -> None:
        """A peer frame's items (codec.py): raft batches (bytes), decoded by the loop, and
        gossip lists. Counted by the messages a batch announces, to bound the inbox."""
        if len(items) == 1 and type(items[0]) is bytes:  # the usual frame: one raft batch
            n = codec.batch_count(items[0])
        else:
            n = sum(codec.batch_count(i) if type(i) is bytes else 1 for i in items)
        if self._peer_inbox_items + n > PEER_INBOX_MAX:
            self.stats["dropped_peer_msgs"] += n  # raft retransmits
            return
        self._peer_inbox.append(items)
        self._peer_inbox_items += n
        self._wake.set()

    # -- client requests ----------------------------------------------------------------------

    def parse(self, msg) -> Request:
        req = parse_request(msg, self.map.num_buckets)
        if req.key and req.op != "scan" and bucket_of(req.key, self.map.num_buckets) != req.bucket:
            raise Invalid(f"key belongs to bucket {bucket_of(req.key, self.map.num_buckets)}, "
                          f"not {req.bucket}")
        return req

    def _error(self, conn: ClientConn, rid, status: Status, reason: str, g: Group | None = None) -> None:
        leader = g.leader if g is not None and g.leader else None
        epoch = self.map.epochs[g.bucket] if g is not None and g.gid != META_GROUP else self.map.epoch
        conn.reply(rid, int(status), {"reason": reason, "leader": leader,
                                      "leader_addr": self.map.nodes.get(leader) if leader else None,
                                      "epoch": epoch})

    def submit(self, conn: ClientConn, req: Request) -> None:
        op = req.op
        if op == "map":
            conn.reply(req.rid, int(Status.OK), self.map_payload())
            return
        if op == "status":
            conn.reply(req.rid, int(Status.OK), self.status())
            return
        g = self.groups.get(group_of_bucket(req.bucket))
        if g is None:
            conn.reply(req.rid, int(Status.WRONG_BUCKET),
                       {"reason": f"node {self.id} holds no replica of bucket {req.bucket}",
                        "leader": None, "leader_addr": None, "epoch": self.map.epoch})
            return
        if self._stopping:
            self._error(conn, req.rid, Status.UNAVAILABLE, "node is shutting down", g)
            return
        deadline = time.monotonic() + self.cfg.request_timeout_s
        if op == "get" or op == "scan":
            if req.consistency == "linearizable" and g.role != Role.LEADER:
                self._error(conn, req.rid, Status.NOT_LEADER, "not the leader", g)
                return
            if req.consistency == "follower" and g.role != Role.LEADER and not g.leader:
                self._error(conn, req.rid, Status.UNAVAILABLE, "no known leader to confirm the read", g)
                return
            if _INJECTED_BUG == "stale-follower-read" and op == "get" and req.consistency == "follower":
                got = self.store.get(g.bucket, req.key)  # INJECTED BUG (KVSTORE_BUG): no ReadIndex
                conn.reply(req.rid, 0, {"value": None, "version": None} if got is None
                           else {"value": got[0], "version": got[1]})
                return
            w = Waiter(conn, req.rid, op, deadline)
            g.reads.append((req, w))
            self._fed.add(g)
            self._deadlines.append((deadline, w))
            self._wake.set()
            return
        if g.role != Role.LEADER:
            self._error(conn, req.rid, Status.NOT_LEADER, "not the leader", g)
            return
        ts = self.hlc.now()
        session = None if _INJECTED_BUG == "no-session-dedup" else req.session  # INJECTED BUG hook
        if op == "put":
            cmd = Put(req.key, req.value, ts, session, req.seq)
        elif op == "delete":
            cmd = Delete(req.key, ts, session, req.seq)
        else:
            cmd = Cas(req.key, req.expected, req.value, ts, session, req.seq)
        w = Waiter(conn, req.rid, op, deadline)
        g.proposals.append((cmd, w))
        self._fed.add(g)
        self._deadlines.append((deadline, w))
        self._wake.set()

    def map_payload(self) -> dict:
        m = self.map
        now = time.monotonic()
        buckets = []
        for b in range(m.num_buckets):
            g = self.groups.get(group_of_bucket(b))
            if g is not None:
                leader = g.leader or None
            else:  # not a replica here: what the leader itself said lately
                hint = self._remote_leaders.get(b)
                leader = hint[0] if hint is not None and now - hint[2] < LEADER_HINT_TTL_S else None
            buckets.append([m.epochs[b], list(m.replicas[b]), leader])
        return {"epoch": m.epoch, "num_buckets": m.num_buckets, "nodes": dict(m.nodes),
                "buckets": buckets}

    def status(self) -> dict:
        leaders = []
        lagging = []
        for g in self.groups.values():
            if g.gid == META_GROUP:
                continue
            if g.role == Role.LEADER:
                leaders.append(g.bucket)
                for peer, match in self._progress(g).items():
                    last = g.commit
                    if peer != self.id and last - match > LAG_ENTRIES:
                        lagging.append({"bucket": g.bucket, "node": peer, "match": match,
                                        "commit": last})
        meta = self.groups.get(META_GROUP)
        return {
            "node": self.id,
            "addr": self.map.nodes[self.id],
            "nodes": dict(self.map.nodes),
            "num_buckets": self.map.num_buckets,
            "epoch": self.map.epoch,
            "buckets": sorted(g.bucket for g in self.groups.values() if g.gid != META_GROUP),
            "leader_of": sorted(leaders),
            "meta_leader": meta.leader if meta is not None else None,
            "lagging": lagging,
            "peers": {str(k): v for k, v in (self.transport.statistics() if self.transport else {}).items()},
            "uptime_s": round(time.monotonic() - self.started, 1),
            "stats": dict(self.stats),
            "store": dict(self.store.write_stats) if self.store is not None else {},
            "pending_writes": sum(len(v) for v in self._pending.values()),
        }

    def _progress(self, g: Group) -> dict[int, int]:
        st = getattr(g.raw, "status", None)
        if st is None:
            return {}
        try:
            s = st()
            prs = getattr(s, "progress", None) or {}
            return {int(k): int(getattr(v, "match", 0)) for k, v in prs.items()}
        except Exception:
            return {}

    # -- the loop -----------------------------------------------------------------------------

    async def _loop(self) -> None:
        tick_s = self.cfg.tick_ms / 1000
        next_tick = time.monotonic() + tick_s
        self._next_tick = next_tick
        while True:
            now = time.monotonic()
            if now < next_tick and not self._has_input():
                self._wake = trio.Event()
                if not self._has_input():
                    await self._wake.wait()
            else:
                await trio.lowlevel.checkpoint()  # let connections run between busy turns
            if self._done is not None:
                self._finish_job()
            while self._local_inbox:
                self._local_inbox.popleft()()
                self._scan_all = True
            # snapshot installs run between turns, never under a Ready with the writer
            for item in [i for i in self._installs if not i[0].busy and self._job is None]:
                self._installs.remove(item)
                await item[1]()
                self._scan_all = True
            self._drain_peers()
            now = time.monotonic()
            tick = now >= next_tick
            if tick:
                next_tick = max(next_tick + tick_s, now)
                self._next_tick = next_tick
                self._scan_all = True
            self._feed_groups(tick)
            if tick:
                self._expire(now)
                self._ticks += 1
                if self._ticks == self._campaign_at_tick:
                    self._campaign_preferred()
                if self._ticks % LEADER_GOSSIP_TICKS == 0:
                    self._gossip_leaders()
            self._turn()

    async def _ticker(self) -> None:
        """Wakes the loop when a tick is due, so that the loop's idle wait needs no cancel
        scope of its own: entering and leaving `move_on_after` at every idle wait cost about
        4 % of a node's CPU under a 95 %-read load."""
        while True:
            due = self._next_tick
            await trio.sleep(max(0.0, due - time.monotonic()) + 0.0002)
            if self._next_tick == due:  # not ticked yet: wake the loop, then wait for it
                self._wake.set()
                while self._next_tick == due:
                    await trio.sleep(0.001)

    def _campaign_preferred(self) -> None:
        for g in self.groups.values():
            if g.voters and g.voters[0] == self.id and g.leader == 0:
                g.raw.campaign()

    def _has_input(self) -> bool:
        if self._again:
            self._again = False
            return True
        return bool(self._done is not None or self._peer_inbox or self._local_inbox
                    or self._fed)

    def _drain_peers(self) -> None:
        groups = self.groups
        inbox = self._peer_inbox
        touched = self._touched
        self._peer_inbox_items = 0
        my_id = self.id
        while inbox:
            items = inbox.popleft()
            for item in items:
                if type(item) is not bytes:
                    if type(item) is list and item and item[0] == "leaders":
                        self._on_leaders(item)
                    else:
                        self.stats["bad_peer_msgs"] += 1
                    continue
                try:
                    msgs = codec.decode_batch(item)
                except codec.CodecError as exc:  # the whole batch: a peer's bug, or corruption
                    self.stats["bad_peer_msgs"] += max(codec.batch_count(item), 1)
                    log.warning("bad peer message", extra={"error": str(exc)})
                    continue
                for gid, msg in msgs:
                    g = groups.get(gid)
                    if g is None or msg.to != my_id:
                        self.stats["bad_peer_msgs"] += 1
                        continue
                    touched.add(g)
                    try:
                        g.raw.step(msg)
                    except raft.RaftError as exc:
                        log.debug("step refused", extra={"group": gid, "error": repr(exc)})

    def _gossip_leaders(self) -> None:
        """Tell every peer which buckets this node leads (and in which term), so that any node
        can answer `map` with every bucket's leader, not only those of its own replicas."""
        led = [[g.bucket, g.term] for g in self.groups.values()
               if g.role == Role.LEADER and g.gid != META_GROUP]
        item = ["leaders", self.id, led]
        for peer in self.map.nodes:
            if peer != self.id:
                self.transport.send(peer, item)
        self.transport.flush()

    def _on_leaders(self, item) -> None:
        try:
            _tag, frm, led = item
            if type(frm) is not int or frm not in self.map.nodes or not isinstance(led, list):
                raise ValueError
            now = time.monotonic()
            for bucket, term in led:
                if type(bucket) is int and type(term) is int and 0 <= bucket < self.map.num_buckets:
                    old = self._remote_leaders.get(bucket)
                    if old is None or old[1] <= term:
                        self._remote_leaders[bucket] = (frm, term, now)
        except (ValueError, TypeError):
            self.stats["bad_peer_msgs"] += 1

    def _feed_groups(self, tick: bool) -> None:
        fed = self._fed  # the groups with queued writes or reads (all of them on a tick)
        self._fed = set()
        groups = self.groups
        for g in (groups.values() if tick else fed):
            if not tick and groups.get(g.gid) is not g:
                continue  # removed meanwhile
            if g.proposals:
                self._propose(g)
            if g.reads:
                self._touched.add(g)
                batch = g.reads
                g.reads = []
                ctx = self._next_ctx.to_bytes(8, "big")
                self._next_ctx += 1
                g.read_batches[ctx] = batch
                try:
                    g.raw.read_index(ctx)
                except raft.RaftError as exc:
                    del g.read_batches[ctx]
                    for req, w in batch:
                        self._fail(w, Status.UNAVAILABLE, f"read not accepted: {exc!r}", g)
            if tick:
                g.raw.tick()

    def _propose(self, g: Group) -> None:
        props = g.proposals
        g.proposals = []
        self._touched.add(g)
        live = [(c, w) for c, w in props if w is None or not w.done]
        if not live:
            return
        if g.role != Role.LEADER:
            for _c, w in live:
                self._fail(w, Status.NOT_LEADER, "not the leader", g)
            return
        pid = self._incarnation | self._next_pid
        self._next_pid += 1
        cmd = live[0][0] if len(live) == 1 else Batch(tuple(c for c, _w in live))
        try:
            data = _PID.pack(pid) + encode_command(cmd)
        except Exception as exc:  # validated already; a defensive answer, not a crash
            for _c, w in live:
                self._fail(w, Status.INVALID, f"cannot encode: {exc}", g)
            return
        try:
            g.raw.propose(data)
        except ProposalDropped as exc:
            for _c, w in live:
                self._fail(w, Status.UNAVAILABLE, f"proposal dropped: {exc}", g)
            return
        if _INJECTED_BUG == "ack-before-commit":  # INJECTED BUG (KVSTORE_BUG): ack uncommitted puts
            for c, w in live:
                if w is not None and w.op == "put" and not w.done:
                    w.done = True
                    w.conn.reply(w.rid, 0, {"version": c.ts})
        self._pending[pid] = [w for _c, w in live]
        _now = time.monotonic()
        for _c, w in live:
            if w is not None:
                w.t_prop = _now
        g.pending_pids.add(pid)
        self.stats["proposed"] += len(live)

    def _fail(self, w: Waiter | None, status: Status, reason: str, g: Group | None) -> None:
        if w is None or w.done:
            return
        w.done = True
        self._error(w.conn, w.rid, status, reason, g)

    def _expire(self, now: float) -> None:
        dq = self._deadlines
        while dq and (dq[0][0] <= now or dq[0][1].done):
            _d, w = dq.popleft()
            if not w.done:
                w.done = True
                w.conn.reply(w.rid, int(Status.TIMEOUT),
                             {"reason": "no result within the deadline (outcome unknown)",
                              "leader": None, "leader_addr": None, "epoch": self.map.epoch})
        # forget pending pids whose waiters are all done
        if self._pending and self._ticks % 50 == 0:
            for pid in [p for p, ws in self._pending.items() if all(w is None or w.done for w in ws)]:
                del self._pending[pid]
            for g in self.groups.values():
                g.pending_pids &= self._pending.keys()
        if self._ticks % 50 == 0:
            # reads whose ReadState never came (raft drops them on a leader change) time out
            # above; forget their batches
            for g in self.groups.values():
                for ctx in [c for c, b in g.read_batches.items() if all(w.done for _r, w in b)]:
                    del g.read_batches[ctx]

    def _turn(self) -> None:
        """Collect the Ready of every group that has one and do what needs no storage at once;
        hand the rest to the writer task. A group whose Ready is with the writer has no new
        Ready (raft allows one outstanding), but can still step messages, so the loop keeps
        serving peers, reads and other groups while an fsync runs."""
        send = self._send
        n = 0
        if self._scan_all:
            self._scan_all = False
            candidates = list(self.groups.values())
        else:
            groups = self.groups
            candidates = [g for g in self._touched if groups.get(g.gid) is g]
        self._touched.clear()
        for g in candidates:
            if not g.raw.has_ready():
                continue
            rd = g.raw.ready()
            n += 1
            if rd.soft_state is not None:
                self._on_soft_state(g, rd.soft_state)
            for m in rd.messages:
                if m.type == MessageType.SNAP:
                    self._start_snapshot(g, m)
                else:
                    send(g.gid, m)
            hs = rd.hard_state
            write = None
            if hs is not None:
                g.commit = hs.commit
                g.term = hs.term
            if rd.entries or rd.snapshot is not None or (hs is not None and rd.must_sync):
                write = GroupWrite(g.gid, rd.entries, hs or g.lazy_hs, rd.snapshot,
                                   rd.snapshot.metadata.conf_state if rd.snapshot else None)
                g.lazy_hs = None
            elif hs is not None:
                # Only the commit index moved. Raft's safety needs term and vote on disk, not
                # the commit index (it is volatile in the paper), so this rides along with the
                # next real write instead of costing an fsync of its own before the apply.
                g.lazy_hs = hs
                self._lazy_groups.add(g)
            if rd.committed_entries and self._pending and not self._ticks % 8:
                self._mark_committed(rd.committed_entries)  # timed in 1 tick of 8: a sample
            if write is None and not rd.committed_entries:
                # nothing to persist in this Ready (everything before it is durable: its
                # predecessor was advanced only after its persist), so finish it now
                if rd.persisted_messages:
                    for m in rd.persisted_messages:
                        send(g.gid, m)
                self._finish(g, rd)
                continue
            g.busy = True
            self._write_queue.append((g, rd, write))
        if n:
            self.stats["turns"] += 1
            self.stats["readies"] += n
        self.transport.flush()  # this turn's messages, one frame per peer, before any fsync
        self._start_job()

    def _mark_committed(self, ents: list[Entry]) -> None:
        """Note when our writes are seen committed (for the write phase figures in status,
        which average the writes committed during every 8th tick: timing each write cost
        ~1 % of a node's CPU under a write load)."""
        now = time.monotonic()
        pending = self._pending
        for e in ents:
            if len(e.data) > 8:
                for w in pending.get(_PID.unpack_from(e.data)[0], ()):
                    if w is not None:
                        w.t_commit = now

    def _finish(self, g: Group, rd) -> None:
        """Steps 5 and advance: serve reads that are applied, advance the group."""
        if rd.snapshot is not None:
            g.applied = max(g.applied, rd.snapshot.metadata.index)
            g.first_index = rd.snapshot.metadata.index + 1
        if rd.read_states:
            for rs in rd.read_states:
                batch = g.read_batches.pop(rs.context, None)
                if batch is not None:
                    g.ready_reads.append((rs.index, batch))
        if g.ready_reads:
            self._serve_reads(g)
        g.raw.advance(rd)
        g.busy = False
        self._touched.add(g)
        # advance() may make more work at once (the leader's own persist can commit):
        # loop again without waiting for input or a tick
        if not self._again and g.raw.has_ready():
            self._again = True
            self._wake.set()

    def _start_job(self) -> None:
        """Hand every queued Ready to the writer as one job (if it is idle)."""
        if self._job is not None or self._done is not None or not self._write_queue:
            return
        batch = self._write_queue
        self._write_queue = []
        writes = [w for _g, _rd, w in batch if w is not None]
        compacts = self._compactions_due()
        # Lazy commit indexes ride along with any write; before a compaction they MUST be on
        # disk: on restart raft re-reads the log from min(applied, stored commit) + 1.
        if (writes or compacts) and self._lazy_groups:
            written = {w.group_id for w in writes}
            for lg in self._lazy_groups:
                if lg.lazy_hs is not None and lg.gid not in written:
                    writes.append(GroupWrite(lg.gid, hard_state=lg.lazy_hs))
                lg.lazy_hs = None
            self._lazy_groups.clear()
        persisted_msgs = [(g.gid, rd.persisted_messages) for g, rd, _w in batch if rd.persisted_messages]
        applies = [(g, rd.committed_entries, self._group_apply(g, rd.committed_entries))
                   for g, rd, _w in batch if rd.committed_entries]
        if writes:
            self.stats["persists"] += 1
        job = (batch, writes, persisted_msgs, applies, compacts)
        if self.cfg.storage_thread:
            self._job = job
            self._writer_wake.set()
            return
        # on the loop's own thread: now, synchronously (this turn's messages are on the wire
        # already, see _turn); the loop finishes the job at its next iteration
        t0 = time.perf_counter()
        self._done = (job, self._storage_inline(writes, persisted_msgs, applies, compacts))
        self.stats["storage_ms"] += (time.perf_counter() - t0) * 1000

    async def _writer(self) -> None:
        """With `storage_thread`: the task that runs the storage calls of one job at a time
        on the writer thread and posts the results back to the loop, which owns every group."""
        while True:
            if self._job is None:
                self._writer_wake = trio.Event()
                await self._writer_wake.wait()
                continue
            _batch, writes, persisted_msgs, applies, compacts = job = self._job
            t0 = time.perf_counter()
            if self._writer_thread is None:
                self._writer_thread = WriterThread()
            results = await self._writer_thread.call(
                self._storage_work, writes, persisted_msgs, applies, compacts)
            self.stats["storage_ms"] += (time.perf_counter() - t0) * 1000
            self._job = None
            self._done = (job, results)
            self._wake.set()

    def _finish_job(self) -> None:
        """In the loop: answer the writes, finish (serve reads, advance) the job's groups."""
        (batch, _writes, _pm, applies, compacts), results = self._done
        self._done = None
        if results is not None:
            if self._delivered is not applies:  # not answered early
                self._deliver(applies, results)
            self._delivered = None
            n = 0
            for g, ents, _ga in applies:
                if ents[-1].index > g.applied:
                    g.applied = ents[-1].index
                n += len(ents)
            self.stats["applied_entries"] += n
        for g, index in compacts:
            g.first_index = max(g.first_index, index + 1)
            self.stats["compactions"] += 1
            log.info("log compacted", extra={"group": g.gid, "through": index})
        for g, rd, _w in batch:
            self._finish(g, rd)

    def _compactions_due(self) -> list:
        thr = self.cfg.compact_threshold
        out = []
        for g in self.groups.values():
            if g.applied - g.first_index > thr:
                # keep a little log for followers slightly behind; older ones get a snapshot
                index = g.applied - max(thr // 4, 1)
                if index >= g.first_index:
                    out.append((g, index))
        return out

    def _send(self, gid: int, m: Message) -> None:
        s = self.transport.senders.get(m.to)  # Transport.send_message, one call less
        if s is not None:
            s.send_message(gid, m)

    def _send_persisted(self, persisted_msgs) -> None:
        for gid, msgs in persisted_msgs:
            for m in msgs:
                if m.type == MessageType.SNAP:
                    g = self.groups.get(gid)
                    if g is not None:
                        self._start_snapshot(g, m)
                else:
                    self._send(gid, m)
        self.transport.flush()

    def _storage_inline(self, writes, persisted_msgs, applies, compacts):
        """The storage calls of a job on the loop's own thread: no thread hand-off (and no
        wait for the GIL to come back). The job is one `write_turn`; its writes are answered
        just before the commit (their entries are committed already), so a write's reply
        waits for no fsync of the leader's apply. The job's persisted messages go out after
        it."""
        t0 = time.perf_counter()
        answer = functools.partial(self._answer_early, applies) if self._pending else None
        results = self.store.write_turn(writes, [a[2] for a in applies], answer)
        self.stats["store_calls_ms"] += (time.perf_counter() - t0) * 1000
        if persisted_msgs:
            self._send_persisted(persisted_msgs)
        self._compact(compacts)
        return results if applies else None

    def _answer_early(self, applies: list, results: list) -> None:
        """Called by the store with a job's apply results just before its commit (and fsync):
        answer the waiting writes now. Safe because these entries are committed (durable on
        a majority) and their results depend on the log alone: if this commit is lost, the
        entries are applied again with the same results. Reads still wait for the commit
        (they are served only once `applied` moved, after it). The replies go on the wire at
        once, before the commit blocks this thread."""
        conns: set = set()
        self._deliver(applies, results, conns)
        self._delivered = applies
        for conn in conns:
            conn.flush_now()

    def _deliver(self, applies: list, results: list, conns: set | None = None) -> None:
        """Answer the waiters of a job's applied entries (each once: their pids leave
        `_pending`), noting their connections in `conns`; every result's version moves the
        HLC, so this node never stamps a later write below a version it applied."""
        pending = self._pending
        for (g, ents, ga), res_list in zip(applies, results):
            for e, cmd, res in zip(ents, ga.commands, res_list):
                if res is None or len(e.data) <= 8:
                    continue
                pid = _PID.unpack_from(e.data)[0]
                waiters = pending.pop(pid, None)
                if waiters is None:
                    self._observe(res)
                    continue
                g.pending_pids.discard(pid)
                if len(waiters) == 1 and not isinstance(cmd, Batch):
                    self._answer(waiters[0], res, g)
                else:
                    if not isinstance(res, list):
                        res = [res] * len(waiters)
                    for w, r in zip(waiters, res):
                        self._answer(w, r, g)
                if conns is not None:
                    conns.update(w.conn for w in waiters if w is not None)

    def _storage_work(self, writes, persisted_msgs, applies, compacts):
        """Runs in the worker thread: persist (one fsync), let the loop send, apply."""
        t0 = time.perf_counter()
        try:
            return self._storage_work_inner(writes, persisted_msgs, applies, compacts)
        finally:
            self.stats["store_calls_ms"] += (time.perf_counter() - t0) * 1000

    def _storage_work_inner(self, writes, persisted_msgs, applies, compacts):
        store = self.store
        write_turn = getattr(store, "write_turn", None)
        gas = [a[2] for a in applies]
        if write_turn is not None:
            # one transaction, one fsync for both; the loop answers the writes while this
            # thread commits (see _answer_early)
            def answer(results):
                self._token.run_sync_soon(self._answer_early, applies, results)

            results = write_turn(writes, gas, answer) if (writes or gas) else None
            if persisted_msgs:
                self._token.run_sync_soon(self._send_persisted, persisted_msgs)
            results = results if gas else None
        else:
            if writes:
                store.persist(writes)
            if persisted_msgs:
                self._token.run_sync_soon(self._send_persisted, persisted_msgs)
            results = store.apply(gas) if gas else None
        self._compact(compacts)
        return results

    def _compact(self, compacts: list) -> None:
        for item in list(compacts):
            try:
                self.store.compact(item[0].gid, item[1])
            except Exception:
                log.exception("compaction failed", extra={"group": item[0].gid})
                compacts.remove(item)

    def _group_apply(self, g: Group, ents: list[Entry]) -> GroupApply:
        return group_apply(g.gid, g.bucket, ents)

    def _observe(self, res) -> None:
        if isinstance(res, int):
            self.hlc.observe(res)
        elif isinstance(res, tuple) and len(res) == 2 and isinstance(res[1], int):
            self.hlc.observe(res[1])
        elif isinstance(res, list):
            for r in res:
                self._observe(r)

    def _answer(self, w: Waiter | None, res, g: Group) -> None:
        self._observe(res)
        if w is None or w.done:
            return
        w.done = True
        if w.t_prop and w.t_commit:  # where a write's time went, summed (see status)
            st = self.stats
            st["writes_timed"] += 1
            st["write_queue_s"] += w.t_prop - (w.deadline - self.cfg.request_timeout_s)
            st["write_replicate_s"] += w.t_commit - w.t_prop
            st["write_apply_s"] += time.monotonic() - w.t_commit
        if isinstance(res, Rejected):
            self._error(w.conn, w.rid, Status.INVALID, res.reason, g)
            return
        if isinstance(res, Stale):
            self._error(w.conn, w.rid, Status.TIMEOUT,
                        f"seq {res.seq} is older than the session's last seq {res.last_seq}: "
                        "its outcome is no longer known", g)
            return
        op = w.op
        if op == "put":
            payload = {"version": res}
        elif op == "delete":
            payload = {"existed": bool(res[0]), "version": res[1]}
        else:
            payload = {"ok": bool(res[0]), "version": res[1]}
        w.conn.reply(w.rid, 0, payload)

    def _serve_reads(self, g: Group) -> None:
        keep = []
        store = self.store
        for index, batch in g.ready_reads:
            if index > g.applied:
                keep.append((index, batch))
                continue
            for req, w in batch:
                if w.done:
                    continue
                w.done = True
                try:
                    if req.op == "get":
                        got = store.get(g.bucket, req.key)
                        payload = ({"value": None, "version": None} if got is None
                                   else {"value": got[0], "version": got[1]})
                    else:
                        items, more = store.scan(g.bucket, req.prefix, start_after=req.start_after,
                                                 limit=req.limit)
                        payload = {"items": [[k, v] for k, v, *_ in items], "more": more}
                except Exception as exc:
                    log.exception("read failed", extra={"group": g.gid})
                    self._error(w.conn, w.rid, Status.UNAVAILABLE, f"read failed: {exc!r}", g)
                    continue
                w.conn.reply(w.rid, 0, payload)
        g.ready_reads = keep

    def _on_soft_state(self, g: Group, ss) -> None:
        was_leader = g.role == Role.LEADER
        if ss.leader != g.leader or ss.role != g.role:
            log.info("role change", extra={"group": g.gid, "role": Role(ss.role).name.lower(),
                                           "leader": ss.leader})
        g.leader = ss.leader
        g.role = ss.role
        if g.gid == META_GROUP and ss.role == Role.LEADER and not was_leader:
            self._replicate_map(g)
        if was_leader and ss.role != Role.LEADER:
            for pid in list(g.pending_pids):
                for w in self._pending.pop(pid, ()):
                    self._fail(w, Status.TIMEOUT, "leadership lost after proposing (outcome unknown)", g)
            g.pending_pids.clear()
        if g.read_batches and (was_leader or ss.role != Role.LEADER):
            # raft silently drops read requests when leadership changes; a read has no effect,
            # so tell the client to retry (with the new leader hint) rather than time out
            for batch in g.read_batches.values():
                for _req, w in batch:
                    self._fail(w, Status.NOT_LEADER, "leadership changed during the read", g)
            g.read_batches.clear()

    def _replicate_map(self, g: Group) -> None:
        """The meta group's state is the bucket map, one record. The map is static for now
        (no rebalancing), so a new meta leader only writes it if it is missing."""
        if self.store.get(META_BUCKET, MAP_KEY) is None:
            rec = msgpack.packb(self.map.to_record(), use_bin_type=True)
            g.proposals.append((Put(MAP_KEY, rec, self.hlc.now()), None))
            self._fed.add(g)
            self._wake.set()

    # -- snapshots (see snapshots.py) -----------------------------------------------------------

    def _start_snapshot(self, g: Group, m: Message) -> None:
        self.snapshots.start(g, m)

    async def receive_snapshot(self, stream, decoder: FrameDecoder, hello: dict, frames: list) -> None:
        await self.snapshots.receive(stream, decoder, hello, frames)


async def run_node(cfg: NodeConfig, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Open, serve until SIGTERM/SIGINT, then finish in-flight storage work and close."""
    node = Node(cfg)
    node.open()
    try:
        async with trio.open_nursery() as nursery:
            node.snapshots.nursery = nursery

            async def signals():
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                    async for sig in sigs:
                        log.info("signal received, shutting down", extra={"signal": int(sig)})
                        # hand leaderships over first (bounded), so that clients see a short
                        # NOT_LEADER redirect rather than an election timeout; a second
                        # signal stops at once
                        with trio.move_on_after(DRAIN_TIMEOUT_S) as scope:
                            async with trio.open_nursery() as inner:

                                async def second_signal():
                                    async for _sig in sigs:
                                        inner.cancel_scope.cancel()
                                        return

                                inner.start_soon(second_signal)
                                await node.drain()
                                inner.cancel_scope.cancel()
                        node._stopping = True
                        log.info("stopping", extra={"drain_timed_out": scope.cancelled_caught})
                        nursery.cancel_scope.cancel()
                        return

            nursery.start_soon(signals)
            port = await nursery.start(node.serve)
            task_status.started(port)
    finally:
        node.close()
