"""Turn the end of a DAG run or an output task into messages, from Airflow's callbacks.

:meth:`FlowWebhooks.attach <airflow_webhook_provider.capture.attach.FlowWebhooks.attach>`
installs two kinds of callback, both backed by one :class:`WebhookRegistry` per DAG:

- :class:`OutputEndCallback` on each selected output task (runs in the task runner,
  right when the task ends): one message per webhook that selects the task and whose
  ``on`` matches its final state. This is the low-latency path.
- :class:`RunEndCallback` on the DAG (runs in the DAG processor): one message per
  webhook without ``outputs`` whose ``on`` matches the run's state, and the run-end
  reconciliation of every selected output (``upstream_failed`` outputs have no task
  callback; outputs set by hand have none either). Its webhooks are the DAG file's and
  those defined in the UI.

Callbacks record their messages in the ledger through the pipeline, which sends them
inline only when no dispatcher is alive. Delivery ids are deterministic, so whichever
path records an end first wins and the others add nothing. Callbacks never raise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from airflow_webhook_provider import config
from airflow_webhook_provider.capture.context import (
    clear_number_of,
    end_time_of,
    job_url,
    logical_date_of,
    task_states,
)
from airflow_webhook_provider.capture.definitions import merge, record_definitions, ui_webhooks
from airflow_webhook_provider.core.definitions import FlowWebhook, JobEvent
from airflow_webhook_provider.core.exceptions import InvalidWebhookDefinition
from airflow_webhook_provider.core.selection import for_output, for_run, reconcile, selected_outputs
from airflow_webhook_provider.core.states import CaptureSource, Event

if TYPE_CHECKING:
    from airflow.sdk.definitions.context import Context

    from airflow_webhook_provider.ledger import Ledger, NewDelivery

__all__ = ["OutputEndCallback", "RunEndCallback", "WebhookRegistry", "submit"]

log = logging.getLogger(__name__)


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


def submit(messages: list[NewDelivery]) -> None:
    """Hand messages to the delivery pipeline (recorded; sent inline only without a dispatcher)."""
    if not messages:
        return
    from airflow_webhook_provider.delivery.pipeline import Pipeline

    Pipeline.from_config().submit(messages)


def _safely(what: str, action: Callable[[], Any]) -> Any:
    try:
        return action()
    except Exception as exc:
        log.warning("Flow webhooks: %s failed (%s: %s)", what, type(exc).__name__, exc)
        return None


class _WebhookCallback:
    """A callback that records a DAG's messages and never raises, whatever happens."""

    kind = ""

    def __init__(self, registry: WebhookRegistry, event: Event) -> None:
        self.registry = registry
        self.event = event
        self.__name__ = f"flow_webhooks_on_{self.kind}_{event}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(dag_id={self.registry.dag_id!r}, event={str(self.event)!r})"

    def __call__(self, context: Context) -> None:
        try:
            # Imported here: DAG files import this module to attach, and the sending
            # machinery would cost every DAG parse.
            from airflow_webhook_provider.delivery.pipeline import Pipeline

            pipeline = Pipeline.from_config()
            pipeline.submit(self.messages(context, pipeline.ledger))
        except Exception as exc:
            # Nothing a webhook does may fail the user's task or run.
            log.error(
                "Flow webhooks of DAG %s were not recorded: %s: %s",
                self.registry.dag_id,
                type(exc).__name__,
                exc,
            )

    def messages(self, context: Context, ledger: Ledger | None) -> list[NewDelivery]:
        """Return the messages this end calls for.

        :param context: the callback's context.
        :param ledger: the ledger (None when it cannot be opened), for what capture reads and records.
        """
        raise NotImplementedError


class RunEndCallback(_WebhookCallback):
    """DAG-level callback: messages for the run, and the reconciliation of its outputs.

    :param registry: the DAG's webhooks.
    :param event: ``success`` when installed as ``on_success_callback``, else ``failure``.
    """

    kind = "run"

    def messages(self, context: Context, ledger: Ledger | None) -> list[NewDelivery]:
        """Return the run's messages and those its outputs' final states call for.

        The outputs are reconciled from the task states a listener recorded at the run's
        end when there are any, and from the run's current task states otherwise.
        """
        from airflow_webhook_provider.delivery.pipeline import message_for, owner_name

        run_id = str(context["run_id"])
        dag_id = self.registry.dag_id
        run_state = "success" if self.event == Event.SUCCESS else "failed"
        settings = config.load()
        clear_number = clear_number_of(context)
        ended_at = end_time_of(context.get("dag_run"))
        common = {
            "flow_id": dag_id,
            "job_id": run_id,
            "logical_date": logical_date_of(context),
            "job_url": job_url(settings.base_url, dag_id, run_id),
        }
        webhooks = self.registry.webhooks
        if ledger is not None:
            webhooks = merge(
                webhooks,
                _safely("reading the UI-defined webhooks", lambda: ui_webhooks(ledger, dag_id)) or (),
                dag_id=dag_id,
            )
        messages = [
            message_for(
                webhook,
                JobEvent(job_status=run_state, **common),
                clear_number=clear_number,
                capture=CaptureSource.CALLBACK,
                event_at=ended_at,
            )
            for webhook in for_run(webhooks, run_state)
        ]
        if ledger is not None:
            _safely(
                "recording the DAG's definitions",
                lambda: record_definitions(
                    ledger, dag_id, self.registry.webhooks, recorded_by=owner_name("dag-processor")
                ),
            )
        outputs = selected_outputs(webhooks)
        if outputs:
            # The states a listener saw when the run ended, when one did: this callback may run
            # late (the DAG processor was down), after the run was cleared and ran again.
            states = (
                _safely(
                    "reading the run end's task states",
                    lambda: ledger.run_end_states(dag_id=dag_id, run_id=run_id, clear_number=clear_number),
                )
                if ledger is not None
                else None
            )
            if states is None:
                states = task_states(dag_id, run_id, outputs)
            for webhook, (task_id, map_index), state in reconcile(webhooks, states):
                messages.append(
                    message_for(
                        webhook,
                        JobEvent(job_status=state, output_name=task_id, **common),
                        clear_number=clear_number,
                        capture=CaptureSource.RECONCILED,
                        event_at=ended_at,
                        map_index=map_index,
                    )
                )
        return messages


class OutputEndCallback(_WebhookCallback):
    """Task-level callback on an output task: one message per webhook that selects it.

    :param registry: the DAG's webhooks.
    :param event: ``success`` when installed as ``on_success_callback``, else ``failure``.
    """

    kind = "output"

    def messages(self, context: Context, ledger: Ledger | None) -> list[NewDelivery]:
        """Return the messages of the webhooks that select this output."""
        from airflow_webhook_provider.delivery.pipeline import message_for

        task_id = context["ti"].task_id
        map_index = getattr(context["ti"], "map_index", -1)
        run_id = str(context["run_id"])
        state = "success" if self.event == Event.SUCCESS else "failed"
        settings = config.load()
        event = JobEvent(
            flow_id=self.registry.dag_id,
            job_id=run_id,
            job_status=state,
            output_name=task_id,
            logical_date=logical_date_of(context),
            job_url=job_url(settings.base_url, self.registry.dag_id, run_id),
        )
        return [
            message_for(
                webhook,
                event,
                clear_number=clear_number_of(context),
                capture=CaptureSource.CALLBACK,
                event_at=time.time(),
                map_index=map_index if isinstance(map_index, int) else -1,
            )
            for webhook in for_output(self.registry.webhooks, task_id, state)
        ]
