"""What can go wrong with a request, in the three kinds a caller must tell apart.

    Unavailable     the operation definitely did not take effect (nothing was applied); safe to
                    retry later as a new operation. Every failed read is Unavailable: a read
                    has no effect.
    OutcomeUnknown  a write may or may not have been applied (a request reached a node and no
                    definite answer came back before the deadline). A Jepsen-style history
                    records it as `info`, never as `fail`.
    InvalidRequest  the request itself is wrong (too large, malformed); `reason` says why.
                    Raised before anything is sent whenever the client can tell.

Wrong argument *types* (a key that is neither bytes nor str) raise the built-in TypeError.
"""

from __future__ import annotations


class KVError(Exception):
    """Base of every error the client raises on purpose."""


class Unavailable(KVError):
    """The operation definitely did not take effect (no node applied it)."""


class OutcomeUnknown(KVError):
    """A write may or may not have taken effect; only a later read can tell."""


class InvalidRequest(KVError, ValueError):
    """The request is invalid (bad input); `reason` says why. Nothing was applied."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Compacted(KVError):
    """A cursor or as-of time older than the retained history (nothing was applied)."""


class ClientClosed(KVError):
    """The client was closed (before or while the call ran)."""


__all__ = ["KVError", "Unavailable", "OutcomeUnknown", "InvalidRequest", "Compacted", "ClientClosed"]
