"""The one delivery pipeline: record, resolve the connection, build, send, record the outcome.

Every producer of a message goes through :class:`Pipeline`:

- callbacks and the notifier call :meth:`Pipeline.submit`: the messages are recorded
  ``pending``; when a dispatcher is alive that is all (it sends them within a second),
  otherwise they are sent here, inline, with quick retries inside the retry budget;
- the dispatcher, the maintenance DAG and ``redeliver --due`` call :meth:`Pipeline.deliver`
  on the messages they claimed;
- a send by hand (the tab's Redeliver, ``redeliver ID``, the Test button) calls
  :meth:`Pipeline.send_now`: through the dispatcher when one is alive, here otherwise.

A message is built the first time it is sent, from the definition and references that
capture recorded, and the request is stored with its outcome, so every later attempt
sends the same bytes (with a fresh signature and the same delivery id).

Usage::

    pipeline = Pipeline.from_config()
    pipeline.submit([message])               # from a callback
    report = pipeline.send_now(delivery_id)  # by hand
"""

from __future__ import annotations

import functools
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_webhook_provider import config
from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent, event_for_state
from airflow_webhook_provider.core.identity import delivery_id as end_id
from airflow_webhook_provider.core.identity import endpoint_key, output_key, random_delivery_id
from airflow_webhook_provider.core.outcome import Attempt, DeliveryResult
from airflow_webhook_provider.core.states import CaptureSource, DeliveryState, Event
from airflow_webhook_provider.delivery.alerts import alerts_for
from airflow_webhook_provider.delivery.endpoints import Endpoint, resolve_endpoint, url_endpoint
from airflow_webhook_provider.delivery.message import OutgoingMessage, assemble, build_message
from airflow_webhook_provider.delivery.metrics import emit_outcomes
from airflow_webhook_provider.delivery.sender import WebhookSender, fan_out, shared_sender
from airflow_webhook_provider.ledger import (
    Built,
    Delivery,
    Ledger,
    LedgerError,
    NewDelivery,
    Outcome,
    OutcomeReport,
    open_ledger,
)

if TYPE_CHECKING:
    from airflow_webhook_provider.config import Settings

__all__ = [
    "DeliveryMode",
    "EndpointCache",
    "Pipeline",
    "RecoverReport",
    "SendReport",
    "message_for",
    "owner_name",
    "test_message",
]

log = logging.getLogger(__name__)

#: How much longer than its retry budget an inline sender holds the messages it sends.
LEASE_MARGIN_SECONDS = 10.0

#: The references of a test message.
TEST_EVENT = JobEvent(flow_id="test", job_id="test", job_status="test")


