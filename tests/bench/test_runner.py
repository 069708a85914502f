"""The load loop against an in-memory fake driver, in virtual time (trio MockClock)."""

import json

import pytest
import trio
import trio.testing

from kvstore.bench import histograms
from kvstore.bench.drivers.fake import FakeDriver
from kvstore.bench.report import SCHEMA, aggregate
from kvstore.bench.runner import LoadConfig, load_records, run_load


def run_virtual(driver, cfg):
    async def main():
        async with trio.open_nursery() as nursery:
            await driver.open(nursery)
            raw = await run_load(driver, cfg)
            await driver.close()
            return raw

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def stalled_driver():
    # 10 ms per request, and a 1 s stall starting 2 s into the run
    return FakeDriver(latency_s=0.01, stall_from_s=2.0, stall_until_s=3.0)


def test_open_loop_counts_a_stall_as_latency_not_as_missing_samples():
    cfg = LoadConfig(workload="C", records=100, concurrency=4, duration_s=4.0, warmup_s=0.0, rate=200.0)
    raw = run_virtual(stalled_driver(), cfg)
    hist = histograms.decode(raw["ops"]["read"]["hist"])
    # every scheduled op was issued and measured...
    assert raw["schedule"] == {"intended": 800, "issued": 800, "missed": 0}
    assert hist.get_total_count() == 800
    # ...and the ~200 ops scheduled during the stall waited for it, from their intended time
    assert hist.get_max_value() >= 990_000  # µs: the op intended at the stall's start
    assert hist.get_value_at_percentile(80) >= 200_000
    assert hist.get_value_at_percentile(50) < 20_000


def test_closed_loop_hides_the_stall_that_open_loop_shows():
    cfg = LoadConfig(workload="C", records=100, concurrency=4, duration_s=4.0, warmup_s=0.0, rate=0.0)
    raw = run_virtual(stalled_driver(), cfg)
    hist = histograms.decode(raw["ops"]["read"]["hist"])
    # only the 4 in-flight requests see the stall; there are fewer samples, not slower ones
    assert hist.get_total_count() < 4 * 3 / 0.01 + 10
    assert hist.get_value_at_percentile(99) < 20_000
    assert raw["schedule"]["intended"] is None


def test_overload_reports_missed_operations():
    # capacity 2 clients / 10 ms = 200 ops/s, offered 1000 ops/s
    cfg = LoadConfig(workload="C", records=10, concurrency=2, duration_s=2.0, warmup_s=0.0, rate=1000.0)
    raw = run_virtual(FakeDriver(latency_s=0.01), cfg)
    assert raw["schedule"]["intended"] == 2000
    assert 350 <= raw["schedule"]["issued"] <= 450
    assert raw["schedule"]["missed"] == 2000 - raw["schedule"]["issued"]
    report = aggregate([raw], cfg, {"name": "fake"})
    assert any("not sustained" in w for w in report["warnings"])


def test_warmup_is_not_measured_and_errors_are_counted_by_kind():
    cfg = LoadConfig(workload="A", records=50, concurrency=2, duration_s=1.0, warmup_s=1.0, rate=100.0)
    raw = run_virtual(FakeDriver(latency_s=0.001, fail_every=10), cfg)
    measured = sum(o["ok"] for o in raw["ops"].values()) + sum(raw["errors"].values())
    assert measured == 100
    assert sum(raw["errors"].values()) == pytest.approx(10, abs=2)
    assert {k.split(":")[1] for k in raw["errors"]} == {"fake"}
    # the series covers warm-up and run
    assert [iv["index"] for iv in raw["intervals"]][:2] == [0, 1]


def test_timeouts_are_errors_of_kind_timeout():
    cfg = LoadConfig(workload="C", records=10, concurrency=1, duration_s=1.0, warmup_s=0.0, rate=10.0,
                     op_timeout_s=0.05)
    raw = run_virtual(FakeDriver(latency_s=1.0), cfg)
    assert raw["errors"].get("read:timeout", 0) >= 5
    assert "read" not in raw["ops"] or raw["ops"]["read"]["ok"] == 0


def test_histograms_merge_across_processes():
    cfg = LoadConfig(workload="B", records=100, concurrency=4, duration_s=2.0, warmup_s=0.5, rate=400.0,
                     processes=2)

    async def two_processes():
        raws = []
        for index in range(2):
            driver = FakeDriver(latency_s=0.002 * (index + 1))
            async with trio.open_nursery() as nursery:
                await driver.open(nursery)
                raws.append(await run_load(driver, cfg, process_index=index))
        return raws

    raws = trio.run(two_processes, clock=trio.testing.MockClock(autojump_threshold=0))
    report = aggregate(raws, cfg, {"name": "fake", "durability": "none"})
    assert report["all"]["ok"] == 800
    assert report["ops"]["read"]["ok"] + report["ops"]["update"]["ok"] == 800
    assert report["generator"]["processes"] == 2
    # the merged histogram holds both processes' samples: half at ~2 ms, half at ~4 ms
    lat = report["all"]["latency_ms"]
    assert lat["count"] == 800
    assert 1.9 <= lat["p50"] <= 4.1 and 3.9 <= lat["p90"] <= 4.1
    merged = histograms.decode(report["histograms"]["read"])
    assert merged.get_total_count() == report["ops"]["read"]["ok"]


def test_report_json_schema():
    cfg = LoadConfig(workload="E", records=200, concurrency=3, duration_s=2.0, warmup_s=1.0, rate=300.0)
    driver = FakeDriver(latency_s=0.001)

    async def main():
        async with trio.open_nursery() as nursery:
            await driver.open(nursery)
            loaded = await load_records(driver, cfg.records, cfg.value_size, 8)
            assert loaded["ok"] == 200 and len(driver.data) == 200
            return await run_load(driver, cfg)

    raw = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    report = json.loads(json.dumps(aggregate([raw], cfg, driver.describe())))
    assert report["schema"] == SCHEMA
    for key in ("config", "driver", "mode", "duration_s", "throughput_ops_s", "ops", "all", "errors",
                "schedule", "series", "generator", "warnings", "histograms"):
        assert key in report
    assert report["mode"] == "open-loop"
    assert report["driver"]["durability"]
    assert set(report["ops"]) == {"scan", "insert"}
    for op in report["ops"].values():
        assert set(op["latency_ms"]) == {"count", "p50", "p90", "p99", "p99.9", "max", "mean"}
        assert op["latency_ms"]["p50"] <= op["latency_ms"]["p99"] <= op["latency_ms"]["max"]
    assert report["throughput_ops_s"] == pytest.approx(300, rel=0.02)
    assert [p["t_s"] for p in report["series"]][:3] == [0.0, 1.0, 2.0]
    assert all(set(p) >= {"t_s", "ops_s", "p50_ms", "p99_ms", "errors"} for p in report["series"])
    assert report["schedule"]["missed"] == 0


def test_window_marks_bracket_the_measured_window():
    cfg = LoadConfig(workload="C", records=10, concurrency=2, duration_s=2.0, warmup_s=1.0, rate=50.0)
    driver = FakeDriver(latency_s=0.001)
    marks = []

    async def main():
        async with trio.open_nursery() as nursery:
            await driver.open(nursery)
            t0 = trio.current_time()
            await run_load(driver, cfg, on_window=lambda name: marks.append((name, trio.current_time() - t0)))

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert [m[0] for m in marks] == ["start", "end"]
    assert marks[0][1] == pytest.approx(1.0) and marks[1][1] == pytest.approx(3.0)
