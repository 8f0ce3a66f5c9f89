"""
A webhook for the success of one specific output.

Only ``publish_report`` is an output: when it succeeds, the ``reports_webhook``
connection receives one signed message naming the output. The other tasks send nothing.
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
def example_output_success() -> None:
    @task
    def build_report() -> str:
        return "report-2026-11.csv"

    @task
    def publish_report(path: str) -> str:
        return f"s3://reports/{path}"

    @task
    def archive_inputs() -> None:
        return None

    publish_report(build_report())
    archive_inputs()


FlowWebhooks(
    FlowWebhook(
        name="report-published",
        conn_id="reports_webhook",
        on="success",
        outputs=["publish_report"],
        headers={"Content-Type": "application/json"},
        body='{"event": "output.succeeded", "flow": "$flowId", "output": "$outputName", '
        '"job": "$jobId", "status": "$jobStatus", "link": "$jobUrl"}',
    ),
).attach(example_output_success())
