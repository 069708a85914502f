"""One run: set up hosts and cluster, run workers and the nemesis schedule, heal, final reads,
check, write the run directory. Teardown happens whatever goes wrong (try/finally, atexit,
SIGTERM turned into an exception; Ctrl-C is KeyboardInterrupt).

Run directory runs/<UTC timestamp>-<seed>/:
    history.jsonl   every invoke/completion and nemesis event
    verdict.json    every checker's result, the options, the summary line
    plot.png        latency and throughput over time, nemesis intervals shaded
    nodes/n<i>.log  each node's output, across restarts
    summary.txt     the one-line summary (also printed)
"""

from __future__ import annotations

import atexit
import json
import random
import shutil
import signal
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import availability, generator, hosts as hosts_mod, linearizable, nemesis as nemesis_mod, plot, setcheck
from .cluster import Cluster
from .history import INFO, NEMESIS, OK, FAIL, Event, HistoryWriter, nemesis_intervals, pair
from .workload import Recorder, Worker, run_op

DEFAULT_RUNS_DIR = Path(__file__).resolve().parents[1] / "runs"


@dataclass
class Options:
    nodes: int = 5
    time_s: float = 60.0
    nemesis: list[str] = field(default_factory=lambda: ["kill", "pause", "partition"])
    workload: str = "register"
    seed: int = 0
    concurrency: int = 10
    rate: float = 100.0  # ops/s over all workers
    keys: int = 16
    buckets: int = 64
    replication: int = 3
    hosts: str = "auto"  # auto | netns | loopback
    runs_dir: str = str(DEFAULT_RUNS_DIR)
    bug: str | None = None
    client_timeout_s: float = 2.0
    ready_timeout_s: float = 60.0
    final_timeout_s: float = 30.0
    quiet_s: tuple[float, float] = (2.0, 4.0)
    fault_s: tuple[float, float] = (3.0, 7.0)
    lin_budget_per_key: int = 2_000_000


def make_hosts(opts: Options) -> hosts_mod.Hosts:
    if opts.hosts == "loopback":
        return hosts_mod.LoopbackHosts(opts.nodes)
    ok, why = hosts_mod.netns_available()
    if opts.hosts == "netns" and not ok:
        raise SystemExit(f"netns hosts unavailable: {why}")
    if ok:
        return hosts_mod.NetnsHosts(opts.nodes)
    print(f"note: netns unavailable ({why}); loopback hosts, no partitions")
    return hosts_mod.LoopbackHosts(opts.nodes)


class _Terminated(Exception):
    pass


def _on_sigterm(signum, frame):
    raise _Terminated(f"signal {signum}")


