"""Listener: the cost the provider's run-end listener adds to a scheduler loop, per finished run.

A real SQLite metadata database (``airflow db migrate`` in the part's private home), two
DAGs of ``TASKS`` (20 and 200) tasks with flow webhooks attached (a run-level webhook and
an output webhook selecting five tasks), parsed and written to the database as the DAG
processor does (``sync_bag_to_db``), and one run of each created with
``SerializedDAG.create_dagrun`` and all its task instances set to ``success``. Their
definitions are recorded in the ledger as the task runner's listener does when a task
starts, so the writer thread finds them.

Side by side, interleaved, in one process, for each DAG:

- ``plain``: what the scheduler does for a run whose tasks are all done: inside
  ``with create_session() as session:``, ``dag_run.update_state(session=session,
  execute_callbacks=False)`` on the run (``RUNNING``, loaded on that session, its
  serialized DAG set as the scheduler does), then the commit at the block's end; no
  listener is registered;
- ``noop``: the same with a listener whose ``on_dag_run_success`` does nothing (what
  Airflow's listener dispatch costs by itself);
- ``ours``: the same with the provider's listeners registered (as the plugin registers
  them: ``get_listener_manager()`` must hold them): ``on_dag_run_success`` reads the run's
  task instances on the caller's session and hands a fact to the writer thread at
  commit.

Timed: ``update_state`` and the commit. Before each call, untimed, the run is set back
to ``RUNNING`` with ``clear_number`` raised by one (so every end is a new end with new
delivery ids, as a cleared run's), the thread's scoped session is discarded
(``Session.remove()``, see below), and afterwards the writer is waited for
(``writer.flush()``): its time per fact, off the scheduler's thread, is reported
separately.

Alongside, the listener function alone: ``on_dag_run_failed(dag_run=..., msg=...)`` on a
run loaded in a session with its task instances (as ``update_state`` leaves it: they are
in the session's identity map), then the session's commit (which hands the fact to the writer),
each timed, against a no-op function, against ``dag_run.get_task_instances(session=...)``
alone (the one query the listener makes) and, for reference, against what a leaner read
would cost: the three columns a fact needs (``task_id, map_index, state``) with the
session's unflushed task instances of the run laid over them.

Last, the session the listener registers its commit hooks on: a scoped session is the
same object for every ``create_session()`` of a thread (the scheduler's loop), and
``event.listen(..., once=True)`` runs a hook once but never removes it. ``LEAK_RUNS``
run ends on one session, without ``Session.remove()``: the hooks left on it, the memory
they keep (tracemalloc, less that of the same loop with the no-op listener), and what one
empty commit costs on that session against a fresh one.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from _common import (
    Deadline,
    define_webhook_connection,
    init_airflow_home,
    paired_ratios,
    repeat_side_by_side,
    summary,
    write_result,
)

HOME = init_airflow_home()

from airflow.listeners import hookimpl  # noqa: E402

from airflow_webhook_provider.capture import listeners as capture_listeners  # noqa: E402

#: Tasks of the two DAGs.
TASKS = (20, 200)
#: Repetitions (rounds) of each variant; each repetition is the mean of CALLS[tasks] calls.
REPS = 11
CALLS = {20: 8, 200: 3}
#: Calls of the listener alone per repetition.
ALONE_CALLS = {20: 20, 200: 8}
#: Run ends on one scoped session, for the hooks it keeps.
LEAK_RUNS = 300
#: Empty commits timed on a session (per repetition of that measurement).
EMPTY_COMMITS = 200
CONN_ID = "bench_listener"
OUTPUTS = 5

DAG_FILE = """
import datetime
from airflow.sdk import DAG
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow_webhook_provider import FlowWebhook, FlowWebhooks

DAGS = {}
for count in TASKS:
    with DAG(f"bench_listener_{count}", schedule=None, start_date=datetime.datetime(2024, 1, 1),
             catchup=False) as dag:
        tasks = [EmptyOperator(task_id=f"t{n:03d}") for n in range(count)]
        for upstream, downstream in zip(tasks, tasks[1:]):
            upstream >> downstream
    FlowWebhooks(
        FlowWebhook(name="run", conn_id=CONN_ID, on="any"),
        FlowWebhook(name="outputs", conn_id=CONN_ID, on="any",
                    outputs=[task.task_id for task in tasks[-OUTPUTS:]]),
    ).attach(dag)
    DAGS[count] = dag
