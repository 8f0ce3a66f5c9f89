"""Airflow listeners: the capture path that sees every end, however it came about.

Registered by the provider's plugin (``FlowWebhooksPlugin.listeners``), so they run in
every Airflow component:

- in the **scheduler**, ``on_dag_run_success``/``on_dag_run_failed`` when it ends a run
  (its tasks are done, ``dagrun_timeout``, a deadlock), and ``on_task_instance_failed``
  when it fails a task whose process died;
- in the **API server**, the same run hooks when a run is marked success or failed by
  hand, and ``on_task_instance_success``/``on_task_instance_failed`` for task instances
  set by hand and (Airflow 3.3 and later) for those a run mark ends; on 3.2 the run's end
  reconciles those;
- in the **task runner**, ``on_task_instance_running`` records the DAG's code-defined
  webhooks in the ledger, for the two components above, which never import DAG files.

A listener shares the process of a core component, so it only collects facts from the
objects it is handed (one read of the run's task instances, on the caller's own session)
and, once the caller's transaction commits, hands them to a writer thread; it returns at
once and never raises. The writer matches the facts against the DAG's definitions and
records the messages in the ledger, where the dispatcher finds them. Nothing here opens
a connection to a receiver.

Delivery ids are deterministic, so an end a callback also saw adds nothing. A run end is
recorded with its task states, so a DAG-level callback that runs late (the DAG processor
was down) reconciles the outputs from the states the run ended with, not from a rerun's.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from airflow.listeners import hookimpl

from airflow_webhook_provider.capture.context import state_name
from airflow_webhook_provider.core.selection import TaskKey

__all__ = [
    "OutputEnd",
    "RunEnd",
    "on_dag_run_failed",
    "on_dag_run_success",
    "on_task_instance_failed",
    "on_task_instance_running",
    "on_task_instance_success",
    "writer",
]

log = logging.getLogger(__name__)

#: Facts waiting for the writer; past this, new ones are dropped (and logged), never waited for.
QUEUE_SIZE = 10_000
#: How long a process that exits waits for the writer to record what it has.
FLUSH_SECONDS = 5.0
#: How long an end waits for its DAG's definitions: a run marked by hand as its first task
#: starts may end before that task has recorded them.
DEFINITIONS_WAIT_SECONDS = 60.0
DEFINITIONS_RETRY_SECONDS = 1.0


@dataclass(frozen=True)
class RunEnd:
    """A run ended: what the listener saw, at that moment.

    :param task_states: every task instance's state at the end.
    """

    dag_id: str
    run_id: str
    clear_number: int
    state: str
    logical_date: str
    ended_at: float
    task_states: dict[TaskKey, str]


@dataclass(frozen=True)
class OutputEnd:
    """A task instance ended (set by hand, ended by a run mark, or failed by the scheduler)."""

    dag_id: str
    run_id: str
    clear_number: int
    task_id: str
    map_index: int
    state: str
    logical_date: str
    ended_at: float


Fact = RunEnd | OutputEnd


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else ""


def _timestamp(value: Any) -> float:
    return value.timestamp() if isinstance(value, datetime) else time.time()


class CaptureWriter:
    """One thread per process that turns facts into recorded messages.

    :param queue_size: the most facts waiting; more are dropped with an error logged.
    """

    def __init__(self, queue_size: int = QUEUE_SIZE) -> None:
        self._queue: queue.Queue[Fact] = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition()
        self._busy = 0
        self._waiting: list[tuple[float, Fact]] = []
        self._last_retry = 0.0
        self._missing: set[str] = set()
        self._state: Any = None

    def put(self, fact: Fact) -> None:
        """Queue a fact for the writer; never blocks, never raises."""
        try:
            with self._idle:
                self._queue.put_nowait(fact)
                self._busy += 1
            self._ensure_thread()
        except queue.Full:
            log.error(
                "Flow webhooks: the capture queue is full; dropped %s (its DAG-level callback still runs)",
                fact,
            )

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="flow-webhook-capture", daemon=True)
                self._thread.start()

    def flush(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Wait until every queued fact is recorded (or ``timeout`` passes); return whether it was."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def _run(self) -> None:
        while True:
            try:
                fact: Fact | None = self._queue.get(
                    timeout=DEFINITIONS_RETRY_SECONDS if self._waiting else None
                )
            except queue.Empty:
                fact = None
            if fact is not None:
                self._attempt(fact, deadline=time.monotonic() + DEFINITIONS_WAIT_SECONDS)
            for deadline, waiting in self._due_waiting():
                self._attempt(waiting, deadline=deadline)

    def _due_waiting(self) -> list[tuple[float, Fact]]:
        now = time.monotonic()
        if not self._waiting or now - self._last_retry < DEFINITIONS_RETRY_SECONDS:
            return []
        self._last_retry = now
        due, self._waiting = self._waiting, []
        return due

    def _attempt(self, fact: Fact, *, deadline: float) -> None:
        """Record a fact; one whose DAG's file definitions are not recorded yet waits (a task may be recording them)."""
        try:
            last_chance = time.monotonic() >= deadline
            if self.record(fact, without_file_definitions=last_chance):
                self._done()
            elif not last_chance:
                self._waiting.append((deadline, fact))
            else:
                self._done()
        except Exception as exc:
            log.error(
                "Flow webhooks: recording %s in the ledger failed (%s: %s); its DAG-level callback still runs",
                fact,
                type(exc).__name__,
                exc,
            )
            self._done()

    def _done(self) -> None:
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()

    def _context(self) -> Any:
        if self._state is None:
            from airflow_webhook_provider import config
            from airflow_webhook_provider.capture.definitions import DefinitionCache
            from airflow_webhook_provider.ledger import open_ledger

            settings = config.load()
            ledger = open_ledger(settings.ledger_conn_id)
            self._state = (settings, ledger, DefinitionCache(ledger))
        return self._state

    def record(self, fact: Fact, *, without_file_definitions: bool = False) -> bool:
        """Record the messages a fact calls for; return False when the DAG file's definitions are not recorded.

        The writer thread calls it.

        :param without_file_definitions: record with the UI-defined webhooks alone when the
            file's are not recorded (the fact waited long enough for them), and say so.
        """
        from airflow_webhook_provider.capture.context import job_url
        from airflow_webhook_provider.capture.definitions import merge, ui_webhooks
        from airflow_webhook_provider.core.definitions import JobEvent
        from airflow_webhook_provider.core.selection import for_output, for_run, reconcile
        from airflow_webhook_provider.core.states import CaptureSource
        from airflow_webhook_provider.delivery.pipeline import message_for

        settings, ledger, definitions = self._context()
        code = definitions.get(fact.dag_id, fresh=fact.dag_id in self._missing)
        if code is None:
            if not without_file_definitions:
                self._missing.add(fact.dag_id)
                return False
            log.warning(
                "Flow webhooks: %s of DAG %s ended, but the webhooks of its DAG file are not recorded "
                "(none of its tasks has started since the provider was installed); only its UI-defined "
                "webhooks and its DAG-level callback can send messages",
                fact.run_id,
                fact.dag_id,
            )
            code = ()
        self._missing.discard(fact.dag_id)
        webhooks = merge(code, ui_webhooks(ledger, fact.dag_id), dag_id=fact.dag_id)
        if not webhooks:
            return True
        common = {
            "flow_id": fact.dag_id,
            "job_id": fact.run_id,
            "logical_date": fact.logical_date,
            "job_url": job_url(settings.base_url, fact.dag_id, fact.run_id),
        }
        messages = []
        if isinstance(fact, OutputEnd):
            event = JobEvent(job_status=fact.state, output_name=fact.task_id, **common)
            messages = [
                message_for(
                    webhook,
                    event,
                    clear_number=fact.clear_number,
                    capture=CaptureSource.LISTENER,
                    event_at=fact.ended_at,
                    map_index=fact.map_index,
                )
                for webhook in for_output(webhooks, fact.task_id, fact.state)
            ]
            ledger.record(messages)
            return True
        messages = [
            message_for(
                webhook,
                JobEvent(job_status=fact.state, **common),
                clear_number=fact.clear_number,
                capture=CaptureSource.LISTENER,
                event_at=fact.ended_at,
            )
            for webhook in for_run(webhooks, fact.state)
        ]
        for webhook, (task_id, map_index), state in reconcile(webhooks, fact.task_states):
            messages.append(
                message_for(
                    webhook,
                    JobEvent(job_status=state, output_name=task_id, **common),
                    clear_number=fact.clear_number,
                    capture=CaptureSource.RECONCILED,
                    event_at=fact.ended_at,
                    map_index=map_index,
                )
            )
        ledger.record(messages)
        ledger.record_run_end(
            dag_id=fact.dag_id,
            run_id=fact.run_id,
            clear_number=fact.clear_number,
            state=fact.state,
            task_states=fact.task_states,
            ended_at=fact.ended_at,
        )
        return True


