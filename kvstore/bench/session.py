"""One benchmark run end to end: open the driver, load records, run in one or more processes,
merge into a report.

With `processes` > 1 the parent loads the records itself, then starts that many worker
processes (`python -m kvstore.bench.worker`, config as JSON on stdin), which agree on a start
time on the wall clock and report intervals and their raw result as JSON lines on stdout; the
parent merges their histograms exactly (HdrHistogram encoding).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import trio

from kvstore.bench.drivers import make_driver
from kvstore.bench.report import aggregate
from kvstore.bench.runner import LoadConfig, load_records, run_load

WORKER_STARTUP_S = 2.0


async def run_benchmark(cfg: LoadConfig, driver_spec: dict, *, load: bool = True,
                        progress=None, log=None, on_window=None) -> dict:
    cfg.validate()
    log = log or (lambda text: None)
    driver_spec = dict(driver_spec, consistency=cfg.consistency)
    driver = make_driver(driver_spec)
    on_interval = progress.on_interval if progress is not None else None
    async with trio.open_nursery() as nursery:
        try:
            await driver.open(nursery)
            info = driver.describe()
            if load:
                def on_load(ok, err):
                    if progress is not None:
                        progress.message(f"loading: {ok}/{cfg.records} records, {err} errors")
                loaded = await load_records(driver, cfg.records, cfg.value_size, min(cfg.concurrency, 64),
                                            seed=cfg.seed, op_timeout_s=cfg.op_timeout_s, on_progress=on_load)
                if progress is not None:
                    progress.finish()
                log(f"loaded {loaded['ok']} records in {loaded['seconds']:.1f} s"
                    + (f", errors {loaded['errors']} e.g. {loaded['error_samples'][:1]}" if loaded["errors"] else ""))
                if loaded["ok"] == 0:
                    raise RuntimeError(f"could not load any record: {loaded['errors']} {loaded['error_samples'][:2]}")
            if cfg.processes == 1:
                raws = [await run_load(driver, cfg, on_interval=on_interval, on_window=on_window)]
        finally:
            with trio.CancelScope(shield=True):
                await driver.close()
            nursery.cancel_scope.cancel()
    if cfg.processes > 1:
        raws = await _run_workers(cfg, driver_spec, on_interval, on_window)
    if progress is not None:
        progress.finish()
    return aggregate(raws, cfg, info)


async def _run_workers(cfg: LoadConfig, driver_spec: dict, on_interval, on_window=None) -> list[dict]:
    start_at_unix = time.time() + WORKER_STARTUP_S
    raws: list[dict | None] = [None] * cfg.processes
    problems: list[str] = []

    async def window_marks() -> None:
        if on_window is None:
            return
        start = trio.current_time() + (start_at_unix - time.time())
        await trio.sleep_until(start + cfg.warmup_s)
        on_window("start")
        await trio.sleep_until(start + cfg.warmup_s + cfg.duration_s)
        on_window("end")

    async def one(index: int) -> None:
        job = json.dumps({"config": cfg.to_dict(), "driver": driver_spec, "process_index": index,
                          "start_at_unix": start_at_unix}).encode()
        proc = await trio.lowlevel.open_process(
            [sys.executable, "-m", "kvstore.bench.worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            await proc.stdin.send_all(job)
            await proc.stdin.aclose()
            buf = b""
            deadline = trio.current_time() + WORKER_STARTUP_S + cfg.warmup_s + cfg.duration_s + cfg.op_timeout_s + 30
            with trio.move_on_after(max(1.0, deadline - trio.current_time())):
                while True:
                    chunk = await proc.stdout.receive_some(1 << 16)
                    if not chunk:
                        break
                    buf += chunk
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        msg = json.loads(line)
                        if msg["type"] == "interval" and on_interval is not None:
                            on_interval(msg["view"])
                        elif msg["type"] == "result":
                            raws[index] = msg["raw"]
                        elif msg["type"] == "error":
                            problems.append(f"worker {index}: {msg['message']}")
        finally:
            if proc.returncode is None:
                with trio.move_on_after(5):
                    await proc.wait()
                if proc.returncode is None:
                    proc.kill()
                    with trio.CancelScope(shield=True):
                        await proc.wait()
        if raws[index] is None and not problems:
            problems.append(f"worker {index} exited with {proc.returncode} and no result")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(window_marks)
        for i in range(cfg.processes):
            nursery.start_soon(one, i)
    if problems:
        raise RuntimeError("; ".join(problems))
    return raws  # type: ignore[return-value]
