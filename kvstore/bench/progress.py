"""A one-line live display of a run, redrawn each interval; only when stdout is a terminal."""

from __future__ import annotations

import sys
from collections import Counter

from kvstore.bench import histograms


class Progress:
    def __init__(self, cfg, stream=None, enabled: bool | None = None) -> None:
        self.cfg = cfg
        self.stream = stream or sys.stdout
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._pending: dict[int, list[dict]] = {}
        self._processes = cfg.processes
        self._shown = False

    def on_interval(self, view: dict) -> None:
        """Takes one process's closed interval; draws once every process has reported it."""
        group = self._pending.setdefault(view["index"], [])
        group.append(view)
        if len(group) < self._processes:
            return
        del self._pending[view["index"]]
        for stale in [i for i in self._pending if i < view["index"]]:
            del self._pending[stale]
        if self.enabled:
            self._draw(view["index"], group)

    def line(self, index: int, group: list[dict]) -> str:
        ok: Counter = Counter()
        for v in group:
            ok.update(v["ok"])
        hist = histograms.merge(v["hist"] for v in group)
        s = histograms.summarize(hist)
        t = group[0]["t_s"]
        phase = "warm-up" if t <= 0 else "run"
        elapsed = (index + 1) * self.cfg.interval_s
        total = self.cfg.warmup_s + self.cfg.duration_s
        errors = sum(v["errors"] for v in group)
        cpu = max(v["cpu_s"] for v in group) / self.cfg.interval_s
        p50 = "-" if s["p50"] is None else f"{s['p50']:.2f}"
        p99 = "-" if s["p99"] is None else f"{s['p99']:.2f}"
        return (f"[{elapsed:5.0f}/{total:.0f} s {phase:7}] {sum(ok.values()) / self.cfg.interval_s:9.0f} ops/s"
                f"  p50 {p50} ms  p99 {p99} ms  errors {errors}  gen cpu {cpu:.0%}")

    def _draw(self, index: int, group: list[dict]) -> None:
        self.stream.write("\r\x1b[2K" + self.line(index, group))
        self.stream.flush()
        self._shown = True

    def message(self, text: str) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
            self._shown = True

    def finish(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._shown = False
