"""The closed sets the ledger, the pipeline and the UI share, stated once."""

from __future__ import annotations

import sys
from enum import Enum

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, Enum):
        """A str-valued enum, as Python 3.11's :class:`enum.StrEnum`."""

        def __str__(self) -> str:
            return str(self.value)


__all__ = ["CaptureSource", "CircuitState", "DeliveryState", "Event", "StrEnum"]


class DeliveryState(StrEnum):
    """Where a message stands in the ledger.

    ``pending`` and ``failed`` are due for sending once their next attempt time has come;
    ``delivered`` and ``dead`` are final (a dead one can still be replayed by hand);
    ``held`` waits, unsent, for its disabled endpoint to be enabled again.
    """

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    DEAD = "dead"
    HELD = "held"


#: States a sender may claim.
SENDABLE = (DeliveryState.PENDING, DeliveryState.FAILED)


class CaptureSource(StrEnum):
    """How a message was captured.

    ``callback``: an Airflow task- or DAG-level callback (or the notifier), or a deadline
    alert's callback (a late run); ``listener``: an Airflow listener in the scheduler or API
    server saw the run or task end;
    ``reconciled``: found at run end for an output that ended without its own event
    (``upstream_failed``, set by hand); ``test``: a Test button or ``test`` command;
    ``alert``: an operator alert the provider raised itself.
    """

    CALLBACK = "callback"
    LISTENER = "listener"
    RECONCILED = "reconciled"
    TEST = "test"
    ALERT = "alert"


class CircuitState(StrEnum):
    """Whether senders try an endpoint (``closed``) or leave it to the dispatcher's probes (``open``)."""

    CLOSED = "closed"
    OPEN = "open"


class Event(StrEnum):
    """What a message reports: the end it was sent for, a run still unfinished (late), a test, or an operator alert."""

    SUCCESS = "success"
    FAILURE = "failure"
    LATE = "late"
    TEST = "test"
    ALERT = "alert"
