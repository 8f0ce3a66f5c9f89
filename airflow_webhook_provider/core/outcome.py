"""What happened when a message was sent: its attempts and its result.

Plain data, shared by the sender that produces it and the ledger that stores it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Attempt", "DeliveryResult"]


@dataclass(frozen=True)
class Attempt:
    """One try at sending a message.

    :param number: 1 for the first attempt of this send (the ledger numbers them overall).
    :param started_at: UNIX time in seconds.
    :param duration_seconds: how long the attempt took.
    :param status_code: the HTTP status, or None when no response came.
    :param error: the error class and a short message, or None after a response.
    :param response_excerpt: the start of the response body.
    :param timed_out: the receiver did not answer within the timeout.
    """

    number: int
    started_at: float
    duration_seconds: float
    status_code: int | None
    error: str | None = None
    response_excerpt: str = ""
    timed_out: bool = False

    @property
    def succeeded(self) -> bool:
        """True for a 2xx answer."""
        return self.status_code is not None and 200 <= self.status_code < 300


@dataclass(frozen=True)
class DeliveryResult:
    """What happened to one message in one send.

    :param delivery_id: the message's delivery id.
    :param webhook_name: the definition's name.
    :param delivered: True when the receiver answered 2xx.
    :param attempts: every attempt of this send, in order.
    :param duration_seconds: the time from the first attempt to the end, waits included.
    :param retry_after_seconds: the receiver's last ``Retry-After``, if any.
    :param retryable: False when trying again cannot help (the egress policy forbids it).
    :param receiver_failed: the failure is the receiver's (no answer, or not 2xx), which
        counts towards its circuit breaker; a refused URL or a broken connection does not.
    """

    delivery_id: str
    webhook_name: str
    delivered: bool
    attempts: tuple[Attempt, ...]
    duration_seconds: float
    retry_after_seconds: float | None = None
    retryable: bool = True
    receiver_failed: bool = False

    @property
    def status_code(self) -> int | None:
        """The HTTP status of the last attempt."""
        return self.attempts[-1].status_code if self.attempts else None

    @property
    def timed_out(self) -> bool:
        """Whether the last attempt timed out."""
        return bool(self.attempts) and self.attempts[-1].timed_out

    @property
    def error(self) -> str | None:
        """The last attempt's error, or its HTTP status when it was not 2xx."""
        if not self.attempts or self.delivered:
            return None
        last = self.attempts[-1]
        return last.error or f"HTTP {last.status_code}"

    def summary(self) -> str:
        """One line for logs and the Test button."""
        outcome = "delivered" if self.delivered else "not delivered"
        last = f"HTTP {self.status_code}" if self.status_code is not None else (self.error or "no attempt")
        return f"{outcome}: {last} after {len(self.attempts)} attempt(s) in {self.duration_seconds:.2f} s"
