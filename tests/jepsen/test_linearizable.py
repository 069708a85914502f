"""The linearizability checker on hand-made histories, against a brute-force checker, and on
histories generated from a real register (hypothesis)."""

import itertools
import random

import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st

from jepsen import linearizable as lin
from jepsen.history import INFO, OK, FAIL, Event, pair

from .histories import h


def verdict(events, **kw):
    return lin.check(events, **kw)["valid"]


# ---------------------------------------------------------------- hand-made, linearizable


def test_sequential_write_then_read():
    assert verdict(h(
        ("a", "invoke", "write", "x", 1), ("a", "ok", "write", "x", 1),
        ("b", "invoke", "read", "x", None), ("b", "ok", "read", "x", 1),
    )) is True


def test_read_of_initial_state_is_none():
    assert verdict(h(("a", "invoke", "read", "x", None), ("a", "ok", "read", "x", None))) is True


def test_concurrent_read_may_see_old_or_new():
    for seen in (None, 1):
        assert verdict(h(
            ("a", "invoke", "write", "x", 1),
            ("b", "invoke", "read", "x", None),
            ("b", "ok", "read", "x", seen),
            ("a", "ok", "write", "x", 1),
        )) is True


def test_reads_order_concurrent_writes():
    # two overlapping writes; later reads agree on which came last
    assert verdict(h(
        ("a", "invoke", "write", "x", 1), ("b", "invoke", "write", "x", 2),
        ("a", "ok", "write", "x", 1), ("b", "ok", "write", "x", 2),
        ("c", "invoke", "read", "x", None), ("c", "ok", "read", "x", 1),
        ("c", "invoke", "read", "x", None), ("c", "ok", "read", "x", 1),
    )) is True


def test_info_write_may_take_effect_much_later():
    assert verdict(h(
        ("a", "invoke", "write", "x", 1), ("a", "info", "write", "x", 1),
        ("b", "invoke", "read", "x", None), ("b", "ok", "read", "x", None),
        ("b", "invoke", "read", "x", None), ("b", "ok", "read", "x", 1),
    )) is True


def test_info_write_may_never_take_effect():
    assert verdict(h(
        ("a", "invoke", "write", "x", 1), ("a", "info", "write", "x", 1),
        ("b", "invoke", "read", "x", None), ("b", "ok", "read", "x", None),
    )) is True


def test_failed_cas_and_successful_cas():
    assert verdict(h(
        ("a", "invoke", "write", "x", 1), ("a", "ok", "write", "x", 1),
        ("a", "invoke", "cas", "x", [2, 3]), ("a", "ok", "cas", "x", False),
        ("a", "invoke", "cas", "x", [1, 3]), ("a", "ok", "cas", "x", True),
        ("b", "invoke", "read", "x", None), ("b", "ok", "read", "x", 3),
    )) is True


def test_keys_are_independent():
    assert verdict(h(
        ("a", "invoke", "write", "x", 1), ("a", "ok", "write", "x", 1),
        ("b", "invoke", "read", "y", None), ("b", "ok", "read", "y", None),
    )) is True


# ---------------------------------------------------------------- hand-made, not linearizable


def test_stale_read_after_write_completed():
    r = lin.check(h(
        ("a", "invoke", "write", "x", 1), ("a", "ok", "write", "x", 1),
        ("a", "invoke", "write", "x", 2), ("a", "ok", "write", "x", 2),
        ("b", "invoke", "read", "x", None), ("b", "ok", "read", "x", 1),
    ))
    assert r["valid"] is False
    bad = r["invalid_keys"][0]
    assert bad["key"] == "x" and bad["blocked_op"]["f"] == "read"


def test_read_of_value_never_written():
    assert verdict(h(("b", "invoke", "read", "x", None), ("b", "ok", "read", "x", 7))) is False


