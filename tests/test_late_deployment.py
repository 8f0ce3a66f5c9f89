"""
``on="late"`` in a real deployment: api-server, scheduler, dag-processor and triggerer, each
its own process (LocalExecutor, SQLite), no dispatcher (the triggerer sends inline), a
receiver on 127.0.0.1.

Three DAGs run at once, each with one late webhook:

- ``late_slow``: ``late_after`` 15 s and a 60 s task. Exactly one message, ``$jobStatus``
  ``late``, signed as the manual says (checked here with ``hmac`` alone), arrives a few
  seconds after the deadline, while the run still runs; the run's Webhooks tab lists it,
  and a redelivery sends it again with the same ``X-Webhook-Id``.
- ``late_quick``: succeeds well within its ``late_after``; Airflow deletes its deadline.
- ``late_fails``: fails within its ``late_after``; Airflow keeps that deadline and the
  triggerer runs the callback when it passes, which finds the run ended in time.

Neither in-time run sends anything.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from airflow_webhook_provider.receiver import RecordingReceiver
from tests.airflow_deployment import AirflowDeployment
from tests.conftest import SECRET, flow_webhook_connection
from tests.test_late import manual_signature_ok

pytestmark = pytest.mark.airflow_components

#: The in-time runs' late_after: long enough for a one-task run on a busy 2-core machine.
IN_TIME_SECONDS = 45

DAGS = f"""
import datetime
import time

from airflow.sdk import DAG, task
from airflow_webhook_provider import FlowWebhook, FlowWebhooks

START = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
BODY = '{{"w": "$webhookName", "flow": "$flowId", "job": "$jobId", "status": "$jobStatus"}}'

with DAG("late_slow", schedule=None, start_date=START, catchup=False) as late_slow:
    @task
    def load():
        time.sleep(60)

    load()

with DAG("late_quick", schedule=None, start_date=START, catchup=False) as late_quick:
    @task
    def load():
        return 1

    load()

with DAG("late_fails", schedule=None, start_date=START, catchup=False) as late_fails:
    @task(retries=0)
    def load():
        raise RuntimeError("boom")

    load()

HEADERS = {{"Content-Type": "application/json"}}
FlowWebhooks(
    FlowWebhook(name="late", conn_id="receiver", on="late", late_after=datetime.timedelta(seconds=15),
                headers=HEADERS, body=BODY),
).attach(late_slow)
for dag in (late_quick, late_fails):
    FlowWebhooks(
        FlowWebhook(name="late", conn_id="receiver", on="late",
                    late_after=datetime.timedelta(seconds={IN_TIME_SECONDS}), headers=HEADERS, body=BODY),
    ).attach(dag)
"""


def _seconds(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _run(airflow: AirflowDeployment, dag_id: str, run_id: str) -> dict[str, Any]:
    response = airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
    response.raise_for_status()
    return dict(response.json())


def _deadlines(airflow: AirflowDeployment, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    response = airflow.api("GET", f"/ui/dags/{dag_id}/dagRuns/{run_id}/deadlines")
    response.raise_for_status()
    return list(response.json()["deadlines"])


def test_a_late_run_sends_one_signed_late_message_and_runs_in_time_send_none(tmp_path: Path) -> None:
    started = time.monotonic()
    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "late.py").write_text(DAGS)
    with RecordingReceiver(secret=SECRET) as receiver:
        env = {"AIRFLOW_CONN_RECEIVER": flow_webhook_connection(receiver.url("/late"))}
        with AirflowDeployment(tmp_path, dags, extra_env=env) as airflow:
            airflow.start("api-server", "scheduler", "dag-processor", "triggerer")
            for dag_id in ("late_slow", "late_quick", "late_fails"):
                airflow.wait_for_dag(dag_id, timeout=240)
            up = time.monotonic()
            runs = {dag_id: airflow.trigger(dag_id) for dag_id in ("late_slow", "late_quick", "late_fails")}

            (late,) = receiver.wait_for(1, timeout=90)
            assert airflow.run_state("late_slow", runs["late_slow"]) == "running"  # late, not ended
            assert airflow.wait_for_run("late_quick", runs["late_quick"], timeout=120) == "success"
            assert airflow.wait_for_run("late_fails", runs["late_fails"], timeout=120) == "failed"
            assert airflow.wait_for_run("late_slow", runs["late_slow"], timeout=180) == "success"
            details = {dag_id: _run(airflow, dag_id, run_id) for dag_id, run_id in runs.items()}
            for dag_id in ("late_quick", "late_fails"):
                took = _seconds(details[dag_id]["end_date"]) - _seconds(details[dag_id]["queued_at"])
                assert took < IN_TIME_SECONDS, (
                    f"{dag_id} took {took:.0f} s: not in time, the case proves nothing"
                )

            # The failed run kept its deadline: the scheduler finds it passed, and the triggerer
            # runs the callback, which must find the run ended in time.
            fails_deadline = _seconds(details["late_fails"]["queued_at"]) + IN_TIME_SECONDS
            in_time = f"run {runs['late_fails']} of DAG late_fails ended failed in time; no late message"
            while in_time not in airflow.log_tail("triggerer", 1000):
                assert time.time() < fails_deadline + 60, "the failed run's deadline callback never ran"
                time.sleep(1)
            assert [d["missed"] for d in _deadlines(airflow, "late_fails", runs["late_fails"])] == [True]
            assert _deadlines(airflow, "late_quick", runs["late_quick"]) == []  # succeeded in time: deleted

            listing = json.loads(
                airflow.provider_cli("deliveries", "list", "--event", "late", "-o", "json").stdout
            )
            tab = airflow.api(
                "GET", "/flow-webhooks/run", params={"dag_id": "late_slow", "run_id": runs["late_slow"]}
            )
            redelivered = airflow.provider_cli("redeliver", late.delivery_id or "")
            again = receiver.wait_for(2, timeout=30)[1]
            doctor = json.loads(airflow.provider_cli("doctor", "-o", "json", check=False).stdout)
        finished = time.monotonic()

    (triggerer,) = [check for check in doctor if check["check"] == "triggerer"]
    assert triggerer["status"] == "ok", triggerer  # the triggerer the late message needs is alive

    assert len(receiver.requests) == 2  # the late message, and its redelivery: nothing from the in-time runs
    body = json.loads(late.body)
    assert body == {"w": "late", "flow": "late_slow", "job": runs["late_slow"], "status": "late"}
    assert manual_signature_ok(late.header("X-Webhook-Signature"), late.body, SECRET)
    deadline_at = _seconds(details["late_slow"]["queued_at"]) + 15
    delay = late.received_at - deadline_at
    assert 0 <= delay < 20

    assert [(row["dag_id"], row["run_id"], row["event"], row["state"]) for row in listing] == [
        ("late_slow", runs["late_slow"], "late", "delivered")
    ]
    assert listing[0]["id"] == late.delivery_id
    assert tab.status_code == 200 and late.delivery_id in tab.text and "<td>late" in tab.text

    assert redelivered.returncode == 0, redelivered.stderr
    assert again.delivery_id == late.delivery_id and again.body == late.body
    assert manual_signature_ok(again.header("X-Webhook-Signature"), again.body, SECRET)

    print(
        f"\nlate message {delay:.1f} s after the deadline (queued_at + 15 s); deployment up in "
        f"{up - started:.0f} s, runs and checks {finished - up:.0f} s, whole test {finished - started:.0f} s"
    )
