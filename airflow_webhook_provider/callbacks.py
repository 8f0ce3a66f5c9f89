"""Turn the end of a DAG run or an output task into flow webhook messages.

:meth:`FlowWebhooks.attach <airflow_webhook_provider.models.FlowWebhooks.attach>` installs
two kinds of callback, both backed by one :class:`WebhookRegistry` per DAG:

- :class:`RunEndCallback` on the DAG (runs in the DAG processor): one message per
  webhook without ``outputs`` whose ``on`` matches the run's state, and one per selected
  output that never ran (``upstream_failed``) — no task-level callback exists for those.
- :class:`OutputEndCallback` on each selected output task (runs in the task runner): one
  message per webhook that selects the task and whose ``on`` matches its final state.

Every callback sends its messages concurrently and never raises: a failing receiver is
logged, and never changes the state of the user's task or run.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_webhook_provider.exceptions import InvalidWebhookDefinition
from airflow_webhook_provider.models import (
    Event,
    FlowWebhook,
    JobEvent,
    check_limit,
    event_for_state,
)

if TYPE_CHECKING:
    from airflow.sdk import DAG
    from airflow.sdk.definitions.context import Context

    from airflow_webhook_provider.delivery import DeliveryResult, Endpoint, OutgoingMessage, RetryPolicy
    from airflow_webhook_provider.ledger import Ledger, NewDelivery

__all__ = [
    "OutputEndCallback",
    "RunEndCallback",
    "WebhookRegistry",
    "attach_webhooks",
    "dispatch",
    "find_registry",
]

log = logging.getLogger(__name__)

#: How much longer than its retry budget an inline sender holds its pending rows.
LEASE_MARGIN_SECONDS = 10.0
_TASK_CALLBACKS: tuple[tuple[Event, str], ...] = (
    ("success", "on_success_callback"),
    ("failure", "on_failure_callback"),
)


class WebhookRegistry:
    """The webhooks attached to one DAG, shared by all of its callbacks.

    :param dag_id: the DAG the webhooks belong to.
    """

    def __init__(self, dag_id: str) -> None:
        self.dag_id = dag_id
        self._by_name: dict[str, FlowWebhook] = {}

    @property
    def webhooks(self) -> tuple[FlowWebhook, ...]:
        """Every webhook, in the order attached."""
        return tuple(self._by_name.values())

    def plan_merge(self, webhooks: Iterable[FlowWebhook]) -> list[FlowWebhook]:
        """Return the webhooks that are new to this registry, refusing conflicting names.

        :raises InvalidWebhookDefinition: when a name is taken by a different definition.
        """
        new: list[FlowWebhook] = []
        for webhook in webhooks:
            existing = self._by_name.get(webhook.name)
            if existing is None:
                new.append(webhook)
            elif existing != webhook:
                raise InvalidWebhookDefinition(
                    f"flow webhook {webhook.name!r}: field 'name': DAG {self.dag_id!r} already has a "
                    "different webhook of that name; give each webhook a unique name",
                    webhook=webhook.name,
                    field="name",
                )
        return new

    def add(self, webhooks: Iterable[FlowWebhook]) -> None:
        """Add webhooks already checked by :meth:`plan_merge`."""
        for webhook in webhooks:
            self._by_name[webhook.name] = webhook

    def run_webhooks(self) -> list[FlowWebhook]:
        """Webhooks that fire once per finished run."""
        return [w for w in self._by_name.values() if w.outputs is None]

    def output_webhooks(self) -> list[FlowWebhook]:
        """Webhooks that fire per selected output."""
        return [w for w in self._by_name.values() if w.outputs is not None]


def _needs_run_callback(registry: WebhookRegistry, event: Event) -> bool:
    if any(w.on in (event, "any") for w in registry.run_webhooks()):
        return True
    # An output that never ran (upstream_failed) can end a successful or a failed run.
    return any(w.on in ("failure", "any") for w in registry.output_webhooks())


def _as_list(callbacks: Any) -> list[Any]:
    if callbacks is None:
        return []
    if isinstance(callbacks, list | tuple):
        return list(callbacks)
    return [callbacks]


def find_registry(dag: DAG) -> WebhookRegistry | None:
    """Return the registry of the webhooks attached to ``dag``, or None when it has none."""
    candidates: list[Any] = _as_list(dag.on_success_callback) + _as_list(dag.on_failure_callback)
    for task in dag.task_dict.values():
        candidates += _as_list(task.on_success_callback) + _as_list(task.on_failure_callback)
    for callback in candidates:
        if isinstance(callback, _WebhookCallback):
            return callback.registry
    return None


def attach_webhooks(dag: DAG, webhooks: Sequence[FlowWebhook]) -> None:
    """Install the callbacks that send ``webhooks`` for ``dag``; see the module docstring.

    Everything is checked before anything is changed, so a refused attach leaves the DAG
    as it was.

    :raises InvalidWebhookDefinition: for an unknown output task, a conflicting name, or
        more webhooks than ``[flow_webhook] max_webhooks_per_flow``.
    """
    registry = find_registry(dag) or WebhookRegistry(dag.dag_id)
    new = registry.plan_merge(webhooks)
    check_limit(len(registry.webhooks) + len(new), where=f"DAG {dag.dag_id!r}")
    for webhook in new:
        for task_id in webhook.outputs or ():
            if task_id not in dag.task_dict:
                known = ", ".join(sorted(dag.task_dict)[:20]) or "(none)"
                raise InvalidWebhookDefinition(
                    f"flow webhook {webhook.name!r}: field 'outputs': {task_id!r} is not a task of DAG "
                    f"{dag.dag_id!r}; name one of its tasks ({known}), and attach after the tasks are defined",
                    webhook=webhook.name,
                    field="outputs",
                )
    registry.add(new)

    for event in ("success", "failure"):
        if _needs_run_callback(registry, event):
            _install_dag_callback(dag, RunEndCallback(registry, event))
    for task_id in sorted({t for w in registry.output_webhooks() for t in w.outputs or ()}):
        task = dag.task_dict[task_id]
        for event, attribute in _TASK_CALLBACKS:
            existing = _as_list(getattr(task, attribute))
            if not any(isinstance(c, OutputEndCallback) and c.event == event for c in existing):
                setattr(task, attribute, [*existing, OutputEndCallback(registry, event)])


def _install_dag_callback(dag: DAG, callback: RunEndCallback) -> None:
    attribute = "on_success_callback" if callback.event == "success" else "on_failure_callback"
    existing = _as_list(getattr(dag, attribute))
    if any(isinstance(c, RunEndCallback) and c.event == callback.event for c in existing):
        return
    setattr(dag, attribute, [*existing, callback])
    # The DAG computes these flags once, when it is built; the scheduler reads them to
    # decide whether to ask the DAG processor to run callbacks at all.
    setattr(dag, f"has_{attribute}", True)


def _iso(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value) if value else ""


def job_url(dag_id: str, run_id: str) -> str:
    """Return the link to a run in the Airflow UI, from ``[api] base_url`` (empty when unset)."""
    try:
        from airflow.sdk.configuration import conf

        base_url = conf.get("api", "base_url", fallback="") or ""
    except Exception:  # the link is a convenience; never let it cost the message
        base_url = ""
    if not base_url:
        return ""
    return f"{base_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


def logical_date_of(context: Mapping[str, Any]) -> str:
    """Return the run's logical date from a callback context, in ISO 8601 (empty when none)."""
    if context.get("logical_date"):
        return _iso(context["logical_date"])
    dag_run = context.get("dag_run")
    return _iso(getattr(dag_run, "logical_date", None))


