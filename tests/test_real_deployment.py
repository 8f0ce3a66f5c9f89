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
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from airflow_webhook_provider.receiver import RecordingReceiver
from tests.airflow_deployment import AirflowDeployment
from tests.conftest import SECRET, flow_webhook_connection

pytestmark = pytest.mark.airflow_components

HEADER_SECRETS = {"Authorization": "Bearer hdr-token-5c1d7a", "X-Api-Key": "api-key-9e2b44"}

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

    @task
    def careless():
        # A user task printing what it should not: the secrets masker must hide it.
        from airflow_webhook_provider.hooks.flow_webhook import FlowWebhookHook

        endpoint = FlowWebhookHook("receiver").endpoint
        print("careless task sees headers", dict(endpoint.headers), "and secret", endpoint.secret)

    second(first())
    careless()

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
        env = {
            "AIRFLOW_CONN_RECEIVER": flow_webhook_connection(
                receiver.url("/hook"), headers=json.dumps(HEADER_SECRETS)
            )
        }
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
            careless_log = airflow.task_log("real_ok", ok_run, "careless")
            cli_outputs = [
                subprocess.run(
                    [sys.executable, "-m", "airflow_webhook_provider", *args],
                    env=airflow.env,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=True,
                )
                for args in (
                    ("deliveries", "list", "-o", "json"),
                    ("deliveries", "show", requests[0].delivery_id),
                )
            ]
            everything_written = {
                **{str(p): p.read_text(errors="replace") for p in airflow.home.rglob("*.log") if p.is_file()},
                **{str(p): p.read_bytes().decode("latin-1") for p in airflow.home.glob("flow_webhooks.db*")},
                **{" ".join(done.args[3:]): done.stdout + done.stderr for done in cli_outputs},
            }

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

    # Secret hygiene: the careless task's print was masked, and no log, ledger byte or CLI
    # output anywhere in the deployment holds the secret or a header value.
    assert "careless task sees headers" in careless_log and "***" in careless_log
    assert json.loads(cli_outputs[0].stdout)[0]["webhook"] in {"run", "out"}
    for value in (SECRET, *HEADER_SECRETS.values()):
        assert value not in careless_log
        leaks = [
            f"{name}: {line[:120]}"
            for name, text in everything_written.items()
            for line in text.splitlines()
            if value in line
            # Airflow's task supervisor mirrors a task's own stdout to the executor's console
            # without the masks the task registered; the task log itself is masked (above).
            and not (name.endswith("scheduler.log") and line.rstrip().endswith("[task.stdout]"))
        ]
        assert not leaks, f"{value!r} leaked: {leaks}"


DEFERRING_DAG = """
import datetime
from airflow.sdk import DAG, task
from airflow_webhook_provider.operators.flow_webhook import FlowWebhookOperator

with DAG("real_deferral", schedule=None, start_date=datetime.datetime(2024, 1, 1), catchup=False) as dag:
    FlowWebhookOperator(
        task_id="start_job_b",
        job_groups_conn_id="job_groups_default",
        wrangled_dataset_id=4,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=1,
        timeout=300,
    )

    @task
    def meanwhile():
        return "ran while job B was running"

    meanwhile()
"""


def test_deferred_wait_runs_in_the_real_triggerer_and_frees_the_worker_slot(tmp_path: Path) -> None:
    """
    With [core] parallelism = 1 there is one worker slot. ``meanwhile`` can only run while
    ``start_job_b`` waits if the wait left the slot: the job group stays InProgress until the
    test has seen ``meanwhile`` succeed beside a deferred ``start_job_b``.
    """
    from tests.job_groups_server import JobGroupsServer
    from tests.test_job_groups import TOKEN, job_groups_connection

    dags_folder = tmp_path / "dags"
    dags_folder.mkdir()
    (dags_folder / "real_deferral.py").write_text(DEFERRING_DAG)

    with JobGroupsServer(token=TOKEN, final_status=None) as api:
        env = {
            "AIRFLOW_CONN_JOB_GROUPS_DEFAULT": job_groups_connection(api.base_url),
            "AIRFLOW__CORE__PARALLELISM": "1",
        }
        with AirflowDeployment(tmp_path, dags_folder, extra_env=env) as airflow:
            airflow.start("api-server", "scheduler", "dag-processor", "triggerer")
            airflow.wait_for_dag("real_deferral", timeout=240)
            run_id = airflow.trigger("real_deferral")

            def polls() -> int:
                return len(api.requests_to("GET", "/v4/jobGroups/101/status"))

            states: dict[str, str | None] = {}
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                states = airflow.task_states("real_deferral", run_id)
                if states == {"start_job_b": "deferred", "meanwhile": "success"}:
                    break
                time.sleep(1)
            assert states == {"start_job_b": "deferred", "meanwhile": "success"}, states

            # While the task instance stays deferred no worker runs it, yet the status keeps
            # being polled: the triggerer is doing the waiting.
            seen = polls()
            deadline = time.monotonic() + 60
            while polls() < seen + 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            assert polls() >= seen + 2
            assert airflow.task_states("real_deferral", run_id)["start_job_b"] == "deferred"

            api.finish_all("Complete")
            assert airflow.wait_for_run("real_deferral", run_id, timeout=180) == "success"
            xcom = airflow.api(
                "GET",
                f"/api/v2/dags/real_deferral/dagRuns/{run_id}/taskInstances/start_job_b/xcomEntries/return_value",
            )
            triggerer_log = airflow.log_tail("triggerer", n=2000)

    assert xcom.status_code == 200 and str(xcom.json()["value"]) == "101"
    assert [r.json() for r in api.requests_to("POST", "/v4/jobGroups")] == [{"wrangledDataset": {"id": 4}}]
    assert TOKEN not in triggerer_log
