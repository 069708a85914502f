#!/usr/bin/env python3
"""Client CPU per operation against a server that answers at once: what the client costs.

    .venv/bin/python scripts/bench_client.py [--ops 20000] [--runs 3] [--tasks 64]
        [--only put,get,gen-W,gen-A] [--delay-ms MIN,MAX] [--src DIR]

The server is a subprocess on 127.0.0.1 (three free ports: three fake nodes, the buckets'
leaders spread over them, so the client keeps three connections as with a real cluster) that
answers every request of a frame at once, in one reply frame, or with `--delay-ms MIN,MAX`
after a random delay per request (e.g. 2,12: about the latency of a real 3-node cluster, so
frames carry as few requests as there); it never applies anything. So the CPU time of THIS
process (time.process_time) divided by the operations done is the client's own CPU per
operation:

    put       `--tasks` trio tasks sharing one AsyncClient, each `await c.put(k, v)` in a loop
    get       the same with `await c.get(k)` (linearizable)
    gen-W     the benchmark generator's load loop (kvstore.bench.runner.run_load, closed
              loop) through the kvstore driver, workload W (100% update): what a
              `kvstore bench compare` generator process spends per operation
    gen-A     the same, workload A (50% read, 50% update)

Each measurement runs `--runs` times (interleaved, after a discarded warm-up run) and prints
the median, then requests per frame and the user/system split of the put/get runs.
`--src DIR` imports `client` / `kvstore` from DIR (default: this checkout), e.g. a
`git worktree add /tmp/old <commit>` for an A/B comparison (alternate the two sides a few
times: the machine is shared). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Three fake nodes (three ports) in one process; node b % 3 + 1 leads bucket b. Answers
# map/put/get/delete/cas, at once (one reply frame per received chunk of frames) or, with a
# delay range, each request after its own random delay (replies due together share a frame,
# as a node's turn answers many requests at once).
SERVER = r'''
import heapq, random, selectors, socket, sys, time
from client.wire import FrameDecoder, encode_frame
ports = [int(p) for p in sys.argv[1].split(",")]
lo, hi = (float(x) / 1000 for x in sys.argv[2].split(","))
NB = 64
MAP = {"epoch": 1, "num_buckets": NB,
       "nodes": {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(ports)},
       "buckets": [[1, list(range(1, len(ports) + 1)), b % len(ports) + 1] for b in range(NB)]}
PUT = {"version": 1}
GET = {"value": b"v" * 100, "version": 1}
OTHER = {"existed": True, "ok": True, "version": 1}
rng = random.Random(1)
sel = selectors.DefaultSelector()
for port in ports:
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", port))
    ls.listen(64)
    ls.setblocking(False)
    sel.register(ls, selectors.EVENT_READ, None)
due = []  # (time, n, conn, reply)
n = 0
def send(conn, out):
    try:
        conn.setblocking(True)
        conn.sendall(encode_frame(out))
        conn.setblocking(False)
    except OSError:
        pass
while True:
    timeout = None if not due else max(0.0, due[0][0] - time.monotonic())
    for key, _ in sel.select(timeout):
        if key.data is None:
            conn, _ = key.fileobj.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sel.register(conn, selectors.EVENT_READ, FrameDecoder())
            continue
        conn = key.fileobj
        try:
            data = conn.recv(262144)
        except OSError:
            data = b""
        if not data:
            sel.unregister(conn)
            conn.close()
            continue
        out = []
        now = time.monotonic()
        for msgs in key.data.feed(data):
            for rid, op, args in msgs:
                reply = [rid, 0, PUT if op == "put" else GET if op == "get"
                         else MAP if op == "map" else OTHER]
                if hi > 0 and op != "map":
                    n += 1
                    heapq.heappush(due, (now + rng.uniform(lo, hi), n, conn, reply))
                else:
                    out.append(reply)
        if out:
            send(conn, out)
    now = time.monotonic()
    ready = {}
    while due and due[0][0] <= now:
        _, _, conn, reply = heapq.heappop(due)
        ready.setdefault(conn, []).append(reply)
    for conn, out in ready.items():
        if conn.fileno() >= 0:
            send(conn, out)
'''


# free_port/wait_port as in tests/client/bench_overhead.py, kept here so that this script
# imports nothing of the project's code but the client under test (--src may be an old tree)
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


frames = {"sent": 0, "received": 0, "ops": 0, "user": 0.0, "sys": 0.0}  # over every client measurement


def measure_client(addr: str, op: str, ops: int, tasks: int) -> tuple[float, float]:
    """(CPU seconds per op, ops/s) of `tasks` tasks doing `op` on one AsyncClient."""
    import trio

    from client import AsyncClient

    per = max(1, ops // tasks)
    out: list[tuple[float, float]] = []

    async def main() -> None:
        async with AsyncClient([addr], timeout=10.0, max_inflight=4096) as c:
            await c.put(b"warm", b"v")
            value = b"v" * 100

            async def worker(w: int) -> None:
                keys = [b"user%d:%d" % (w, i) for i in range(64)]
                if op == "put":
                    for i in range(per):
                        await c.put(keys[i & 63], value)
                else:
                    for i in range(per):
                        await c.get(keys[i & 63])

            c0, t0, u0 = time.process_time(), time.perf_counter(), os.times()
            async with trio.open_nursery() as nursery:
                for w in range(tasks):
                    nursery.start_soon(worker, w)
            n = per * tasks
            out.append(((time.process_time() - c0) / n, n / (time.perf_counter() - t0)))
            u1 = os.times()
            frames["user"] += u1.user - u0.user
            frames["sys"] += u1.system - u0.system
            conns = c.statistics()["connections"].values()
            frames["sent"] += sum(s["frames_sent"] for s in conns)
            frames["received"] += sum(s["frames_received"] for s in conns)
            frames["ops"] += sum(s["messages_sent"] for s in conns)

    trio.run(main)
    return out[0]


def measure_generator(addr: str, workload: str, ops: int, tasks: int) -> tuple[float, float]:
    """(CPU seconds per op, ops/s) of the bench generator's load loop + kvstore driver."""
    import trio

    from kvstore.bench.drivers.kvstore_driver import KvstoreDriver
    from kvstore.bench.runner import LoadConfig, run_load

    # closed loop for about `ops` operations: a short first run tells the rate
    out: list[tuple[float, float]] = []

    async def main() -> None:
        driver = KvstoreDriver([addr], timeout_s=10.0)
        async with trio.open_nursery() as nursery:
            await driver.open(nursery)
            seconds = 1.0
            for attempt in range(2):
                cfg = LoadConfig(workload=workload, records=10_000, value_size=100, concurrency=tasks,
                                 duration_s=seconds, warmup_s=0.2, interval_s=10.0)
                raw = await run_load(driver, cfg)
                done = sum(v["ok"] for v in raw["ops"].values())
                errors = sum(raw["errors"].values())
                if errors:
                    raise RuntimeError(f"generator errors: {raw['errors']} {raw['error_samples']}")
                if attempt == 0:
                    seconds = min(20.0, max(1.0, ops / max(1.0, done / seconds)))
            out.append((raw["cpu_s"] / done, done / raw["wall_s"]))
            await driver.close()
            nursery.cancel_scope.cancel()

    trio.run(main)
    return out[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=20000, help="operations per measurement")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=64, help="concurrent tasks on one client")
    ap.add_argument("--only", default="put,get,gen-W,gen-A", help="comma-separated measurements")
    ap.add_argument("--delay-ms", default="0,0",
                    help="MIN,MAX: each reply waits a random delay in this range (default: none)")
    ap.add_argument("--src", default=REPO, help="import client/kvstore from this directory")
    args = ap.parse_args()
    src = os.path.abspath(args.src)
    sys.path.insert(0, src)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    for n in names:
        if n not in ("put", "get") and not (n.startswith("gen-") and len(n) > 4):
            ap.error(f"unknown measurement {n!r}")
    ports = [free_port() for _ in range(3)]
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    server = subprocess.Popen([sys.executable, "-c", SERVER, ",".join(map(str, ports)), args.delay_ms],
                              env=env)
    addr = f"127.0.0.1:{ports[0]}"
    try:
        for port in ports:
            wait_port(port)
        results: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
        # a discarded warm-up run: the first run of a process pays for its heap growing (the
        # generator being measured is a long-running process)
        measure_client(addr, "put", args.ops // 2, args.tasks)
        for k in frames:
            frames[k] = 0
        for _ in range(args.runs):
            for n in names:
                if n.startswith("gen-"):
                    results[n].append(measure_generator(addr, n[4:], args.ops, args.tasks))
                else:
                    results[n].append(measure_client(addr, n, args.ops, args.tasks))
        print(f"src {src}; {args.tasks} tasks; server delay {args.delay_ms} ms; median of {args.runs} runs")
        for n, vs in results.items():
            cpu = statistics.median(v[0] for v in vs)
            rate = statistics.median(v[1] for v in vs)
            runs = " ".join(f"{v[0] * 1e6:.1f}" for v in vs)
            print(f"{n:8} CPU per op {cpu * 1e6:6.1f} us   ({runs})   {rate:9,.0f} ops/s")
        if frames["ops"]:
            print(f"client measurements: {frames['ops'] / max(1, frames['sent']):.1f} requests per "
                  f"frame sent, {frames['ops'] / max(1, frames['received']):.1f} replies per frame received; "
                  f"{frames['user'] * 1e6 / frames['ops']:.1f} us user + {frames['sys'] * 1e6 / frames['ops']:.1f} us system per op")
    finally:
        server.kill()
        server.wait(10)


if __name__ == "__main__":
    main()
