"""
A Slack-style message whenever a run of this DAG fails.

The ``slack_webhook`` connection (type Flow Webhook) holds the incoming-webhook URL
Slack gave you. The transform step fails on purpose when the run is triggered with
``{"bad_input": true}`` (the default), to show the message.
"""

from __future__ import annotations

import datetime
from typing import Any

from airflow.sdk import Param, dag, task

from airflow_webhook_provider import FlowWebhook, FlowWebhooks


@dag(
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["example", "flow-webhook"],
    params={"bad_input": Param(True, type="boolean", description="Make the transform step fail.")},
)
def example_slack_on_failure() -> None:
    @task
    def extract() -> list[int]:
        return [1, 2, 3]

    @task(retries=0)
    def transform(rows: list[int], **context: Any) -> list[int]:
        if context["params"]["bad_input"]:
            raise ValueError("transform: input rows failed validation")
        return [row * 10 for row in rows]

    @task
    def load(rows: list[int]) -> int:
        return len(rows)

    load(transform(extract()))


FlowWebhooks(
    FlowWebhook(
        name="slack-on-failure",
        conn_id="slack_webhook",
        on="failure",
        headers={"Content-Type": "application/json"},
        body='{"text": "Job $jobId has completed. Status: $jobStatus."}',
    ),
).attach(example_slack_on_failure())