def test_non_monotonic_reads():
    assert verdict(h(
        ("a", "invoke", "write", "x", 1),
        ("b", "invoke", "read", "x", None), ("b", "ok", "read", "x", 1),
        ("b", "invoke", "read", "x", None), ("b", "ok", "read", "x", None),
        ("a", "ok", "write", "x", 1),
    )) is False


def test_failed_write_must_not_be_read():
    assert verdict(h(
        ("a", "invoke", "write", "x", 1), ("a", "fail", "write", "x", 1),
        ("b", "invoke", "read", "x", None), ("b", "ok", "read", "x", 1),
    )) is False


def test_cas_success_when_value_differs():
    assert verdict(h(
        ("a", "invoke", "write", "x", 1), ("a", "ok", "write", "x", 1),
        ("a", "invoke", "cas", "x", [2, 3]), ("a", "ok", "cas", "x", True),
    )) is False


def test_cas_failure_when_value_matches():
    assert verdict(h(
        ("a", "invoke", "write", "x", 1), ("a", "ok", "write", "x", 1),
        ("a", "invoke", "cas", "x", [1, 3]), ("a", "ok", "cas", "x", False),
    )) is False


def test_pending_write_can_explain_a_failed_cas():
    # the unread info write of 5 is the only thing that makes cas(1->3) fail: it must be kept
    assert verdict(h(
        ("a", "invoke", "write", "x", 1), ("a", "ok", "write", "x", 1),
        ("b", "invoke", "write", "x", 5), ("b", "info", "write", "x", 5),
        ("a", "invoke", "cas", "x", [1, 3]), ("a", "ok", "cas", "x", False),
    )) is True


def test_one_bad_key_makes_the_history_invalid():
    r = lin.check(h(
        ("a", "invoke", "write", "y", 1), ("a", "ok", "write", "y", 1),
        ("b", "invoke", "read", "x", None), ("b", "ok", "read", "x", 9),
    ))
    assert r["valid"] is False and [k["key"] for k in r["invalid_keys"]] == ["x"]


def test_budget_exhausted_is_unknown_never_ok():
    rows = []
    for i in range(12):  # 12 concurrent writes, then reads forcing a lot of search
        rows.append((f"w{i}", "invoke", "write", "x", i))
    for i in range(12):
        rows.append((f"w{i}", "ok", "write", "x", i))
    rows += [("r", "invoke", "read", "x", None), ("r", "ok", "read", "x", 99)]
    assert verdict(h(*rows), budget_per_key=50) == "unknown"
    assert verdict(h(*rows)) is False


def test_malformed_history_is_rejected():
    with pytest.raises(ValueError):
        lin.check(h(("a", "ok", "write", "x", 1)))
    with pytest.raises(ValueError):
        lin.check(h(("a", "invoke", "write", "x", 1), ("a", "invoke", "write", "x", 2)))


# ---------------------------------------------------------------- against brute force


def brute_force(events) -> bool:
    """Tries every order that respects real time; info ops may also never happen."""
    ops = [op for op in pair(events) if op.type != FAIL and not (op.f == "read" and op.type != OK)]
    model = lin.RegisterModel

    def end(op):
        return op.complete.index if op.type == OK else float("inf")

    def search(remaining, state):
        if all(op.type != OK for op in remaining):
            return True  # the rest are info: they may all never happen
        for op in remaining:
            if any(end(p) < op.invoke.index for p in remaining if p is not op):
                continue  # someone else finished before this one started
            known = op.type == OK
            out = op.complete.value if known else None
            inp = tuple(op.invoke.value) if op.f == "cas" else op.invoke.value
            ok, new = model.step(state, op.f, inp, out, known)
            rest = [p for p in remaining if p is not op]
            if ok and search(rest, new):
                return True
            if not known and search(rest, state):  # never happens
                return True
        return False

    by_key = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    return all(search(v, None) for v in by_key.values())


