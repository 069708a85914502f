"""`kvstore bench compare` / `scripts/compare.py`: the same workloads, the same generator, one
store after another, each started fresh on 127.0.0.1 in a temp dir and stopped afterwards.

Stores: kvstore (3 nodes), etcd (3 nodes, Debian's etcd-server, installed with apt-get when
missing), Redis (single node, AOF appendfsync always: the non-replicated ceiling), PySyncObj
(3 nodes) in its default configuration with the file journal on, and in its fastest one
(appendEntriesUseBatch off, in memory). Writes a Markdown table (ops/s, p50, p99 per store and
workload, and kvstore's ratio to each peer), a PNG bar chart and every run's JSON report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

import trio

from kvstore.bench.cli import add_load_arguments, config_from_args
from kvstore.bench.progress import Progress
from kvstore.bench.report import summary_text
from kvstore.bench.session import run_benchmark
from kvstore.bench import systems

SYSTEMS = ("kvstore", "etcd", "redis", "pysyncobj", "pysyncobj-fast")
SCANS = {"kvstore", "etcd"}  # stores with an ordered range scan (workload E)


def make_system(name: str, base_dir: str, args) -> systems.System:
    if name == "kvstore":
        return systems.KvstoreCluster(base_dir, buckets=args.kvstore_buckets,
                                      extra_args=args.kvstore_args.split() if args.kvstore_args else None)
    if name == "etcd":
        return systems.EtcdCluster(base_dir)
    if name == "redis":
        return systems.RedisServer(base_dir)
    if name == "pysyncobj":
        return systems.PySyncObjCluster(base_dir, journal=True, batch=True, label="pysyncobj")
    if name == "pysyncobj-fast":
        return systems.PySyncObjCluster(base_dir, journal=False, batch=False, label="pysyncobj-fast")
    raise ValueError(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")


def _cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes (and their threads), from /proc."""
    total = 0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def _stats_delta(before: dict | None, after: dict | None, seconds: float) -> dict:
    """Per node: counters' rates over the window, and the derived per-turn figures."""
    out = {}
    for addr, end in (after or {}).items():
        start = (before or {}).get(addr)
        if not start:
            continue
        d = {k: end[k] - start.get(k, 0) for k in end if isinstance(end[k], (int, float)) and k != "leader_of"}
        row = {"leader_of": end.get("leader_of")}
        for k in ("turns", "persists", "proposed", "applied_entries"):
            if k in d:
                row[f"{k}_per_s"] = round(d[k] / seconds)
        if d.get("turns"):
            for k in ("turn_ms", "storage_ms"):
                if k in d:
                    row[f"{k}_per_turn"] = round(d[k] / d["turns"], 2)
            if "turn_ms" in d:
                row["turn_busy_share"] = round(d["turn_ms"] / 1000 / seconds, 2)
        if d.get("persists") and "proposed" in d:
            row["proposals_per_persist"] = round(d["proposed"] / d["persists"], 1)
        out[addr] = row
    return out


def is_interrupt(exc: BaseException) -> bool:
    """KeyboardInterrupt, possibly inside (nested) exception groups from trio nurseries."""
    if isinstance(exc, KeyboardInterrupt):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(is_interrupt(e) for e in exc.exceptions)
    return False


