"""
The trigger matrix on Airflow's distributed set-up: CeleryExecutor with the machine's
Redis as broker, PostgreSQL as metadata database and as the shared ledger, two Celery
workers and two dispatchers, each its own process on 127.0.0.1.

Task callbacks run in the workers' task processes, DAG-level callbacks in the DAG
processor; all of them only record in the shared ledger, and the two dispatchers send.
The receiver must get exactly the messages the oracle of ``tests/test_callbacks.py``
expects, each once and signed.
"""

from __future__ import annotations

import json
import random
import socket
from collections import Counter
from pathlib import Path

import pytest

from airflow_webhook_provider.receiver import RecordingReceiver
from tests.airflow_deployment import AirflowDeployment
from tests.conftest import SECRET, flow_webhook_connection, postgres_database
from tests.test_callbacks import (
    DAG_SOURCE,
    FAILING_RUN_OUTPUTS,
    SUCCEEDING_RUN_OUTPUTS,
    TRIGGERS,
    expected_messages,
)

pytestmark = pytest.mark.airflow_components

FAILING_STATES = {"ok": "success", "bad": "failed", "after_bad": "upstream_failed", "skipper": "skipped"}
SUCCEEDING_STATES = {"ok": "success", "skipper": "skipped"}


def _redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=2):
            return True
    except OSError:
        return False


def _sqlalchemy_url(connection: dict[str, object], driver: str = "postgresql+psycopg") -> str:
    return (
        f"{driver}://{connection['login']}@{connection['host']}:{connection['port']}/{connection['schema']}"
    )


def test_the_trigger_matrix_on_celery_with_two_workers_and_two_dispatchers(tmp_path: Path) -> None:
    if not _redis_up():
        pytest.fail("Redis is not running on 127.0.0.1:6379 (.ci/run starts it)")
    redis_db = random.randint(1, 15)
    dags = tmp_path / "dags"
    dags.mkdir()
    for dag_id, failing, outputs in (
        ("celery_failing", True, FAILING_RUN_OUTPUTS),
        ("celery_succeeding", False, SUCCEEDING_RUN_OUTPUTS),
    ):
        source = DAG_SOURCE.format(dag_id=dag_id, failing=failing, triggers=TRIGGERS, outputs=outputs)
        (dags / f"{dag_id}.py").write_text(
            source.replace("catchup=False)", "catchup=False, start_date=None)")
        )

    with (
        postgres_database() as metadata,
        postgres_database() as ledger,
        RecordingReceiver(secret=SECRET) as receiver,
    ):
        env = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": _sqlalchemy_url(metadata),
            # psycopg 3 for Airflow's async engine too (Airflow would look for asyncpg).
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": _sqlalchemy_url(
                metadata, "postgresql+psycopg_async"
            ),
            "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:6379/{redis_db}",
            "AIRFLOW__CELERY__RESULT_BACKEND": _sqlalchemy_url(metadata, "db+postgresql+psycopg"),
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
            "AIRFLOW_CONN_SHARED_LEDGER": json.dumps(ledger),
            "AIRFLOW__FLOW_WEBHOOK__LEDGER_CONN_ID": "shared_ledger",
            "AIRFLOW_CONN_RECEIVER": flow_webhook_connection(receiver.url("/hook")),
        }
        with AirflowDeployment(tmp_path, dags, extra_env=env) as airflow:
            airflow.start("api-server", "scheduler", "dag-processor")
            for index in (1, 2):
                airflow.start_process(
                    f"celery-worker-{index}",
                    "celery",
                    "worker",
                    "--skip-serve-logs",
                    "--celery-hostname",
                    f"flow-webhook-worker-{index}@%h",
                    "--concurrency",
                    "2",
                )
                airflow.start_process(f"dispatcher-{index}", "flow-webhooks", "dispatcher")
            airflow.wait_for_dispatcher()
            airflow.wait_for_dag("celery_failing", timeout=240)
            airflow.wait_for_dag("celery_succeeding", timeout=240)
            failing_run = airflow.trigger("celery_failing")
            succeeding_run = airflow.trigger("celery_succeeding")
            assert airflow.wait_for_run("celery_failing", failing_run, timeout=300) == "failed"
            assert airflow.wait_for_run("celery_succeeding", succeeding_run, timeout=300) == "success"
            assert airflow.task_states("celery_failing", failing_run) == FAILING_STATES
            assert airflow.task_states("celery_succeeding", succeeding_run) == SUCCEEDING_STATES

            expected = expected_messages("failed", FAILING_STATES, FAILING_RUN_OUTPUTS) + expected_messages(
                "success", SUCCEEDING_STATES, SUCCEEDING_RUN_OUTPUTS
            )
            total = sum(expected.values())
            receiver.wait_for(total, timeout=180)
            got = receiver.wait_for(total + 1, timeout=5)
            status = json.loads(airflow.provider_cli("status", "-o", "json").stdout)
            worker_logs = [airflow.log_tail(f"celery-worker-{i}", n=100000) for i in (1, 2)]

    bodies = [json.loads(request.body) for request in got]
    assert Counter((b["w"], b["status"], b["out"]) for b in bodies) == expected
    assert Counter(b["job"] for b in bodies) == Counter(
        {
            failing_run: sum(expected_messages("failed", FAILING_STATES, FAILING_RUN_OUTPUTS).values()),
            succeeding_run: sum(
                expected_messages("success", SUCCEEDING_STATES, SUCCEEDING_RUN_OUTPUTS).values()
            ),
        }
    )
    assert all(request.signature_valid for request in got)
    assert len({request.delivery_id for request in got}) == total
    assert status["mode"] == "dispatcher"
    assert len([d for d in status["dispatchers"] if d["alive"]]) == 2
    print(
        f"\n{total} messages; tasks run per worker: "
        f"{[log.count('Running <TaskInstance') or log.count('succeeded in') for log in worker_logs]}"
    )
