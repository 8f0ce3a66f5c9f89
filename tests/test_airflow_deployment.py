"""Smoke test of the real-components harness: runs, task callbacks and DAG-level callbacks."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.airflow_deployment import AirflowDeployment

SUCCESS_DAG = "harness_smoke_success"
FAILURE_DAG = "harness_smoke_failure"

# Every callback appends one JSON line to RECORD: which callback ran, where (argv), for which
# run, and what it was given. The DAG-level callbacks also ask the DAG processor's supervisor
# for the run's task states through the Task SDK.
DAG_SOURCE = textwrap.dedent(
    """
    from __future__ import annotations

    import json
    import os
    import sys
    from datetime import datetime

    from airflow.sdk import DAG, task

    RECORD = __RECORD__


    def _type_name(value):
        return f"{type(value).__module__}.{type(value).__qualname__}"


    def _record(kind, context, **extra):
        dag_run = context.get("dag_run")
        ti = context.get("ti")
        entry = {
            "kind": kind,
            "argv": sys.argv,
            "pid": os.getpid(),
            "dag_id": getattr(context.get("dag"), "dag_id", None),
            "run_id": context.get("run_id", getattr(dag_run, "run_id", None)),
            "task_id": getattr(ti, "task_id", None),
            "context_keys": sorted(context),
            "dag_run_type": _type_name(dag_run),
            "dag_run": repr(dag_run),
            "dag_run_state": repr(getattr(dag_run, "state", None)),
            "ti_type": _type_name(ti),
            "reason": context.get("reason"),
            **extra,
        }
        with open(RECORD, "a") as record:
            record.write(json.dumps(entry, default=repr) + "\\n")


    def _task_states(context):
        try:
            from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

            return RuntimeTaskInstance.get_task_states(
                dag_id=context["dag"].dag_id, run_ids=[context["run_id"]]
            )
        except Exception as error:
            return repr(error)


    def dag_success(context):
        _record("dag_success", context, task_states=_task_states(context))


    def dag_failure(context):
        _record("dag_failure", context, task_states=_task_states(context))


    def task_success(context):
        _record("task_success", context)


    def task_failure(context):
        _record("task_failure", context)


    TASK_CALLBACKS = {"on_success_callback": task_success, "on_failure_callback": task_failure}

    with DAG(
        "harness_smoke_success",
        schedule=None,
        start_date=datetime(2024, 1, 1),
        catchup=False,
        on_success_callback=dag_success,
        on_failure_callback=dag_failure,
    ):

        @task(retries=0, **TASK_CALLBACKS)
        def first():
            return 1

        @task(retries=0, **TASK_CALLBACKS)
        def second(value):
            return value + 1

        second(first())

    with DAG(
        "harness_smoke_failure",
        schedule=None,
        start_date=datetime(2024, 1, 1),
        catchup=False,
        on_success_callback=dag_success,
        on_failure_callback=dag_failure,
    ):

        @task(retries=0, **TASK_CALLBACKS)
        def boom():
            raise RuntimeError("boom on purpose")

        @task(retries=0, **TASK_CALLBACKS)
        def after_boom():
            return "never runs"

        boom() >> after_boom()
    """
)


def _read_record(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_for_entries(path: Path, kinds: set[tuple[str, str]], timeout: float) -> list[dict[str, Any]]:
    """Wait until the record holds an entry for every ``(kind, run_id)``; return all entries."""
    deadline = time.monotonic() + timeout
    while True:
        entries = _read_record(path)
        if kinds <= {(entry["kind"], entry["run_id"]) for entry in entries}:
            return entries
        if time.monotonic() > deadline:
            raise TimeoutError(f"Callbacks {sorted(kinds)} not all recorded in {timeout:.0f} s: {entries}")
        time.sleep(1)


@pytest.fixture
def record_path(tmp_path: Path) -> Path:
    return tmp_path / "callbacks" / "record.jsonl"


@pytest.fixture
def deployment(
    tmp_path: Path, record_path: Path, request: pytest.FixtureRequest
) -> Iterator[AirflowDeployment]:
    dags_folder = tmp_path / "dags"
    dags_folder.mkdir()
    record_path.parent.mkdir()
    (dags_folder / "harness_smoke.py").write_text(DAG_SOURCE.replace("__RECORD__", repr(str(record_path))))
    with AirflowDeployment(tmp_path, dags_folder) as airflow:
        airflow.start("api-server", "scheduler", "dag-processor")
        failed_before = request.session.testsfailed
        try:
            yield airflow
        finally:
            # A test failure is not raised into the fixture, so __exit__ cannot see it.
            if request.session.testsfailed > failed_before:
                airflow.dump_logs()


@pytest.mark.airflow_components
def test_runs_and_callbacks_on_real_components(deployment: AirflowDeployment, record_path: Path) -> None:
    deployment.wait_for_dag(SUCCESS_DAG, timeout=180)
    deployment.wait_for_dag(FAILURE_DAG, timeout=180)
    success_run = deployment.trigger(SUCCESS_DAG)
    failure_run = deployment.trigger(FAILURE_DAG)

    assert deployment.wait_for_run(SUCCESS_DAG, success_run, timeout=180) == "success"
    assert deployment.wait_for_run(FAILURE_DAG, failure_run, timeout=180) == "failed"
    assert deployment.task_states(SUCCESS_DAG, success_run) == {"first": "success", "second": "success"}
    assert deployment.task_states(FAILURE_DAG, failure_run) == {
        "boom": "failed",
        "after_boom": "upstream_failed",
    }

    entries = _wait_for_entries(
        record_path,
        {
            ("dag_success", success_run),
            ("dag_failure", failure_run),
            ("task_success", success_run),
            ("task_failure", failure_run),
        },
        timeout=120,
    )
    print(json.dumps(entries, indent=1))

    dag_level = [entry for entry in entries if entry["kind"].startswith("dag_")]
    assert sorted((entry["kind"], entry["dag_id"], entry["run_id"]) for entry in dag_level) == [
        ("dag_failure", FAILURE_DAG, failure_run),
        ("dag_success", SUCCESS_DAG, success_run),
    ]
    # DAG-level callbacks run in the DAG processor in Airflow 3, not in a task process.
    assert all("dag-processor" in entry["argv"] for entry in dag_level)
    assert all({"dag", "run_id", "reason"} <= set(entry["context_keys"]) for entry in dag_level)

    task_level = sorted(
        (entry["kind"], entry["run_id"], entry["task_id"])
        for entry in entries
        if entry["kind"].startswith("task_")
    )
    # after_boom never ran (upstream_failed), so it gets no task-level callback.
    assert task_level == [
        ("task_failure", failure_run, "boom"),
        ("task_success", success_run, "first"),
        ("task_success", success_run, "second"),
    ]
