"""
Flow webhooks through a real Airflow deployment, not dag.test().

How the components are started (see tests/airflow_deployment.py for every setting):
a temporary AIRFLOW_HOME with a SQLite metadata DB and LocalExecutor; then, each as its
own subprocess and process group, ``airflow api-server -H 127.0.0.1 -p PORT``,
``airflow scheduler --skip-serve-logs`` and ``airflow dag-processor``, with
``AIRFLOW__CORE__EXECUTION_API_SERVER_URL=http://127.0.0.1:PORT/execution/``. Runs are
triggered through the REST API. Every process is stopped when the test ends.

This is the path users have: task-level callbacks run in the task process the
LocalExecutor starts, DAG-level callbacks in the DAG processor, which reads the run's
task states through the Task SDK (for outputs that never ran).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from airflow_webhook_provider.receiver import RecordingReceiver
from tests.airflow_deployment import AirflowDeployment
from tests.conftest import SECRET, flow_webhook_connection

pytestmark = pytest.mark.airflow_components

DAGS = """
import datetime
from airflow.sdk import DAG, task
from airflow_webhook_provider import FlowWebhook, FlowWebhooks

START = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
BODY = '{"w": "$webhookName", "job": "$jobId", "status": "$jobStatus", "out": "$outputName", "url": "$jobUrl"}'

with DAG("real_ok", schedule=None, start_date=START, catchup=False) as real_ok:
    @task
    def first():
        return 1

    @task
    def second(value):
        return value + 1

    second(first())

FlowWebhooks(
    FlowWebhook(name="run", conn_id="receiver", on="any", body=BODY),
    FlowWebhook(name="out", conn_id="receiver", on="success", outputs=["second"], body=BODY),
    FlowWebhook(name="never", conn_id="receiver", on="failure", body=BODY),
).attach(real_ok)

with DAG("real_bad", schedule=None, start_date=START, catchup=False) as real_bad:
    @task(retries=0)
    def boom():
        raise RuntimeError("boom")

    @task
    def after_boom():
        return 2

    boom() >> after_boom()

FlowWebhooks(
    FlowWebhook(name="run", conn_id="receiver", on="any", body=BODY),
    FlowWebhook(name="out", conn_id="receiver", on="failure", outputs=["boom", "after_boom"], body=BODY),
    FlowWebhook(name="never", conn_id="receiver", on="success", body=BODY),
).attach(real_bad)
"""


def test_run_and_output_webhooks_fire_from_scheduler_and_dag_processor(tmp_path: Path) -> None:
    dags_folder = tmp_path / "dags"
    dags_folder.mkdir()
    (dags_folder / "real_webhook_dags.py").write_text(DAGS)

    with RecordingReceiver(secret=SECRET) as receiver:
        env = {"AIRFLOW_CONN_RECEIVER": flow_webhook_connection(receiver.url("/hook"))}
        with AirflowDeployment(tmp_path, dags_folder, extra_env=env) as airflow:
            airflow.start("api-server", "scheduler", "dag-processor")
            airflow.wait_for_dag("real_ok", timeout=240)
            airflow.wait_for_dag("real_bad", timeout=240)
            ok_run = airflow.trigger("real_ok")
            bad_run = airflow.trigger("real_bad")
            assert airflow.wait_for_run("real_ok", ok_run, timeout=240) == "success"
            assert airflow.wait_for_run("real_bad", bad_run, timeout=240) == "failed"
            assert airflow.task_states("real_bad", bad_run) == {
                "boom": "failed",
                "after_boom": "upstream_failed",
            }

            # DAG-level callbacks run after the run ends; wait (bounded) for all five, then a
            # little longer for any message that should not come.
            receiver.wait_for(5, timeout=120)
            requests = receiver.wait_for(6, timeout=10)
            processor_log = airflow.log_tail("dag-processor", n=5000)

    bodies = [json.loads(r.body) for r in requests]
    assert Counter((b["job"], b["w"], b["status"], b["out"]) for b in bodies) == Counter(
        {
            (ok_run, "run", "success", ""): 1,
            (ok_run, "out", "success", "second"): 1,
            (bad_run, "run", "failed", ""): 1,
            (bad_run, "out", "failed", "boom"): 1,
            (bad_run, "out", "upstream_failed", "after_boom"): 1,
        }
    )
    assert all(r.signature_valid for r in requests), [r.signature_error for r in requests]
    for body in bodies:
        assert body["url"].startswith(f"{airflow.api_url}/dags/real_")

    # Run messages and the upstream_failed output message were sent by the DAG processor.
    for request, body in zip(requests, bodies, strict=True):
        sent_by_processor = f"(delivery {request.delivery_id})" in processor_log
        assert sent_by_processor == (body["w"] == "run" or body["status"] == "upstream_failed"), body
    assert SECRET not in processor_log
