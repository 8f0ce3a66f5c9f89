"""Send again what was not delivered: due deliveries in rounds, or one delivery by id.

Each message is rebuilt from the ledger (method, query, definition headers, exact body)
and the connection as it is now (URL, secret key, headers), keeps its delivery id, and
is signed afresh.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from airflow_webhook_provider.delivery import (
    Attempt,
    DeliveryResult,
    Endpoint,
    OutgoingMessage,
    RetryPolicy,
    assemble,
    fan_out,
    shared_sender,
)
from airflow_webhook_provider.ledger import (
    Delivery,
    Ledger,
    RedeliverySchedule,
    open_ledger,
    schedule_from_config,
)

__all__ = ["RedeliveryReport", "owner_name", "redeliver_due", "replay"]

log = logging.getLogger(__name__)

#: How long a claimer may hold a delivery before others may take it over.
LEASE_SECONDS = 120.0


def owner_name() -> str:
    """Name this process as a claimer: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class RedeliveryReport:
    """What a redelivery run did."""

    rounds: int = 0
    claimed: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0

    def summary(self) -> str:
        """One line for logs and the command line."""
        return (
            f"{self.claimed} due deliveries in {self.rounds} round(s): {self.delivered} delivered, "
            f"{self.failed} failed (will retry), {self.dead} dead"
        )


def _endpoint(delivery: Delivery, cache: dict[str, Endpoint]) -> Endpoint:
    if delivery.conn_id is None:
        from airflow_webhook_provider.hooks.flow_webhook import egress_policy_from_config

        return Endpoint(url=delivery.target_url or "", name="url", egress=egress_policy_from_config())
    if delivery.conn_id not in cache:
        from airflow_webhook_provider.hooks.flow_webhook import FlowWebhookHook

        cache[delivery.conn_id] = FlowWebhookHook(delivery.conn_id).endpoint
    return cache[delivery.conn_id]


def _unsendable(delivery: Delivery, exc: Exception) -> DeliveryResult:
    error = f"{type(exc).__name__}: {str(exc)[:300]}"
    attempt = Attempt(number=1, started_at=time.time(), duration_seconds=0.0, status_code=None, error=error)
    return DeliveryResult(delivery.id, delivery.webhook, False, (attempt,), 0.0)


def _send(
    ledger: Ledger, rows: Sequence[Delivery], *, source: str, schedule: RedeliverySchedule
) -> list[tuple[DeliveryResult, str]]:
    endpoints: dict[str, Endpoint] = {}
    jobs: list[tuple[Delivery, Endpoint, OutgoingMessage]] = []
    outcomes: list[tuple[Delivery, DeliveryResult, bool]] = []
    for row in rows:
        try:
            endpoint = _endpoint(row, endpoints)
            message = assemble(
                endpoint,
                delivery_id=row.id,
                webhook_name=row.webhook,
                method=row.method,
                own_headers=row.headers,
                body=row.body,
                query=row.query,
            )
        except Exception as exc:
            log.error("Delivery %s (%s) cannot be sent: %s", row.id, row.webhook, exc)
            outcomes.append((row, _unsendable(row, exc), True))
            continue
        jobs.append((row, endpoint, message))

    sender = shared_sender()

    def send_one(job: tuple[Delivery, Endpoint, OutgoingMessage]) -> tuple[Delivery, DeliveryResult, bool]:
        row, endpoint, message = job
        # One attempt per round: the ledger's schedule spaces the rounds out.
        result = sender.send(endpoint, message, RetryPolicy(max_attempts=1, budget_seconds=endpoint.timeout))
        return row, result, endpoint.retry_on_failure and result.retryable

    outcomes.extend(fan_out(send_one, jobs))
    states = ledger.record_outcomes(
        [(row.id, result, retry) for row, result, retry in outcomes], source=source, schedule=schedule
    )
    return [(result, states[row.id]) for row, result, _ in outcomes]


def redeliver_due(
    ledger: Ledger | None = None,
    *,
    batch_size: int = 100,
    time_limit_seconds: float = 240.0,
    max_rounds: int = 1000,
    progress: Callable[[RedeliveryReport], None] | None = None,
) -> RedeliveryReport:
    """Claim and send due deliveries in rounds until none is due or the time limit passes.

    A delivery is sent at most once per call: after an attempt it is either delivered or
    scheduled for a later time.

    :param ledger: the ledger; this process's configured one when omitted.
    :param batch_size: deliveries claimed per round.
    :param time_limit_seconds: no new round starts after this long.
    :param max_rounds: an upper bound on rounds.
    :param progress: called with the running report after each round.
    :return: counts of what happened.
    """
    ledger = ledger or open_ledger()
    schedule = schedule_from_config()
    owner = owner_name()
    report = RedeliveryReport()
    started = time.monotonic()
    while report.rounds < max_rounds and time.monotonic() - started < time_limit_seconds:
        rows = ledger.claim_due(owner, limit=batch_size, lease_seconds=LEASE_SECONDS)
        if not rows:
            break
        report.rounds += 1
        report.claimed += len(rows)
        for _, state in _send(ledger, rows, source="redelivery", schedule=schedule):
            if state == "delivered":
                report.delivered += 1
            elif state == "dead":
                report.dead += 1
            else:
                report.failed += 1
        if progress is not None:
            progress(report)
    log.info("Redelivery: %s", report.summary())
    return report


def replay(delivery_id: str, ledger: Ledger | None = None) -> DeliveryResult | None:
    """Send one delivery again by id, whatever its state (dead ones included).

    It keeps its delivery id and gets a fresh signature.

    :return: the outcome, or None when no delivery has that id.
    :raises LedgerError: when another process is sending it right now.
    """
    ledger = ledger or open_ledger()
    row = ledger.claim(delivery_id, owner_name(), lease_seconds=LEASE_SECONDS)
    if row is None:
        return None
    ((result, _),) = _send(ledger, [row], source="replay", schedule=schedule_from_config())
    return result
