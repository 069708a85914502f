import pytest

from tests.client.fakenode import FakeCluster


@pytest.fixture
def fake():
    """Three fake nodes with 4 buckets (tests/client/fakenode.py)."""
    with FakeCluster(n=3, num_buckets=4) as cluster:
        yield cluster