def owner_name(role: str = "inline") -> str:
    """Name this process as a claimer: role, host and pid."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}"


def message_for(
    webhook: FlowWebhook,
    event: JobEvent,
    *,
    clear_number: int,
    capture: CaptureSource,
    origin: str = "code",
    event_at: float | None = None,
    delivery_id: str | None = None,
    map_index: int = -1,
) -> NewDelivery:
    """Return the ledger record of one message about one end.

    :param webhook: the definition.
    :param event: the end it reports.
    :param clear_number: the run's clear number when it ended (part of the delivery id).
    :param capture: how the end was seen.
    :param origin: where the definition lives (``code``, ``notifier``, ``ui``); part of the id,
        so two definitions of one name in different places stay two messages.
    :param event_at: when the end happened, if known.
    :param delivery_id: the delivery id; by default the one that identifies this end
        (see :func:`~airflow_webhook_provider.core.identity.delivery_id`).
    :param map_index: the output's map index, for a mapped output task (each instance is an output).
    """
    event_name = _event_of(event.job_status)
    identifier = delivery_id or end_id(
        dag_id=event.flow_id,
        run_id=event.job_id,
        clear_number=clear_number,
        webhook=f"{origin}:{webhook.name}",
        output=output_key(event.output_name, map_index) if event.output_name else "",
        event=event_name,
    )
    return NewDelivery(
        id=identifier,
        dag_id=event.flow_id,
        run_id=event.job_id,
        clear_number=clear_number,
        output_name=event.output_name,
        webhook=webhook.name,
        event=event_name,
        job_status=event.job_status,
        capture=capture,
        conn_id=webhook.conn_id,
        target_url=webhook.url,
        endpoint=endpoint_key(webhook.conn_id, webhook.url),
        definition=webhook.model_dump_json(exclude_defaults=True),
        refs=event.references(webhook_name=webhook.name, delivery_id=identifier),
        event_at=event_at,
    )


def _event_of(job_status: str) -> str:
    event = event_for_state(job_status)
    return str(event) if event is not None else job_status


def test_message(
    conn_id: str | None = None, *, webhook: FlowWebhook | None = None, dag_id: str = ""
) -> NewDelivery:
    """Return the ledger record of a test message: through a connection, or as one webhook would send it.

    Every reference has a test value (``$jobId`` and ``$jobStatus`` are ``test``); with a
    webhook, ``$flowId`` is its DAG and ``$outputName`` its first output, and the message
    has the webhook's own method, headers, query and body.

    :param conn_id: the connection (the connection's Test button); ignored with ``webhook``.
    :param webhook: the webhook whose message to test.
    :param dag_id: the webhook's DAG.
    """
    identifier = random_delivery_id()
    event = TEST_EVENT
    if webhook is not None:
        conn_id = webhook.conn_id
        output = webhook.outputs[0] if webhook.outputs else ""
        event = JobEvent(flow_id=dag_id or "test", job_id="test", job_status="test", output_name=output)
    name = webhook.name if webhook is not None else "test"
    target_url = webhook.url if webhook is not None else None
    return NewDelivery(
        id=identifier,
        dag_id=dag_id,
        run_id="",
        clear_number=0,
        output_name="",
        webhook=name,
        event=str(Event.TEST),
        job_status="test",
        capture=CaptureSource.TEST,
        conn_id=conn_id,
        target_url=target_url,
        endpoint=endpoint_key(conn_id, target_url),
        definition=webhook.model_dump_json(exclude_defaults=True) if webhook is not None else None,
        refs=event.references(webhook_name=name, delivery_id=identifier),
        event_at=time.time(),
    )


@functools.lru_cache(maxsize=1024)
def _definition(text: str) -> FlowWebhook:
    # Every message of a webhook carries the same definition text; parse it once.
    return FlowWebhook(**json.loads(text))


@dataclass(frozen=True)
class DeliveryMode:
    """Who sends new messages: a live dispatcher, or the callbacks themselves (inline).

    :param dispatchers: the names of the dispatchers whose heartbeat is fresh.
    :param stale_seconds: how fresh a heartbeat must be.
    """

    dispatchers: tuple[str, ...]
    stale_seconds: float

    @property
    def name(self) -> str:
        """``dispatcher`` or ``inline``."""
        return "dispatcher" if self.dispatchers else "inline"

    def describe(self) -> str:
        """One line for the tab and the command line."""
        if self.dispatchers:
            return f"dispatcher: {len(self.dispatchers)} alive ({', '.join(self.dispatchers)})"
        return (
            f"inline: no dispatcher heartbeat in the last {self.stale_seconds:.0f} s, so callbacks send "
            "their own messages; start `airflow flow-webhooks dispatcher`"
        )


@dataclass(frozen=True)
class SendReport:
    """What a send by hand did, whoever sent it.

    :param delivery_id: the message.
    :param delivered: whether the receiver answered 2xx.
    :param state: the message's state afterwards.
    :param status_code: the HTTP status of the last attempt, if one was answered.
    :param error: why it was not delivered.
    :param duration_seconds: how long the last attempt took.
    :param sent_by: ``dispatcher`` or ``inline``; ``queued`` when the dispatcher has not sent it in time.
    :param response_excerpt: the start of the receiver's last answer.
    """

    delivery_id: str
    delivered: bool
    state: str
    status_code: int | None
    error: str | None
    duration_seconds: float | None
    sent_by: str
    response_excerpt: str = ""

    def summary(self) -> str:
        """One line for the tab, the CLI and the Test button."""
        if self.sent_by == "queued":
            return "queued: the dispatcher has not sent it yet; it stays due"
        outcome = "delivered" if self.delivered else "not delivered"
        last = f"HTTP {self.status_code}" if self.status_code is not None else (self.error or "no attempt")
        took = f" in {self.duration_seconds * 1000:.0f} ms" if self.duration_seconds is not None else ""
        by = "sent by the dispatcher" if self.sent_by == "dispatcher" else "sent inline"
        return f"{outcome}: {last}{took} ({by})"


class EndpointCache:
    """Endpoints by connection id, re-read after ``ttl_seconds`` so edits to a connection take effect.

    A connection that cannot be read is remembered as such for the same time, so a
    missing connection does not cost a secrets-backend lookup per message.

    :param settings: the egress policy and proxy endpoints are read under.
    :param ttl_seconds: how long an endpoint is used before its connection is read again.
    :param on_read: called with each endpoint read from its connection (the dispatcher
        records its limits in the ledger for every claimer to hold).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        ttl_seconds: float = 30.0,
        on_read: Callable[[Endpoint], None] | None = None,
    ) -> None:
        self.settings = settings
        self.ttl_seconds = ttl_seconds
        self.on_read = on_read
        self._entries: dict[str, tuple[float, Endpoint | Exception]] = {}

    def get(self, row: Delivery) -> Endpoint:
        """Return the endpoint a message goes to.

        :raises Exception: what reading its connection raised.
        """
        if row.conn_id is None:
            return url_endpoint(row.target_url or "", self.settings)
        now = time.monotonic()
        entry = self._entries.get(row.conn_id)
        if entry is None or now - entry[0] > self.ttl_seconds:
            value: Endpoint | Exception
            try:
                endpoint = resolve_endpoint(row.conn_id, self.settings)
                if self.on_read is not None:
                    self.on_read(endpoint)
                value = endpoint
            except Exception as exc:
                value = exc
            entry = self._entries[row.conn_id] = (now, value)
        if isinstance(entry[1], Exception):
            raise entry[1]
        return entry[1]