def _endpoint_for(webhook: FlowWebhook, endpoints: dict[str, Endpoint]) -> Endpoint:
    if webhook.url is not None:
        from airflow_webhook_provider.delivery import Endpoint
        from airflow_webhook_provider.hooks.flow_webhook import egress_policy_from_config

        return Endpoint(url=webhook.url, name="url", egress=egress_policy_from_config())
    conn_id = webhook.conn_id
    assert conn_id is not None  # the model guarantees one of url / conn_id
    if conn_id not in endpoints:
        from airflow_webhook_provider.hooks.flow_webhook import FlowWebhookHook

        endpoints[conn_id] = FlowWebhookHook(conn_id).endpoint
    return endpoints[conn_id]


def _default_retry_policy() -> RetryPolicy:
    from airflow_webhook_provider.hooks.flow_webhook import retry_policy_from_config

    return retry_policy_from_config()


def _new_delivery(webhook: FlowWebhook, event: JobEvent, message: OutgoingMessage) -> NewDelivery:
    from airflow_webhook_provider.ledger import NewDelivery

    return NewDelivery(
        id=message.delivery_id,
        dag_id=event.flow_id,
        run_id=event.job_id,
        output_name=event.output_name,
        webhook=webhook.name,
        event=event_for_state(event.job_status) or "test",
        job_status=event.job_status,
        conn_id=webhook.conn_id,
        target_url=webhook.url,
        url=message.url,
        query=message.query,
        method=message.method,
        headers=message.own_headers,
        body=message.body,
    )


