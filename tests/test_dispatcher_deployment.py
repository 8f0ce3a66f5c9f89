"""
The dispatcher in a real deployment: api-server, scheduler, dag-processor and
``airflow flow-webhooks dispatcher``, each its own process (LocalExecutor, SQLite), with
receivers on 127.0.0.1.

One deployment runs the same chain DAG twice (tests/test_hung_receiver.py: 10 output
tasks each selected by a webhook, plus a run webhook), once against a healthy receiver
and once against one that accepts connections and never answers:

- with the dispatcher alive, callbacks only record, so the hung receiver costs the run
  (almost) nothing: at most 1.5x the healthy run;
- every output message of the healthy run arrives within 2 s of its task's end;
- all 11 messages of the hung run stay in the ledger, and arrive signed once a healthy
  receiver takes the port.
"""

from __future__ import annotations

import json
import statistics
import time
from datetime import datetime
from pathlib import Path

import pytest

from airflow_webhook_provider.receiver import RecordingReceiver
from tests.airflow_deployment import AirflowDeployment
from tests.conftest import SECRET, flow_webhook_connection
from tests.servers import HungReceiver
from tests.test_hung_receiver import write_chain_dag

pytestmark = pytest.mark.airflow_components

EXPECTED = sorted(["run", *[f"out-{i}" for i in range(10)]])


def _seconds(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def run_duration(airflow: AirflowDeployment, dag_id: str, run_id: str) -> float:
    run = airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()
    return _seconds(run["end_date"]) - _seconds(run["start_date"])


def test_a_hung_receiver_costs_a_run_nothing_while_the_dispatcher_sends(tmp_path: Path) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    write_chain_dag(dags, "chain_healthy", conn_id="healthy")
    write_chain_dag(dags, "chain_hung", conn_id="stuck")
    with RecordingReceiver(secret=SECRET) as healthy, HungReceiver() as hung:
        port = hung.port
        env = {
            "AIRFLOW_CONN_HEALTHY": flow_webhook_connection(healthy.url("/healthy")),
            "AIRFLOW_CONN_STUCK": flow_webhook_connection(hung.url("/stuck")),
            # The open circuit's first probe comes a few seconds after the outage begins.
            "AIRFLOW__FLOW_WEBHOOK__REDELIVERY_BACKOFF_SECONDS": "4",
            "AIRFLOW__FLOW_WEBHOOK__REDELIVERY_MAX_BACKOFF_SECONDS": "8",
        }
        with AirflowDeployment(tmp_path, dags, extra_env=env) as airflow:
            airflow.start("api-server", "scheduler", "dag-processor", "dispatcher")
            airflow.wait_for_dag("chain_healthy", timeout=240)
            airflow.wait_for_dag("chain_hung", timeout=240)

            healthy_run = airflow.trigger("chain_healthy")
            assert airflow.wait_for_run("chain_healthy", healthy_run, timeout=300) == "success"
            got = healthy.wait_for(11, timeout=60)
            hung_run = airflow.trigger("chain_hung")
            assert airflow.wait_for_run("chain_hung", hung_run, timeout=300) == "success"

            healthy_seconds = run_duration(airflow, "chain_healthy", healthy_run)
            hung_seconds = run_duration(airflow, "chain_hung", hung_run)
            ends = {
                ti["task_id"]: _seconds(ti["end_date"])
                for ti in airflow.api(
                    "GET", f"/api/v2/dags/chain_healthy/dagRuns/{healthy_run}/taskInstances"
                ).json()["task_instances"]
            }

            listing = json.loads(
                airflow.provider_cli("deliveries", "list", "--dag", "chain_hung", "-o", "json").stdout
            )
            assert sorted(row["webhook"] for row in listing) == EXPECTED
            assert {row["state"] for row in listing} <= {"pending", "failed"}

            # The outage ends: a healthy receiver takes the port, the dispatcher's probe finds it.
            hung.stop()
            with RecordingReceiver(secret=SECRET, port=port) as back:
                recovered = back.wait_for(11, timeout=120)
                time.sleep(2)
                recovered = list(back.requests)
            listing = json.loads(
                airflow.provider_cli("deliveries", "list", "--dag", "chain_hung", "-o", "json").stdout
            )

    bodies = [json.loads(r.body) for r in got]
    assert sorted(b["webhookName"] for b in bodies) == EXPECTED
    assert all(r.signature_valid for r in got)
    latencies = [
        request.received_at - ends[body["outputName"]]
        for request, body in zip(got, bodies, strict=True)
        if body["outputName"]
    ]
    ratio = hung_seconds / healthy_seconds
    print(
        f"\nrun with a healthy receiver {healthy_seconds:.1f} s, with a hung one {hung_seconds:.1f} s "
        f"({ratio:.2f}x); output message after its task's end: median {statistics.median(latencies):.2f} s, "
        f"max {max(latencies):.2f} s"
    )
    assert ratio <= 1.5
    assert max(latencies) <= 2.0

    assert sorted(json.loads(r.body)["webhookName"] for r in recovered) == EXPECTED  # each once
    assert all(r.signature_valid for r in recovered)
    assert {row["state"] for row in listing} == {"delivered"}
