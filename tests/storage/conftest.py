import pytest

from storage import NodeStore


@pytest.fixture
def store(tmp_path):
    s = NodeStore.open(tmp_path / "store", sync=False)
    yield s
    s.close()
