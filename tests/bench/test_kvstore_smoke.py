"""`kvstore bench` against a real 3-node LocalCluster for about two seconds."""

import json

import pytest

from kvstore.bench import main


@pytest.mark.timeout(120)
def test_bench_against_local_cluster(tmp_path):
    from kvstore.testing import LocalCluster

    out = tmp_path / "r.json"
    with LocalCluster(nodes=3, buckets=8, base_dir=tmp_path / "c") as cluster:
        cluster.start(wait_s=60)
        rc = main(["--driver", "kvstore", "-e", cluster.seeds, "-w", "A", "--records", "200", "-c", "8",
                   "--duration", "1.5", "--warmup", "0.5", "--json", str(out), "-q"])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["driver"]["name"] == "kvstore"
    assert report["ops"]["read"]["ok"] > 0 and report["ops"]["update"]["ok"] > 0
    assert report["errors_total"] == 0, report["error_samples"]