"""


class NoopListener:
    """A listener that does nothing: Airflow's dispatch cost alone."""

    @hookimpl
    def on_dag_run_success(self, dag_run: Any, msg: str) -> None:
        return None

    @hookimpl
    def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
        return None


def migrate() -> None:
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        check=True,
        capture_output=True,
        env=os.environ.copy(),
        cwd=HOME,
        timeout=150,
    )


def load_dags() -> dict[int, Any]:
    """Write the DAG file, write its DAGs to the metadata database, return the parsed DAGs."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.utils.session import create_session

    path = HOME / "dags" / "bench_listener.py"
    path.write_text(
        DAG_FILE.replace("TASKS", repr(TASKS))
        .replace("CONN_ID", repr(CONN_ID))
        .replace("OUTPUTS", str(OUTPUTS))
    )
    manager = DagBundlesManager()
    with create_session() as session:
        manager.sync_bundles_to_db(session=session)
    for bundle in manager.get_all_dag_bundles():
        if not bundle.is_initialized:
            bundle.initialize()
        bag = BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name)
        assert not bag.import_errors, bag.import_errors
        sync_bag_to_db(bag, bundle.name, bundle.version)
    spec = importlib.util.spec_from_file_location("bench_listener_dags", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.DAGS)


def create_finished_run(dag_id: str) -> tuple[int, Any]:
    """Create a run of the serialized DAG with every task instance ``success``; return its id and the DAG."""
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState
    from airflow.utils.types import DagRunTriggeredByType, DagRunType
    from sqlalchemy import update

    now = datetime.now(timezone.utc)
    with create_session() as session:
        scheduler_dag = DBDagBag().get_latest_version_of_dag(dag_id, session=session)
        assert scheduler_dag is not None, dag_id
        dag_run = scheduler_dag.create_dagrun(
            run_id=DagRun.generate_run_id(run_type=DagRunType.MANUAL, logical_date=None, run_after=now),
            logical_date=None,
            run_after=now,
            run_type=DagRunType.MANUAL,
            triggered_by=DagRunTriggeredByType.TEST,
            state=DagRunState.RUNNING,
            start_date=now,
            session=session,
        )
        session.flush()
        run_id, run_pk = dag_run.run_id, dag_run.id
        session.execute(
            update(TaskInstance)
            .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
            .values(state=TaskInstanceState.SUCCESS, start_date=now, end_date=now, try_number=1)
            .execution_options(synchronize_session=False)
        )
    return run_pk, scheduler_dag


def main() -> None:
    deadline = Deadline(80, "listener")
    migrate()
    # Nothing is sent (no dispatcher runs, the writer only records); the port is closed.
    define_webhook_connection(CONN_ID, "http://127.0.0.1:9/hook")

    from airflow import settings
    from airflow.listeners.listener import get_listener_manager
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState
    from sqlalchemy import select, text, update

    from airflow_webhook_provider.capture.attach import find_registry
    from airflow_webhook_provider.capture.definitions import record_definitions
    from airflow_webhook_provider.ledger import open_ledger

    manager = get_listener_manager()
    assert capture_listeners in manager.pm.get_plugins(), (
        "the provider's plugin did not register its listeners",
        manager.pm.get_plugins(),
    )
    dags = load_dags()
    ledger = open_ledger()
    runs: dict[int, tuple[int, Any]] = {}
    for count, dag in dags.items():
        registry = find_registry(dag)
        assert registry is not None
        record_definitions(ledger, dag.dag_id, registry.webhooks, recorded_by="bench-task-runner")
        runs[count] = create_finished_run(dag.dag_id)

    noop = NoopListener()

    def use_listeners(*wanted: object) -> None:
        for plugin in (capture_listeners, noop):
            if plugin in wanted:
                manager.add_listener(plugin)
            elif manager.pm.is_registered(plugin):
                manager.pm.unregister(plugin)

    def reset(count: int) -> None:
        run_pk, _ = runs[count]
        with create_session() as session:
            session.execute(
                update(DagRun)
                .where(DagRun.id == run_pk)
                .values(state=DagRunState.RUNNING, end_date=None, clear_number=DagRun.clear_number + 1)
                .execution_options(synchronize_session=False)
            )
        settings.Session.remove()  # type: ignore[union-attr]

    def load(session: Any, count: int) -> Any:
        run_pk, scheduler_dag = runs[count]
        dag_run = session.scalar(select(DagRun).where(DagRun.id == run_pk))
        dag_run.dag = scheduler_dag  # the scheduler sets it from its DAG bag
        return dag_run

    writer_seconds: dict[int, list[float]] = {count: [] for count in TASKS}

    def flush(count: int) -> None:
        start = time.perf_counter()
        assert capture_listeners.writer.flush(30), "the writer did not record its facts"
        writer_seconds[count].append(time.perf_counter() - start)

    def update_state(count: int, *plugins: object) -> float:
        use_listeners(*plugins)
        total = 0.0
        for _ in range(CALLS[count]):
            reset(count)
            with create_session() as session:
                dag_run = load(session, count)
                start = time.perf_counter()
                dag_run.update_state(session=session, execute_callbacks=False)
            total += time.perf_counter() - start
            assert dag_run.state == DagRunState.SUCCESS, dag_run.state
            if capture_listeners in plugins:
                flush(count)
        use_listeners(capture_listeners)
        return total / CALLS[count]

    alone: dict[str, list[float]] = {}

    def call_alone(count: int, name: str, call: Callable[[Any, Any], object], records: bool) -> float:
        calls, commits = 0.0, 0.0
        for _ in range(ALONE_CALLS[count]):
            reset(count)
            with create_session() as session:
                dag_run = load(session, count)
                dag_run.get_task_instances(session=session)  # untimed: as update_state leaves the session
                start = time.perf_counter()
                call(dag_run, session)
                called = time.perf_counter()
            committed = time.perf_counter()
            calls += called - start
            commits += committed - called
            if records:
                flush(count)
        alone.setdefault(f"{name}_commit_{count}", []).append(commits / ALONE_CALLS[count])
        return calls / ALONE_CALLS[count]

    def listener_call(dag_run: Any, session: Any) -> None:
        capture_listeners.on_dag_run_failed(dag_run=dag_run, msg="task_failure")

    def noop_call(dag_run: Any, session: Any) -> None:
        noop.on_dag_run_failed(dag_run=dag_run, msg="task_failure")

    def get_task_instances(dag_run: Any, session: Any) -> None:
        assert len(dag_run.get_task_instances(session=session)) in TASKS

    def columns(dag_run: Any, session: Any) -> None:
        # For reference, not the provider's code: the three columns the fact needs, then the
        # session's unflushed task instances of the run over them (what the ORM query gives).
        rows = session.execute(
            select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).where(
                TaskInstance.dag_id == dag_run.dag_id, TaskInstance.run_id == dag_run.run_id
            )
        )
        states = {(task_id, map_index): state for task_id, map_index, state in rows}
        for pending in (*session.dirty, *session.new):
            if (
                isinstance(pending, TaskInstance)
                and pending.dag_id == dag_run.dag_id
                and pending.run_id == dag_run.run_id
            ):
                states[(pending.task_id, pending.map_index)] = pending.state
        assert len(states) in TASKS

    variants: dict[str, Callable[[], float]] = {}
    for count in TASKS:
        variants |= {
            f"plain_{count}": lambda c=count: update_state(c),
            f"noop_{count}": lambda c=count: update_state(c, noop),
            f"ours_{count}": lambda c=count: update_state(c, capture_listeners),
        }
    alone_variants: dict[str, Callable[[], float]] = {}
    for count in TASKS:
        alone_variants |= {
            f"listener_{count}": lambda c=count: call_alone(c, "listener", listener_call, True),
            f"noop_{count}": lambda c=count: call_alone(c, "noop", noop_call, False),
            f"get_task_instances_{count}": lambda c=count: call_alone(
                c, "get_task_instances", get_task_instances, False
            ),
            f"columns_{count}": lambda c=count: call_alone(c, "columns", columns, False),
        }

    for variant in (*variants.values(), *alone_variants.values()):  # warm-up, untimed
        variant()
    for values in (*writer_seconds.values(), *alone.values()):
        values.clear()
    recorded_before = sum(ledger.counts().values())
    seconds = repeat_side_by_side(variants, dict.fromkeys(variants, REPS), deadline)
    alone_seconds = repeat_side_by_side(alone_variants, dict.fromkeys(alone_variants, REPS), deadline)
    recorded = sum(ledger.counts().values()) - recorded_before
    # Each end records one run message and OUTPUTS reconciled ones, all new (clear_number).
    expected = (1 + OUTPUTS) * REPS * sum(CALLS[c] + ALONE_CALLS[c] for c in TASKS)
    assert recorded == expected, (recorded, expected)
    deadline.check()

    # -- the hooks a long-lived scoped session keeps --------------------------------------
    session_registry: Any = settings.Session

    def empty_commit_seconds(session: Any) -> float:
        values = []
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(EMPTY_COMMITS):
                session.execute(text("SELECT 1"))
                session.commit()
            values.append((time.perf_counter() - start) / EMPTY_COMMITS)
        return statistics.median(values)

    def run_ends_on_one_session(listener: Callable[..., None]) -> tuple[int, int]:
        """LEAK_RUNS run ends on the thread's scoped session; return (hooks left on it, bytes retained)."""
        run_pk, _ = runs[TASKS[0]]
        session_registry.remove()
        gc.collect()
        tracemalloc.start()
        traced_before = tracemalloc.get_traced_memory()[0]
        for _ in range(LEAK_RUNS):
            deadline.check()
            with create_session() as session:  # the same scoped session every time, as in the scheduler
                session.execute(
                    update(DagRun)
                    .where(DagRun.id == run_pk)
                    .values(clear_number=DagRun.clear_number + 1)
                    .execution_options(synchronize_session=False)
                )
            with create_session() as session:
                listener(dag_run=load(session, TASKS[0]), msg="success")
            assert capture_listeners.writer.flush(30)
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - traced_before
        tracemalloc.stop()
        session = session_registry()
        return len(session.dispatch.after_commit) + len(session.dispatch.after_rollback), retained

    use_listeners(capture_listeners)
    fresh_commit = [empty_commit_seconds(session_registry())]
    control_hooks, control_retained = run_ends_on_one_session(noop.on_dag_run_success)
    hooks, retained = run_ends_on_one_session(capture_listeners.on_dag_run_success)
    hooked_commit = empty_commit_seconds(session_registry())
    session_registry.remove()
    fresh_commit.append(empty_commit_seconds(session_registry()))
    session_registry.remove()

    added = {
        count: summary(
            [a - b for a, b in zip(seconds[f"ours_{count}"], seconds[f"plain_{count}"], strict=False)]
        )
        for count in TASKS
    }
    write_result(
        "listener",
        {
            "tasks": list(TASKS),
            "outputs_selected": OUTPUTS,
            "calls_per_rep": {str(c): CALLS[c] for c in TASKS},
            "seconds": {name: summary(values) for name, values in seconds.items()},
            "added_seconds": {f"ours_{c}": added[c] for c in TASKS}
            | {
                f"noop_{c}": summary(
                    [a - b for a, b in zip(seconds[f"noop_{c}"], seconds[f"plain_{c}"], strict=False)]
                )
                for c in TASKS
            },
            "ratios": {
                f"{name}_{c}_vs_plain": paired_ratios(seconds[f"{name}_{c}"], seconds[f"plain_{c}"])
                for c in TASKS
                for name in ("ours", "noop")
            },
            "alone_seconds": {name: summary(values) for name, values in alone_seconds.items()},
            "alone_ratios": {
                f"columns_vs_get_task_instances_{c}": paired_ratios(
                    alone_seconds[f"columns_{c}"], alone_seconds[f"get_task_instances_{c}"]
                )
                for c in TASKS
            },
            "alone_commit_seconds": {name: summary(values) for name, values in alone.items()},
            "writer_seconds_per_fact": {str(c): summary(values) for c, values in writer_seconds.items()},
            "messages_recorded": recorded,
            "session_hooks": {
                "run_ends": LEAK_RUNS,
                "tasks": TASKS[0],
                "hooks_left": hooks,
                "hooks_left_noop": control_hooks,
                "retained_bytes": retained,
                "retained_bytes_noop": control_retained,
                "retained_bytes_per_run_end": (retained - control_retained) / LEAK_RUNS,
                "empty_commit_fresh_seconds": statistics.median(fresh_commit),
                "empty_commit_with_hooks_seconds": hooked_commit,
            },
        },
    )


if __name__ == "__main__":
    main()