def run(opts: Options, log=print) -> tuple[int, dict]:
    """Returns (exit status, verdict): 0 valid, 1 invalid, 2 unknown, 3 could not run."""
    from client import Client  # the client library is only needed for a real run
    from client.wire import bucket_of

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_dir = Path(opts.runs_dir) / f"{stamp}-{opts.seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    hosts = make_hosts(opts)
    if "partition" in opts.nemesis and not hosts.supports_partition:
        log("note: partition nemesis needs netns hosts; dropped")
        opts.nemesis = [f for f in opts.nemesis if f != "partition"]
    data_root = Path(tempfile.mkdtemp(prefix="kvj-data-"))
    cluster: Cluster | None = None
    torn_down = threading.Event()

    def teardown() -> None:
        if torn_down.is_set():
            return
        torn_down.set()
        try:
            if cluster is not None:
                cluster.stop_all()
        finally:
            hosts.teardown()
            shutil.rmtree(data_root, ignore_errors=True)

    atexit.register(teardown)
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    t_run0 = time.monotonic()
    try:
        hosts.setup()
        cluster = Cluster(hosts, run_dir, data_root, opts.buckets, opts.replication, opts.bug)
        nemeses = nemesis_mod.build(opts.nemesis, cluster)
        log(f"run {run_dir.name}: {opts.nodes} nodes on {hosts.mode}, nemesis {','.join(opts.nemesis) or 'none'},"
            f" workload {opts.workload}, {opts.time_s:g} s")
        cluster.start_all()
        addrs = cluster.addrs()

        def client_factory():
            return Client(addrs, timeout=opts.client_timeout_s)

        probe_client = client_factory()
        try:
            def probe():
                probe_client.put("jepsen-probe", b"1")
                return probe_client.get("jepsen-probe") == b"1" and len(cluster.leaders()) == opts.buckets

            if not cluster.wait_ready(probe, opts.ready_timeout_s):
                raise RuntimeError(f"cluster not ready within {opts.ready_timeout_s:g} s (see {run_dir}/nodes)")
        finally:
            probe_client.close()

        history = HistoryWriter(run_dir / "history.jsonl")
        rec = Recorder(history)
        if opts.workload == "register":
            keys = generator.register_keys(opts.keys)
            opgens = [generator.RegisterOps(keys, opts.seed, w) for w in range(opts.concurrency)]
        elif opts.workload == "set":
            keys = generator.set_keys(max(1, opts.keys // 2))
            opgens = [generator.SetOps(keys, opts.seed, w) for w in range(opts.concurrency)]
        else:
            raise ValueError(f"unknown workload {opts.workload!r} (register, set)")
        stop = threading.Event()
        interval = opts.concurrency / opts.rate if opts.rate > 0 else 0.0
        workers = [Worker(w, opts.concurrency, client_factory, opgens[w], rec, stop, interval)
                   for w in range(opts.concurrency)]
        for w in workers:
            w.start()

        # the nemesis schedule, in this thread
        schedule = generator.nemesis_schedule(opts.seed, opts.nemesis, opts.time_s, opts.quiet_s, opts.fault_s)
        rng = random.Random(f"nemesis-targets-{opts.seed}")
        t0 = time.monotonic()
        nemesis_errors = []
        for step in schedule:
            delay = t0 + step.at_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            nem = nemeses[step.family]
            try:
                desc = nem.start(rng) if step.action == "start" else nem.stop()
            except Exception as exc:
                desc = {"error": f"{type(exc).__name__}: {exc}"}
                nemesis_errors.append(f"{step.action} {step.family}: {desc['error']}")
            rec.record(Event(NEMESIS, INFO, f"{step.action}-{step.family}", None, desc))
            log(f"  {step.at_s:6.1f}s {step.action} {step.family} {json.dumps(desc)}")
        rest = t0 + opts.time_s - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        stop.set()

        # heal everything, then wait for the cluster to serve again
        for fam, nem in nemeses.items():
            if nem.active:
                rec.record(Event(NEMESIS, INFO, f"stop-{fam}", None, nem.stop()))
        hosts.heal()
        for i in cluster.nodes:
            cluster.resume(i)
            if not cluster.nodes[i].running:
                cluster.nodes[i].clock_offset_ms = 0
                cluster.start(i)
        deadline = time.monotonic() + opts.client_timeout_s * 3 + 5
        for w in workers:
            w.join(timeout=max(0.1, deadline - time.monotonic()))
        rec.closed.set()  # late completions stay info
        healed_at = history.now()
        cluster.wait_ready(lambda: len(cluster.leaders()) == opts.buckets, opts.final_timeout_s / 2)

        # final reads of every key, each retried until it succeeds or the deadline passes
        final_ok = {}
        final_client = client_factory()
        rec.closed.clear()
        try:
            fdeadline = time.monotonic() + opts.final_timeout_s
            for k in keys:
                final_ok[k] = False
                attempt = 0
                while time.monotonic() < fdeadline and not final_ok[k]:
                    attempt += 1
                    f = "read-set" if opts.workload == "set" else "read"
                    t, _ = run_op(final_client, rec, f"final-{k}-{attempt}", {"f": f, "key": k, "consistency": "linearizable"})
                    final_ok[k] = t == OK
                    if not final_ok[k]:
                        time.sleep(0.2)
        finally:
            final_client.close()
        rec.closed.set()
        end_ns = history.now()
        history.close()

        # check
        events = history.events()
        client_ops = pair(events)  # nemesis events are not ops
        intervals = nemesis_intervals(events)
        verdict: dict = {"seed": opts.seed, "options": asdict(opts), "hosts": hosts.mode, "run_dir": str(run_dir)}
        counts = {OK: 0, FAIL: 0, INFO: 0}
        for op in client_ops:
            counts[op.type] += 1
        verdict["ops"] = dict(counts, total=len(client_ops))
        if opts.workload == "register":
            t = time.monotonic()
            verdict["linearizable"] = linearizable.check(client_ops, budget_per_key=opts.lin_budget_per_key)
            verdict["linearizable"]["check_s"] = round(time.monotonic() - t, 2)
        else:
            verdict["set"] = setcheck.check(client_ops)
        verdict["availability"] = availability.check(
            [op for op in client_ops if not str(op.process).startswith("final-")], intervals,
            bucket_of=lambda key: bucket_of(str(key).encode(), opts.buckets), end_time=healed_at,
        )
        verdict["liveness"] = {"valid": all(final_ok.values()), "keys_without_final_read": sorted(k for k, v in final_ok.items() if not v)}
        crashed = cluster.crashed()
        verdict["crashes"] = {"valid": not crashed, "nodes": crashed}
        verdict["nemesis_errors"] = nemesis_errors
        verdict["client_unexpected_errors"] = rec.unexpected_errors[:20]
        parts = [verdict.get("linearizable") or verdict.get("set"), verdict["liveness"], verdict["crashes"]]
        vals = [p["valid"] for p in parts]
        valid = False if False in vals else ("unknown" if "unknown" in vals else True)
        verdict["valid"] = valid
        drawn = plot.plot(client_ops, intervals, run_dir / "plot.png",
                          f"{opts.workload} / {','.join(opts.nemesis) or 'no nemesis'} / seed {opts.seed} / {hosts.mode}"
                          f" / valid: {valid}", end_ns)
        verdict["plot"] = str(run_dir / "plot.png") if drawn else "matplotlib missing: no plot"
        verdict["run_s"] = round(time.monotonic() - t_run0, 1)
        verdict["summary"] = summary_line(verdict, opts)
        (run_dir / "verdict.json").write_text(json.dumps(verdict, indent=2, default=str))
        (run_dir / "summary.txt").write_text(verdict["summary"] + "\n")
        log(verdict["summary"])
        return (0 if valid is True else 1 if valid is False else 2), verdict
    except (_Terminated, KeyboardInterrupt):
        log("interrupted: tearing down")
        raise
    except Exception as exc:
        msg = f"could not run: {type(exc).__name__}: {exc}"
        log(msg)
        (run_dir / "summary.txt").write_text(msg + "\n")
        return 3, {"valid": "unknown", "error": msg, "run_dir": str(run_dir)}
    finally:
        teardown()
        atexit.unregister(teardown)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def summary_line(v: dict, opts: Options) -> str:
    word = {True: "VALID", False: "INVALID"}.get(v["valid"], "UNKNOWN")
    ops = v["ops"]
    bits = [word, f"seed={opts.seed}", f"hosts={v['hosts']}", f"nemesis={','.join(opts.nemesis) or 'none'}",
            f"workload={opts.workload}", f"ops={ops['total']} ok={ops[OK]} info={ops[INFO]} fail={ops[FAIL]}"]
    if "linearizable" in v:
        lin = v["linearizable"]
        bits.append(f"linearizable={lin['valid']} ({len(lin['invalid_keys'])} bad keys, {lin['check_s']} s)")
    if "set" in v:
        s = v["set"]
        bits.append(f"set={s['valid']} (lost {s['lost_count']}, unexpected {s['unexpected_count']}, acked {s['acknowledged']})")
    a = v["availability"]
    share = a["during_faults"]["ok_share"]
    bits.append(f"ok-during-faults={'-' if share is None else f'{share:.0%}'}")
    if "longest_unavailability_after_fault_s" in a:
        bits.append(f"max-unavail={a['longest_unavailability_after_fault_s']['max']}s")
    if not v["liveness"]["valid"]:
        bits.append(f"NO final read for {len(v['liveness']['keys_without_final_read'])} keys")
    if not v["crashes"]["valid"]:
        bits.append(f"CRASHED nodes {v['crashes']['nodes']}")
    bits.append(f"run={v['run_s']}s dir={v['run_dir']}")
    return " ".join(bits)


def recheck(run_dir: Path, budget_per_key: int = 2_000_000) -> tuple[int, dict]:
    """Checks a recorded history again (e.g. with a newer checker or a larger budget)."""
    from .history import read_jsonl

    events = read_jsonl(Path(run_dir) / "history.jsonl")
    ops = pair(events)
    if any(op.f == "add" for op in ops):
        result = setcheck.check(ops)
    else:
        t = time.monotonic()
        result = linearizable.check(ops, budget_per_key=budget_per_key)
        result["check_s"] = round(time.monotonic() - t, 2)
    valid = result["valid"]
    return (0 if valid is True else 1 if valid is False else 2), result

