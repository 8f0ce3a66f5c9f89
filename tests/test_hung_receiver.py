"""
A receiver that accepts connections and never answers must not stall Airflow.

The DAG is a chain of 10 output tasks, each selected by its own webhook, plus a run
webhook: 11 messages per run, all to one connection whose receiver hangs (the default
30 s timeout). Under ``airflow dags test`` there is no dispatcher, so callbacks send
inline: the first attempt times out, which opens the endpoint's circuit at once, and
every later callback leaves its message in the ledger instead of waiting another 30 s.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from airflow_webhook_provider import config
from airflow_webhook_provider.ledger import open_ledger
from airflow_webhook_provider.receiver import RecordingReceiver
from tests.conftest import SECRET, flow_webhook_connection
from tests.servers import HungReceiver

CHAIN_DAG = """
import datetime
from airflow.sdk import DAG, task
from airflow_webhook_provider import FlowWebhook, FlowWebhooks

with DAG("{dag_id}", schedule=None, start_date=datetime.datetime(2024, 1, 1), catchup=False) as dag:
    @task
    def step(i: int) -> int:
        return i

    previous = None
    for i in range(10):
        current = step.override(task_id=f"t{{i}}")(i)
        if previous is not None:
            previous >> current
        previous = current

FlowWebhooks(
    FlowWebhook(name="run", conn_id="{conn_id}", on="any"),
    *[FlowWebhook(name=f"out-{{i}}", conn_id="{conn_id}", on="success", outputs=[f"t{{i}}"]) for i in range(10)],
).attach(dag)
"""


def write_chain_dag(folder: Path, dag_id: str, conn_id: str = "stuck") -> None:
    """Write the chain DAG, its 11 webhooks sending through ``conn_id``."""
    (folder / f"{dag_id}.py").write_text(CHAIN_DAG.format(dag_id=dag_id, conn_id=conn_id))


def test_dags_test_finishes_within_a_minute_and_the_ledger_keeps_every_message(airflow_db):
    dag_id = "hung_chain_dags_test"
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    write_chain_dag(dags, dag_id)
    try:
        with HungReceiver() as hung:
            env = {
                **os.environ,
                "AIRFLOW_CONN_STUCK": flow_webhook_connection(hung.url("/hook")),
                # The first probe of the open circuit comes after this (jittered), not after a minute.
                "AIRFLOW__FLOW_WEBHOOK__REDELIVERY_BACKOFF_SECONDS": "1",
            }
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "airflow", "dags", "test", dag_id],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            took = time.monotonic() - started
            port = hung.port
            accepted = hung.accepted
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        print(f"\n`airflow dags test` with a hung receiver: {took:.1f} s, {accepted} connection(s) to it")
        assert took < 60
        assert accepted == 1  # one timeout, then the circuit kept every other callback away

        ledger = open_ledger(config.load().ledger_conn_id)
        rows = [row for row in ledger.deliveries(dag_id=dag_id, limit=None)]
        assert sorted((row.webhook, row.output_name) for row in rows) == sorted(
            [("run", "")] + [(f"out-{i}", f"t{i}") for i in range(10)]
        )
        assert {row.state for row in rows} <= {"pending", "failed"}
        (health,) = ledger.endpoint_health(["stuck"])
        assert health.circuit == "open"

        # The receiver comes back on the same port: what waited is sent, signed, once each.
        with RecordingReceiver(secret=SECRET, port=port) as healthy:
            deadline = time.monotonic() + 90
            while len(healthy.requests) < 11 and time.monotonic() < deadline:
                ledger.engine.dispose()
                subprocess.run(
                    [sys.executable, "-m", "airflow_webhook_provider", "dispatcher", "--once"],
                    env=env,
                    capture_output=True,
                    timeout=120,
                    check=True,
                )
                time.sleep(0.3)
            got = healthy.wait_for(11, timeout=5)
        assert sorted(json.loads(r.body)["webhookName"] for r in got) == sorted(
            ["run", *[f"out-{i}" for i in range(10)]]
        )
        assert all(r.signature_valid for r in got)
        assert {row.state for row in ledger.deliveries(dag_id=dag_id, limit=None)} == {"delivered"}
    finally:
        (dags / f"{dag_id}.py").unlink(missing_ok=True)