def run_compare(args, results: list[dict]) -> list[dict]:
    """Runs every system and workload, appending to `results` as it goes (so an interrupted
    comparison still reports what it measured)."""
    names = [s for s in args.systems.split(",") if s]
    workloads = [w.upper() for w in args.workloads.split(",") if w]
    base_dir = tempfile.mkdtemp(prefix="kvstore-compare-")
    try:
        for rnd in range(args.rounds):
            # alternate the order so that a machine getting busier or quieter favours no store
            for name in names if rnd % 2 == 0 else names[::-1]:
                log(f"== {name}: starting" + (f" (round {rnd + 1} of {args.rounds})" if args.rounds > 1 else ""))
                with make_system(name, base_dir, args) as system:
                    log(f"== {name}: up at {','.join(system.endpoints)}")
                    for i, wl in enumerate(workloads):
                        if wl == "E" and name.split("-")[0] not in SCANS:
                            results.append({"system": name, "workload": wl, "round": rnd,
                                            "skipped": "no ordered range scan"})
                            continue
                        report = _run_one(system, name, wl, args, load=i == 0)
                        results.append({"system": name, "workload": wl, "round": rnd, "report": report})
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)
    return results


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _run_one(system, name: str, wl: str, args, load: bool) -> dict:
    """One workload against a running store, with its CPU, counters and (optionally) profile."""
    args.workload = wl
    cfg = config_from_args(args)
    if name.startswith("pysyncobj") or name == "redis":
        cfg.consistency = "linearizable"  # these drivers have one kind of read
    elif name == "etcd" and cfg.consistency == "follower":
        cfg.consistency = "serializable"
    elif name == "kvstore" and cfg.consistency == "serializable":
        cfg.consistency = "follower"
    spec = dict(system.driver_spec(), connections=args.connections)
    pids = system.pids()
    marks: dict = {}
    stat_threads: list[threading.Thread] = []

    def on_window(edge: str) -> None:
        marks[edge] = (_cpu_seconds(pids), time.monotonic())
        # the store's own counters, fetched off the event loop
        t = threading.Thread(target=lambda: marks.__setitem__(edge + "-stats", system.internal_stats()))
        t.start()
        stat_threads.append(t)

    profiler = None
    if args.profile_dir and name in args.profile.split(","):
        from kvstore.bench.profiling import Profiler

        profiler = Profiler(pids, os.path.join(os.path.abspath(args.profile_dir), f"{name}-{wl}"))
    try:
        report = trio.run(lambda: run_benchmark(cfg, spec, load=load, progress=Progress(cfg), log=log,
                                                on_window=on_window))
    finally:
        if profiler is not None:
            from kvstore.bench.profiling import summarize

            for path in profiler.stop():
                with open(path[:-4] + "-summary.txt", "w") as f:
                    f.write(summarize(path) + "\n")
                log(f"profile: {path} (summary: {path[:-4]}-summary.txt)")
    for t in stat_threads:
        t.join(timeout=10)
    report["system"] = name
    report["label"] = f"{name} {wl}"
    if "start" in marks and "end" in marks:
        (c0, t0), (c1, t1) = marks["start"], marks["end"]
        cores = (c1 - c0) / max(1e-9, t1 - t0)
        report["server_cpu_cores"] = round(cores, 2)
        report["server_cpu_us_per_op"] = (round(cores * 1e6 / report["throughput_ops_s"])
                                          if report["throughput_ops_s"] else None)
    log(summary_text(report))
    log(f"server CPU in the measured window (all its processes): "
        f"{report.get('server_cpu_cores')} cores, {report.get('server_cpu_us_per_op')} µs per op")
    node_stats = _stats_delta(marks.get("start-stats"), marks.get("end-stats"), cfg.duration_s)
    if node_stats:
        report["server_stats"] = node_stats
        for addr, st in node_stats.items():
            log(f"  {addr}: " + ", ".join(f"{k} {v}" for k, v in st.items()))
    return report