writer = CaptureWriter()


def _reset_after_fork() -> None:
    global writer
    writer = CaptureWriter()


os.register_at_fork(after_in_child=_reset_after_fork)
atexit.register(lambda: writer.flush())


_PENDING = "flow_webhook_facts"
_hooked = False
_hook_lock = threading.Lock()


def _hook_sessions() -> None:
    """Hand pending facts to the writer when their session commits, and drop them on rollback.

    One pair of hooks on SQLAlchemy's ``Session`` class serves every session; the facts wait
    in ``session.info``, so nothing is left behind on a long-lived session (the scheduler's).
    """
    global _hooked
    with _hook_lock:
        if _hooked:
            return
        from sqlalchemy import event
        from sqlalchemy.orm import Session

        event.listen(Session, "after_commit", _committed)
        event.listen(Session, "after_rollback", _rolled_back)
        _hooked = True


def _committed(session: Any) -> None:
    for fact in session.info.pop(_PENDING, ()):
        writer.put(fact)


def _rolled_back(session: Any) -> None:
    session.info.pop(_PENDING, None)


def _when_committed(session: Any, fact: Fact) -> None:
    """Record the fact once the state change it reports is committed (at once if it already is)."""
    if session is not None and session.in_transaction():
        _hook_sessions()
        session.info.setdefault(_PENDING, []).append(fact)
    else:
        writer.put(fact)


