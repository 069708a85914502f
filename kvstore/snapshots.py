"""Snapshot transfer between nodes: stream a bucket to a follower that fell behind the log.

Sender: when a group's Ready holds a SNAP message for a peer, the node opens a separate
connection to it ([["peer", {"id": me, "snapshot": <the SNAP message>}]]), streams the bucket's
`storage.snapshot_chunks` (each pulled in a worker thread, each a bounded frame), sends
[["end", n]] and waits for [["ok"]]; then it reports the outcome to raft (`report_snapshot`).
At most one stream per (group, peer); every step has a deadline.

Receiver: collects the chunks (bounded in total), then — in the node loop, between turns, never
under a Ready that the writer is persisting — installs them with `storage.install_snapshot`
and steps the SNAP message, its metadata replaced by the installed one (the stream is taken at
the sender's applied index, which may be past the SNAP's index). It refuses a snapshot that raft
would not restore (older term, or already committed that far), since the store must never run
ahead of raft's log; if its log already holds the snapshot's last entry it just steps the SNAP
(raft then only learns the commit index).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

import raft
from client.wire import FrameDecoder, FrameError, encode_frame
from raft.types import Message, Snapshot

from . import codec
from .placement import split_addr

if TYPE_CHECKING:
    from .node import Group, Node

log = logging.getLogger("kvstore.snapshots")

SNAPSHOT_BYTES_MAX = 512 * 1024 * 1024
SNAPSHOT_CHUNK_BYTES = 512 * 1024
SNAPSHOT_TIMEOUT_S = 60.0


class SnapshotTransfer:
    def __init__(self, node: "Node") -> None:
        self.node = node
        self.nursery: trio.Nursery | None = None

    def start(self, g: "Group", m: Message) -> None:
        if m.to in g.snapshot_sending:
            return
        g.snapshot_sending.add(m.to)
        self.node._token.run_sync_soon(self._spawn, g, m)

    def _spawn(self, g: "Group", m: Message) -> None:
        self.nursery.start_soon(self._send, g, m)

    async def _send(self, g: "Group", m: Message) -> None:
        ok = False
        try:
            host, port = split_addr(self.node.map.nodes[m.to])
            chunks = self.node.store.snapshot_chunks(g.gid, g.bucket, SNAPSHOT_CHUNK_BYTES)
            with trio.fail_after(SNAPSHOT_TIMEOUT_S):
                stream = await trio.open_tcp_stream(host, port)
                try:
                    hello = {"id": self.node.id, "snapshot": codec.encode_message(g.gid, m)}
                    await stream.send_all(encode_frame([["peer", hello]]))
                    sent = 0
                    while True:
                        chunk = await trio.to_thread.run_sync(next, chunks, None)
                        if chunk is None:
                            break
                        sent += len(chunk)
                        await stream.send_all(encode_frame([["chunk", chunk]]))
                    await stream.send_all(encode_frame([["end", sent]]))
                    dec = FrameDecoder()
                    while not ok:
                        data = await stream.receive_some(65536)
                        if not data:
                            break
                        for f in dec.feed(data):
                            if f and f[0] and f[0][0] == "ok":
                                ok = True
                finally:
                    await stream.aclose()
        except Exception as exc:
            log.warning("snapshot send failed", extra={"group": g.gid, "peer": m.to, "error": repr(exc)})
        finally:
            close = getattr(locals().get("chunks"), "close", None)
            if close is not None:
                close()
            g.snapshot_sending.discard(m.to)
            self.node.stats["snapshots_sent"] += 1 if ok else 0
            log.info("snapshot sent" if ok else "snapshot not delivered",
                     extra={"group": g.gid, "peer": m.to})
            self.node._local_inbox.append(lambda: g.raw.report_snapshot(m.to, ok))
            self.node._kick()

    async def receive(self, stream, decoder: FrameDecoder, hello: dict, frames: list) -> None:
        peer = hello.get("id")
        try:
            gid, msg = codec.decode_message(hello.get("snapshot"))
        except codec.CodecError as exc:
            log.warning("bad snapshot header", extra={"peer": repr(peer), "error": str(exc)})
            return
        g = self.node.groups.get(gid)
        if g is None or peer != msg.frm or msg.snapshot is None:
            return
        chunks: list[bytes] = []
        total = 0
        done = False
        with trio.move_on_after(SNAPSHOT_TIMEOUT_S):
            while not done:
                for f in frames:
                    for item in f:
                        if not isinstance(item, list) or not item:
                            raise FrameError("bad snapshot item")
                        if item[0] == "chunk" and len(item) == 2 and isinstance(item[1], bytes):
                            total += len(item[1])
                            if total > SNAPSHOT_BYTES_MAX:
                                raise FrameError("snapshot too large")
                            chunks.append(item[1])
                        elif item[0] == "end":
                            done = True
                if done:
                    break
                data = await stream.receive_some(1 << 20)
                if not data:
                    return
                frames = decoder.feed(data)
        if not done:
            return
        result = trio.Event()
        outcome = {}

        async def install():
            outcome["ok"] = await self._install(g, msg, chunks)
            result.set()

        self.node._installs.append((g, install))
        self.node._kick()
        with trio.move_on_after(SNAPSHOT_TIMEOUT_S):
            await result.wait()
        if outcome.get("ok"):
            await stream.send_all(encode_frame([["ok"]]))

    async def _install(self, g: "Group", msg: Message, chunks: list[bytes]) -> bool:
        """Runs in the loop task between turns, while neither the writer nor a Ready of this
        group is in flight. Installs the data, then steps the SNAP."""
        s_meta = msg.snapshot.metadata
        committed = max(g.commit, g.raw.raft.log.committed)
        if msg.term < g.raw.term:
            # raft would ignore a message from an older term; installing the data anyway
            # would leave raft's log behind the store's
            log.info("stale snapshot ignored", extra={"group": g.gid, "term": msg.term})
            return False
        if committed >= s_meta.index or g.applied >= s_meta.index:
            log.info("snapshot not needed", extra={"group": g.gid, "index": s_meta.index, "commit": g.commit})
            return False
        if g.raw.raft.log.match_term(s_meta.index, s_meta.term):
            # Our log already holds the snapshot's last entry: raft will just commit up to it
            # and we apply from our own log; installing data would drop entries raft still
            # has to hand us.
            g.raw.step(msg)
            return True
        try:
            meta = await trio.to_thread.run_sync(
                self.node.store.install_snapshot, g.gid, g.bucket, None, iter(chunks))
        except Exception:
            log.exception("snapshot install failed", extra={"group": g.gid})
            return False
        msg.snapshot = Snapshot(meta, msg.snapshot.data)
        g.applied = max(g.applied, meta.index)
        g.first_index = meta.index + 1
        try:
            g.raw.step(msg)
        except raft.RaftError as exc:
            log.warning("snapshot step refused", extra={"group": g.gid, "error": repr(exc)})
        self.node.stats["snapshots_installed"] += 1
        log.info("snapshot installed", extra={"group": g.gid, "index": meta.index})
        return True
