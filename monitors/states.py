"""The two vocabularies of delivery, in one place: what a driver answered (``Outcome``)
and where a notification or delivery stands (``State``).

Both are ``StrEnum``: a member *is* its string, so the values stored in the outbox's SQLite
columns, written to history and metrics, and compared against by the CLI and status stay
exactly the strings they always were (``State.PENDING == "pending"``)."""
from __future__ import annotations

import enum


class Outcome(enum.StrEnum):
    """A driver's answer, classified. The worker (monitors.delivery) decides from it what
    becomes of the delivery; the driver never does."""
    DELIVERED = "delivered"  # accepted (2xx with the recipient's id)
    DUPLICATE = "duplicate"  # 409: the recipient already has it → delivered
    REJECTED = "rejected"    # the recipient refused it (400 ...): kept, visible, not retried
    HELD = "held"            # refused for now (Masakari 409: host on maintenance, or another
                             # conflict): kept pending, retried with a long capped backoff
                             # ([delivery] held_retry_interval), visible
    AUTH = "auth"            # 401/403: credentials refreshed, retried
    RETRY = "retry"          # timeout, connection error, 5xx, odd answer: retried with backoff

    @property
    def accepted(self) -> bool:
        """The recipient has it (delivered, or already had it)."""
        return self in (Outcome.DELIVERED, Outcome.DUPLICATE)


class State(enum.StrEnum):
    """A delivery's state, and a notification's (the most pressing of its deliveries')."""
    PENDING = "pending"
    DELIVERED = "delivered"
    REJECTED = "rejected"
    EXPIRED = "expired"
    SUPERSEDED = "superseded"  # withdrawn before delivery: the condition cleared meanwhile


STATES = tuple(State)
