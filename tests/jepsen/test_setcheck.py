from jepsen import availability, setcheck
from jepsen.history import pair

from .histories import h


def test_all_acknowledged_present_is_valid():
    r = setcheck.check(h(
        ("a", "invoke", "add", "s", 1), ("a", "ok", "add", "s", 1),
        ("b", "invoke", "add", "s", 2), ("b", "info", "add", "s", 2),
        ("c", "invoke", "add", "s", 3), ("c", "fail", "add", "s", 3),
        ("f", "invoke", "read", "s", None), ("f", "ok", "read", "s", [1, 2]),
    ))
    assert r["valid"] is True and r["recovered"] == 1 and r["lost"] == []


def test_lost_acknowledged_add():
    r = setcheck.check(h(
        ("a", "invoke", "add", "s", 1), ("a", "ok", "add", "s", 1),
        ("a", "invoke", "add", "s", 2), ("a", "ok", "add", "s", 2),
        ("f", "invoke", "read", "s", None), ("f", "ok", "read", "s", [2]),
    ))
    assert r["valid"] is False and r["lost"] == [1]


def test_unexpected_and_resurrected_elements():
    r = setcheck.check(h(
        ("a", "invoke", "add", "s", 1), ("a", "fail", "add", "s", 1),
        ("f", "invoke", "read", "s", None), ("f", "ok", "read", "s", [1, 7]),
    ))
    assert r["valid"] is False and r["unexpected"] == [7] and r["failed_but_present"] == [1]


def test_only_the_last_read_is_final_and_it_is_required():
    r = setcheck.check(h(
        ("a", "invoke", "add", "s", 1), ("a", "ok", "add", "s", 1),
        ("f", "invoke", "read", "s", None), ("f", "ok", "read", "s", [1]),
        ("f", "invoke", "read", "s", None), ("f", "ok", "read", "s", []),
    ))
    assert r["lost"] == [1]
    r = setcheck.check(h(("a", "invoke", "add", "s", 1), ("a", "ok", "add", "s", 1)))
    assert r["valid"] is False and r["keys_without_final_read"] == ["s"]


def test_availability_counts_and_gaps():
    ev = h(
        ("a", "invoke", "write", "x", 1), ("a", "ok", "write", "x", 1),      # t=0,1 s
        ("a", "invoke", "write", "x", 2), ("a", "info", "write", "x", 2),    # t=2,3 (fault)
        ("b", "invoke", "write", "x", 3), ("b", "fail", "write", "x", 3),    # t=4,5 (fault)
        ("b", "invoke", "read", "x", None), ("b", "ok", "read", "x", 1),     # t=6,7
    )
    for e in ev:
        e.time = e.index * 1_000_000_000  # event i at i seconds
    r = availability.check(pair(ev), [(1_500_000_000, 5_500_000_000, "kill")], bucket_of=lambda k: 0)
    assert r["during_faults"]["ok"] == 0 and r["during_faults"]["info"] == 1
    assert r["during_faults"]["fail"] == 1 and r["outside_faults"]["ok"] == 2
    # no ok on bucket 0 from the fault's start (1.5 s) until the read completed (7 s)
    assert r["longest_unavailability_after_fault_s"]["max"] == 5.5


def test_plot_writes_a_png(tmp_path):
    import pytest

    pytest.importorskip("matplotlib")
    from jepsen import plot

    ev = h(("a", "invoke", "write", "x", 1), ("a", "ok", "write", "x", 1),
           ("b", "invoke", "write", "x", 2), ("b", "info", "write", "x", 2))
    for e in ev:
        e.time = e.index * 400_000_000
    assert plot.plot(pair(ev), [(500_000_000, None, "kill")], tmp_path / "p.png", "t")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
