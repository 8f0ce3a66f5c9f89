"""Which webhooks an end calls for: the trigger rules, as pure functions.

A webhook without ``outputs`` fires once per finished run whose state matches its
``on``; a webhook with ``outputs`` fires once per selected output whose final state
matches (``upstream_failed`` counts as a failure, ``skipped`` fires nothing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from airflow_webhook_provider.core.definitions import FlowWebhook

__all__ = ["TaskKey", "for_output", "for_run", "reconcile", "selected_outputs"]


def for_run(webhooks: Iterable[FlowWebhook], state: str) -> list[FlowWebhook]:
    """Return the webhooks a run ending in ``state`` fires."""
    return [w for w in webhooks if w.outputs is None and w.fires_on(state)]


def for_output(webhooks: Iterable[FlowWebhook], task_id: str, state: str) -> list[FlowWebhook]:
    """Return the webhooks an output task ending in ``state`` fires."""
    return [w for w in webhooks if w.outputs is not None and task_id in w.outputs and w.fires_on(state)]


def selected_outputs(webhooks: Iterable[FlowWebhook]) -> list[str]:
    """Return every task id some webhook selects as an output, sorted."""
    return sorted({task_id for w in webhooks for task_id in w.outputs or ()})


#: A task instance of a run: its task id and map index (-1 for a task that is not mapped).
TaskKey = tuple[str, int]


def reconcile(
    webhooks: Iterable[FlowWebhook], states: Mapping[TaskKey, str]
) -> list[tuple[FlowWebhook, TaskKey, str]]:
    """Return ``(webhook, (task_id, map_index), state)`` for every selected output whose final state fires a webhook.

    Run at the end of a run, this finds the messages of outputs that never ran
    (``upstream_failed``) or were set by hand, next to those their own callbacks sent;
    the ledger keeps one message per delivery id, so the latter add nothing.

    :param webhooks: the DAG's webhooks.
    :param states: final state of each task instance of the run.
    """
    by_task: dict[str, list[tuple[TaskKey, str]]] = {}
    for key, state in sorted(states.items()):
        by_task.setdefault(key[0], []).append((key, state))
    found = []
    for webhook in webhooks:
        for task_id in webhook.outputs or ():
            for key, state in by_task.get(task_id, ()):
                if webhook.fires_on(state):
                    found.append((webhook, key, state))
    return found