def _median(values: list[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _combine(runs: list[dict]) -> dict:
    """Several rounds of one store and workload -> one row: medians, and the ops/s range."""
    if not any("report" in r for r in runs):
        return runs[0]
    reps = [r["report"] for r in runs if "report" in r]
    ops = [rep["throughput_ops_s"] for rep in reps]
    return {"system": runs[0]["system"], "workload": runs[0]["workload"], "rounds": len(reps),
            "ops": _median(ops), "ops_min": min(ops), "ops_max": max(ops),
            "p50": _median([rep["all"]["latency_ms"]["p50"] for rep in reps]),
            "p99": _median([rep["all"]["latency_ms"]["p99"] for rep in reps]),
            "errors": sum(rep["errors_total"] + (rep["schedule"]["missed"] or 0) for rep in reps),
            "cpu_us": _median([rep.get("server_cpu_us_per_op") for rep in reps]),
            "report": reps[0]}


def markdown(results: list[dict], args, command: str) -> str:
    grouped: dict = {}
    for r in results:
        grouped.setdefault((r["system"], r["workload"]), []).append(r)
    by = {key: _combine(runs) for key, runs in grouped.items()}
    systems_seen = list(dict.fromkeys(r["system"] for r in results))
    workloads = list(dict.fromkeys(r["workload"] for r in results))
    rounds = max(r.get("round", 0) for r in results) + 1
    lines = [f"Command: `{command}`", "",
             f"{args.concurrency} clients, {args.value_size}-byte values, {args.records} records, "
             f"{'closed loop' if not args.rate else f'open loop at {args.rate:.0f} ops/s'}, "
             f"{args.duration:g} s measured after {args.warmup:g} s warm-up, reads {args.consistency}, "
             f"key choice {args.distribution or 'zipfian (workload default)'}. Server CPU: all of a store's "
             f"processes over the measured window, per completed op (2 cores on this machine, shared with "
             f"the generator)." + (f" Each figure is the median of {rounds} rounds (stores started afresh each "
             f"round, in alternating order); ops/s shows the range." if rounds > 1 else ""), "",
             "| workload | store | ops/s | p50 ms | p99 ms | errors | server CPU µs/op | kvstore ops/s ÷ store's | kvstore p99 ÷ store's (< 1: kvstore lower) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    fmt = lambda v: "-" if v is None else f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:.0f}"  # noqa: E731
    for wl in workloads:
        base = by.get(("kvstore", wl))
        if base is not None and "ops" not in base:
            base = None
        for s in systems_seen:
            row = by.get((s, wl))
            if row is None:
                continue
            if "ops" not in row:
                lines.append(f"| {wl} | {s} | n/a ({row['skipped']}) | | | | | | |")
                continue
            ratio_ops = ratio_p99 = ""
            if base is not None and s != "kvstore" and row["ops"]:
                ratio_ops = f"{base['ops'] / row['ops']:.2f}×"
                if base["p99"] is not None and row["p99"]:
                    ratio_p99 = f"{base['p99'] / row['p99']:.2f}×"
            ops = f"{row['ops']:.0f}"
            if row["rounds"] > 1:
                ops += f" ({row['ops_min']:.0f}–{row['ops_max']:.0f})"
            cpu = "-" if row["cpu_us"] is None else f"{row['cpu_us']:.0f}"
            lines.append(f"| {wl} | {s} | {ops} | {fmt(row['p50'])} | {fmt(row['p99'])} | {row['errors']} | "
                         f"{cpu} | {ratio_ops} | {ratio_p99} |")
    lines += ["", "| store | what an acknowledged write survives; reads |", "|---|---|"]
    for s in systems_seen:
        rep = next((r["report"] for r in results if r["system"] == s and "report" in r), None)
        if rep:
            reads = rep["driver"].get("reads", "")
            lines.append(f"| {s} | {rep['driver']['durability']}{'; reads ' + reads if reads else ''} |")
    warn = [f"- {r['system']} {r['workload']}: {w}" for r in results if "report" in r for w in r["report"]["warnings"]]
    if warn:
        lines += ["", "Warnings:", *warn]
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in results if "report" in r]
    workloads = list(dict.fromkeys(r["workload"] for r in runs))
    names = list(dict.fromkeys(r["system"] for r in runs))
    grouped: dict = {}
    for r in runs:
        grouped.setdefault((r["system"], r["workload"]), []).append(r)
    by = {key: _combine(rs) for key, rs in grouped.items()}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / max(1, len(names))
    for i, s in enumerate(names):
        xs = [w + (i - (len(names) - 1) / 2) * width for w in range(len(workloads))]
        ops = [by[(s, wl)]["ops"] if (s, wl) in by else 0 for wl in workloads]
        p99 = [(by[(s, wl)]["p99"] or 0) if (s, wl) in by else 0 for wl in workloads]
        ax1.bar(xs, ops, width, label=s)
        ax2.bar(xs, p99, width, label=s)
    for ax, title in ((ax1, "throughput (ops/s, higher is better)"), (ax2, "p99 latency (ms, lower is better)")):
        ax.set_xticks(range(len(workloads)), [f"workload {w}" for w in workloads])
        ax.set_title(title, fontsize=10)
        ax.grid(True, axis="y", alpha=0.3)
    ax2.set_yscale("log")
    ax1.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="kvstore bench compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, of {', '.join(SYSTEMS)}")
    p.add_argument("--workloads", default="W,B", help="comma-separated workload names (A,B,C,D,E,W)")
    p.add_argument("--kvstore-buckets", type=int, default=64)
    p.add_argument("--rounds", type=int, default=1, help="repeat everything; the table shows medians")
    p.add_argument("--kvstore-args", default="", help="extra `kvstore serve` arguments, e.g. --kvstore-args='--tick-ms 50'")
    p.add_argument("--connections", type=int, default=4, help="redis/pysyncobj pipelined connections")
    p.add_argument("--out-dir", default="bench-results", help="where compare.md/.png/.json go")
    p.add_argument("--profile-dir", help="record py-spy profiles of the servers of --profile systems here")
    p.add_argument("--profile", default="kvstore", help="systems to profile (comma-separated)")
    add_load_arguments(p)
    p.set_defaults(duration=10.0, warmup=3.0)
    args = p.parse_args(argv)
    bad = [s for s in args.systems.split(",") if s and s not in SYSTEMS]
    if bad:
        p.error(f"unknown systems {bad}; choose from {', '.join(SYSTEMS)}")
    os.makedirs(args.out_dir, exist_ok=True)
    if args.profile_dir:
        os.makedirs(args.profile_dir, exist_ok=True)
    command = "kvstore bench compare " + " ".join(argv)
    results: list[dict] = []
    rc = 0
    # SIGTERM (a `kill`, a CI timeout) stops the comparison like Ctrl-C: the stores it started
    # are stopped on the way out (Python's default would exit at once and leave them running).
    # Re-sent as SIGINT, so that a running trio loop takes it at a safe point, as it does Ctrl-C.
    signal.signal(signal.SIGTERM, lambda _sig, _frame: os.kill(os.getpid(), signal.SIGINT))
    try:
        run_compare(args, results)
    except BaseException as exc:
        # what was measured before the failure is still written out below
        if is_interrupt(exc):
            print("\ncompare: interrupted; everything it started was stopped", file=sys.stderr)
            rc = 130
        elif isinstance(exc, Exception):
            import traceback

            traceback.print_exc()
            print(f"compare: stopped by an error ({type(exc).__name__}: {exc}); everything it started "
                  f"was stopped", file=sys.stderr)
            rc = 1
        else:
            raise
    if not results:
        return rc
    md = markdown(results, args, command)
    with open(os.path.join(args.out_dir, "compare.md"), "w") as f:
        f.write(md)
    with open(os.path.join(args.out_dir, "compare.json"), "w") as f:
        json.dump({"command": command, "results": results}, f, indent=1)
    if any("report" in r for r in results):
        from kvstore.bench.report import plot_png

        plot(results, os.path.join(args.out_dir, "compare.png"))
        for wl in dict.fromkeys(r["workload"] for r in results):
            reps = [r["report"] for r in results if r["workload"] == wl and "report" in r and not r.get("round")]
            if reps:
                plot_png(reps, os.path.join(args.out_dir, f"timeline-{wl}.png"), title=f"workload {wl} over time")
    print(md)
    return rc
