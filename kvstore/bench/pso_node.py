"""A PySyncObj replica (a replicated dict) with a tiny RESP front end, for the comparison.

    kvstore bench pysyncobj-node --self 127.0.0.1:9001 --partners 127.0.0.1:9002,127.0.0.1:9003 \
        --listen 127.0.0.1:9101 [--journal DIR] [--no-batch]

PySyncObj runs its Raft loop in its own thread (autoTick). The front end is a trio server
speaking just enough RESP: PING, GET, SET, DEL, ROLE. A SET is proposed with a callback that
PySyncObj calls from its thread once the command is committed and applied (a follower forwards
it to the leader); the callback hands the outcome back to trio with the loop's token. Replies
on one connection go out in request order (RESP pipelining), as soon as the oldest is ready.
Reads are served from the local replica: PySyncObj has no read index, so they are not
linearizable, and the comparison table says so.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import deque

import trio

from kvstore.bench.drivers.resp import RespParser, split_endpoint

FAIL_NAMES = {1: "QUEUE_FULL", 2: "MISSING_LEADER", 3: "DISCARDED", 4: "NOT_LEADER",
              5: "LEADER_CHANGED", 6: "REQUEST_DENIED", 7: "UNKNOWN_OUTCOME"}


def bulk(value: bytes | None) -> bytes:
    if value is None:
        return b"$-1\r\n"
    return b"$%d\r\n%s\r\n" % (len(value), value)


def error(message: str) -> bytes:
    return b"-ERR " + message.encode().replace(b"\r\n", b" ") + b"\r\n"


class _Reply:
    __slots__ = ("data",)

    def __init__(self, data: bytes | None = None) -> None:
        self.data = data


class FrontEnd:
    def __init__(self, syncobj, store) -> None:
        self.syncobj = syncobj
        self.store = store
        self.token = trio.lowlevel.current_trio_token()

    async def serve_connection(self, stream: trio.SocketStream) -> None:
        parser = RespParser()
        pending: deque[_Reply] = deque()
        ready = trio.Event()
        closed = False

        def wake() -> None:
            ready.set()

        async def writer() -> None:
            nonlocal ready
            while not closed or pending:
                await ready.wait()
                ready = trio.Event()
                out = []
                while pending and pending[0].data is not None:
                    out.append(pending.popleft().data)
                if out:
                    await stream.send_all(b"".join(out))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            try:
                while True:
                    data = await stream.receive_some(1 << 16)
                    if not data:
                        break
                    parser.feed(data)
                    while True:
                        ok, request = parser.next_reply()
                        if not ok:
                            break
                        reply = _Reply()
                        pending.append(reply)
                        self.handle(request, reply, wake)
                    wake()
            except (trio.BrokenResourceError, OSError, ValueError):
                pass
            finally:
                closed = True
                nursery.cancel_scope.cancel()

    def handle(self, request, reply: _Reply, wake) -> None:
        if not isinstance(request, list) or not request or not all(isinstance(a, bytes) for a in request):
            reply.data = error("expected an array of bulk strings")
            return
        cmd = request[0].upper()
        if cmd == b"PING":
            reply.data = b"+PONG\r\n"
        elif cmd == b"GET" and len(request) == 2:
            reply.data = bulk(self.store.get(request[1]))
        elif cmd == b"ROLE":
            leader = self.syncobj._getLeader()
            is_leader = leader is not None and leader == self.syncobj.selfNode
            reply.data = bulk(b"leader" if is_leader else b"follower")
        elif cmd in (b"SET", b"DEL") and len(request) == (3 if cmd == b"SET" else 2):
            token = self.token

            def done(result, err, reply=reply) -> None:  # called on PySyncObj's thread
                data = (b"+OK\r\n" if cmd == b"SET" else b":1\r\n") if err == 0 else \
                    error(FAIL_NAMES.get(err, str(err)))

                def deliver() -> None:
                    reply.data = data
                    wake()

                try:
                    token.run_sync_soon(deliver)
                except trio.RunFinishedError:
                    pass

            if cmd == b"SET":
                self.store.set(request[1], request[2], callback=done)
            else:
                self.store.pop(request[1], None, callback=done)
        else:
            reply.data = error(f"unsupported command {request[0][:20]!r}")


async def serve(listen: str, syncobj, store) -> None:
    host, port = split_endpoint(listen)
    front = FrontEnd(syncobj, store)
    await trio.serve_tcp(front.serve_connection, port, host=host)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="kvstore bench pysyncobj-node")
    p.add_argument("--self", required=True, help="this node's Raft address host:port")
    p.add_argument("--partners", required=True, help="comma-separated Raft addresses of the others")
    p.add_argument("--listen", required=True, help="RESP front end address host:port")
    p.add_argument("--journal", metavar="DIR", help="file journal (and full dump) in DIR; default in memory")
    p.add_argument("--no-batch", action="store_true", help="appendEntriesUseBatch=False")
    args = p.parse_args(argv)

    from pysyncobj import SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict

    conf = {"appendEntriesUseBatch": not args.no_batch, "dynamicMembershipChange": False}
    if args.journal:
        os.makedirs(args.journal, exist_ok=True)
        conf["journalFile"] = os.path.join(args.journal, "journal.bin")
        conf["fullDumpFile"] = os.path.join(args.journal, "dump.bin")
    store = ReplDict()
    partners = [x for x in args.partners.split(",") if x]
    syncobj = SyncObj(args.self, partners, conf=SyncObjConf(**conf), consumers=[store])
    try:
        trio.run(serve, args.listen, syncobj, store)
    except KeyboardInterrupt:
        pass
    finally:
        syncobj.destroy()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
