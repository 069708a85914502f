"""`kvstore bench` end to end against the in-memory fake driver (real time, a few seconds)."""

import json
import subprocess
import sys

import pytest

from kvstore.bench import main
from kvstore.bench.progress import Progress
from kvstore.bench.runner import LoadConfig


def test_cli_run_writes_json_and_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    rc = main(["--driver", "fake", "-w", "B", "--records", "500", "-c", "8", "--duration", "1",
               "--warmup", "0.5", "--rate", "500", "--json", str(out), "--png", str(png)])
    assert rc == 0
    report = json.loads(out.read_text())
    assert report["driver"]["name"] == "fake"
    assert report["ok"] > 0 and report["errors_total"] == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert "p99" in text and "read" in text
    assert "\r" not in text  # no live display when stdout is not a terminal


def test_cli_several_processes(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run(
        [sys.executable, "-m", "kvstore.bench", "run", "--driver", "fake", "-w", "A", "--records", "100",
         "-c", "4", "--procs", "2", "--duration", "1", "--warmup", "0.2", "--rate", "400",
         "--json", str(out), "-q"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["generator"]["processes"] == 2
    assert len(report["generator"]["cpu_util_per_process"]) == 2
    assert report["schedule"]["intended"] == 400
    assert report["ok"] + report["schedule"]["missed"] >= 390


@pytest.mark.parametrize("argv", [["--help"], ["compare", "--help"], ["pysyncobj-node", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    assert "usage" in capsys.readouterr().out


def test_bad_arguments_are_reported_not_crashed(capsys):
    assert main(["--driver", "fake", "--concurrency", "0"]) == 2
    assert "concurrency" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--driver", "nosuch"])


class _Tty:
    def __init__(self):
        self.text = ""

    def isatty(self):
        return True

    def write(self, s):
        self.text += s

    def flush(self):
        pass


def test_progress_line_draws_once_all_processes_reported():
    cfg = LoadConfig(processes=2, duration_s=5, warmup_s=1)
    tty = _Tty()
    p = Progress(cfg, stream=tty)
    view = {"index": 2, "ok": {"read": 100}, "errors": 1, "hist": "", "cpu_s": 0.5, "t_s": 2.0}
    p.on_interval(view)
    assert tty.text == ""
    p.on_interval(dict(view, ok={"read": 50, "update": 50}))
    assert tty.text.startswith("\r") and "200 ops/s" in tty.text and "errors 2" in tty.text
    p.finish()


def test_profile_summary_separates_idle(tmp_path):
    from kvstore.bench.profiling import summarize

    raw = tmp_path / "p.txt"
    raw.write_text("main (a.py:1);run (trio/_core/_run.py:1);EpollIOManager.get_events (trio/_core/_io_epoll.py:243) 60\n"
                   "main (a.py:1);work (b.py:2);commit (c.py:3) 30\n"
                   "main (a.py:1);work (b.py:2) 10\n")
    text = summarize(str(raw))
    assert "100 samples, 60% idle" in text
    assert "75.0%  commit (c.py:3)" in text
    assert "100.0%  work (b.py:2)" in text


def test_unreachable_store_is_a_one_line_error(capsys):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    assert main(["--driver", "redis", "-e", f"127.0.0.1:{port}", "--duration", "1", "-q"]) == 1
    err = capsys.readouterr().err
    assert "kvstore bench:" in err and "Traceback" not in err
