"""Parsing a DAG file with 50 webhooks touches no network and no database, and stays light.

The DAG processor imports a DAG file in a process of its own, so the check runs the
file in a fresh interpreter: after ``import airflow.sdk`` (Airflow's own start-up is
not ours to police), every socket connect, name lookup, SQLite connection and
SQLAlchemy engine or connection raises and is recorded while the provider is imported
and its webhooks are attached. No timing is asserted here; benchmarks/ measures it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DAG_FILE = """
from airflow.sdk import DAG, task

from airflow_webhook_provider import FlowWebhook, FlowWebhooks

with DAG("parse_cost", schedule=None) as dag:
    previous = None
    for number in range(20):

        @task(task_id=f"step_{number:02d}")
        def step():
            return None

        current = step()
        if previous is not None:
            previous >> current
        previous = current

FlowWebhooks(
    *[
        FlowWebhook(
            name=f"hook-{i:02d}",
            conn_id="parse_cost_webhook",
            on=("success", "failure", "any")[i % 3],
            outputs=[f"step_{i % 20:02d}"] if i % 5 == 0 else None,
            headers={"Content-Type": "application/json"},
            body='{"text": "Job $jobId of $flowId ended: $jobStatus", "n": %d}' % i,
        )
        for i in range(50)
    ]
).attach(dag)
"""

PARSE = r"""
import importlib.util, json, socket, sqlite3, sys

import airflow.sdk
import sqlalchemy
import sqlalchemy.engine
import sqlalchemy.engine.create

attempts = []


class ForbiddenAtParseTime(BaseException):
    # BaseException, so that no "except Exception" in the code under test hides it.
    pass


def forbid(what):
    def refuse(*args, **kwargs):
        attempts.append(what)
        raise ForbiddenAtParseTime(f"{what} while a DAG file is parsed")
    return refuse


socket.socket.connect = forbid("socket.connect")
socket.socket.connect_ex = forbid("socket.connect_ex")
socket.create_connection = forbid("socket.create_connection")
socket.getaddrinfo = forbid("socket.getaddrinfo")
sqlite3.connect = forbid("sqlite3.connect")
sqlalchemy.create_engine = forbid("sqlalchemy.create_engine")
sqlalchemy.engine.create_engine = forbid("sqlalchemy.create_engine")
sqlalchemy.engine.create.create_engine = forbid("sqlalchemy.create_engine")
sqlalchemy.engine.Engine.connect = forbid("Engine.connect")
sqlalchemy.engine.Engine.begin = forbid("Engine.begin")
sqlalchemy.engine.Engine.raw_connection = forbid("Engine.raw_connection")

before = set(sys.modules)
spec = importlib.util.spec_from_file_location("parse_cost_dag", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
dag = module.dag

callbacks = list(dag.on_success_callback or []) + list(dag.on_failure_callback or [])
output_callbacks = sum(
    len(task.on_success_callback or []) + len(task.on_failure_callback or []) for task in dag.task_dict.values()
)
print("RESULT " + json.dumps({
    "attempts": attempts,
    "tasks": len(dag.task_dict),
    "webhooks": len(callbacks[0].registry.webhooks) if callbacks else 0,
    "dag_callbacks": len(callbacks),
    "output_callbacks": output_callbacks,
    "has_callbacks": [dag.has_on_success_callback, dag.has_on_failure_callback],
    "new_modules": sorted(set(sys.modules) - before),
}))
"""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Parse the DAG file in a fresh interpreter under the guards; return what it saw."""
    folder = tmp_path_factory.mktemp("parse_cost")
    dag_file = folder / "parse_cost_dag.py"
    dag_file.write_text(DAG_FILE)
    completed = subprocess.run(
        [sys.executable, "-c", PARSE, str(dag_file)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    return dict(json.loads(line.removeprefix("RESULT ")))


class TestParseCost:
    def test_the_dag_is_built_with_every_webhook_attached(self, parsed: dict[str, Any]) -> None:
        assert parsed["tasks"] == 20
        assert parsed["webhooks"] == 50
        assert parsed["dag_callbacks"] == 2
        assert parsed["has_callbacks"] == [True, True]
        # Every 5th webhook selects an output: steps 00, 05, 10 and 15, each with a success and a failure callback.
        assert parsed["output_callbacks"] == 8

    def test_no_network_or_database_access_at_parse_time(self, parsed: dict[str, Any]) -> None:
        assert parsed["attempts"] == []

    @pytest.mark.parametrize(
        "module",
        [
            pytest.param("requests", id="requests"),
            pytest.param("urllib3", id="urllib3"),
            pytest.param("airflow_webhook_provider.delivery", id="delivery"),
            pytest.param("airflow_webhook_provider.delivery.message", id="message"),
            pytest.param("airflow_webhook_provider.delivery.sender", id="sender"),
            pytest.param("airflow_webhook_provider.delivery.transport", id="transport"),
            pytest.param("airflow_webhook_provider.delivery.endpoints", id="endpoints"),
            pytest.param("airflow_webhook_provider.delivery.pipeline", id="pipeline"),
            pytest.param("airflow_webhook_provider.ledger", id="ledger"),
            pytest.param("airflow_webhook_provider.ledger.store", id="ledger-store"),
            pytest.param("airflow_webhook_provider.hooks.flow_webhook", id="hook"),
        ],
    )
    def test_sending_machinery_is_not_imported_at_parse_time(
        self, parsed: dict[str, Any], module: str
    ) -> None:
        assert module not in parsed["new_modules"]