@st.composite
def random_history(draw):
    """Random concurrent ops with random (mostly wrong) results over a few values."""
    n_ops = draw(st.integers(1, 6))
    rows, open_ = [], {}
    values = st.integers(0, 2)
    for i in range(n_ops):
        p = f"p{i}"
        f = draw(st.sampled_from(["read", "write", "cas"]))
        inv = None if f == "read" else (draw(values) if f == "write" else [draw(values), draw(values)])
        rows.append([p, "invoke", f, "x", inv])
        open_[p] = (f, inv)
        # close some open ops at random points
        while open_ and draw(st.booleans()):
            q = draw(st.sampled_from(sorted(open_)))
            qf, qinv = open_.pop(q)
            t = draw(st.sampled_from([OK, OK, INFO, FAIL]))
            out = {"read": draw(st.one_of(st.none(), values)), "write": qinv, "cas": draw(st.booleans())}[qf]
            rows.append([q, t, qf, "x", out if t == OK else qinv])
    for q in sorted(open_):
        qf, qinv = open_[q]
        t = draw(st.sampled_from([OK, INFO]))
        out = {"read": draw(st.one_of(st.none(), values)), "write": qinv, "cas": draw(st.booleans())}[qf]
        rows.append([q, t, qf, "x", out if t == OK else qinv])
    return h(*map(tuple, rows))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_history())
def test_agrees_with_brute_force(events):
    assert verdict(events) is brute_force(events)


@st.composite
def unique_value_history(draw):
    """Like random_history, but every write / cas writes a fresh value (as the workload does),
    which is what the checker's pruning of pending writes relies on."""
    n_ops = draw(st.integers(1, 7))
    rows, open_, written = [], {}, [None]
    fresh = iter(range(100, 1000))
    for i in range(n_ops):
        p = f"p{i}"
        f = draw(st.sampled_from(["read", "write", "cas", "write"]))
        if f == "read":
            inv = None
        elif f == "write":
            inv = next(fresh)
            written.append(inv)
        else:
            inv = [draw(st.sampled_from(written)), next(fresh)]
            written.append(inv[1])
        rows.append([p, "invoke", f, "x", inv])
        open_[p] = (f, inv)
        while open_ and draw(st.booleans()):
            q = draw(st.sampled_from(sorted(open_)))
            qf, qinv = open_.pop(q)
            t = draw(st.sampled_from([OK, OK, INFO, INFO, FAIL]))
            out = {"read": draw(st.sampled_from(written)), "write": qinv, "cas": draw(st.booleans())}[qf]
            rows.append([q, t, qf, "x", out if t == OK else qinv])
    for q in sorted(open_):
        qf, qinv = open_[q]
        t = draw(st.sampled_from([OK, INFO]))
        out = {"read": draw(st.sampled_from(written)), "write": qinv, "cas": draw(st.booleans())}[qf]
        rows.append([q, t, qf, "x", out if t == OK else qinv])
    return h(*map(tuple, rows))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(unique_value_history())
def test_agrees_with_brute_force_on_unique_values(events):
    assert verdict(events) is brute_force(events)


# ---------------------------------------------------------------- generated from a real register


def simulate(seed: int, n_procs: int, n_ops: int, info_rate: float):
    """Runs a real register under random concurrency. Each op takes effect at one instant
    between its invoke and its completion; an info op's completion is lost (it may or may
    not have taken effect). Returns the events in real-time order."""
    rng = random.Random(seed)
    reg = {"x": None, "y": None}
    events = []
    counter = itertools.count(1)
    procs = {}  # process -> dict(f, key, inv, stage, out)
    next_pid = itertools.count()
    live = [next(next_pid) for _ in range(n_procs)]
    started = 0

    def emit(p, t, f, k, v):
        events.append(Event(process=p, type=t, f=f, key=k, value=v, time=len(events), index=len(events)))

    while started < n_ops or procs:
        p = rng.choice(live)
        st_ = procs.get(p)
        if st_ is None:
            if started >= n_ops:
                live.remove(p)
                continue
            started += 1
            k = rng.choice(["x", "y"])
            f = rng.choice(["read", "write", "cas"])
            if f == "read":
                inv = None
            elif f == "write":
                inv = next(counter)
            else:
                cur = reg[k]
                inv = [cur if rng.random() < 0.5 else rng.choice([None, next(counter)]), next(counter)]
            procs[p] = {"f": f, "key": k, "inv": inv, "applied": False}
            emit(p, "invoke", f, k, inv)
        elif not st_["applied"]:
            f, k, inv = st_["f"], st_["key"], st_["inv"]
            if f == "read":
                out = reg[k]
            elif f == "write":
                reg[k] = inv
                out = inv
            else:
                out = reg[k] == inv[0]
                if out:
                    reg[k] = inv[1]
            lost = rng.random() < info_rate
            st_.update(applied=True, out=out, lost=lost)
        else:
            f, k = st_["f"], st_["key"]
            del procs[p]
            if st_["lost"]:
                emit(p, "info", f, k, st_["inv"])
                live.remove(p)
                new = next(next_pid)
                live.append(new)
            else:
                emit(p, "ok", f, k, st_["out"])
    return events


