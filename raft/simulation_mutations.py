"""Deliberately broken variants of the Raft core's rules, to check the simulator catches them.

Test tooling only: each `Mutation` monkeypatches one rule of raft/core.py (or raft/log.py)
for as long as it is applied (`with mutation:` or `apply()` / `undo()`); nothing here is
used by the core itself. `scripts/sim.py --mutation NAME` runs seeds until the simulator
reports a violation; tests/raft/test_mutations.py does the same within a seed budget.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .core import Raft
from .log import RaftLog
from .types import MessageType


@dataclass
class Mutation:
    name: str
    description: str
    patches: list[tuple[type, str, Callable[[Callable[..., Any]], Callable[..., Any]]]]
    _saved: list[tuple[type, str, Any]] = field(default_factory=list)

    def apply(self) -> None:
        if self._saved:
            raise RuntimeError(f"mutation {self.name} is already applied")
        from . import simulation
        simulation.TEXTBOOK_FLOW = True
        for cls, attr, make in self.patches:
            original = cls.__dict__[attr]
            self._saved.append((cls, attr, original))
            setattr(cls, attr, make(original))

    def undo(self) -> None:
        from . import simulation
        simulation.TEXTBOOK_FLOW = False
        while self._saved:
            cls, attr, original = self._saved.pop()
            setattr(cls, attr, original)

    def __enter__(self) -> Mutation:
        self.apply()
        return self

    def __exit__(self, *exc: object) -> None:
        self.undo()


# -- the broken rules ----------------------------------------------------------------------


def _commit_by_counting_any_term(original):
    # Figure 8 of the Raft paper: a leader must not commit an entry of an earlier term by
    # counting replicas; this version does.
    def maybe_commit(self: Raft) -> bool:
        prs = self.prs
        matches = sorted((prs[v].match for v in self.voters if v in prs), reverse=True)
        if len(matches) < self.quorum:
            return False
        index = matches[self.quorum - 1]
        if index <= self.log.committed:
            return False
        self.log.commit_to(index)
        if self.reads_waiting_for_commit:
            waiting, self.reads_waiting_for_commit = self.reads_waiting_for_commit, []
            for context, frm in waiting:
                self._leader_read_index(context, frm)
        return True

    return maybe_commit


def _move_to_msgs(kind: MessageType):
    """Wrap a handler so the `kind` messages it queues behind persistence go out at once."""

    def make(original):
        def handler(self: Raft, m):
            before = len(self.msgs_after_persist)
            original(self, m)
            if len(self.msgs_after_persist) > before:
                new = self.msgs_after_persist[before:]
                del self.msgs_after_persist[before:]
                for msg in new:
                    (self.msgs if msg.type == kind else self.msgs_after_persist).append(msg)

        return handler

    return make


def _always_up_to_date(original):
    def is_up_to_date(self: RaftLog, last_index: int, last_term: int) -> bool:
        return True

    return is_up_to_date


def _read_index_without_heartbeat(original):
    # Serve a read at the commit index without confirming leadership with a quorum round.
    def leader_read_index(self: Raft, context: bytes, frm: int) -> None:
        log = self.log
        if log.term_or_zero(log.committed) != self.term:
            self.reads_waiting_for_commit.append((context, frm))
            return
        self._read_ready(log.committed, frm, context)

    return leader_read_index


def _forget_vote_on_restart(original):
    # Skip persisting the vote: a restarted node remembers its term but not whom it voted for.
    def init(self: Raft, config, storage) -> None:
        original(self, config, storage)
        self.vote = 0

    return init


def _minority_quorum(original):
    def set_conf(self: Raft, conf) -> None:
        original(self, conf)
        self.quorum = max(1, len(self.voters) // 2)

    return set_conf


MUTATIONS: dict[str, Mutation] = {
    m.name: m
    for m in [
        Mutation(
            "commit_previous_term",
            "the leader commits an entry of an earlier term by counting replicas (Figure 8)",
            [(Raft, "maybe_commit", _commit_by_counting_any_term)],
        ),
        Mutation(
            "vote_before_persist",
            "a granted vote is sent before the vote is durable",
            [(Raft, "_handle_vote_request", _move_to_msgs(MessageType.VOTE_RESP))],
        ),
        Mutation(
            "vote_not_persisted",
            "the vote is not kept across a restart (as if never persisted)",
            [(Raft, "__init__", _forget_vote_on_restart)],
        ),
        Mutation(
            "vote_without_log_check",
            "votes are granted without the candidate's log being at least as up to date",
            [(RaftLog, "is_up_to_date", _always_up_to_date)],
        ),
        Mutation(
            "append_ack_before_persist",
            "a follower acknowledges appended entries before they are durable",
            [(Raft, "_handle_append", _move_to_msgs(MessageType.APP_RESP))],
        ),
        Mutation(
            "read_index_without_heartbeat",
            "the leader serves ReadIndex at its commit index without a heartbeat round",
            [(Raft, "_leader_read_index", _read_index_without_heartbeat)],
        ),
        Mutation(
            "minority_quorum",
            "quorum is half the voters instead of a majority",
            [(Raft, "_set_conf", _minority_quorum)],
        ),
    ]
}
