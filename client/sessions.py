"""Client sessions for exactly-once writes (Raft dissertation 6.3; see client/wire.py).

A session has at most ONE write in flight; each new write takes the next seq, and every retry
of that write reuses the same (session, seq), so the node's per-bucket session table answers a
duplicate instead of applying it again. A session whose last write ended with an unknown
outcome (or was cancelled after it may have been sent) is retired rather than reused: its old
request may still be travelling, and a fresh session id can never be confused with it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

MAX_IDLE_SESSIONS = 4096


@dataclass(slots=True)
class Session:
    id: int
    seq: int = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


class SessionPool:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.SystemRandom()
        self._idle: list[Session] = []
        self.created = 0

    def acquire(self) -> Session:
        if self._idle:
            return self._idle.pop()
        self.created += 1
        return Session(self._rng.getrandbits(63) or 1)

    def release(self, session: Session, reusable: bool) -> None:
        if reusable and len(self._idle) < MAX_IDLE_SESSIONS:
            self._idle.append(session)

    def statistics(self) -> dict:
        return {"sessions_created": self.created, "sessions_idle": len(self._idle)}
