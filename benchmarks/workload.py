"""The workload every part sends: one failed run, 50 webhooks, JSON bodies, one signed connection.

Import it after ``_common.init_airflow_home()``: it imports the provider.
"""

from __future__ import annotations

from _common import FAN_OUT, SECRET, WEBHOOK_CONN_ID

from airflow_webhook_provider.delivery import build_message
from airflow_webhook_provider.hooks.flow_webhook import FlowWebhookHook
from airflow_webhook_provider.models import FlowWebhook, JobEvent
from airflow_webhook_provider.signing import DELIVERY_ID_HEADER, SIGNATURE_HEADER, sign

EVENT = JobEvent(flow_id="bench_fanout", job_id="manual__2026-01-01T00:00:00+00:00", job_status="failed")


def webhooks() -> list[FlowWebhook]:
    """Fifty webhooks on one connection, each with its own JSON body."""
    return [
        FlowWebhook(
            name=f"hook-{i:02d}",
            conn_id=WEBHOOK_CONN_ID,
            on="failure",
            headers={"Content-Type": "application/json"},
            body=f'{{"text": "Job $jobId of $flowId ended: $jobStatus", "webhook": "$webhookName", "n": {i}}}',
        )
        for i in range(FAN_OUT)
    ]


def same_requests(
    definitions: list[FlowWebhook], event: JobEvent = EVENT
) -> list[tuple[bytes, dict[str, str]]]:
    """The bodies and headers ours sends, signed now, for a baseline to send as they are."""
    endpoint = FlowWebhookHook(WEBHOOK_CONN_ID).endpoint
    prepared = []
    for webhook in definitions:
        message = build_message(endpoint, webhook, event)
        assert message.body is not None
        headers = {**message.headers, DELIVERY_ID_HEADER: message.delivery_id}
        headers[SIGNATURE_HEADER] = sign(SECRET, message.body)
        prepared.append((message.body, headers))
    return prepared
