"""Read what an Airflow callback context says about the end of a run or a task.

The context differs by where the callback runs: in the task runner ``dag_run`` is the
Task SDK's run model, in the DAG processor it is the run as the scheduler saw it when the
run ended, and under ``dag.test()`` it is the metadata database's ORM object. These
helpers work on all three.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import quote

from airflow_webhook_provider.core.selection import TaskKey

__all__ = ["clear_number_of", "end_time_of", "job_url", "logical_date_of", "state_name", "task_states"]


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value) if value else ""


def job_url(base_url: str, dag_id: str, run_id: str) -> str:
    """Return the link to a run in the Airflow UI under ``[api] base_url`` (empty when it is unset)."""
    if not base_url:
        return ""
    return f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def logical_date_of(context: Mapping[str, Any]) -> str:
    """Return the run's logical date from a callback context, in ISO 8601 (empty when none)."""
    if context.get("logical_date"):
        return _iso(context["logical_date"])
    return _iso(getattr(context.get("dag_run"), "logical_date", None))


def clear_number_of(context: Mapping[str, Any]) -> int:
    """Return how often the run had been cleared when it ended (0 when the context does not say)."""
    value = getattr(context.get("dag_run"), "clear_number", 0)
    return int(value) if isinstance(value, int) else 0


def end_time_of(dag_run: Any) -> float:
    """Return when a run ended, as UNIX seconds (now, when it does not say)."""
    end = getattr(dag_run, "end_date", None)
    return end.timestamp() if isinstance(end, datetime) else time.time()


def state_name(state: Any) -> str:
    """Return an Airflow state (enum or string) as a lowercase string."""
    return str(getattr(state, "value", state)).lower()


def task_states(dag_id: str, run_id: str, task_ids: Sequence[str]) -> dict[TaskKey, str]:
    """Read the final states of some tasks of a run, from wherever the callback runs.

    In the DAG processor the Task SDK asks the supervisor; under ``dag.test()`` and
    ``airflow dags test`` there is no supervisor, and the run lives in this process's
    metadata database session instead.

    :return: ``(task_id, map_index)`` to lowercase state; task instances without a state are left out.
    """
    from airflow.sdk.execution_time import task_runner

    if hasattr(task_runner, "SUPERVISOR_COMMS"):
        by_run = task_runner.RuntimeTaskInstance.get_task_states(
            dag_id=dag_id, run_ids=[run_id], task_ids=list(task_ids)
        )
        found = {}
        for key, state in by_run.get(run_id, {}).items():
            task_key = _task_key(key, task_ids)
            if state and task_key is not None:
                found[task_key] = state_name(state)
        return found
    return _task_states_from_metadata_db(dag_id, run_id, task_ids)


def _task_key(key: str, task_ids: Sequence[str]) -> TaskKey | None:
    """Read the Task SDK's key of a task instance: ``task_id``, or ``task_id_<map index>`` when mapped."""
    if key in task_ids:
        return key, -1
    for task_id in task_ids:
        suffix = key[len(task_id) + 1 :]
        if key.startswith(f"{task_id}_") and suffix.isdigit():
            return task_id, int(suffix)
    return None


def _task_states_from_metadata_db(dag_id: str, run_id: str, task_ids: Sequence[str]) -> dict[TaskKey, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).where(
                TaskInstance.dag_id == dag_id,
                TaskInstance.run_id == run_id,
                TaskInstance.task_id.in_(list(task_ids)),
            )
        ).all()
    return {(task_id, map_index): state_name(state) for task_id, map_index, state in rows if state}
