"""Client CPU per request against a trivial server: what the client itself costs.

    .venv/bin/python -m tests.client.bench_overhead [--n 3000] [--runs 3]

The server (a subprocess, 127.0.0.1, free port) answers every request of a frame at once in
one reply frame, so what is measured is the client: its own CPU time (user + system of this
process) per put, for AsyncClient sequential / 128 concurrent tasks and Client from 1 / 16
threads. Not a test (nothing is asserted); short by default.
"""

from __future__ import annotations

import argparse
import resource
import socket
import subprocess
import sys
import threading
import time

import trio

from client import AsyncClient, Client

SERVER = r'''
import sys, trio
from client.wire import FrameDecoder, encode_frame
port = int(sys.argv[1])
MAP = {"epoch": 1, "num_buckets": 8, "nodes": {1: f"127.0.0.1:{port}"},
       "buckets": [[1, [1], 1] for _ in range(8)]}
async def serve(stream):
    dec = FrameDecoder()
    try:
        while True:
            data = await stream.receive_some(262144)
            if not data:
                return
            out = []
            for msgs in dec.feed(data):
                for rid, op, args in msgs:
                    out.append([rid, 0, MAP if op == "map" else {"version": 1}])
            if out:
                await stream.send_all(encode_frame(out))
    except trio.BrokenResourceError:
        pass
trio.run(lambda: trio.serve_tcp(serve, port, host="127.0.0.1"))
'''


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


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


def measure(addrs: list[str], n: int) -> dict[str, tuple[float, float]]:
    out = {}

    async def run_async() -> None:
        async with AsyncClient(addrs) as c:
            await c.put(b"warm", b"v")
            c0, t0 = cpu_s(), time.perf_counter()
            for i in range(n):
                await c.put(b"k%d" % i, b"v")
            out["AsyncClient, sequential"] = ((cpu_s() - c0) / n, n / (time.perf_counter() - t0))
            per = n * 4 // 128

            async def worker() -> None:
                for i in range(per):
                    await c.put(b"k%d" % i, b"v")

            c0, t0 = cpu_s(), time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(128):
                    nursery.start_soon(worker)
            out["AsyncClient, 128 tasks"] = ((cpu_s() - c0) / (per * 128), per * 128 / (time.perf_counter() - t0))

    trio.run(run_async)
    with Client(addrs) as c:
        c.put(b"warm", b"v")
        c0, t0 = cpu_s(), time.perf_counter()
        for i in range(n):
            c.put(b"k%d" % i, b"v")
        out["Client, 1 thread"] = ((cpu_s() - c0) / n, n / (time.perf_counter() - t0))
        per = n * 2 // 16

        def worker() -> None:
            for i in range(per):
                c.put(b"k%d" % i, b"v")

        threads = [threading.Thread(target=worker) for _ in range(16)]
        c0, t0 = cpu_s(), time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out["Client, 16 threads"] = ((cpu_s() - c0) / (per * 16), per * 16 / (time.perf_counter() - t0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="puts per measurement")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    port = free_port()
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(port)])
    try:
        wait_port(port)
        runs: dict[str, list[tuple[float, float]]] = {}
        for _ in range(args.runs):
            for name, v in measure([f"127.0.0.1:{port}"], args.n).items():
                runs.setdefault(name, []).append(v)
        for name, vs in runs.items():
            vs.sort()
            cpu, rate = vs[len(vs) // 2]
            print(f"{name:26} client CPU per put {cpu * 1e6:6.1f} us (median of {len(vs)}), "
                  f"{rate:8,.0f} puts/s in that run")
    finally:
        server.kill()
        server.wait(10)


if __name__ == "__main__":
    main()