def simulate_not_applied(seed, n_procs, n_ops):
    """Like simulate, but some writes time out before taking effect (and fail outright)."""
    rng = random.Random(seed)
    reg = None
    events = []
    counter = itertools.count(1)

    def emit(p, t, f, v):
        events.append(Event(process=p, type=t, f=f, key="x", value=v, time=len(events), index=len(events)))

    open_ = {}
    pid = itertools.count()
    for _ in range(n_ops):
        p = next(pid)
        f = rng.choice(["read", "write"])
        v = next(counter) if f == "write" else None
        emit(p, "invoke", f, v)
        open_[p] = (f, v)
        while open_ and rng.random() < 0.6:
            q = rng.choice(sorted(open_))
            qf, qv = open_.pop(q)
            fate = rng.random()
            if qf == "read":
                emit(q, "ok", qf, reg)
            elif fate < 0.2:
                emit(q, "info", qf, qv)  # never applied
            elif fate < 0.3:
                emit(q, "fail", qf, qv)  # definitely not applied
            else:
                reg = qv
                emit(q, "ok", qf, qv)
    for q, (qf, qv) in open_.items():
        emit(q, "info", qf, qv)
    return events


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 6), st.integers(1, 60), st.sampled_from([0.0, 0.1, 0.3]))
def test_real_register_histories_are_linearizable(seed, n_procs, n_ops, info_rate):
    events = simulate(seed, n_procs, n_ops, info_rate)
    assert verdict(events) is True


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 5), st.integers(1, 40))
def test_unapplied_and_failed_writes_are_linearizable(seed, n_procs, n_ops):
    assert verdict(simulate_not_applied(seed, n_procs, n_ops)) is True


def stale_read_mutation(events):
    """Turns one ok read into a stale one: it returns the value of a write W1 although a later
    write W2 (invoked after W1 completed, completed before the read was invoked) overwrote it.
    Values are unique, so no order can explain it. Returns None if no such triple exists."""
    ops = pair(events)
    for r in ops:
        if r.f != "read" or r.type != OK:
            continue
        writes = [o for o in ops if o.key == r.key and o.f == "write" and o.type == OK]
        for w2 in writes:
            if w2.complete.index > r.invoke.index:
                continue
            for w1 in writes:
                if w1.complete.index < w2.invoke.index and w1.invoke.value != r.complete.value:
                    mutated = list(events)
                    i = r.complete.index
                    e = mutated[i]
                    mutated[i] = Event(e.process, e.type, e.f, e.key, w1.invoke.value, e.time, e.index)
                    return mutated
    return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.integers(0, 2**32), st.integers(1, 5), st.integers(5, 60), st.sampled_from([0.0, 0.2]))
def test_stale_read_is_caught(seed, n_procs, n_ops, info_rate):
    events = simulate(seed, n_procs, n_ops, info_rate)
    mutated = stale_read_mutation(events)
    assume(mutated is not None)
    assert verdict(mutated) is False
