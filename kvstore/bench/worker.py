"""A generator worker process: `python -m kvstore.bench.worker` with a JSON job on stdin.

Writes JSON lines to stdout: {"type": "interval", "view": {...}} each interval, then
{"type": "result", "raw": {...}} or {"type": "error", "message": "..."}.
"""

from __future__ import annotations

import json
import sys
import time

import trio

from kvstore.bench.drivers import make_driver
from kvstore.bench.runner import LoadConfig, run_load


def _emit(msg: dict) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


async def _main(job: dict) -> None:
    cfg = LoadConfig(**job["config"])
    driver = make_driver(job["driver"])
    async with trio.open_nursery() as nursery:
        try:
            await driver.open(nursery)
            start_at = trio.current_time() + (job["start_at_unix"] - time.time())
            raw = await run_load(driver, cfg, process_index=job["process_index"], start_at=start_at,
                                 on_interval=lambda view: _emit({"type": "interval", "view": view}))
            _emit({"type": "result", "raw": raw})
        finally:
            with trio.CancelScope(shield=True):
                await driver.close()
            nursery.cancel_scope.cancel()


def main() -> int:
    job = json.loads(sys.stdin.read())
    try:
        trio.run(_main, job)
    except Exception as exc:
        _emit({"type": "error", "message": f"{type(exc).__name__}: {exc}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
