"""Fixtures that start real `kvstore serve` processes on 127.0.0.1 (free ports, tmp dirs).

`make_cluster(nodes=3, **kw)` returns a started `kvstore.testing.LocalCluster`; every cluster a
test started is killed at teardown, also when the test failed (its node logs are printed then).
"""

import pytest

from kvstore.testing import LocalCluster

# 100 ms ticks: this machine is shared and busy; shorter ticks cause needless elections
FAST = ["--tick-ms", "100", "--election-ticks", "10", "--request-timeout", "5"]


@pytest.fixture
def make_cluster(tmp_path, request):
    started = []

    def make(nodes=3, buckets=8, extra_args=(), start=True, **kw):
        c = LocalCluster(nodes, buckets=buckets, base_dir=tmp_path / f"c{len(started)}",
                         extra_args=[*FAST, *extra_args], **kw)
        started.append(c)
        if start:
            c.start(wait_s=60)
        return c

    yield make
    failed = getattr(request.node, "rep_call", None)
    for c in started:
        if failed is not None and failed.failed:
            for i in c.ids:
                print(f"--- node {i} log tail ---\n{c.tail_log(i, 15)}")
        c.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)
