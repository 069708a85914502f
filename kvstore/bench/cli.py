"""`kvstore bench`: command-line entry of the load generator.

    kvstore bench [run] --driver kvstore --endpoints 127.0.0.1:7001 --workload B ...
    kvstore bench compare [...]          (see kvstore.bench.compare)
    kvstore bench pysyncobj-node [...]   (a PySyncObj replica with a RESP front end)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import trio

from kvstore.bench.drivers import DRIVER_NAMES
from kvstore.bench.keys import CHOOSERS
from kvstore.bench.runner import LoadConfig
from kvstore.bench.workloads import WORKLOADS

CONSISTENCY = ("linearizable", "follower", "serializable")


def add_load_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("load")
    g.add_argument("--workload", "-w", default="A", type=str.upper, choices=sorted(WORKLOADS),
                   help="; ".join(f"{w.name}: {w.description}" for w in WORKLOADS.values()).replace("%", "%%"))
    g.add_argument("--distribution", "-d", choices=sorted(CHOOSERS), default=None,
                   help="key choice (default: the workload's, zipfian except D: latest)")
    g.add_argument("--records", type=int, default=10_000, help="records loaded before the run")
    g.add_argument("--value-size", type=int, default=100, help="value bytes")
    g.add_argument("--concurrency", "-c", type=int, default=64, help="concurrent clients in total")
    g.add_argument("--duration", type=float, default=10.0, help="measured seconds (after warm-up)")
    g.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds, not measured")
    g.add_argument("--rate", type=float, default=0.0,
                   help="target ops/s in total, open loop (latency from intended start); 0 = closed loop")
    g.add_argument("--consistency", default="linearizable", choices=CONSISTENCY,
                   help="read consistency (kvstore: linearizable|follower; etcd: linearizable|serializable)")
    g.add_argument("--scan-max", type=int, default=100, help="workload E: longest scan")
    g.add_argument("--procs", type=int, default=1, help="generator processes (histograms merged)")
    g.add_argument("--op-timeout", type=float, default=10.0, help="seconds before an op counts as timeout")
    g.add_argument("--seed", type=int, default=1)


def config_from_args(args) -> LoadConfig:
    return LoadConfig(workload=args.workload, distribution=args.distribution, records=args.records,
                      value_size=args.value_size, concurrency=args.concurrency, duration_s=args.duration,
                      warmup_s=args.warmup, rate=args.rate, consistency=args.consistency,
                      scan_max=args.scan_max, seed=args.seed, op_timeout_s=args.op_timeout,
                      processes=args.procs)


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kvstore bench", description="YCSB-style load generator")
    p.add_argument("--driver", default="kvstore", choices=DRIVER_NAMES)
    p.add_argument("--endpoints", "-e", default="127.0.0.1:7001",
                   help="comma-separated host:port of the store's nodes (or front ends)")
    p.add_argument("--connections", type=int, default=4, help="redis/pysyncobj: pipelined connections per process")
    p.add_argument("--no-load", action="store_true", help="skip loading --records first")
    p.add_argument("--json", metavar="PATH", help="write the JSON report here ('-' for stdout)")
    p.add_argument("--png", metavar="PATH", help="write a throughput/latency-over-time plot here")
    p.add_argument("--quiet", "-q", action="store_true", help="no live display, no summary")
    add_load_arguments(p)
    return p


def run_main(argv: list[str]) -> int:
    from kvstore.bench.progress import Progress
    from kvstore.bench.report import plot_png, summary_text
    from kvstore.bench.session import run_benchmark

    args = _run_parser().parse_args(argv)
    cfg = config_from_args(args)
    try:
        cfg.validate()
    except ValueError as exc:
        print(f"kvstore bench: {exc}", file=sys.stderr)
        return 2
    spec = {"name": args.driver, "endpoints": [e for e in args.endpoints.split(",") if e],
            "connections": args.connections}
    progress = Progress(cfg, enabled=False if args.quiet else None)
    log = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    try:
        report = trio.run(lambda: run_benchmark(cfg, spec, load=not args.no_load, progress=progress, log=log))
    except Exception as exc:
        # a store that is down or refuses is an answer, not a crash: one line per error
        # (KVSTORE_BENCH_DEBUG=1 shows the traceback)
        leaves = _leaves(exc)
        if os.environ.get("KVSTORE_BENCH_DEBUG") or not all(isinstance(e, Exception) for e in leaves):
            raise
        progress.finish()
        for e in leaves:
            print(f"kvstore bench: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except BaseException as exc:
        from kvstore.bench.compare import is_interrupt

        if not is_interrupt(exc):
            raise
        progress.finish()
        print("kvstore bench: interrupted", file=sys.stderr)
        return 130
    if not args.quiet:
        print(summary_text(report))
    if args.json == "-":
        print(json.dumps(report, indent=1))
    elif args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if args.png:
        try:
            plot_png([report], args.png)
        except ImportError:
            print("kvstore bench: --png needs matplotlib (pip install -e '.[bench]'); the JSON/summary are complete",
                  file=sys.stderr)
            return 1
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "compare":
        from kvstore.bench.compare import main as compare_main

        return compare_main(argv[1:])
    if argv and argv[0] == "pysyncobj-node":
        from kvstore.bench.pso_node import main as node_main

        return node_main(argv[1:])
    if argv and argv[0] == "run":
        argv = argv[1:]
    return run_main(argv)
