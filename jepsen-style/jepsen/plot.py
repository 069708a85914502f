"""A PNG of latency and throughput over time, nemesis intervals shaded (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

from .history import FAIL, INFO, OK, Op

COLORS = {OK: "#2a9d3f", FAIL: "#d62728", INFO: "#ff9f1c"}
FAULT_COLORS = {"kill": "#d62728", "pause": "#9467bd", "partition": "#1f77b4", "clock": "#8c564b"}


def plot(ops: list[Op], intervals, path: Path, title: str, end_ns: int | None = None) -> bool:
    """Writes the plot; returns False (and writes nothing) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ns = 1e9
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 7), sharex=True)
    end = end_ns or max((op.complete.time for op in ops if op.complete), default=0)
    for t in (OK, INFO, FAIL):
        xs, ys = [], []
        for op in ops:
            if op.type != t:
                continue
            stop = op.complete.time if op.complete is not None else end
            xs.append(op.start / ns)
            ys.append(max((stop - op.start) / 1e6, 0.01))
        if xs:
            ax1.scatter(xs, ys, s=3, c=COLORS[t], label=f"{t} ({len(xs)})", alpha=0.6, linewidths=0)
    ax1.set_yscale("log")
    ax1.set_ylabel("latency (ms)")
    ax1.legend(loc="upper right", fontsize=8, markerscale=3)
    buckets: dict[str, dict[int, int]] = {OK: {}, INFO: {}, FAIL: {}}
    for op in ops:
        if op.complete is not None:
            sec = int(op.complete.time // ns)
            buckets[op.type][sec] = buckets[op.type].get(sec, 0) + 1
    last = int(end // ns) + 1
    for t in (OK, INFO, FAIL):
        ax2.plot(range(last), [buckets[t].get(s, 0) for s in range(last)], color=COLORS[t], label=t, lw=1.2)
    ax2.set_ylabel("ops/s completed")
    ax2.set_xlabel("time (s)")
    ax2.legend(loc="upper right", fontsize=8)
    seen = set()
    for start, stop, fam in intervals:
        stop = stop if stop is not None else end
        for ax in (ax1, ax2):
            ax.axvspan(start / ns, stop / ns, color=FAULT_COLORS.get(fam, "grey"), alpha=0.15,
                       label=None if (fam in seen or ax is ax1) else f"nemesis: {fam}")
        seen.add(fam)
    ax2.legend(loc="upper right", fontsize=8)
    ax1.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