def _open_ledger() -> Ledger | None:
    from airflow_webhook_provider.ledger import open_ledger

    try:
        return open_ledger()
    except Exception as exc:
        log.error(
            "The flow webhook ledger cannot be opened (%s: %s); sending without a record",
            type(exc).__name__,
            exc,
        )
        return None


def dispatch(
    planned: Sequence[tuple[FlowWebhook, JobEvent]],
    *,
    retry_policy: RetryPolicy | None = None,
) -> list[DeliveryResult]:
    """Record, send and record again one message per (webhook, event), all at once.

    Each message is written to the ledger as ``pending`` before its first attempt and
    its outcome after the last, so what is not delivered now is redelivered later. A
    webhook whose connection is missing or wrong is logged and skipped; nothing raises.

    :param planned: the messages to send.
    :param retry_policy: inline retry limits; from config when omitted.
    :return: the results of the messages that could be built.
    """
    # Imported here, not at module level: DAG files import this module to attach, and the
    # sending machinery (requests, urllib3) would cost every DAG parse.
    from airflow_webhook_provider.delivery import build_message, fan_out, shared_sender
    from airflow_webhook_provider.ledger.redelivery import owner_name

    if not planned:
        return []
    policy = retry_policy or _default_retry_policy()
    endpoints: dict[str, Endpoint] = {}
    jobs: list[tuple[FlowWebhook, JobEvent, Endpoint, OutgoingMessage]] = []
    for webhook, event in planned:
        try:
            endpoint = _endpoint_for(webhook, endpoints)
            jobs.append((webhook, event, endpoint, build_message(endpoint, webhook, event)))
        except Exception as exc:
            log.error(
                "Flow webhook %s for %s/%s not sent: %s", webhook.name, event.flow_id, event.job_id, exc
            )
    if not jobs:
        return []

    ledger = _open_ledger()
    if ledger is not None:
        try:
            # The lease keeps redelivery away while this process is still trying.
            ledger.record_pending(
                [_new_delivery(w, e, m) for w, e, _, m in jobs],
                owner=owner_name(),
                lease_seconds=policy.budget_seconds + LEASE_MARGIN_SECONDS,
            )
        except Exception as exc:
            log.error(
                "Recording flow webhooks as pending failed (%s: %s); sending anyway", type(exc).__name__, exc
            )
            ledger = None

    sender = shared_sender()
    results = fan_out(lambda job: sender.send(job[2], job[3], policy), jobs)

    if ledger is not None:
        from airflow_webhook_provider.ledger import schedule_from_config

        try:
            ledger.record_outcomes(
                [
                    (result.delivery_id, result, job[2].retry_on_failure and result.retryable)
                    for job, result in zip(jobs, results, strict=True)
                ],
                source="inline",
                schedule=schedule_from_config(),
            )
        except Exception as exc:
            # The rows stay pending; redelivery sends them again once the lease expires.
            log.error("Recording flow webhook outcomes failed (%s: %s)", type(exc).__name__, exc)
    return results


class _WebhookCallback:
    """A callback that sends a DAG's webhooks and never raises, whatever happens."""

    kind = ""

    def __init__(self, registry: WebhookRegistry, event: Event) -> None:
        self.registry = registry
        self.event = event
        self.__name__ = f"flow_webhooks_on_{self.kind}_{event}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dag_id={self.registry.dag_id!r}, event={self.event!r})"

    def __call__(self, context: Context) -> None:
        try:
            self.send(context)
        except Exception as exc:
            # Nothing a webhook does may fail the user's task or run.
            log.error(
                "Flow webhooks of DAG %s were not sent: %s: %s", self.registry.dag_id, type(exc).__name__, exc
            )

    def send(self, context: Context) -> None:
        """Send the messages this event calls for."""
        raise NotImplementedError


