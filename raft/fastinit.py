"""Cheaper constructors for the frozen dataclasses the hot path builds (types.py).

A frozen dataclass's generated `__init__` stores each field with `object.__setattr__` (its
own `__setattr__` raises). On a slotted class calling the slots' descriptors directly does the
same at about half the cost (Entry: ~510 -> ~320 ns, HardState: ~400 -> ~220 ns on CPython
3.11). The results are ordinary instances: equal, hashable, immutable afterwards.
tests/raft/test_fastinit.py checks that every field is set, so a field added to one of these
types fails that test until it is added here too.
"""

from __future__ import annotations

from .types import Entry, EntryType, HardState

_new = object.__new__


def _setters(cls: type, names: tuple[str, ...]):
    return tuple(cls.__dict__[name].__set__ for name in names)


ENTRY_FIELDS = ("term", "index", "type", "data")
HARD_STATE_FIELDS = ("term", "vote", "commit")

_e_term, _e_index, _e_type, _e_data = _setters(Entry, ENTRY_FIELDS)
_h_term, _h_vote, _h_commit = _setters(HardState, HARD_STATE_FIELDS)


def new_entry(term: int, index: int, type: EntryType, data: bytes) -> Entry:
    """`Entry(term, index, type, data)`."""
    e = _new(Entry)
    _e_term(e, term)
    _e_index(e, index)
    _e_type(e, type)
    _e_data(e, data)
    return e


def new_hard_state(term: int, vote: int, commit: int) -> HardState:
    """`HardState(term, vote, commit)`."""
    h = _new(HardState)
    _h_term(h, term)
    _h_vote(h, vote)
    _h_commit(h, commit)
    return h
