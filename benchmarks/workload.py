"""The workload every part sends: one failed run, 50 webhooks, JSON bodies, one signed connection.

It also holds the two ways the parts hand messages to the package, both through the one
delivery pipeline a callback uses:

- :func:`submit_inline`: ``Pipeline.from_config().submit(...)`` with no dispatcher
  heartbeat in the ledger, so the messages are recorded ``pending``, claimed and sent
  right here (what a callback does without a dispatcher; the old ``callbacks.dispatch``);
- :func:`record_only`: ``Ledger.record`` alone (what a callback leaves a live dispatcher).

Import it after ``_common.init_airflow_home()``: it imports the provider.
"""

from __future__ import annotations

from collections.abc import Iterable

from _common import FAN_OUT, SECRET, WEBHOOK_CONN_ID

from airflow_webhook_provider import config
from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent
from airflow_webhook_provider.core.identity import random_delivery_id
from airflow_webhook_provider.core.outcome import DeliveryResult
from airflow_webhook_provider.core.signing import DELIVERY_ID_HEADER, SIGNATURE_HEADER, sign
from airflow_webhook_provider.core.states import CaptureSource
from airflow_webhook_provider.delivery.endpoints import resolve_endpoint
from airflow_webhook_provider.delivery.message import build_message
from airflow_webhook_provider.delivery.pipeline import Pipeline, message_for
from airflow_webhook_provider.ledger import NewDelivery, open_ledger

EVENT = JobEvent(flow_id="bench_fanout", job_id="manual__2026-01-01T00:00:00+00:00", job_status="failed")


def webhooks(count: int = FAN_OUT, *, outputs: list[str] | None = None) -> list[FlowWebhook]:
    """``count`` webhooks on one connection, each with its own JSON body."""
    return [
        FlowWebhook(
            name=f"hook-{i:02d}",
            conn_id=WEBHOOK_CONN_ID,
            on="any" if outputs else "failure",
            outputs=outputs,
            headers={"Content-Type": "application/json"},
            body=f'{{"text": "Job $jobId of $flowId ended: $jobStatus", "webhook": "$webhookName", "n": {i}}}',
        )
        for i in range(count)
    ]


def new_messages(pairs: Iterable[tuple[FlowWebhook, JobEvent]]) -> list[NewDelivery]:
    """The ledger records of (webhook, event) pairs, as a callback makes them; each with a fresh delivery id.

    A callback's ids are deterministic (one end, one message); the benchmarks send the
    same end many times, so each message gets a random id and is a new message.
    """
    return [
        message_for(
            webhook, event, clear_number=0, capture=CaptureSource.CALLBACK, delivery_id=random_delivery_id()
        )
        for webhook, event in pairs
    ]


def submit_inline(pairs: Iterable[tuple[FlowWebhook, JobEvent]]) -> list[DeliveryResult]:
    """Hand (webhook, event) pairs to the pipeline as a callback does, with no dispatcher alive.

    The pipeline is built from the configuration on every call, as each callback builds it.
    """
    return Pipeline.from_config().submit(new_messages(pairs))


def record_only(pairs: Iterable[tuple[FlowWebhook, JobEvent]]) -> list[NewDelivery]:
    """Record (webhook, event) pairs ``pending`` and send nothing (what a live dispatcher is left)."""
    messages = new_messages(pairs)
    open_ledger().record(messages)
    return messages


def same_requests(
    definitions: list[FlowWebhook], event: JobEvent = EVENT
) -> list[tuple[bytes, dict[str, str]]]:
    """The bodies and headers ours sends, signed now, for a baseline to send as they are."""
    endpoint = resolve_endpoint(WEBHOOK_CONN_ID, config.load())
    prepared = []
    for webhook in definitions:
        delivery_id = random_delivery_id()
        references = event.references(webhook_name=webhook.name, delivery_id=delivery_id)
        message = build_message(endpoint, webhook, references, delivery_id=delivery_id)
        assert message.body is not None
        headers = {**message.headers, DELIVERY_ID_HEADER: message.delivery_id}
        headers[SIGNATURE_HEADER] = sign(SECRET, message.body)
        prepared.append((message.body, headers))
    return prepared