class _Limiter:
    """At most an endpoint's ``max_concurrency`` requests at once from this process (inline fan-outs)."""

    def __init__(self) -> None:
        self._slots: dict[tuple[str, int], threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()

    def slot(self, endpoint: Endpoint) -> threading.BoundedSemaphore:
        key = (endpoint.key, endpoint.max_concurrency)
        with self._lock:
            semaphore = self._slots.get(key)
            if semaphore is None:
                semaphore = self._slots[key] = threading.BoundedSemaphore(endpoint.max_concurrency)
            return semaphore


_limiter = _Limiter()


@dataclass
class RecoverReport:
    """What a bulk recover did."""

    total: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0

    def summary(self) -> str:
        """One line for the command line."""
        return f"{self.sent} of {self.total} message(s) sent again: {self.delivered} delivered, {self.failed} not"


def _unsendable(row: Delivery, exc: Exception) -> DeliveryResult:
    error = f"{type(exc).__name__}: {str(exc)[:300]}"
    attempt = Attempt(number=1, started_at=time.time(), duration_seconds=0.0, status_code=None, error=error)
    return DeliveryResult(row.id, row.webhook, False, (attempt,), 0.0)


def _as_row(new: NewDelivery) -> Delivery:
    """Return the row a message would have in the ledger, to send it when the ledger cannot be reached."""
    now = time.time()
    return Delivery(
        id=new.id,
        dag_id=new.dag_id,
        run_id=new.run_id,
        clear_number=new.clear_number,
        output_name=new.output_name,
        webhook=new.webhook,
        event=new.event,
        job_status=new.job_status,
        capture=str(new.capture),
        conn_id=new.conn_id,
        target_url=new.target_url,
        endpoint=new.endpoint,
        definition=new.definition,
        refs=new.refs,
        built_at=None,
        url="",
        query="",
        method="",
        headers={},
        body=None,
        state=str(DeliveryState.PENDING),
        forced=False,
        attempts=0,
        last_status=None,
        last_error=None,
        next_attempt_at=now,
        event_at=new.event_at,
        created_at=now,
        updated_at=now,
        delivered_at=None,
        claimed_by=None,
        claimed_until=None,
    )


class Pipeline:
    """Record, build, send and record again: the one path every message takes.

    :param settings: the ``[flow_webhook]`` options.
    :param ledger: the ledger; None when it cannot be opened (messages are then sent
        without a record, and an error is logged).
    :param sender: the HTTP sender; the process-wide one when omitted.
    :param endpoints: the endpoint cache; a fresh one when omitted.
    """

    def __init__(
        self,
        settings: Settings,
        ledger: Ledger | None,
        *,
        sender: WebhookSender | None = None,
        endpoints: EndpointCache | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.sender = sender or shared_sender()
        self.endpoints = endpoints or EndpointCache(settings)

    @classmethod
    def from_config(cls, *, require_ledger: bool = False) -> Pipeline:
        """Build the pipeline from Airflow's configuration.

        :param require_ledger: raise when the ledger cannot be opened, instead of working without it.
        :raises LedgerError: with ``require_ledger``, when the ledger cannot be opened.
        """
        settings = config.load()
        try:
            ledger: Ledger | None = open_ledger(settings.ledger_conn_id)
        except Exception as exc:
            if require_ledger:
                raise LedgerError(
                    f"the flow webhook ledger cannot be opened: {type(exc).__name__}: {exc}"
                ) from exc
            log.error(
                "The flow webhook ledger cannot be opened (%s: %s); sending without a record",
                type(exc).__name__,
                exc,
            )
            ledger = None
        return cls(settings, ledger)

    def _ledger(self) -> Ledger:
        if self.ledger is None:
            raise LedgerError("the flow webhook ledger cannot be opened; see the log for why")
        return self.ledger

    def mode(self) -> DeliveryMode:
        """Tell who sends new messages right now."""
        stale = self.settings.dispatcher_stale_seconds
        alive = self._ledger().dispatchers(alive_within=stale)
        return DeliveryMode(tuple(record.name for record in alive), stale)

    def _dispatcher_alive(self) -> bool:
        try:
            return self.mode().name == "dispatcher"
        except Exception as exc:
            log.warning("Cannot read the dispatchers' heartbeat (%s); sending inline", exc)
            return False

    # -- producers -----------------------------------------------------------------------

    def submit(self, messages: Sequence[NewDelivery]) -> list[DeliveryResult]:
        """Record messages ``pending`` and, unless a dispatcher is alive, send them here.

        Inline, each message gets quick retries within ``[flow_webhook] retry_budget_seconds``;
        messages of an endpoint whose circuit is open are left to redelivery (the dispatcher, or
        the maintenance DAG), which probes it. Nothing raises.

        :return: the results of the messages sent here (none when the dispatcher sends).
        """
        if not messages:
            return []
        if self.ledger is not None:
            try:
                self.ledger.record(messages)
            except Exception as exc:
                log.error(
                    "Recording flow webhooks failed (%s: %s); sending without a record",
                    type(exc).__name__,
                    exc,
                )
            else:
                if self._dispatcher_alive():
                    log.info("Recorded %d flow webhook message(s) for the dispatcher", len(messages))
                    return []
                lease = self.settings.retry.budget_seconds + LEASE_MARGIN_SECONDS
                try:
                    rows = self.ledger.claim_ids([m.id for m in messages], owner_name(), lease_seconds=lease)
                except Exception as exc:
                    log.error(
                        "Claiming flow webhooks failed (%s: %s); they stay due", type(exc).__name__, exc
                    )
                    return []
                skipped = len(messages) - len(rows)
                if skipped:
                    log.info(
                        "%d flow webhook message(s) not sent here: recorded before (sent, or being sent), or "
                        "their endpoint's circuit is open (redelivery probes it)",
                        skipped,
                    )
                return [result for _, result in self.deliver(rows, source="inline", retry_in_place=True)]
        return [
            result
            for _, result in self.deliver(
                [_as_row(m) for m in messages], source="inline", retry_in_place=True
            )
        ]

    def send(self, message: NewDelivery) -> DeliveryResult:
        """Record one message and send it here now, with quick retries, whether or not a dispatcher runs.

        :raises FlowWebhookError: when the message cannot be built (its connection or definition is wrong).
        """
        row = _as_row(message)
        if self.ledger is not None:
            self.ledger.record([message])
            claimed = self.ledger.claim_ids(
                [message.id],
                owner_name(),
                lease_seconds=self.settings.retry.budget_seconds + LEASE_MARGIN_SECONDS,
                skip_open_circuits=False,
            )
            if not claimed:
                raise LedgerError(f"delivery {message.id} is already sent, or being sent by another process")
            row = claimed[0]
        try:
            endpoint, outgoing, built = self._build(row)
        except Exception as exc:
            # The caller is told; the message is not tried again behind its back.
            self.record([Outcome(row.id, _unsendable(row, exc), retry=False)], source="inline")
            raise
        result = self.sender.send(endpoint, outgoing, schedule=self.settings.retry)
        self.record([Outcome(row.id, result, retry=endpoint.retry_on_failure, built=built)], source="inline")
        return result

    def send_now(self, delivery_id: str, *, wait_seconds: float = 40.0) -> SendReport | None:
        """Send one message now, whatever its state (a redelivery or a test by hand).

        With a dispatcher alive, the message is made due and this waits up to ``wait_seconds``
        for the dispatcher's attempt; without one, it is sent here. It keeps its delivery id
        and gets a fresh signature; an open circuit does not stop it.

        :return: what happened, or None when no message has that id.
        :raises LedgerError: when a sender holds the message right now.
        """
        ledger = self._ledger()
        if self._dispatcher_alive():
            before = ledger.force(delivery_id)
            if before is None:
                return None
            return self._await(before, time.monotonic() + wait_seconds)
        row = ledger.claim(
            delivery_id, owner_name("replay"), lease_seconds=self.settings.retry.budget_seconds
        )
        if row is None:
            return None
        ((_, result),) = self.deliver([row], source="test" if row.capture == "test" else "replay")
        after = ledger.get(delivery_id)
        last = result.attempts[-1] if result.attempts else None
        return SendReport(
            delivery_id=delivery_id,
            delivered=result.delivered,
            state=after.state if after is not None else "",
            status_code=result.status_code,
            error=result.error,
            duration_seconds=last.duration_seconds if last is not None else None,
            sent_by="inline",
            response_excerpt=last.response_excerpt if last is not None else "",
        )

    def _await(self, before: Delivery, deadline: float) -> SendReport:
        ledger = self._ledger()
        while True:
            row = ledger.get(before.id)
            if row is not None and row.attempts > before.attempts and row.claimed_by is None:
                last = ledger.attempts(row.id)[-1]
                return SendReport(
                    delivery_id=row.id,
                    delivered=row.state == DeliveryState.DELIVERED,
                    state=row.state,
                    status_code=last.status_code,
                    error=last.error or (f"HTTP {last.status_code}" if row.state != "delivered" else None),
                    duration_seconds=last.duration_seconds,
                    sent_by="dispatcher",
                    response_excerpt=last.response_excerpt,
                )
            if time.monotonic() >= deadline:
                return SendReport(before.id, False, row.state if row else "", None, None, None, "queued")
            time.sleep(0.1)

    def test(
        self,
        conn_id: str | None = None,
        *,
        webhook: FlowWebhook | None = None,
        dag_id: str = "",
        wait_seconds: float = 40.0,
    ) -> SendReport:
        """Record and send one test message: through a connection (its Test button), or as a webhook would.

        See :func:`test_message`. It goes through the egress policy and is signed like any
        message; the dispatcher sends it when one is alive, this process otherwise.

        :raises LedgerError: when the ledger cannot be used.
        """
        message = test_message(conn_id, webhook=webhook, dag_id=dag_id)
        self._ledger().record([message])
        report = self.send_now(message.id, wait_seconds=wait_seconds)
        assert report is not None  # just recorded
        return report

    # -- sending -------------------------------------------------------------------------

    def _build(self, row: Delivery) -> tuple[Endpoint, OutgoingMessage, Built | None]:
        endpoint = self.endpoints.get(row)
        built = row.built
        if built is not None:
            message = assemble(
                endpoint,
                delivery_id=row.id,
                webhook_name=row.webhook,
                method=built.method,
                own_headers=built.headers,
                body=built.body,
                query=built.query,
            )
            return endpoint, message, None
        webhook = _definition(row.definition) if row.definition is not None else None
        message = build_message(endpoint, webhook, row.refs, delivery_id=row.id)
        fresh = Built(
            url=message.url,
            query=message.query,
            method=message.method,
            headers=message.own_headers,
            body=message.body,
        )
        return endpoint, message, fresh

    def deliver(
        self, rows: Sequence[Delivery], *, source: str, retry_in_place: bool = False
    ) -> list[tuple[Delivery, DeliveryResult]]:
        """Send claimed messages at once and record their outcomes; nothing raises.

        :param rows: messages this process holds a claim on (or unrecorded ones).
        :param source: who sends, for the attempt records: ``inline``, ``dispatcher``, ``replay`` or ``test``.
        :param retry_in_place: make quick retries here, within the retry budget (inline sending).
        :return: each message with its result, in order.
        """
        if not rows:
            return []
        sent = fan_out(lambda row: (row, self.send_row(row, retry_in_place=retry_in_place)), rows)
        self.record([outcome for _, outcome in sent], source=source)
        return [(row, outcome.result) for row, outcome in sent]

    def send_row(self, row: Delivery, *, retry_in_place: bool = False) -> Outcome:
        """Build and send one claimed message, without recording the outcome; nothing raises.

        A message that cannot be built (its connection is missing or wrong) fails without an
        attempt reaching anyone, and is tried again on the schedule: the connection may be fixed.
        """
        try:
            endpoint, message, built = self._build(row)
        except Exception as exc:
            log.error("Flow webhook %s (delivery %s) cannot be sent: %s", row.webhook, row.id, exc)
            return Outcome(row.id, _unsendable(row, exc), retry=True, row=row)
        schedule = self.settings.retry if retry_in_place else None
        with _limiter.slot(endpoint):
            result = self.sender.send(endpoint, message, schedule=schedule)
        return Outcome(row.id, result, retry=endpoint.retry_on_failure, built=built, row=row)

    def recover(
        self,
        ids: Sequence[str],
        *,
        progress: Callable[[RecoverReport], None] | None = None,
        time_limit_seconds: float = 3600.0,
    ) -> RecoverReport:
        """Send exactly these messages again, each once, whatever their state (held and dead ones too).

        They keep their delivery ids and get fresh signatures; each endpoint's concurrency
        and rate limits hold (over every sender of the ledger), an open circuit or a
        disabled endpoint does not stop them. A message a running dispatcher takes first is
        sent by it instead.

        :param ids: the messages (from ``Ledger.select_ids``).
        :param progress: called with the running report after each batch.
        :param time_limit_seconds: claim nothing new after this long.
        :return: counts of what this process sent.
        """
        ledger = self._ledger()
        report = RecoverReport(total=len(ids))
        ledger.force_many(ids)
        waiting = list(ids)
        owner = owner_name("recover")
        deadline = time.monotonic() + time_limit_seconds
        while waiting and time.monotonic() < deadline:
            rows = ledger.claim_ids(
                waiting[:500], owner, lease_seconds=60.0, skip_open_circuits=False, within_limits=True
            )
            if rows:
                for _, result in self.deliver(rows, source="replay"):
                    report.sent += 1
                    report.delivered += result.delivered
                    report.failed += not result.delivered
                if progress is not None:
                    progress(report)
            else:
                time.sleep(0.05)  # every slot of these endpoints is busy: wait for one
            waiting = ledger.still_forced(waiting)
        return report

    def record(self, outcomes: Sequence[Outcome], *, source: str, sender: str | None = None) -> OutcomeReport:
        """Store outcomes, count them in the metrics, and record the operator alerts they call for.

        A ledger that fails here leaves the messages claimed, to be taken over when their
        lease expires.

        :param outcomes: what each send did.
        :param source: how they were sent (``inline``, ``dispatcher``, ``replay``, ``test``).
        :param sender: the sending process's name; this process as an inline sender when omitted.
        :return: the new states, and what changed.
        """
        if self.ledger is None or not outcomes:
            return OutcomeReport()
        try:
            report = self.ledger.record_outcomes(
                outcomes,
                source=source,
                schedule=self.settings.retry,
                circuit_threshold=self.settings.circuit_failure_threshold,
                sender=sender or owner_name(source),
                disable_after_seconds=self.settings.disable_after_seconds,
            )
        except Exception as exc:
            log.error("Recording flow webhook outcomes failed (%s: %s)", type(exc).__name__, exc)
            return OutcomeReport()
        emit_outcomes(outcomes, report)
        for key, reason in report.disabled:
            log.warning("Flow webhook endpoint %s is disabled: %s; its new messages are held", key, reason)
        if report.dead or report.disabled or report.recovered:
            try:
                self.ledger.record(alerts_for(report, self.settings, self.ledger))
            except Exception as exc:
                log.error("Recording operator alerts failed (%s: %s)", type(exc).__name__, exc)
        return report
