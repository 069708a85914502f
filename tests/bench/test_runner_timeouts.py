"""Operation timeouts of the load loop (one watchdog for all workers), in virtual time."""

import trio
import trio.testing

from kvstore.bench.drivers.fake import FakeDriver
from kvstore.bench.runner import LoadConfig, run_load

OP_TIMEOUT = 0.1


class ScriptedDriver(FakeDriver):
    """Op n: hangs if n % 5 == 0, takes exactly the op timeout if n % 3 == 0, else 1 ms.
    Records how each op ended and after how long."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0
        self.finished: list[tuple[int, float]] = []  # (n, seconds) of ops that returned
        self.cancelled: list[tuple[int, float]] = []  # (n, seconds) of ops cancelled

    async def read(self, key):
        self.n += 1
        n = self.n
        t0 = trio.current_time()
        try:
            if n % 5 == 0:
                await trio.sleep_forever()
            await trio.sleep(OP_TIMEOUT if n % 3 == 0 else 0.001)
        except trio.Cancelled:
            self.cancelled.append((n, trio.current_time() - t0))
            raise
        self.finished.append((n, trio.current_time() - t0))
        return None


def run(cfg, driver):
    async def main():
        async with trio.open_nursery() as nursery:
            await driver.open(nursery)
            return await run_load(driver, cfg)

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_every_hung_op_times_out_once_and_no_other_op_is_cut():
    cfg = LoadConfig(workload="C", records=10, concurrency=16, duration_s=2.0, warmup_s=0.0, rate=0.0,
                     op_timeout_s=OP_TIMEOUT)
    driver = ScriptedDriver()
    raw = run(cfg, driver)
    timeouts = raw["errors"].get("read:timeout", 0)
    ok = raw["ops"]["read"]["ok"]
    assert set(raw["errors"]) <= {"read:timeout"}
    # every op issued is recorded exactly once, as OK or as a timeout
    assert ok + timeouts == driver.n
    assert ok == len(driver.finished) and timeouts == len(driver.cancelled)
    hung = {n for n in range(1, driver.n + 1) if n % 5 == 0}
    # every hung op was cancelled, never before its timeout; a 1 ms op never was
    assert {n for n, _ in driver.cancelled} >= hung
    assert all(n % 5 == 0 or n % 3 == 0 for n, _ in driver.cancelled)
    assert all(seconds >= OP_TIMEOUT - 1e-9 for _, seconds in driver.cancelled)
    assert len(hung) >= 50  # the run went on after the timeouts


def test_open_loop_timeouts_are_recorded_and_the_schedule_kept():
    cfg = LoadConfig(workload="C", records=10, concurrency=32, duration_s=1.0, warmup_s=0.0, rate=200.0,
                     op_timeout_s=OP_TIMEOUT)
    driver = ScriptedDriver()
    raw = run(cfg, driver)
    assert raw["schedule"] == {"intended": 200, "issued": 200, "missed": 0}
    assert raw["ops"]["read"]["ok"] + raw["errors"]["read:timeout"] == 200 == driver.n
    assert raw["errors"]["read:timeout"] == len(driver.cancelled) >= 40
