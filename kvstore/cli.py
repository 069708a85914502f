"""The `kvstore` command: serve one node, run a local cluster, talk to a cluster, benchmark.

    kvstore serve --id 1 --data-dir d1 --cluster 1=127.0.0.1:7001,2=127.0.0.1:7002,...
    kvstore cluster up [--nodes 3] [--data-dir ./data] [--base-port 7001] [--buckets 64]
    kvstore put KEY VALUE | get KEY | delete KEY | scan [PREFIX] | status   [--cluster ...]
    kvstore bench ...            (the load generator, kvstore.bench)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time

DEFAULT_CLUSTER = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {v}")
    return v


def _add_serve_tuning(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tick-ms", type=_positive, default=100, help="raft tick (default 100 ms)")
    p.add_argument("--election-ticks", type=_positive, default=10,
                   help="election timeout in ticks, randomized up to 2x (default 10)")
    p.add_argument("--heartbeat-ticks", type=_positive, default=1, help="default 1")
    p.add_argument("--compact-threshold", type=_positive, default=10_000,
                   help="compact a group's log once it holds this many applied entries")
    p.add_argument("--request-timeout", type=float, default=5.0,
                   help="seconds a write or read may wait before TIMEOUT (default 5)")
    p.add_argument("--no-fsync", action="store_true",
                   help="do not fsync (UNSAFE: acknowledged writes may be lost on power loss)")
    p.add_argument("--storage-thread", action="store_true",
                   help="run storage writes in a worker thread instead of on the event loop's "
                        "thread (overlaps fsync with networking; costs a GIL hand-off per turn)")
    p.add_argument("--log", choices=("lmdb", "wal"), default=None,
                   help="where Raft logs live: wal (an append-only log, one sequential fdatasync "
                        "per batch; applies go to LMDB in synced commits every 100 ms) or lmdb "
                        "(one synced LMDB commit per batch). Default: the data directory's mode; "
                        "a new one: wal, or lmdb with --storage-thread ($KVSTORE_STORE_LOG "
                        "overrides)")
    p.add_argument("--switch-interval-ms", type=float, default=0.5,
                   help="sys.setswitchinterval for --storage-thread (GIL hand-back latency)")
    p.add_argument("--log-level", default="info")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="kvstore", description="A replicated key-value store.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run one node")
    s.add_argument("--id", type=_positive, required=True, help="this node's id (in --cluster)")
    s.add_argument("--data-dir", required=True)
    s.add_argument("--cluster", required=True, help="ID=HOST:PORT,ID=HOST:PORT,...")
    s.add_argument("--buckets", type=_positive, default=64, help="bucket count of a new cluster")
    s.add_argument("--replication", type=_positive, default=3,
                   help="replicas per bucket of a new cluster (capped at the node count)")
    s.add_argument("--listen-host", default=None,
                   help="bind here instead of the host in this node's --cluster entry")
    s.add_argument("--log-file", default=None, help="log here instead of stderr")
    _add_serve_tuning(s)

    c = sub.add_parser("cluster", help="a local cluster of server processes")
    csub = c.add_subparsers(dest="cluster_cmd", required=True)
    up = csub.add_parser("up", help="start N nodes on 127.0.0.1 in the foreground")
    up.add_argument("--nodes", type=_positive, default=3)
    up.add_argument("--data-dir", default="./data")
    up.add_argument("--base-port", type=_positive, default=7001)
    up.add_argument("--buckets", type=_positive, default=64)
    up.add_argument("--replication", type=_positive, default=3)
    up.add_argument("--ready-timeout", type=float, default=60.0,
                    help="seconds to wait for every bucket to accept a write")
    _add_serve_tuning(up)

    def client_cmd(name: str, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_)
        p.add_argument("--cluster", default=DEFAULT_CLUSTER, help="HOST:PORT,... seeds")
        p.add_argument("--timeout", type=float, default=10.0)
        return p

    g = client_cmd("get", "read a key")
    g.add_argument("key")
    g.add_argument("--consistency", choices=["linearizable", "follower"], default="linearizable")
    p = client_cmd("put", "write a key")
    p.add_argument("key")
    p.add_argument("value")
    d = client_cmd("delete", "delete a key")
    d.add_argument("key")
    sc = client_cmd("scan", "list keys with a prefix")
    sc.add_argument("prefix", nargs="?", default="")
    sc.add_argument("--limit", type=_positive, default=100)
    st = client_cmd("status", "nodes, buckets, leaders, lagging replicas")
    st.add_argument("--json", action="store_true", help="print every node's raw status")
    sub.add_parser("bench", help="the load generator (kvstore bench --help)", add_help=False)
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "bench":
        return _bench(argv[1:])
    args = build_parser().parse_args(argv)
    if args.cmd == "serve":
        return _serve(args)
    if args.cmd == "cluster":
        return _cluster_up(args)
    return _client_command(args)


# -- serve ------------------------------------------------------------------------------------


def _serve(args) -> int:
    import trio

    from .logs import setup_logging
    from .node import NodeConfig, run_node
    from .placement import parse_cluster

    try:
        nodes = parse_cluster(args.cluster)
    except ValueError as exc:
        print(f"kvstore serve: {exc}", file=sys.stderr)
        return 2
    if args.id not in nodes:
        print(f"kvstore serve: --id {args.id} is not in --cluster", file=sys.stderr)
        return 2
    os.makedirs(args.data_dir, exist_ok=True)
    setup_logging(args.id, args.log_level, args.log_file)
    cfg = NodeConfig(
        node_id=args.id, data_dir=args.data_dir, nodes=nodes, num_buckets=args.buckets,
        replication=args.replication, tick_ms=args.tick_ms, election_ticks=args.election_ticks,
        heartbeat_ticks=args.heartbeat_ticks, compact_threshold=args.compact_threshold,
        request_timeout_s=args.request_timeout, fsync=not args.no_fsync,
        storage_thread=args.storage_thread, switch_interval_s=args.switch_interval_ms / 1000,
        listen_host=args.listen_host, log=args.log)

    async def run():
        async with trio.open_nursery() as nursery:
            await nursery.start(run_node, cfg)

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass
    return 0


# -- cluster up -------------------------------------------------------------------------------


def _serve_argv(i: int, spec: str, data_dir: str, args) -> list[str]:
    argv = [sys.executable, "-m", "kvstore", "serve", "--id", str(i), "--cluster", spec,
            "--data-dir", data_dir, "--buckets", str(args.buckets),
            "--replication", str(args.replication), "--tick-ms", str(args.tick_ms),
            "--election-ticks", str(args.election_ticks),
            "--heartbeat-ticks", str(args.heartbeat_ticks),
            "--compact-threshold", str(args.compact_threshold),
            "--request-timeout", str(args.request_timeout), "--log-level", args.log_level]
    if args.no_fsync:
        argv.append("--no-fsync")
    if args.storage_thread:
        argv.append("--storage-thread")
    argv += ["--switch-interval-ms", str(args.switch_interval_ms)]
    if args.log:
        argv += ["--log", args.log]
    return argv


def _cluster_up(args) -> int:
    from .rawclient import wait_writable

    n = args.nodes
    addrs = [f"127.0.0.1:{args.base_port + i}" for i in range(n)]
    spec = ",".join(f"{i + 1}={a}" for i, a in enumerate(addrs))
    base = os.path.abspath(args.data_dir)
    procs: dict[int, subprocess.Popen] = {}
    logs = {}
    stop = {"sig": None}

    def on_signal(signum, _frame):
        stop["sig"] = signum

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for i in range(1, n + 1):
            d = os.path.join(base, f"node{i}")
            os.makedirs(d, exist_ok=True)
            logs[i] = open(os.path.join(d, "node.log"), "ab")
            procs[i] = subprocess.Popen(_serve_argv(i, spec, d, args), stdout=logs[i],
                                        stderr=subprocess.STDOUT, start_new_session=True)
        print(f"started {n} nodes (logs in {base}/node*/node.log); waiting until every "
              f"bucket accepts a write ...", flush=True)

        def progress(done, total):
            print(f"  {done}/{total} buckets writable", flush=True)

        try:
            wait_writable(addrs, args.ready_timeout, progress)
        except TimeoutError as exc:
            print(f"cluster not ready: {exc}", file=sys.stderr)
            return 1
        print("\ncluster is up:")
        for i, a in enumerate(addrs, 1):
            print(f"  node {i}: {a}   data: {os.path.join(base, f'node{i}')}")
        seeds = ",".join(addrs)
        print(f"\ntry:\n  kvstore put hello world --cluster {seeds}\n"
              f"  kvstore get hello --cluster {seeds}\n  kvstore status --cluster {seeds}\n"
              f"  python -c 'from client import Client; c = Client(\"{seeds}\"); "
              f"print(c.get(\"hello\"))'\nCtrl-C stops all nodes.", flush=True)
        alive = set(procs)
        while alive and stop["sig"] is None:
            time.sleep(0.2)
            for i in sorted(alive):
                rc = procs[i].poll()
                if rc is not None:
                    alive.discard(i)
                    print(f"\n!!! node {i} ({addrs[i - 1]}) EXITED with code {rc}; it is not "
                          f"restarted. See {base}/node{i}/node.log. {len(alive)} of {n} "
                          f"nodes still running.\n", file=sys.stderr, flush=True)
        if not alive:
            print("all nodes have exited", file=sys.stderr)
            return 1
        print("stopping all nodes ...", flush=True)
        return 0
    finally:
        for _round in range(2):  # the second SIGTERM skips the leadership hand-over
            for p in procs.values():
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            time.sleep(0.2)
        end = time.monotonic() + 10
        for p in procs.values():
            try:
                p.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for f in logs.values():
            f.close()
        for s, h in old.items():
            signal.signal(s, h)


# -- client commands --------------------------------------------------------------------------


def _client_command(args) -> int:
    try:
        from client import Client
    except ImportError as exc:
        print(f"kvstore: the client library is not available: {exc}", file=sys.stderr)
        return 2
    seeds = [s.strip() for s in args.cluster.split(",") if s.strip()]
    try:
        client = Client(seeds)
    except Exception as exc:
        print(f"kvstore: cannot create a client: {exc}", file=sys.stderr)
        return 2
    try:
        return _run_client_command(client, args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        print(f"kvstore {args.cmd}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        close = getattr(client, "close", None)
        if close is not None:
            close()


def _show(b: bytes | None) -> str:
    if b is None:
        return "(nil)"
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return repr(b)


def _run_client_command(client, args) -> int:
    t = args.timeout
    if args.cmd == "put":
        version = client.put(args.key, args.value, timeout=t)
        print(f"OK version={version}")
    elif args.cmd == "get":
        value = client.get(args.key, consistency=args.consistency, timeout=t)
        print(_show(value))
        return 0 if value is not None else 1
    elif args.cmd == "delete":
        existed = client.delete(args.key, timeout=t)
        print("deleted" if existed else "not found")
    elif args.cmd == "scan":
        items = client.scan(args.prefix, limit=args.limit, timeout=t)
        for k, v in items:
            print(f"{_show(k)}\t{_show(v)}")
        print(f"({len(items)} keys)", file=sys.stderr)
    elif args.cmd == "status":
        status = collect_status(client, t)
        if args.json:
            print(json.dumps(status, indent=2, default=repr))
        else:
            print_status(status)
    return 0


def collect_status(client, timeout: float) -> dict:
    """Every node's status (a node that does not answer is reported down)."""
    mp = client.bucket_map(timeout=timeout)
    nodes = {int(k): v for k, v in mp["nodes"].items()}
    out = {"map": mp, "nodes": {}}
    for nid, addr in sorted(nodes.items()):
        try:
            out["nodes"][nid] = client.status(addr, timeout=min(timeout, 3.0))
        except Exception as exc:
            out["nodes"][nid] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def print_status(st: dict) -> None:
    mp = st["map"]
    print(f"cluster: {len(mp['nodes'])} nodes, {mp['num_buckets']} buckets, map epoch {mp['epoch']}")
    print(f"{'node':>4}  {'address':<22} {'state':<6} {'replicas':>8} {'leaders':>7}  lagging")
    no_leader = set(range(mp["num_buckets"]))
    for nid, s in sorted(st["nodes"].items()):
        addr = mp["nodes"].get(nid) or mp["nodes"].get(str(nid))
        if "error" in s:
            print(f"{nid:>4}  {addr:<22} {'DOWN':<6} {'-':>8} {'-':>7}  ({s['error']})")
            continue
        no_leader -= set(s.get("leader_of", []))
        lag = ", ".join(f"b{x['bucket']}@n{x['node']}(-{x['commit'] - x['match']})"
                        for x in s.get("lagging", [])) or "none"
        print(f"{nid:>4}  {addr:<22} {'up':<6} {len(s.get('buckets', [])):>8} "
              f"{len(s.get('leader_of', [])):>7}  {lag}")
    if no_leader:
        print(f"buckets without a known leader: {sorted(no_leader)}")
    else:
        print("every bucket has a leader")


# -- bench ------------------------------------------------------------------------------------


def _bench(argv: list[str]) -> int:
    try:
        from . import bench
    except ImportError as exc:
        print(f"kvstore bench: the benchmark package (kvstore.bench) is not installed: {exc}",
              file=sys.stderr)
        return 2
    rc = bench.main(argv)
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())

