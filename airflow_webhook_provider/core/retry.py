"""Every retry and backoff figure of the package, computed in one place.

Two users share :func:`exponential_backoff`:

- :class:`RetrySchedule` says when a webhook message is tried again: first a few quick
  attempts inside a short budget (what a sender does inline, and what the dispatcher
  schedules right after a failure), then the slower redelivery schedule, until the
  message is old enough to be ``dead``.
- :class:`RetryPolicy` bounds one synchronous call that retries in place (the jobGroups
  API client).

Pure: no Airflow, no clock of its own (``now`` and ``rng`` come in as arguments).

Usage::

    schedule = RetrySchedule()
    wait = schedule.quick_wait(attempts_made=1, elapsed=0.2, retry_after=None)  # ~0.5-1 s
    when = schedule.next_attempt_at(attempts_made=6, retry_after=None, age=40.0, now=now)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy", "RetrySchedule", "exponential_backoff"]


def exponential_backoff(base: float, cap: float, attempt: int, rng: random.Random | None = None) -> float:
    """Return the wait after ``attempt`` (1-based): ``base`` doubling, capped, with jitter in [50 %, 100 %].

    :param base: the first wait in seconds.
    :param cap: the longest wait.
    :param attempt: how many attempts were made so far (1 for the first).
    :param rng: the random source (tests pass a seeded one).
    """
    ceiling = min(cap, base * 2.0 ** max(0, attempt - 1))
    return ceiling * (rng or random).uniform(0.5, 1.0)


@dataclass(frozen=True)
class RetrySchedule:
    """When to try a webhook message again, and when to give up.

    :param attempts: most quick attempts (``[flow_webhook] retry_max_attempts``), the first included.
    :param backoff_seconds: the first quick wait, doubling (``retry_backoff_seconds``).
    :param budget_seconds: the time quick attempts and their waits may take together
        (``retry_budget_seconds``); also bounds one inline send.
    :param redelivery_backoff_seconds: the first wait after the quick attempts, doubling.
    :param redelivery_max_backoff_seconds: the longest wait.
    :param max_age_seconds: past this age an undelivered message is ``dead``.
    """

    attempts: int = 5
    backoff_seconds: float = 1.0
    budget_seconds: float = 30.0
    redelivery_backoff_seconds: float = 60.0
    redelivery_max_backoff_seconds: float = 3600.0
    max_age_seconds: float = 3 * 24 * 3600.0

    def quick_wait(
        self,
        *,
        attempts_made: int,
        elapsed: float,
        retry_after: float | None,
        rng: random.Random | None = None,
    ) -> float | None:
        """Return the wait before the next quick attempt, or None when the quick attempts are over.

        :param attempts_made: attempts so far.
        :param elapsed: seconds since the first attempt began.
        :param retry_after: the receiver's ``Retry-After`` in seconds, if it sent one.
        """
        if attempts_made >= self.attempts:
            return None
        wait = max(
            exponential_backoff(self.backoff_seconds, self.budget_seconds, attempts_made, rng),
            retry_after or 0.0,
        )
        return None if elapsed + wait >= self.budget_seconds else wait

    def next_attempt_at(
        self,
        *,
        attempts_made: int,
        retry_after: float | None,
        age: float,
        now: float,
        rng: random.Random | None = None,
    ) -> float:
        """Return when to try a message next: a quick retry while they last, then redelivery.

        :param attempts_made: attempts so far.
        :param retry_after: the receiver's ``Retry-After`` in seconds, if any.
        :param age: seconds since the message was recorded.
        :param now: the current UNIX time.
        """
        quick = self.quick_wait(attempts_made=attempts_made, elapsed=age, retry_after=retry_after, rng=rng)
        if quick is not None:
            return now + quick
        slow = exponential_backoff(
            self.redelivery_backoff_seconds,
            self.redelivery_max_backoff_seconds,
            max(1, attempts_made - self.attempts + 1),
            rng,
        )
        return now + max(slow, retry_after or 0.0)

    def probe_at(self, *, probes_made: int, now: float, rng: random.Random | None = None) -> float:
        """Return when to probe an endpoint whose circuit is open, after ``probes_made`` failed probes."""
        return now + exponential_backoff(
            self.redelivery_backoff_seconds, self.redelivery_max_backoff_seconds, max(1, probes_made), rng
        )

    def is_dead(self, *, age: float) -> bool:
        """Tell whether a message of this age is past the maximum age."""
        return age >= self.max_age_seconds


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one synchronous call retries in place.

    :param max_attempts: most attempts, the first included.
    :param backoff_seconds: the first wait; each later wait doubles, with jitter.
    :param max_backoff_seconds: the longest single wait.
    :param budget_seconds: the most time all attempts and waits may take together.
    """

    max_attempts: int = 5
    backoff_seconds: float = 1.0
    max_backoff_seconds: float = 30.0
    budget_seconds: float = 30.0

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Return the wait after ``attempt`` (1-based)."""
        return exponential_backoff(self.backoff_seconds, self.max_backoff_seconds, attempt, rng)