def _guarded(what: str, action: Callable[[], None]) -> None:
    # A listener runs inside the scheduler loop or an API request: it must never raise.
    try:
        action()
    except Exception as exc:
        log.error("Flow webhooks: the %s listener failed (%s: %s)", what, type(exc).__name__, exc)


def _run_end(dag_run: Any, state: str) -> None:
    from sqlalchemy.orm import object_session

    session = object_session(dag_run)
    if session is not None:
        task_states = _task_states(session, dag_run)
    else:
        # A run object no session holds (``dag.test()``): its task states are committed already.
        from airflow.utils.session import create_session

        with create_session() as own:
            task_states = _task_states(own, dag_run)
    fact = RunEnd(
        dag_id=str(dag_run.dag_id),
        run_id=str(dag_run.run_id),
        clear_number=int(dag_run.clear_number or 0),
        state=state,
        logical_date=_iso(dag_run.logical_date),
        ended_at=_timestamp(dag_run.end_date),
        task_states=task_states,
    )
    _when_committed(session, fact)


def _task_states(session: Any, dag_run: Any) -> dict[TaskKey, str]:
    """Read the run's task states as this transaction sees them: stored, then the session's own changes.

    Three columns, not the task instance objects: the scheduler has just loaded those, and
    loading them again costs it several times more.
    """
    from airflow.models.taskinstance import TaskInstance
    from sqlalchemy import select

    with session.no_autoflush:
        rows = session.execute(
            select(TaskInstance.task_id, TaskInstance.map_index, TaskInstance.state).where(
                (TaskInstance.dag_id == dag_run.dag_id) & (TaskInstance.run_id == dag_run.run_id)
            )
        )
        states: dict[TaskKey, Any] = {(task_id, map_index): state for task_id, map_index, state in rows}
    for instance in (*session.new, *session.dirty):
        if (
            isinstance(instance, TaskInstance)
            and instance.dag_id == dag_run.dag_id
            and instance.run_id == dag_run.run_id
        ):
            states[(instance.task_id, instance.map_index)] = instance.state
    return {key: state_name(state) for key, state in states.items() if state}


def _output_end(task_instance: Any, state: str) -> None:
    if type(task_instance).__module__ != "airflow.models.taskinstance":
        return  # the task runner's own end: its task-level callback captures it, sooner
    from sqlalchemy.orm import object_session

    dag_run = task_instance.dag_run
    fact = OutputEnd(
        dag_id=str(task_instance.dag_id),
        run_id=str(task_instance.run_id),
        clear_number=int(getattr(dag_run, "clear_number", 0) or 0),
        task_id=str(task_instance.task_id),
        map_index=int(task_instance.map_index if task_instance.map_index is not None else -1),
        state=state,
        logical_date=_iso(getattr(dag_run, "logical_date", None)),
        ended_at=_timestamp(task_instance.end_date),
    )
    _when_committed(object_session(task_instance), fact)


def _record_definitions(task_instance: Any) -> None:
    from airflow_webhook_provider.capture.attach import find_registry
    from airflow_webhook_provider.capture.definitions import record_definitions
    from airflow_webhook_provider.delivery.pipeline import owner_name
    from airflow_webhook_provider.ledger import open_ledger

    dag = getattr(getattr(task_instance, "task", None), "dag", None)
    if dag is None:
        return
    registry = find_registry(dag)
    record_definitions(
        open_ledger(),
        dag.dag_id,
        registry.webhooks if registry else (),
        recorded_by=owner_name("task-runner"),
    )


@hookimpl
def on_dag_run_success(dag_run: Any, msg: str) -> None:
    """Capture a run that succeeded (scheduler, or marked success in the API server)."""
    _guarded("run success", lambda: _run_end(dag_run, "success"))


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    """Capture a run that failed (scheduler, timed out, or marked failed in the API server)."""
    _guarded("run failure", lambda: _run_end(dag_run, "failed"))


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    """Capture a task instance set to success outside its own process (API server)."""
    _guarded("task success", lambda: _output_end(task_instance, "success"))


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any) -> None:
    """Capture a task instance failed outside its own process (API server, scheduler)."""
    _guarded("task failure", lambda: _output_end(task_instance, "failed"))


@hookimpl
def on_task_instance_running(previous_state: Any, task_instance: Any) -> None:
    """Record the DAG's code-defined webhooks as a task starts (task runner), for the other listeners."""
    _guarded("task start", lambda: _record_definitions(task_instance))
