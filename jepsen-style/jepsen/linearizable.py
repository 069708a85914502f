"""Linearizability checking of register histories (Wing & Gong search, Lowe's memoization).

Theory of operation (as in Porcupine):
- P-compositionality: a history is linearizable iff each key's sub-history is, so every key is
  checked on its own (small searches instead of one huge one).
- Each operation becomes a call entry and a return entry in one list ordered by real time. The
  search walks the list: at a call entry it tries to linearize that op now (the model must accept
  it in the current state); then it restarts from the front of what is left. Reaching a return
  entry means an op that had to be linearized by then was not: backtrack, undo the last choice
  and try the next candidate.
- Lowe's cache: the pair (set of ops linearized so far, model state) fully determines the rest
  of the search; a pair seen before is never explored again. The set is an int bitmask.
- Unknown outcomes (info): an info write or cas may take effect at any time after its call, or
  never; its return entry goes to the end (time unbounded) and "never" is the same as "at the
  very end". Reads with an unknown outcome, and anything that definitely failed, constrain
  nothing and are left out.
- A pending write whose value nothing observes (no read returned it, no cas expected it, and no
  cas that returned false could have seen it) can only make later ops fail, so it is
  linearized "at the end", i.e. dropped (or, if cas ops that returned false follow, no later
  than the last of them: after it nothing can tell it happened). A pending write of a value no other op writes, that
  some op saw, must have happened before the first of those returned: that becomes its return.
  Both keep the 2^k blow-up of k pending writes away (values are unique in the workload).
- Written values that no op ever compares with are all alike: they become one sentinel (so
  states that differ only in them meet in the cache), and pending writes of them are tried in
  invoke order only (symmetry breaking).
- A budget bounds the search; when it runs out the answer is "unknown", never "ok".

Ordering: events carry a global `index` (the recorder's total order); when present it orders
entries exactly (an op whose completion was recorded before another's invoke precedes it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from .history import FAIL, OK, Op, pair

VALID, INVALID, UNKNOWN = True, False, "unknown"

_INF = float("inf")


class RegisterModel:
    """A single register: read / write / cas / delete (= write of None). Initial state None."""

    init = None

    @staticmethod
    def step(state, f: str, inp, out, known: bool):
        """Returns (accepted, new_state) for applying op f in `state`."""
        if f == "read":
            return state == out, state
        if f == "write":
            return True, inp
        if f == "delete":
            return True, None
        if f == "cas":
            expected, new = inp
            if known:
                if out:
                    return state == expected, new
                return state != expected, state
            # unknown outcome linearized here: it succeeds iff its condition holds now
            return True, (new if state == expected else state)
        raise ValueError(f"register model has no op {f!r}")


@dataclass
class KeyResult:
    key: Any
    valid: Any  # True, False or "unknown"
    ops: int
    steps: int
    # for an invalid key: the op the deepest search could not linearize, and the state then
    blocked_op: dict | None = None
    state_then: Any = None
    linearized_then: list = field(default_factory=list)

    def to_json(self) -> dict:
        d = {"key": self.key, "valid": self.valid, "ops": self.ops, "steps": self.steps}
        if self.valid is not True and self.blocked_op is not None:
            d["blocked_op"] = self.blocked_op
            d["state_then"] = self.state_then
            d["linearized_then"] = self.linearized_then[-10:]
        return d


def _order(ev) -> float:
    return ev.index if ev.index >= 0 else ev.time


def _op_summary(op: Op) -> dict:
    c = op.complete
    return {
        "process": op.process,
        "f": op.f,
        "value": op.invoke.value,
        "result": None if c is None else c.value,
        "type": op.type,
        "invoke_index": op.invoke.index,
        "complete_index": None if c is None else c.index,
        "time": op.invoke.time,
    }


def _written(op: Op):
    """The value a write / cas / delete op would leave in the register."""
    if op.f == "delete":
        return None
    return _hashable(op.invoke.value[1] if op.f == "cas" else op.invoke.value)


def prepare(ops: list[Op]) -> list[tuple[Op, float, float, bool, bool]]:
    """(op, call order, return order, outcome known, soft) for the ops that constrain the search.

    soft: a pending op whose return is only a bound on when it can still matter; at that
    return it may also be dropped (it never happened, or happened where no op can tell).
    """
    kept = []
    observed = set()
    false_cas_ends = []
    writers: dict = {}
    first_seen: dict = {}  # value -> earliest completion of an op that needed the register = value
    for op in ops:
        t = op.type
        if op.f in ("write", "cas", "delete") and t != FAIL:
            v = _written(op)
            writers[v] = writers.get(v, 0) + 1
        if t == OK and op.f == "read":
            v = _hashable(op.complete.value)
            observed.add(v)
            first_seen[v] = min(first_seen.get(v, _INF), _order(op.complete))
        if op.f == "cas" and t != FAIL:
            observed.add(_hashable(op.invoke.value[0]))
            if t == OK and op.complete.value:
                v = _hashable(op.invoke.value[0])
                first_seen[v] = min(first_seen.get(v, _INF), _order(op.complete))
            if t == OK and not op.complete.value:
                false_cas_ends.append(_order(op.complete))
    latest_false_cas = max(false_cas_ends, default=-_INF)
    for op in ops:
        t = op.type
        if t == FAIL:
            continue  # definitely did not happen
        if op.f == "read" and t != OK:
            continue  # an unknown read constrains nothing
        if t == OK:
            kept.append((op, _order(op.invoke), _order(op.complete), True, False))
            continue
        # info write / cas / delete
        new = _written(op)
        if new not in observed and latest_false_cas < _order(op.invoke):
            continue  # unobservable: linearize at the end
        ret, soft = _INF, False
        if new not in observed:
            # only a cas that returned false can use it; after the last of them it is useless
            ret, soft = latest_false_cas, True
        elif new is not None and writers.get(new) == 1:
            # the only op that writes this value: if anyone saw it, it happened before the
            # first of them returned (or it never happened and the history is not linearizable)
            ret = first_seen.get(new, _INF)
        kept.append((op, _order(op.invoke), ret, False, soft))
    return kept


class _Unseen:
    """Stands for every written value that no op ever compares with: they are alike."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unobserved value>"


