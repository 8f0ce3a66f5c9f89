"""The dispatcher: a long-running sender that drains the ledger, like ``airflow triggerer`` drains triggers.

``airflow flow-webhooks dispatcher`` runs :meth:`Dispatcher.run`. Each round it claims as
many due messages as it has free workers (``[flow_webhook] dispatcher_concurrency``),
sends each once on a worker thread, and records the outcomes in one batch; a failed
message comes back due on the retry schedule (quick retries first, then redelivery).
An idle dispatcher looks for new messages every ``dispatcher_poll_seconds`` and, on
PostgreSQL, is woken at once by the ``NOTIFY`` that recording a message sends.

It records a heartbeat in the ledger every ``dispatcher_heartbeat_seconds``, which is
how callbacks know to leave sending to it, and with each heartbeat it renews the leases
of what it is sending, so a dispatcher that dies hands its messages over within a
minute. Several dispatchers on one PostgreSQL ledger share the work: claims skip rows
another holds.

:meth:`Dispatcher.stop` (SIGTERM) stops claiming, gives back what it claimed but did not
start, waits up to ``dispatcher_shutdown_grace_seconds`` for what is in flight, records
it, and returns; a message still in flight then keeps its lease and is taken over when
it expires. Nothing is lost either way.

``run(once=True)`` (``--once``, the maintenance DAG, ``redeliver --due``) drains what is
due and returns.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_webhook_provider.core.states import DeliveryState
from airflow_webhook_provider.delivery.endpoints import Endpoint
from airflow_webhook_provider.delivery.metrics import emit_backlog
from airflow_webhook_provider.delivery.metrics import initialize as initialize_metrics
from airflow_webhook_provider.delivery.pipeline import Pipeline, owner_name
from airflow_webhook_provider.ledger import Delivery, Ledger, Outcome
from airflow_webhook_provider.ledger.store import NOTIFY_CHANNEL

__all__ = ["DispatchReport", "Dispatcher", "purge_expired"]

if TYPE_CHECKING:
    from airflow_webhook_provider.config import Settings

log = logging.getLogger(__name__)

#: How long a claim holds before another dispatcher may take the message over; renewed
#: with every heartbeat while the message is in flight (or queued for a worker).
LEASE_SECONDS = 60.0
#: Messages claimed ahead, as a multiple of the workers: a worker never waits for a claim.
PREFETCH = 4
#: How long recording waits after the first finished send, for more to join its batch.
LINGER_SECONDS = 0.005
#: How often a dispatcher purges delivered messages past ``[flow_webhook] retention_days``.
PURGE_INTERVAL_SECONDS = 3600.0


def purge_expired(ledger: Ledger, settings: Settings) -> int:
    """Purge delivered messages older than ``[flow_webhook] retention_days`` (none when it is 0).

    :return: how many were purged.
    """
    if not settings.retention_days:
        return 0
    purged = ledger.purge(older_than=time.time() - settings.retention_days * 86400)
    if purged:
        log.info(
            "Purged %d delivered flow webhook message(s) older than %g days", purged, settings.retention_days
        )
    return purged


@dataclass
class DispatchReport:
    """What a dispatcher did."""

    rounds: int = 0
    claimed: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0

    def summary(self) -> str:
        """One line for logs and the command line."""
        return (
            f"{self.claimed} message(s) in {self.rounds} round(s): {self.delivered} delivered, "
            f"{self.failed} failed (will retry), {self.dead} dead"
        )


class _Waker:
    """Sleep until woken: by ``NOTIFY`` on PostgreSQL, by :meth:`wake`, or at the timeout."""

    def __init__(self, pipeline: Pipeline) -> None:
        self._event = threading.Event()
        self._listener: Any = None
        ledger = pipeline.ledger
        if ledger is not None and ledger.dialect == "postgresql":
            try:
                raw = ledger.engine.raw_connection()
                connection = raw.driver_connection
                assert connection is not None
                connection.autocommit = True
                connection.execute(f"LISTEN {NOTIFY_CHANNEL}")
                self._raw, self._listener = raw, connection
            except Exception as exc:  # polling alone still meets the latency bound
                log.warning("LISTEN %s failed (%s); polling only", NOTIFY_CHANNEL, exc)

    def wait(self, timeout: float) -> None:
        if self._event.is_set():
            return
        if self._listener is None:
            self._event.wait(timeout)
            return
        try:
            for _ in self._listener.notifies(timeout=timeout, stop_after=1):
                pass
        except Exception as exc:
            log.warning("Waiting for NOTIFY failed (%s); polling only", exc)
            self.close()
            self._event.wait(timeout)

    def wake(self) -> None:
        self._event.set()

    def close(self) -> None:
        if self._listener is not None:
            listener, self._listener = self._listener, None
            try:
                listener.execute(f"UNLISTEN {NOTIFY_CHANNEL}")
                self._raw.close()
            except Exception as exc:
                log.debug("Closing the LISTEN connection failed: %s", exc)


class Dispatcher:
    """Send what the ledger holds, with bounded concurrency, until stopped.

    Usage::

        dispatcher = Dispatcher(Pipeline.from_config(require_ledger=True))
        signal.signal(signal.SIGTERM, lambda *_: dispatcher.stop())
        dispatcher.run()

    :param pipeline: the pipeline (its ledger is required).
    :param name: the name in the heartbeat table; ``dispatcher@host:pid`` when omitted.
    """

    def __init__(self, pipeline: Pipeline, *, name: str | None = None) -> None:
        if pipeline.ledger is None:
            raise ValueError("the dispatcher needs the ledger")
        self.pipeline = pipeline
        self.ledger = pipeline.ledger
        self.settings = pipeline.settings
        self.name = name or owner_name("dispatcher")
        self.report = DispatchReport()
        self._stopping = threading.Event()
        self._waker: _Waker | None = None
        self._finished: queue.SimpleQueue[Future[Outcome]] = queue.SimpleQueue()
        self._last_purge = 0.0
        # Every claimer of the ledger holds each endpoint's limits as its connection says.
        pipeline.endpoints.on_read = self._note_limits

    def _note_limits(self, endpoint: Endpoint) -> None:
        self._safely(
            lambda: self.ledger.note_limits(
                endpoint.key,
                max_concurrency=endpoint.max_concurrency,
                rate_per_minute=endpoint.rate_limit_per_minute,
            )
        )

    def stop(self) -> None:
        """Stop claiming and finish what is in flight (safe to call from a signal handler)."""
        self._stopping.set()
        if self._waker is not None:
            self._waker.wake()

    def run(
        self,
        *,
        once: bool = False,
        time_limit_seconds: float | None = None,
        progress: Callable[[DispatchReport], None] | None = None,
    ) -> DispatchReport:
        """Dispatch until stopped, or with ``once`` until nothing is due.

        :param once: drain what is due now, then return.
        :param time_limit_seconds: claim nothing new after this long.
        :param progress: called with the running report after outcomes are recorded.
        :return: counts of what happened.
        """
        started = time.monotonic()
        concurrency = self.settings.dispatcher_concurrency
        pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="flow-webhook-dispatch")
        in_flight: dict[Future[Outcome], Delivery] = {}
        self._waker = _Waker(self.pipeline) if not once else None
        last_beat = 0.0
        if not once:
            initialize_metrics()
            log.info("Dispatcher %s started (%d workers)", self.name, concurrency)
        try:
            while True:
                now = time.monotonic()
                if not once and now - last_beat >= self.settings.dispatcher_heartbeat_seconds:
                    self._beat([row.id for row in in_flight.values()])
                    last_beat = now
                self._collect(in_flight, progress, block=False)
                out_of_time = time_limit_seconds is not None and now - started >= time_limit_seconds
                claimed: list[Delivery] = []
                # Claim ahead: the pool sends `concurrency` at once and queues the rest, so one
                # claim, and one batch of outcomes, serves several workers' worth of messages.
                room = PREFETCH * concurrency - len(in_flight)
                if not self._stopping.is_set() and not out_of_time and room >= concurrency:
                    claimed = self._claim(room)
                    for row in claimed:
                        future = pool.submit(self.pipeline.send_row, row)
                        in_flight[future] = row
                        future.add_done_callback(self._finished.put)
                if (self._stopping.is_set() or out_of_time or (once and not claimed)) and not in_flight:
                    break
                if self._stopping.is_set():
                    self._finish(in_flight, progress)
                    break
                if claimed and len(in_flight) < concurrency:
                    continue  # more may be due right now
                if in_flight:
                    self._collect(in_flight, progress, block=True)
                elif self._waker is not None:
                    self._waker.wait(self.settings.dispatcher_poll_seconds)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
            if once:
                self._safely(lambda: purge_expired(self.ledger, self.settings))
            if self._waker is not None:
                self._waker.close()
            if not once:
                self._safely(self.ledger.stop_dispatcher, self.name)
                log.info("Dispatcher %s stopped: %s", self.name, self.report.summary())
        return self.report

    def _claim(self, free: int) -> list[Delivery]:
        try:
            rows = self.ledger.claim_due(self.name, limit=free, lease_seconds=LEASE_SECONDS)
        except Exception as exc:
            log.error("Claiming due messages failed (%s: %s); trying again", type(exc).__name__, exc)
            time.sleep(self.settings.dispatcher_poll_seconds)
            return []
        if rows:
            self.report.rounds += 1
            self.report.claimed += len(rows)
        return rows

    def _collect(
        self,
        in_flight: dict[Future[Outcome], Delivery],
        progress: Callable[[DispatchReport], None] | None,
        *,
        block: bool,
        timeout: float | None = None,
    ) -> None:
        """Record the outcomes of finished sends in one batch (waiting for the first, with ``block``).

        After the first, it lingers a few milliseconds for others to finish, so that one
        ledger transaction records many outcomes.
        """
        if not in_flight:
            return
        done: list[Future[Outcome]] = []
        if block:
            try:
                done.append(
                    self._finished.get(
                        timeout=self.settings.dispatcher_poll_seconds if timeout is None else timeout
                    )
                )
            except queue.Empty:
                return
            if self._finished.qsize() < min(len(in_flight), self.settings.dispatcher_concurrency) // 2:
                time.sleep(LINGER_SECONDS)
        while True:
            try:
                done.append(self._finished.get_nowait())
            except queue.Empty:
                break
        done = [future for future in done if future in in_flight and not future.cancelled()]
        if not done:
            return
        outcomes = [future.result() for future in done]
        for future in done:
            del in_flight[future]
        states = self.pipeline.record(outcomes, source="dispatcher", sender=self.name).states
        for state in states.values():
            if state == DeliveryState.DELIVERED:
                self.report.delivered += 1
            elif state == DeliveryState.DEAD:
                self.report.dead += 1
            else:
                self.report.failed += 1
        if progress is not None:
            progress(self.report)

    def _finish(
        self, in_flight: dict[Future[Outcome], Delivery], progress: Callable[[DispatchReport], None] | None
    ) -> None:
        """Wait up to the shutdown grace for what is in flight; what is left keeps its lease."""
        not_started = [row.id for future, row in in_flight.items() if future.cancel()]
        for future in [future for future in in_flight if future.cancelled()]:
            del in_flight[future]
        self._safely(self.ledger.release, not_started, self.name)
        deadline = time.monotonic() + self.settings.dispatcher_shutdown_grace_seconds
        while in_flight and time.monotonic() < deadline:
            self._collect(in_flight, progress, block=True, timeout=max(0.0, deadline - time.monotonic()))
        if in_flight:
            log.warning(
                "Dispatcher %s stopped with %d message(s) still in flight; they are taken over when their "
                "lease expires",
                self.name,
                len(in_flight),
            )

    def _beat(self, sending: list[str]) -> None:
        """Record the heartbeat, renew leases, set the backlog gauges, and purge past the retention."""

        def beat() -> None:
            self.ledger.heartbeat(self.name, sent=self.report.claimed, delivered=self.report.delivered)
            self.ledger.renew(sending, self.name, lease_seconds=LEASE_SECONDS)
            emit_backlog(self.ledger.backlog())

        self._safely(beat)
        if time.monotonic() - self._last_purge >= PURGE_INTERVAL_SECONDS:
            self._last_purge = time.monotonic()
            self._safely(lambda: purge_expired(self.ledger, self.settings))

    @staticmethod
    def _safely(action: Callable[..., Any], *args: Any) -> None:
        try:
            action(*args)
        except Exception as exc:
            log.error("Dispatcher ledger write failed (%s: %s)", type(exc).__name__, exc)