class RunEndCallback(_WebhookCallback):
    """DAG-level callback: messages for the run, and for outputs that never ran.

    :param registry: the DAG's webhooks.
    :param event: ``success`` when installed as ``on_success_callback``, else ``failure``.
    """

    kind = "run"

    def send(self, context: Context) -> None:
        """Send the run's messages and those of outputs that never ran."""
        run_id = str(context["run_id"])
        dag_id = self.registry.dag_id
        run_state = "success" if self.event == "success" else "failed"
        common = {
            "flow_id": dag_id,
            "job_id": run_id,
            "logical_date": logical_date_of(context),
            "job_url": job_url(dag_id, run_id),
        }
        planned: list[tuple[FlowWebhook, JobEvent]] = [
            (webhook, JobEvent(job_status=run_state, **common))
            for webhook in self.registry.run_webhooks()
            if webhook.fires_on(run_state)
        ]
        waiting = [w for w in self.registry.output_webhooks() if w.fires_on("upstream_failed")]
        if waiting:
            task_ids = sorted({t for w in waiting for t in w.outputs or ()})
            states = task_states(context, dag_id, run_id, task_ids)
            for webhook in waiting:
                for task_id in webhook.outputs or ():
                    if states.get(task_id) == "upstream_failed":
                        planned.append(
                            (webhook, JobEvent(job_status="upstream_failed", output_name=task_id, **common))
                        )
        dispatch(planned)


class OutputEndCallback(_WebhookCallback):
    """Task-level callback on an output task: one message per webhook that selects it.

    :param registry: the DAG's webhooks.
    :param event: ``success`` when installed as ``on_success_callback``, else ``failure``.
    """

    kind = "output"

    def send(self, context: Context) -> None:
        """Send the messages of the webhooks that select this output."""
        task_id = context["ti"].task_id
        run_id = str(context["run_id"])
        state = "success" if self.event == "success" else "failed"
        event = JobEvent(
            flow_id=self.registry.dag_id,
            job_id=run_id,
            job_status=state,
            output_name=task_id,
            logical_date=logical_date_of(context),
            job_url=job_url(self.registry.dag_id, run_id),
        )
        dispatch(
            [
                (webhook, event)
                for webhook in self.registry.output_webhooks()
                if task_id in (webhook.outputs or ()) and webhook.fires_on(state)
            ]
        )


def task_states(
    context: Mapping[str, Any], dag_id: str, run_id: str, task_ids: Sequence[str]
) -> dict[str, str]:
    """Read the final states of some tasks of a run, from wherever the callback runs.

    In the DAG processor the Task SDK asks the supervisor; under ``dag.test()`` and
    ``airflow dags test`` there is no supervisor, and the run lives in this process's
    metadata database session instead.

    :return: task id to lowercase state; tasks without a state are left out.
    """
    from airflow.sdk.execution_time import task_runner

    if hasattr(task_runner, "SUPERVISOR_COMMS"):
        by_run = task_runner.RuntimeTaskInstance.get_task_states(
            dag_id=dag_id, run_ids=[run_id], task_ids=list(task_ids)
        )
        return {task_id: state_name(state) for task_id, state in by_run.get(run_id, {}).items() if state}
    return _task_states_from_metadata_db(dag_id, run_id, task_ids)


def _task_states_from_metadata_db(dag_id: str, run_id: str, task_ids: Sequence[str]) -> dict[str, str]:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(TaskInstance.task_id, TaskInstance.state).where(
                TaskInstance.dag_id == dag_id,
                TaskInstance.run_id == run_id,
                TaskInstance.task_id.in_(list(task_ids)),
            )
        ).all()
    return {task_id: state_name(state) for task_id, state in rows if state}


def state_name(state: Any) -> str:
    """Return an Airflow state (enum or string) as a lowercase string."""
    return str(getattr(state, "value", state)).lower()