_UNSEEN = _Unseen()


def known_of_entry(e) -> bool:
    return e[3]


def f_of_entry(e) -> str:
    return e[0].f


def _observed_values(ops: list[Op]) -> set:
    """Values some op compares the register with: results of ok reads, expected of cas."""
    seen = set()
    for op in ops:
        if op.f == "read" and op.type == OK:
            seen.add(_hashable(op.complete.value))
        elif op.f == "cas" and op.type != FAIL:
            seen.add(_hashable(op.invoke.value[0]))
    return seen


def _input(op: Op, observed: set):
    """The op's input with every unobserved written value replaced by _UNSEEN."""
    if op.f == "write":
        v = _hashable(op.invoke.value)
        return v if v in observed else _UNSEEN
    if op.f == "cas":
        expected, new = _hashable(op.invoke.value[0]), _hashable(op.invoke.value[1])
        return (expected, new if new in observed else _UNSEEN)
    return _hashable(op.invoke.value)


def _hashable(v):
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    return v


def check_key(key, ops: list[Op], model=RegisterModel, budget: int = 1_000_000) -> KeyResult:
    entries = prepare(ops)
    n = len(entries)
    if n == 0:
        return KeyResult(key, VALID, 0, 0)
    # Build the event list: calls before returns at equal order (lenient: they overlap).
    evs = []
    for i, (_op, call, ret, _known, _soft) in enumerate(entries):
        evs.append((call, 0, i))
        evs.append((ret, 1, i))
    evs.sort()
    size = 2 * n + 1  # node 0 is the head sentinel
    nxt = [-1] * size
    prv = [-1] * size
    is_call = [False] * size
    op_of = [0] * size
    match = [0] * size
    call_node = [0] * n
    ret_node = [0] * n
    for pos, (_t, kind, i) in enumerate(evs, start=1):
        prv[pos] = pos - 1
        nxt[pos - 1] = pos
        is_call[pos] = kind == 0
        op_of[pos] = i
        if kind == 0:
            call_node[i] = pos
        else:
            ret_node[i] = pos
    for i in range(n):
        match[call_node[i]] = ret_node[i]
    f_of = [e[0].f for e in entries]
    observed = _observed_values(ops)
    in_of = [_input(e[0], observed) for e in entries]
    # Symmetry: pending writes of unobserved values are interchangeable once invoked, so one
    # may be linearized only after every such write invoked before it (canonical choice).
    pred = [-1] * n
    prev = -1
    for i in sorted(range(n), key=lambda j: entries[j][1]):
        if not known_of_entry(entries[i]) and f_of_entry(entries[i]) == "write" and in_of[i] is _UNSEEN:
            pred[i] = prev
            prev = i
    out_of = [_hashable(e[0].complete.value) if e[3] else None for e in entries]
    known_of = [e[3] for e in entries]
    soft_of = [e[4] for e in entries]

    def lift(e):
        for node in (e, match[e]):
            p, q = prv[node], nxt[node]
            nxt[p] = q
            if q != -1:
                prv[q] = p

    def unlift(e):
        for node in (match[e], e):
            p, q = prv[node], nxt[node]
            nxt[p] = node
            if q != -1:
                prv[q] = node

    step = model.step
    state = model.init
    linearized = 0
    cache = set()
    calls: list[tuple[int, Any]] = []
    entry = nxt[0]
    steps = 0
    best_depth = -1
    best = None
    while nxt[0] != -1:
        steps += 1
        if steps > budget:
            return KeyResult(key, UNKNOWN, n, steps)
        if is_call[entry]:
            i = op_of[entry]
            if pred[i] >= 0 and not (linearized >> pred[i]) & 1:
                entry = nxt[entry]  # a like write invoked earlier goes first
                continue
            ok, new_state = step(state, f_of[i], in_of[i], out_of[i], known_of[i])
            if ok:
                new_lin = linearized | (1 << i)
                memo = (new_lin, new_state)
                if memo not in cache:
                    cache.add(memo)
                    calls.append((entry, state))
                    state = new_state
                    linearized = new_lin
                    lift(entry)
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
        else:
            i = op_of[entry]
            if soft_of[i]:
                # its deadline: besides backtracking, it may be dropped (never happened)
                memo = (linearized | (1 << i), state)
                if memo not in cache:
                    cache.add(memo)
                    calls.append((call_node[i], state))
                    linearized |= 1 << i
                    lift(call_node[i])
                    entry = nxt[0]
                    continue
            if len(calls) > best_depth:
                best_depth = len(calls)
                best = (op_of[entry], state, [op_of[c] for c, _ in calls])
            if not calls:
                break
            entry, state = calls.pop()
            linearized &= ~(1 << op_of[entry])
            unlift(entry)
            entry = nxt[entry]
    if nxt[0] == -1:
        return KeyResult(key, VALID, n, steps)
    blocked, st, lin = best
    return KeyResult(
        key,
        INVALID,
        n,
        steps,
        blocked_op=_op_summary(entries[blocked][0]),
        state_then=st,
        linearized_then=[_op_summary(entries[j][0]) for j in lin],
    )


def check(events_or_ops: Iterable, model=RegisterModel, budget_per_key: int = 1_000_000) -> dict:
    """Checks a whole register history, key by key. Returns a JSON-able verdict:
    {"valid": True | False | "unknown", "keys": n, "invalid_keys": [...], "unknown_keys": [...]}.
    """
    items = list(events_or_ops)
    ops = items if (items and isinstance(items[0], Op)) else pair(items)
    by_key: dict[Any, list[Op]] = {}
    for op in ops:
        if op.f in ("read", "write", "cas", "delete"):
            by_key.setdefault(_hashable(op.key), []).append(op)
    results = [check_key(k, v, model, budget_per_key) for k, v in sorted(by_key.items(), key=lambda kv: str(kv[0]))]
    invalid = [r.to_json() for r in results if r.valid is INVALID]
    unknown = [r.to_json() for r in results if r.valid == UNKNOWN]
    valid = INVALID if invalid else (UNKNOWN if unknown else VALID)
    return {
        "valid": valid,
        "keys": len(results),
        "ops": sum(r.ops for r in results),
        "steps": sum(r.steps for r in results),
        "invalid_keys": invalid,
        "unknown_keys": unknown,
    }
