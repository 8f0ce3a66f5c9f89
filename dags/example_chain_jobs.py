"""Conditional sequencing: start job B only when job A succeeded, a recovery job when it failed.

Job A's output task runs first. ``start_job_b`` keeps the default trigger rule
(``all_success``), so it starts job B (wrangled dataset 4) only after job A succeeded,
and waits for it in the triggerer. ``start_recovery_job`` has ``trigger_rule="one_failed"``,
so it starts the recovery job (wrangled dataset 5) only when job A failed; otherwise it
is skipped.

Set up a ``job_groups`` connection named ``job_groups_default``: Base URL (Host)
``http://www.example.com:3005``, Access token (Password) your access token. Trigger the
DAG with ``{"simulate_failure": true}`` to take the failure branch.
"""

from __future__ import annotations

import datetime
from typing import Any

from airflow.sdk import Param, dag, task

from airflow_webhook_provider import FlowWebhook, FlowWebhooks
from airflow_webhook_provider.operators.flow_webhook import FlowWebhookOperator


@dag(
    schedule=None,
    start_date=datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    tags=["example", "flow-webhook"],
    params={
        "simulate_failure": Param(
            False, type="boolean", description="Make job A fail, to see the failure branch."
        )
    },
)
def example_chain_jobs() -> None:
    @task
    def job_a_output(**context: Any) -> str:
        if context["params"]["simulate_failure"]:
            raise RuntimeError("job A failed: simulate_failure is set")
        return "job A wrote its output"

    start_job_b = FlowWebhookOperator(
        task_id="start_job_b",
        job_groups_conn_id="job_groups_default",
        wrangled_dataset_id=4,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=30,
    )

    start_recovery_job = FlowWebhookOperator(
        task_id="start_recovery_job",
        job_groups_conn_id="job_groups_default",
        wrangled_dataset_id=5,
        trigger_rule="one_failed",
    )

    job_a_output() >> [start_job_b, start_recovery_job]


chain_jobs = example_chain_jobs()


# A Slack-style message whenever anything in the chain fails: job A, the start of job B,
# or job B itself (when the wait ends Failed or Canceled). Set up a Flow Webhook
# connection named ``slack_webhook`` with the incoming-webhook URL.
FlowWebhooks(
    FlowWebhook(
        name="slack-on-failure",
        conn_id="slack_webhook",
        on="failure",
        headers={"Content-Type": "application/json"},
        body='{"text": "Job $jobId has completed. Status: $jobStatus."}',
    ),
    FlowWebhook(
        name="slack-on-job-b-failure",
        conn_id="slack_webhook",
        on="failure",
        outputs=["start_job_b"],
        headers={"Content-Type": "application/json"},
        body='{"text": "Job B of $jobId did not complete: $outputName is $jobStatus. $jobUrl"}',
    ),
).attach(chain_jobs)
