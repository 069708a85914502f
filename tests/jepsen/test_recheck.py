"""run.py --check: a recorded history is checked again without a cluster."""

import subprocess
import sys
from pathlib import Path

from jepsen.history import write_jsonl

from .histories import h

RUN_PY = Path(__file__).resolve().parents[2] / "jepsen-style" / "run.py"


def check_dir(tmp_path, rows):
    write_jsonl(h(*rows), tmp_path / "history.jsonl")
    return subprocess.run([sys.executable, str(RUN_PY), "--check", str(tmp_path)],
                          capture_output=True, text=True, timeout=60)


def test_recheck_exit_status_follows_the_verdict(tmp_path):
    good = [("a", "invoke", "write", "x", "1"), ("a", "ok", "write", "x", "1"),
            ("b", "invoke", "read", "x", None), ("b", "ok", "read", "x", "1")]
    assert check_dir(tmp_path, good).returncode == 0
    bad = good[:2] + [("a", "invoke", "write", "x", "2"), ("a", "ok", "write", "x", "2")] + good[2:]
    p = check_dir(tmp_path, bad)
    assert p.returncode == 1 and '"invalid_keys": ["x"]' in p.stdout
    lost = [("a", "invoke", "add", "s", "e1"), ("a", "ok", "add", "s", "e1"),
            ("f", "invoke", "read", "s", None), ("f", "ok", "read", "s", [])]
    p = check_dir(tmp_path, lost)
    assert p.returncode == 1 and '"lost": ["e1"]' in p.stdout
