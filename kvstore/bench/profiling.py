"""Sampling profiles of a store's server processes during a run, with py-spy (optional).

`Profiler(pids, out_prefix)` starts one `py-spy record --format raw` per pid (non-blocking
sampling); `stop()` interrupts them (py-spy writes its file on SIGINT) and `summarize(path)`
turns a raw (collapsed-stack) file into the top frames by self and inclusive time, with idle
waits (epoll, idle worker threads, lock waits) listed apart so the busy part is visible.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter

IDLE_FRAMES = ("get_events (trio/_core/_io_epoll.py", "WorkerThread._work (trio/_core/_thread_cache.py:211",
               ".wait (threading.py", ".select (selectors.py", ".poll (selectors.py")


class Profiler:
    def __init__(self, pids: list[int], out_prefix: str, rate_hz: int = 100) -> None:
        self.pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        self.paths = [f"{out_prefix}-{pid}.txt" for pid in pids]
        self.procs = []
        if not os.path.exists(self.pyspy):
            raise RuntimeError("py-spy is not installed (pip install py-spy)")
        for pid, path in zip(pids, self.paths):
            self.procs.append(subprocess.Popen(
                [self.pyspy, "record", "--nonblocking", "-p", str(pid), "-r", str(rate_hz), "-f", "raw", "-o", path],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True))

    def stop(self) -> list[str]:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        return [path for path in self.paths if os.path.exists(path)]


def summarize(path: str, top: int = 20) -> str:
    self_c: Counter = Counter()
    incl: Counter = Counter()
    total = idle = 0
    with open(path) as f:
        for line in f:
            stack, _, n = line.rstrip().rpartition(" ")
            if not n.isdigit():
                continue
            n = int(n)
            frames = stack.split(";")
            total += n
            if any(i in frames[-1] for i in IDLE_FRAMES):
                idle += n
                continue
            self_c[frames[-1]] += n
            for fr in set(frames):
                incl[fr] += n
    if not total:
        return f"{path}: no samples"
    busy = total - idle
    lines = [f"{path}: {total} samples, {idle / total:.0%} idle waits (epoll, idle threads); "
             f"of the {busy} busy samples:", "  self time:"]
    lines += [f"    {n / busy:6.1%}  {fr}" for fr, n in self_c.most_common(top)]
    lines.append("  inclusive time:")
    lines += [f"    {n / busy:6.1%}  {fr}" for fr, n in incl.most_common(top + 10)]
    return "\n".join(lines)
