"""Merging per-process raw results into the public JSON report; text summary; PNG plot.

JSON schema "kvstore-bench/1" (latencies in milliseconds, throughput in ops/s):
    schema, started_at, config{...}, driver{name, durability, ...},
    mode "open-loop" | "closed-loop", duration_s, warmup_s,
    throughput_ops_s, ok, errors_total,
    ops{op: {ok, errors, throughput_ops_s, latency_ms{count, p50, p90, p99, p99.9, max, mean}}},
    all{same as one op, over every op},
    errors{"op:kind": n}, error_samples[str],
    schedule{target_ops_s, intended, issued, missed}   (open loop; null fields when closed),
    series[{t_s, ops_s, ok{op: n}, errors, p50_ms, p99_ms, max_ms, cpu_util}],
    generator{processes, cpu_util_per_process[...], saturated, drain_s,
              send_lag_ms{...}: how late ops were issued after their intended time (open loop;
              timer granularity is ~1 ms, so sub-ms latencies under open loop include it)},
    warnings[...],
    histograms{op: encoded HdrHistogram}   (to merge runs later; values in microseconds)
"""

from __future__ import annotations

import datetime as _dt
from collections import Counter

from kvstore.bench import histograms

SCHEMA = "kvstore-bench/1"
SATURATED_CPU = 0.9  # of one core: a generator process this busy delays its own requests


def aggregate(raws: list[dict], cfg, driver_info: dict, started_at: str | None = None) -> dict:
    duration = cfg.duration_s
    ops_names = sorted({op for raw in raws for op in raw["ops"]})
    errors: Counter = Counter()
    for raw in raws:
        errors.update(raw["errors"])
    ops: dict = {}
    all_encoded = []
    encoded_by_op = {}
    for op in ops_names:
        encs = [raw["ops"][op]["hist"] for raw in raws if op in raw["ops"]]
        hist = histograms.merge(encs)
        encoded_by_op[op] = histograms.encode(hist)
        all_encoded.append(encoded_by_op[op])
        ok = sum(raw["ops"].get(op, {}).get("ok", 0) for raw in raws)
        err = sum(n for k, n in errors.items() if k.split(":", 1)[0] == op)
        ops[op] = {"ok": ok, "errors": err, "throughput_ops_s": round(ok / duration, 1),
                   "latency_ms": histograms.summarize(hist)}
    total_ok = sum(o["ok"] for o in ops.values())
    all_hist = histograms.merge(all_encoded)

    series = merge_intervals([raw["intervals"] for raw in raws], cfg)

    cpu_utils = [round(raw["cpu_s"] / duration, 3) for raw in raws]
    warnings = []
    if any(u >= SATURATED_CPU for u in cpu_utils):
        warnings.append(
            f"generator CPU saturated ({max(cpu_utils):.0%} of a core in a process): latencies "
            f"include generator queueing; use more --procs or fewer clients")
    schedule = {"target_ops_s": cfg.rate or None, "intended": None, "issued": None, "missed": None}
    if cfg.rate:
        for name in ("intended", "issued", "missed"):
            schedule[name] = sum(raw["schedule"][name] for raw in raws)
        if schedule["missed"]:
            warnings.append(
                f"offered load not sustained: {schedule['missed']} of {schedule['intended']} "
                f"scheduled operations were never issued in the run")
    err_total = sum(errors.values())
    if err_total:
        warnings.append(f"{err_total} operations failed: {dict(errors)}")
    samples = [s for raw in raws for s in raw.get("error_samples", [])][:10]
    return {
        "schema": SCHEMA,
        "started_at": started_at or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.to_dict(),
        "driver": driver_info,
        "mode": "open-loop" if cfg.rate else "closed-loop",
        "duration_s": duration,
        "warmup_s": cfg.warmup_s,
        "throughput_ops_s": round(total_ok / duration, 1),
        "ok": total_ok,
        "errors_total": err_total,
        "ops": ops,
        "all": {"ok": total_ok, "errors": err_total, "throughput_ops_s": round(total_ok / duration, 1),
                "latency_ms": histograms.summarize(all_hist)},
        "errors": dict(errors),
        "error_samples": samples,
        "schedule": schedule,
        "series": series,
        "generator": {"processes": len(raws), "cpu_util_per_process": cpu_utils,
                      "saturated": any(u >= SATURATED_CPU for u in cpu_utils),
                      "send_lag_ms": histograms.summarize(histograms.merge(raw["send_lag"] for raw in raws)),
                      "drain_s": round(max(raw["drain_s"] for raw in raws), 3)},
        "warnings": warnings,
        "histograms": encoded_by_op,
    }


