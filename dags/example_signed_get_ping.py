"""
A signed GET ping at the end of every run.

GET carries no body, so the signature covers the full URL as sent, query included. The
``ping_webhook`` connection holds the URL and the secret key.
"""

from __future__ import annotations

import datetime

from airflow.sdk import dag, task

from airflow_webhook_provider import FlowWebhook, FlowWebhooks


@dag(
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["example", "flow-webhook"],
)
def example_signed_get_ping() -> None:
    @task
    def heartbeat() -> str:
        return "alive"

    heartbeat()


FlowWebhooks(
    FlowWebhook(
        name="uptime-ping",
        conn_id="ping_webhook",
        method="GET",
        on="any",
        query={"job": "$jobId", "status": "$jobStatus", "flow": "$flowId"},
    ),
).attach(example_signed_get_ping())
