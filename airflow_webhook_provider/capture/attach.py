"""Attach a flow's webhooks to a DAG: ``FlowWebhooks(...).attach(dag)``.

This runs when the DAG file is parsed, so it stays cheap: no network, no database, and
the sending machinery is not imported. Everything is checked before anything changes,
so a refused attach leaves the DAG as it was and shows as a DAG import error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_webhook_provider import config
from airflow_webhook_provider.capture.callbacks import OutputEndCallback, RunEndCallback, WebhookRegistry
from airflow_webhook_provider.capture.deadline import late_alert, webhook_of
from airflow_webhook_provider.core.definitions import FlowWebhook, WebhookSet, check_limits
from airflow_webhook_provider.core.exceptions import InvalidWebhookDefinition
from airflow_webhook_provider.core.selection import selected_outputs
from airflow_webhook_provider.core.states import Event

if TYPE_CHECKING:
    from airflow.sdk import DAG

__all__ = ["FlowWebhooks", "attach_webhooks", "find_registry"]

_TASK_CALLBACKS: tuple[tuple[Event, str], ...] = (
    (Event.SUCCESS, "on_success_callback"),
    (Event.FAILURE, "on_failure_callback"),
)


class FlowWebhooks(WebhookSet):
    """The webhooks of one flow (DAG), attached with :meth:`attach`.

    Usage::

        FlowWebhooks(
            FlowWebhook(name="on-fail", conn_id="alerts", on="failure"),
            FlowWebhook(name="report-ready", conn_id="reports", on="success", outputs=["publish"]),
            FlowWebhook(name="late", conn_id="alerts", on="late", late_after=timedelta(hours=2)),
        ).attach(dag)

        FlowWebhooks.from_file(Path(__file__).with_name("webhooks.yaml")).attach(dag)

    :param webhooks: the definitions.
    :raises InvalidWebhookDefinition: for a duplicate name.
    """

    def attach(self, dag: DAG) -> DAG:
        """Wire every webhook to the DAG and return the DAG.

        Webhooks without ``outputs`` become DAG-level success/failure callbacks; webhooks
        with ``outputs`` become task-level callbacks on those tasks, and the DAG-level
        callbacks reconcile the outputs' final states at run end; ``on="late"`` webhooks
        become deadline alerts of the DAG (see :mod:`~airflow_webhook_provider.capture.deadline`).
        Callbacks and deadline alerts the author set are kept. Attaching the same definitions
        again adds nothing.

        :param dag: the DAG.
        :return: the same DAG.
        :raises InvalidWebhookDefinition: for an output that is not a task of the DAG, a name
            used twice with different definitions, or more webhooks (or a larger body) than
            ``[flow_webhook]`` allows.
        """
        attach_webhooks(dag, tuple(self))
        return dag


def _as_list(callbacks: Any) -> list[Any]:
    if callbacks is None:
        return []
    if isinstance(callbacks, list | tuple):
        return list(callbacks)
    return [callbacks]


def find_registry(dag: DAG) -> WebhookRegistry | None:
    """Return the registry of the webhooks attached to ``dag``, or None when it has none.

    A DAG whose only webhooks are ``late`` ones has no callbacks of ours: its registry is
    rebuilt from its deadline alerts, which hold the definitions.
    """
    candidates: list[Any] = _as_list(dag.on_success_callback) + _as_list(dag.on_failure_callback)
    for task in dag.task_dict.values():
        candidates += _as_list(task.on_success_callback) + _as_list(task.on_failure_callback)
    for callback in candidates:
        if isinstance(callback, RunEndCallback | OutputEndCallback):
            return callback.registry
    late = [webhook for webhook in map(webhook_of, _as_list(dag.deadline)) if webhook is not None]
    if not late:
        return None
    registry = WebhookRegistry(dag.dag_id)
    registry.add(late)
    return registry


def attach_webhooks(dag: DAG, webhooks: Sequence[FlowWebhook]) -> None:
    """Install the callbacks that send ``webhooks`` for ``dag``; see :meth:`FlowWebhooks.attach`.

    :raises InvalidWebhookDefinition: for an unknown output task, a conflicting name, or
        more than ``[flow_webhook]`` allows.
    """
    registry = find_registry(dag) or WebhookRegistry(dag.dag_id)
    new = registry.plan_merge(webhooks)
    check_limits([*registry.webhooks, *new], config.limits(), where=f"DAG {dag.dag_id!r}")
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

    outputs = selected_outputs(registry.webhooks)
    for event, attribute in _TASK_CALLBACKS:
        # Output webhooks need the run-end reconciliation whatever the run's state: an output
        # that never ran, or was set by hand, gets no task callback.
        if outputs or any(w.outputs is None and w.on in (event, "any") for w in registry.webhooks):
            _install_dag_callback(dag, attribute, RunEndCallback(registry, event))
    for task_id in outputs:
        task = dag.task_dict[task_id]
        for event, attribute in _TASK_CALLBACKS:
            existing = _as_list(getattr(task, attribute))
            if not any(isinstance(c, OutputEndCallback) and c.event == event for c in existing):
                setattr(task, attribute, [*existing, OutputEndCallback(registry, event)])
    _install_deadline_alerts(dag, [w for w in registry.webhooks if w.on == "late"])


def _install_deadline_alerts(dag: DAG, webhooks: Sequence[FlowWebhook]) -> None:
    if not webhooks:
        return
    alerts = _as_list(dag.deadline)
    for webhook in webhooks:
        alert = late_alert(dag.dag_id, webhook)
        if alert not in alerts:
            alerts.append(alert)
    # The DAG's converter and validator run on assignment, as when it is built with deadline=.
    dag.deadline = alerts


def _install_dag_callback(dag: DAG, attribute: str, callback: RunEndCallback) -> None:
    existing = _as_list(getattr(dag, attribute))
    if any(isinstance(c, RunEndCallback) and c.event == callback.event for c in existing):
        return
    setattr(dag, attribute, [*existing, callback])
    # The DAG computes these flags once, when it is built; the scheduler reads them to
    # decide whether to ask the DAG processor to run callbacks at all.
    setattr(dag, f"has_{attribute}", True)
