"""The load loop of one generator process: open-loop scheduling, recording, intervals.

Theory of operation
-------------------
Open loop (`rate` > 0): operation i of this process is *intended* to start at
`start + i / rate`. Each of the `concurrency` worker tasks, when free, takes the next index,
sleeps until its intended time if that is still ahead, issues it, and records latency as
`completion - intended`. When the store stalls, every worker is busy, the indices pile up and
are taken late: their latency includes the time they waited to be sent. A stall therefore
shows up as high latency on as many samples as the schedule asked for, never as fewer
samples (no coordinated omission; the scheme of wrk2 with a shared schedule).
Workers stop taking indices when the run's end is reached; scheduled operations of the
measured window that were never issued are reported as `missed` (the offered load was not
sustained), so an overloaded run cannot look good by silently dropping load.

Closed loop (`rate` == 0): each worker issues back to back; latency is service time. This is
the mode for "how many ops/s at most" and says so in the output.

Samples count when their intended (open loop) or issue (closed loop) time is at or after the
end of the warm-up. Completions are also counted per interval of wall time (throughput over
time), with one latency histogram per interval.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import trio

from kvstore.bench import histograms
from kvstore.bench.drivers.base import Driver
from kvstore.bench.keys import key_name
from kvstore.bench.workloads import OPS, OpGenerator, get_workload

MAX_ERROR_SAMPLES = 5


@dataclass
class LoadConfig:
    workload: str = "A"
    distribution: str | None = None  # None: the workload's default
    records: int = 10_000
    value_size: int = 100
    concurrency: int = 64  # over all processes
    duration_s: float = 10.0
    warmup_s: float = 2.0
    rate: float = 0.0  # total intended ops/s over all processes; 0 = closed loop
    consistency: str = "linearizable"
    scan_max: int = 100
    seed: int = 1
    op_timeout_s: float = 10.0
    interval_s: float = 1.0
    processes: int = 1

    def validate(self) -> None:
        get_workload(self.workload)
        if self.records < 1:
            raise ValueError("--records must be >= 1")
        if self.concurrency < 1:
            raise ValueError("--concurrency must be >= 1")
        if self.processes < 1 or self.processes > self.concurrency:
            raise ValueError("--procs must be between 1 and --concurrency")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("--duration must be > 0 and --warmup >= 0")
        if self.rate < 0:
            raise ValueError("--rate must be >= 0 (0 = closed loop)")
        if self.value_size < 0:
            raise ValueError("--value-size must be >= 0")
        if self.interval_s <= 0 or self.op_timeout_s <= 0:
            raise ValueError("interval and op timeout must be > 0")

    def to_dict(self) -> dict:
        return asdict(self)

    def share(self, process_index: int) -> tuple[int, float]:
        """(concurrency, rate) of one of `processes` generator processes."""
        n = self.processes
        concurrency = self.concurrency // n + (1 if process_index < self.concurrency % n else 0)
        return concurrency, self.rate / n


@dataclass
class _Interval:
    ok: Counter = field(default_factory=Counter)
    errors: int = 0
    hist: object = field(default_factory=histograms.new_histogram)
    cpu_s: float = 0.0

    def to_dict(self, index: int) -> dict:
        return {"index": index, "ok": dict(self.ok), "errors": self.errors,
                "hist": histograms.encode(self.hist), "cpu_s": round(self.cpu_s, 4)}


class Recorder:
    def __init__(self, start: float, measure_start: float, interval_s: float) -> None:
        self.start = start
        self.measure_start = measure_start
        self.interval_s = interval_s
        self.hists = {op: histograms.new_histogram() for op in OPS}
        self.send_lag = histograms.new_histogram()  # issue time - intended time (open loop)
        self.ok: Counter = Counter()
        self.errors: Counter = Counter()
        self.error_samples: list[str] = []
        self.intervals: dict[int, _Interval] = {}

    def interval(self, index: int) -> _Interval:
        iv = self.intervals.get(index)
        if iv is None:
            iv = self.intervals[index] = _Interval()
        return iv

    def record(self, op: str, began: float, done: float, error: BaseException | None, kind: str | None) -> None:
        iv = self.interval(max(0, int((done - self.start) / self.interval_s)))
        if kind is None:
            iv.ok[op] += 1
            histograms.record_seconds(iv.hist, done - began)
        else:
            iv.errors += 1
        if began < self.measure_start:
            return
        if kind is None:
            self.ok[op] += 1
            histograms.record_seconds(self.hists[op], done - began)
        else:
            self.errors[f"{op}:{kind}"] += 1
            if len(self.error_samples) < MAX_ERROR_SAMPLES:
                self.error_samples.append(f"{op}: {error!r}"[:300])


class _Slot:
    __slots__ = ("scope", "op", "deadline")

    def __init__(self) -> None:
        self.scope: trio.CancelScope | None = None
        self.op: tuple[str, float] = ("", 0.0)  # the op in flight and its intended/issue time
        self.deadline = math.inf  # when the op in flight times out; inf when none is


class _OpTimeouts:
    """Operation timeouts of every worker: one watchdog task instead of a cancel scope with a
    deadline per operation (which costs about as much generator CPU as a client request).

    A worker runs its ops inside one long-lived cancel scope and sets its slot's deadline
    (issue time + op timeout) around each op. The watchdog sleeps until the earliest
    deadline, or one op timeout from now when none is earlier (an op issued later expires
    later), and cancels the scope of every slot whose deadline has passed: the op in flight
    is cancelled exactly as `fail_after` would, and the worker records it as a "timeout".
    """

    def __init__(self, op_timeout_s: float) -> None:
        self.op_timeout_s = op_timeout_s
        self.slots: list[_Slot] = []

    def slot(self) -> _Slot:
        slot = _Slot()
        self.slots.append(slot)
        return slot

    async def run(self) -> None:
        while True:
            now = trio.current_time()
            wake = now + self.op_timeout_s
            for slot in self.slots:
                deadline = slot.deadline
                if deadline <= now:
                    slot.deadline = math.inf
                    slot.scope.cancel()
                elif deadline < wake:
                    wake = deadline
            await trio.sleep_until(wake)


async def run_load(driver: Driver, cfg: LoadConfig, *, process_index: int = 0,
                   start_at: float | None = None, on_interval=None, on_window=None) -> dict:
    """Runs this process's share of the load against an opened driver; returns its raw result.

    `start_at` is a trio clock time (several processes align on it); `on_interval(dict)` is
    called with each closed interval (for a live display); `on_window("start" | "end")` when
    the measured window starts and ends (to measure the servers' CPU over the same window).
    """
    concurrency, rate = cfg.share(process_index)
    gen = OpGenerator(get_workload(cfg.workload), cfg.records, cfg.value_size,
                      distribution=cfg.distribution, scan_max=cfg.scan_max, seed=cfg.seed,
                      process_index=process_index, process_count=cfg.processes)
    start = trio.current_time() if start_at is None else start_at
    measure_start = start + cfg.warmup_s
    end = measure_start + cfg.duration_s
    rec = Recorder(start, measure_start, cfg.interval_s)
    period = 1.0 / rate if rate > 0 else 0.0
    next_index = 0
    cpu_marks: dict[str, float] = {}

    timeouts = _OpTimeouts(cfg.op_timeout_s)

    async def worker() -> None:
        slot = timeouts.slot()
        while True:
            with trio.CancelScope() as scope:
                slot.scope = scope
                if await issue_ops(slot, scope):
                    return
            if scope.cancelled_caught:  # the op in flight ran out of time (see _OpTimeouts)
                op, began = slot.op
                error = trio.TooSlowError(f"{op} took more than {cfg.op_timeout_s} s")
                rec.record(op, began, trio.current_time(), error, "timeout")

    async def issue_ops(slot: _Slot, scope: trio.CancelScope) -> bool:
        """Issues ops until the run's end (True), or until a timeout fired as an op ended
        (False: the caller opens a fresh scope, so the late cancel hits no later op)."""
        nonlocal next_index
        op_timeout = cfg.op_timeout_s
        while True:
            now = trio.current_time()
            if now >= end:
                return True
            if period:
                intended = start + next_index * period
                next_index += 1
                if intended >= end:
                    return True
                if intended > now:
                    await trio.sleep_until(intended)
                began = intended
                now = trio.current_time()
                if intended >= measure_start:
                    histograms.record_seconds(rec.send_lag, now - intended)
            else:
                if now < start:
                    await trio.sleep_until(start)
                    now = trio.current_time()
                began = now
                next_index += 1
            op, key, arg = gen.next()
            error = kind = None
            slot.op = (op, began)
            slot.deadline = now + op_timeout
            try:
                if op == "read":
                    await driver.read(key)
                elif op == "update":
                    await driver.update(key, arg)
                elif op == "insert":
                    await driver.insert(key, arg)
                else:
                    await driver.scan(key, arg)
            except Exception as exc:  # every store error is data here, never fatal to the run
                error, kind = exc, driver.error_kind(exc)
            slot.deadline = math.inf
            rec.record(op, began, trio.current_time(), error, kind)
            if scope.cancel_called:
                return False

    async def ticker() -> None:
        k = 0
        cpu_prev = time.process_time()
        while True:
            await trio.sleep_until(start + (k + 1) * cfg.interval_s)
            cpu_now = time.process_time()
            iv = rec.interval(k)
            iv.cpu_s = cpu_now - cpu_prev
            cpu_prev = cpu_now
            if on_interval is not None:
                on_interval(_interval_view(iv, k, cfg))
            k += 1

    async def mark_cpu(at: float, name: str) -> None:
        await trio.sleep_until(at)
        cpu_marks[name] = time.process_time()
        if on_window is not None:
            on_window("start")

    ended = False

    def window_ended() -> None:
        nonlocal ended
        if not ended:
            ended = True
            if on_window is not None:
                on_window("end")

    async def mark_end() -> None:
        await trio.sleep_until(end)
        window_ended()

    async with trio.open_nursery() as outer:
        outer.start_soon(timeouts.run)
        outer.start_soon(ticker)
        outer.start_soon(mark_cpu, measure_start, "measure_start")
        outer.start_soon(mark_end)
        async with trio.open_nursery() as workers:
            for _ in range(concurrency):
                workers.start_soon(worker)
        cpu_marks["end"] = time.process_time()
        cpu_marks.setdefault("measure_start", cpu_marks["end"])
        if not ended:  # the last worker can finish a little before the window's end
            await trio.sleep_until(end)
            window_ended()
        outer.cancel_scope.cancel()
    finished = trio.current_time()

    if period:
        first = math.ceil((measure_start - start) / period - 1e-9)
        stop = math.ceil((end - start) / period - 1e-9)
        intended = max(0, stop - first)
        issued = max(0, min(next_index, stop) - first)
    else:
        intended = issued = None
    return {
        "process_index": process_index,
        "concurrency": concurrency,
        "ops": {op: {"ok": rec.ok[op], "hist": histograms.encode(rec.hists[op])}
                for op in OPS if rec.ok[op] or any(k.startswith(op + ":") for k in rec.errors)},
        "errors": dict(rec.errors),
        "error_samples": rec.error_samples,
        "intervals": [iv.to_dict(i) for i, iv in sorted(rec.intervals.items())],
        "schedule": {"intended": intended,
                     "issued": issued,
                     "missed": None if intended is None else intended - issued},
        "send_lag": histograms.encode(rec.send_lag),
        "cpu_s": cpu_marks["end"] - cpu_marks["measure_start"],
        "wall_s": max(1e-9, min(finished, end + cfg.op_timeout_s) - measure_start),
        "drain_s": max(0.0, finished - end),
    }


def _interval_view(iv: _Interval, index: int, cfg: LoadConfig) -> dict:
    return {"index": index, "ok": dict(iv.ok), "errors": iv.errors,
            "hist": histograms.encode(iv.hist), "cpu_s": iv.cpu_s,
            "t_s": (index + 1) * cfg.interval_s - cfg.warmup_s}


async def load_records(driver: Driver, records: int, value_size: int, concurrency: int, *,
                       process_index: int = 0, process_count: int = 1, seed: int = 1,
                       op_timeout_s: float = 10.0, on_progress=None) -> dict:
    """Inserts this process's share of records 0..records-1 (closed loop); returns counts."""
    gen = OpGenerator(get_workload("W"), 1, value_size, seed=seed + 7, process_index=process_index)
    numbers = iter(range(process_index, records, process_count))
    done = Counter()
    errors: Counter = Counter()
    samples: list[str] = []
    t0 = trio.current_time()

    async def worker() -> None:
        for number in numbers:
            try:
                with trio.fail_after(op_timeout_s):
                    await driver.insert(key_name(number), gen.value())
                done["ok"] += 1
            except trio.TooSlowError:
                errors["timeout"] += 1
            except Exception as exc:
                errors[driver.error_kind(exc)] += 1
                if len(samples) < MAX_ERROR_SAMPLES:
                    samples.append(repr(exc)[:300])
            if on_progress is not None and (done["ok"] + sum(errors.values())) % 1000 == 0:
                on_progress(done["ok"], sum(errors.values()))

    async with trio.open_nursery() as nursery:
        for _ in range(max(1, concurrency)):
            nursery.start_soon(worker)
    return {"ok": done["ok"], "errors": dict(errors), "error_samples": samples,
            "seconds": trio.current_time() - t0}