def merge_intervals(per_process: list[list[dict]], cfg) -> list[dict]:
    by_index: dict[int, list[dict]] = {}
    for intervals in per_process:
        for iv in intervals:
            by_index.setdefault(iv["index"], []).append(iv)
    series = []
    last = int((cfg.warmup_s + cfg.duration_s) / cfg.interval_s + 1e-9)
    for index in sorted(by_index):
        if index >= last:  # the drain after the end: a partial interval, its rate is meaningless
            continue
        ivs = by_index[index]
        ok: Counter = Counter()
        for iv in ivs:
            ok.update(iv["ok"])
        hist = histograms.merge(iv["hist"] for iv in ivs)
        summary = histograms.summarize(hist)
        series.append({
            "t_s": round((index + 1) * cfg.interval_s - cfg.warmup_s, 3),
            "ops_s": round(sum(ok.values()) / cfg.interval_s, 1),
            "ok": dict(ok),
            "errors": sum(iv["errors"] for iv in ivs),
            "p50_ms": summary["p50"], "p99_ms": summary["p99"], "max_ms": summary["max"],
            "cpu_util": round(max(iv["cpu_s"] for iv in ivs) / cfg.interval_s, 3),
        })
    return series


def _fmt(v) -> str:
    if v is None:
        return "-"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def summary_text(report: dict) -> str:
    cfg = report["config"]
    lines = [
        f"{report['driver']['name']}: workload {cfg['workload']} ({cfg['distribution'] or 'default'} keys), "
        f"{cfg['concurrency']} clients in {report['generator']['processes']} process(es), "
        f"{report['mode']}" + (f" at {cfg['rate']:.0f} ops/s" if cfg["rate"] else "")
        + f", {cfg['duration_s']:g} s after {cfg['warmup_s']:g} s warm-up",
        f"durability: {report['driver'].get('durability', '?')}",
        f"{'op':8} {'ok':>9} {'err':>6} {'ops/s':>9} {'p50':>8} {'p90':>8} {'p99':>8} {'p99.9':>8} {'max':>8}  (ms)",
    ]
    rows = list(report["ops"].items()) + [("ALL", report["all"])]
    for op, o in rows:
        lat = o["latency_ms"]
        lines.append(f"{op:8} {o['ok']:>9} {o['errors']:>6} {o['throughput_ops_s']:>9.0f} "
                     f"{_fmt(lat['p50']):>8} {_fmt(lat['p90']):>8} {_fmt(lat['p99']):>8} "
                     f"{_fmt(lat['p99.9']):>8} {_fmt(lat['max']):>8}")
    gen = report["generator"]
    lines.append("generator CPU per process: " + ", ".join(f"{u:.0%}" for u in gen["cpu_util_per_process"]))
    if report["mode"] == "open-loop" and gen["send_lag_ms"]["count"]:
        lag = gen["send_lag_ms"]
        lines.append(f"send lag behind schedule (included in latencies): p50 {_fmt(lag['p50'])} ms, "
                     f"p99 {_fmt(lag['p99'])} ms, max {_fmt(lag['max'])} ms")
    for w in report["warnings"]:
        lines.append(f"WARNING: {w}")
    return "\n".join(lines)


def plot_png(reports: list[dict], path: str, title: str | None = None) -> None:
    """Throughput and latency (p50, p99) over time of one or more runs, one line each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True)
    for rep in reports:
        label = rep.get("label") or f"{rep['driver']['name']} {rep['config']['workload']}"
        ts = [p["t_s"] for p in rep["series"]]
        line, = ax1.plot(ts, [p["ops_s"] for p in rep["series"]], label=label)
        color = line.get_color()
        ax2.plot(ts, [p["p99_ms"] for p in rep["series"]], color=color, label=f"{label} p99")
        ax2.plot(ts, [p["p50_ms"] for p in rep["series"]], color=color, linestyle=":", label=f"{label} p50")
    for ax in (ax1, ax2):
        ax.axvline(0, color="grey", linewidth=0.8, linestyle="--")
        ax.grid(True, alpha=0.3)
    ax1.set_ylabel("ops/s")
    ax2.set_ylabel("latency (ms)")
    ax2.set_yscale("log")
    ax2.set_xlabel("seconds since end of warm-up (dashed line)")
    ax1.legend(fontsize=8, loc="best")
    ax2.legend(fontsize=7, loc="best", ncol=2)
    fig.suptitle(title or "kvstore bench")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
