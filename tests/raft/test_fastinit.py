"""raft/fastinit.py builds the same objects as the dataclasses' own constructors."""

import dataclasses
import pickle

import pytest

from raft.fastinit import ENTRY_FIELDS, HARD_STATE_FIELDS, new_entry, new_hard_state
from raft.types import Entry, EntryType, HardState


@pytest.mark.parametrize("cls, names", [(Entry, ENTRY_FIELDS), (HardState, HARD_STATE_FIELDS)])
def test_every_field_is_set(cls, names):
    # A field added to the dataclass must be added to its fast constructor too.
    assert tuple(f.name for f in dataclasses.fields(cls)) == names


def test_entry_equals_the_regular_one():
    e = new_entry(3, 7, EntryType.CONF_CHANGE, b"abc")
    ref = Entry(3, 7, EntryType.CONF_CHANGE, b"abc")
    assert type(e) is Entry and e == ref and hash(e) == hash(ref) and repr(e) == repr(ref)
    assert pickle.loads(pickle.dumps(e)) == ref
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.term = 4  # type: ignore[misc]


def test_hard_state_equals_the_regular_one():
    h = new_hard_state(5, 2, 9)
    ref = HardState(5, 2, 9)
    assert type(h) is HardState and h == ref and hash(h) == hash(ref)
    assert h != HardState(5, 2, 8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.commit = 10  # type: ignore[misc]
